//! API keys: who is calling (authentication, in a tonic interceptor) and
//! what they may do (authorization, in the handlers through [`authorize`]).
//!
//! The configuration holds only the SHA-256 of each key. A presented key is
//! hashed and compared with every configured digest in constant time
//! (`subtle`), so neither the comparison nor the order of keys leaks how
//! much of a guess was right. Each key holds teams (`*` for all) and a role,
//! `read` < `write` < `admin`.
//!
//! Without configured keys the server is *open*: every caller is an
//! anonymous admin holding every team (the configuration only allows that
//! on loopback addresses).

// `tonic::Status` is the error type interceptors and handlers must return.
#![allow(clippy::result_large_err)]

use crate::config::ApiKeyConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// What a key may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Recall, Count, Scan, Status.
    Read,
    /// Also Upsert and Delete.
    Write,
    /// Also Drain, ForceActive, ResumeAuto, Resync, RedriveDeadLetters.
    Admin,
}

impl Role {
    /// Lowercase name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The teams a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teams {
    /// `["*"]`: every team, and unscoped requests.
    All,
    /// These teams only.
    Only(BTreeSet<String>),
}

/// The authenticated caller, put in the request's extensions by the interceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's label (never the key).
    pub name: String,
    /// Teams it holds.
    pub teams: Teams,
    /// What it may do.
    pub role: Role,
    /// The scans the key may have open at once, shared by all its calls.
    pub scans: ScanSlots,
}

/// A key's open-scan budget (`limits.max_scans_per_key`).
#[derive(Debug, Clone)]
pub struct ScanSlots(Arc<tokio::sync::Semaphore>);

impl ScanSlots {
    /// Room for `max` open scans.
    pub fn new(max: u32) -> ScanSlots {
        ScanSlots(Arc::new(tokio::sync::Semaphore::new(max as usize)))
    }

    /// A slot held until the scan's stream ends, or `None` when every slot
    /// is taken (the scan is refused; never queued).
    pub fn try_open(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

impl PartialEq for ScanSlots {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ScanSlots {}

impl Principal {
    /// The caller of an open server (no keys configured).
    pub fn anonymous(max_scans: u32) -> Principal {
        Principal {
            name: "anonymous".to_owned(),
            teams: Teams::All,
            role: Role::Admin,
            scans: ScanSlots::new(max_scans),
        }
    }

    fn holds(&self, team: &str) -> bool {
        match &self.teams {
            Teams::All => true,
            Teams::Only(teams) => teams.contains(team),
        }
    }
}

/// The data a request touches, for [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// One team's records.
    Team(&'a str),
    /// Every team's records (unscoped Count or Scan): needs `["*"]`.
    AllTeams,
}

/// Checks the caller's role and teams for a request, and returns the
/// caller. Call it before anything else in a handler: a refused request
/// touches no store.
pub fn authorize<'a, T>(
    request: &Request<T>,
    role: Role,
    access: impl IntoIterator<Item = Access<'a>>,
) -> Result<Arc<Principal>, Status> {
    let Some(principal) = request.extensions().get::<Arc<Principal>>() else {
        // Only reachable if a service was mounted without the interceptor.
        return Err(Status::unauthenticated("no credentials were checked"));
    };
    if principal.role < role {
        return Err(Status::permission_denied(format!(
            "API key {:?} has role {}, this call needs {role}",
            principal.name, principal.role
        )));
    }
    for access in access {
        match access {
            Access::Team(team) if !principal.holds(team) => {
                return Err(Status::permission_denied(format!(
                    "API key {:?} does not hold team {team:?}",
                    principal.name
                )));
            }
            Access::AllTeams if principal.teams != Teams::All => {
                return Err(Status::permission_denied(format!(
                    "API key {:?} is limited to some teams; a request without team_id needs a key with teams = [\"*\"]",
                    principal.name
                )));
            }
            _ => {}
        }
    }
    Ok(Arc::clone(principal))
}

struct KeyEntry {
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// Checks the `authorization: Bearer <key>` metadata against the configured keys.
pub struct Authenticator {
    keys: Vec<KeyEntry>,
    anonymous: Arc<Principal>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| k.principal.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Authenticator {
    /// Builds the key table. Keys were checked by [`crate::config::Config::check`];
    /// a malformed digest is still refused here. Each key (and the anonymous
    /// caller of an open server) may have `max_scans_per_key` scans open.
    pub fn new(keys: &[ApiKeyConfig], max_scans_per_key: u32) -> anyhow::Result<Authenticator> {
        let mut entries = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let Some(digest) = parse_digest(&key.sha256) else {
                anyhow::bail!("api_keys[{i}].sha256 must be 64 hex characters");
            };
            let teams = if key.teams.iter().any(|t| t == "*") {
                Teams::All
            } else {
                Teams::Only(key.teams.iter().cloned().collect())
            };
            let name = if key.name.is_empty() {
                format!("api_keys[{i}]")
            } else {
                key.name.clone()
            };
            entries.push(KeyEntry {
                digest,
                principal: Arc::new(Principal {
                    name,
                    teams,
                    role: key.role,
                    scans: ScanSlots::new(max_scans_per_key),
                }),
            });
        }
        Ok(Authenticator {
            keys: entries,
            anonymous: Arc::new(Principal::anonymous(max_scans_per_key)),
        })
    }

    /// True when no key is configured: every caller is an anonymous admin.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who sent these metadata.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Arc<Principal>, Status> {
        if self.is_open() {
            return Ok(self.anonymous.clone());
        }
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "missing API key: send the metadata `authorization: Bearer <key>`",
            ));
        };
        let value = value.to_str().map_err(|_| {
            Status::unauthenticated("the authorization metadata is not valid ASCII")
        })?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <key>`")
            })?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare with every key, without stopping at the first match.
        let mut found = None;
        for entry in &self.keys {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.principal.clone());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("unknown API key"))
    }

    /// The tonic interceptor: authenticates each call and stores the
    /// [`Principal`] in the request's extensions for [`authorize`].
    pub fn interceptor(
        self: &Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let auth = Arc::clone(self);
        move |mut request: Request<()>| {
            let principal = auth.authenticate(request.metadata())?;
            request.extensions_mut().insert(principal);
            Ok(request)
        }
    }
}

/// Lowercase hex SHA-256 of a key, as the configuration stores it.
pub fn hash_key(key: &str) -> String {
    to_hex(&Sha256::digest(key.as_bytes()))
}

/// A fresh random key: 32 random bytes, hex-encoded, prefixed `vg_`.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("vg_{}", to_hex(&bytes))
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses a 64-character hex digest (either case).
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tonic::Code;

    fn key(secret: &str, teams: &[&str], role: Role) -> ApiKeyConfig {
        ApiKeyConfig {
            name: secret.to_owned(),
            sha256: hash_key(secret),
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            role,
        }
    }

    fn call(auth: &Arc<Authenticator>, header: Option<&str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        (auth.interceptor())(request)
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let digest = parse_digest(&hash_key("abc").to_uppercase()).unwrap();
        assert_eq!(to_hex(&digest), hash_key("abc"));
        assert!(parse_digest("xyz").is_none());
        assert!(parse_digest(&"g".repeat(64)).is_none());
        assert!(generate_key().starts_with("vg_"));
        assert_ne!(generate_key(), generate_key());
    }

    #[test]
    fn keys_are_checked_and_roles_and_teams_enforced() {
        let auth = Arc::new(
            Authenticator::new(
                &[
                    key("reader", &["a"], Role::Read),
                    key("writer", &["a", "b"], Role::Write),
                    key("root", &["*"], Role::Admin),
                ],
                4,
            )
            .unwrap(),
        );
        assert!(!auth.is_open());
        assert_eq!(call(&auth, None).unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(
            call(&auth, Some("Bearer nope")).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            call(&auth, Some("reader")).unwrap_err().code(),
            Code::Unauthenticated
        );

        let reader = call(&auth, Some("Bearer reader")).unwrap();
        authorize(&reader, Role::Read, [Access::Team("a")]).unwrap();
        let denied = |r: Result<Arc<Principal>, Status>| {
            assert_eq!(r.unwrap_err().code(), Code::PermissionDenied)
        };
        denied(authorize(&reader, Role::Write, [Access::Team("a")]));
        denied(authorize(&reader, Role::Read, [Access::Team("b")]));
        denied(authorize(&reader, Role::Read, [Access::AllTeams]));

        let writer = call(&auth, Some("bearer writer")).unwrap();
        authorize(&writer, Role::Write, [Access::Team("a"), Access::Team("b")]).unwrap();
        denied(authorize(
            &writer,
            Role::Write,
            [Access::Team("a"), Access::Team("c")],
        ));
        denied(authorize(&writer, Role::Admin, []));

        let root = call(&auth, Some("Bearer root")).unwrap();
        authorize(&root, Role::Admin, [Access::AllTeams, Access::Team("z")]).unwrap();

        // A request that never went through the interceptor has no principal.
        assert_eq!(
            authorize(&Request::new(()), Role::Read, [])
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn open_server_admits_everyone() {
        let auth = Arc::new(Authenticator::new(&[], 4).unwrap());
        assert!(auth.is_open());
        let request = call(&auth, None).unwrap();
        authorize(&request, Role::Admin, [Access::AllTeams]).unwrap();
    }
}
