//! SQL text. The only things ever written into it are the table name and
//! index names derived from it (checked by [`crate::config::check_table_name`]),
//! and numbers and keywords from a validated [`IndexSpec`] in DDL, which
//! PostgreSQL cannot take as parameters. Every value — ids, vectors,
//! payloads, limits, timestamps, settings — is a bound parameter.

use std::sync::Arc;
use vectorgate::{IndexSpec, Metric};

/// Operator and index operator class of a metric, and how a distance
/// becomes a score (see [`Metric`]: larger is more similar).
pub(crate) fn operator(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "<=>",
        Metric::InnerProduct => "<#>",
        Metric::L2 => "<->",
    }
}

pub(crate) fn opclass(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "vector_cosine_ops",
        Metric::InnerProduct => "vector_ip_ops",
        Metric::L2 => "vector_l2_ops",
    }
}

/// The metric an HNSW operator class implements, if it is one of ours.
pub(crate) fn metric_of_opclass(name: &str) -> Option<Metric> {
    match name {
        "vector_cosine_ops" => Some(Metric::Cosine),
        "vector_ip_ops" => Some(Metric::InnerProduct),
        "vector_l2_ops" => Some(Metric::L2),
        _ => None,
    }
}

/// Score from the distance pgvector's operator returns: cosine distance is
/// `1 - cos`, `<#>` is the *negative* inner product, `<->` the L2 distance.
pub(crate) fn score(metric: Metric, distance: f64) -> f32 {
    let score = match metric {
        Metric::Cosine => 1.0 - distance,
        Metric::InnerProduct | Metric::L2 => -distance,
    };
    score as f32
}

/// `{table}_{suffix}`, shortened with a hash of the table name when that
/// would exceed PostgreSQL's 63-byte identifiers (which it would truncate
/// silently, making the indexes of a long table name collide).
pub(crate) fn index_name(table: &str, suffix: &str) -> String {
    let name = format!("{table}_{suffix}");
    if name.len() <= 63 {
        return name;
    }
    let hash = fnv1a(table.as_bytes());
    // table[..keep] + '_' + 8 hex + '_' + suffix == 63 bytes; the table name
    // is ASCII, so any cut is a char boundary.
    let keep = 63 - suffix.len() - 10;
    format!("{}_{hash:08x}_{suffix}", &table[..keep.min(table.len())])
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The comment that records the spec a table was created for:
/// `vectorgate {"dim":8,"metric":"cosine","m":16,"ef_construction":64}`.
pub(crate) const COMMENT_PREFIX: &str = "vectorgate ";

pub(crate) fn spec_comment(spec: &IndexSpec) -> String {
    format!(
        "{COMMENT_PREFIX}{{\"dim\":{},\"metric\":\"{}\",\"m\":{},\"ef_construction\":{}}}",
        spec.dim,
        spec.metric.as_str(),
        spec.hnsw.m,
        spec.hnsw.ef_construction
    )
}

/// Dimension and metric from a comment written by [`spec_comment`].
pub(crate) fn parse_spec_comment(comment: &str) -> Option<(u32, Metric)> {
    let json = comment.strip_prefix(COMMENT_PREFIX)?;
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let dim = u32::try_from(value.get("dim")?.as_u64()?).ok()?;
    let metric = Metric::parse(value.get("metric")?.as_str()?)?;
    Some((dim, metric))
}

/// A SQL literal of text we generated ourselves (no user data): quotes
/// doubled all the same.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The DDL of `ensure_schema`, in order.
pub(crate) fn create_statements(table: &str, spec: &IndexSpec) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
             id TEXT COLLATE \"C\" PRIMARY KEY, \
             team_id VARCHAR(64) NOT NULL, \
             dataset_id VARCHAR(64) NOT NULL, \
             collection_id VARCHAR(64) NOT NULL, \
             vector VECTOR({dim}) NOT NULL, \
             created_at_ms BIGINT NOT NULL, \
             payload JSONB)",
            dim = spec.dim
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw (vector {ops}) \
             WITH (m = {m}, ef_construction = {ef})",
            name = index_name(table, "hnsw"),
            ops = opclass(spec.metric),
            m = spec.hnsw.m,
            ef = spec.hnsw.ef_construction
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} (team_id, dataset_id, collection_id)",
            name = index_name(table, "scope")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} (created_at_ms)",
            name = index_name(table, "created")
        ),
    ]
}

/// Which collection filter a recall statement applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterShape {
    Any,
    Only,
    Except,
}

/// Statements prepared once per `ensure_schema` (sqlx caches the prepared
/// statement per connection, keyed by this text).
#[derive(Debug)]
pub(crate) struct Statements {
    /// Inserts or updates within the team (see [`Statements::new`]);
    /// returns the id of every row it wrote. `$1` ids, `$2` teams, `$3`
    /// datasets, `$4` collections, `$5` vectors, `$6` `created_at_ms`, `$7`
    /// payloads as text.
    pub upsert: Arc<str>,
    /// `id, team_id` of the rows holding the ids `$1`.
    pub owners: Arc<str>,
    /// `[shape][with_payload]`.
    recall: [[Arc<str>; 2]; 3],
    pub delete_ids: Arc<str>,
    pub delete_datasets: Arc<str>,
    pub delete_collections: Arc<str>,
}

impl Statements {
    pub(crate) fn new(table: &str, metric: Metric) -> Self {
        let op = operator(metric);
        let recall = |shape: FilterShape, with_payload: bool| -> Arc<str> {
            let filter = match shape {
                FilterShape::Any => "",
                FilterShape::Only => " AND collection_id = ANY($4)",
                FilterShape::Except => " AND NOT (collection_id = ANY($4))",
            };
            let limit = if shape == FilterShape::Any {
                "$4"
            } else {
                "$5"
            };
            let payload = if with_payload {
                "payload::text"
            } else {
                "NULL::text"
            };
            format!(
                "SELECT id, dataset_id, collection_id, (vector {op} $1)::float8 AS distance, \
                 {payload} AS payload FROM {table} \
                 WHERE team_id = $2 AND dataset_id = ANY($3){filter} \
                 ORDER BY vector {op} $1 LIMIT {limit}"
            )
            .into()
        };
        let shapes = [FilterShape::Any, FilterShape::Only, FilterShape::Except];
        Statements {
            // A record never changes team: a row held by another team is
            // left alone (locked, not updated, not returned), so fewer ids
            // come back than were sent and the caller rolls back. Rows are
            // written in id order, so concurrent upserts lock in one order
            // and cannot deadlock each other.
            upsert: format!(
                "INSERT INTO {table} \
                 (id, team_id, dataset_id, collection_id, vector, created_at_ms, payload) \
                 SELECT id, team_id, dataset_id, collection_id, vector, created_at_ms, payload::jsonb \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::vector[], \
                 $6::int8[], $7::text[]) \
                 AS r(id, team_id, dataset_id, collection_id, vector, created_at_ms, payload) \
                 ORDER BY id COLLATE \"C\" \
                 ON CONFLICT (id) DO UPDATE SET \
                 dataset_id = EXCLUDED.dataset_id, \
                 collection_id = EXCLUDED.collection_id, vector = EXCLUDED.vector, \
                 created_at_ms = EXCLUDED.created_at_ms, payload = EXCLUDED.payload \
                 WHERE {table}.team_id = EXCLUDED.team_id \
                 RETURNING id"
            )
            .into(),
            owners: format!("SELECT id, team_id FROM {table} WHERE id = ANY($1)").into(),
            recall: shapes.map(|shape| [recall(shape, false), recall(shape, true)]),
            delete_ids: format!("DELETE FROM {table} WHERE team_id = $1 AND id = ANY($2)").into(),
            delete_datasets: format!(
                "DELETE FROM {table} WHERE team_id = $1 AND dataset_id = ANY($2)"
            )
            .into(),
            delete_collections: format!(
                "DELETE FROM {table} WHERE team_id = $1 AND dataset_id = ANY($2) \
                 AND collection_id = ANY($3)"
            )
            .into(),
        }
    }

    pub(crate) fn recall(&self, shape: FilterShape, with_payload: bool) -> Arc<str> {
        let i = match shape {
            FilterShape::Any => 0,
            FilterShape::Only => 1,
            FilterShape::Except => 2,
        };
        Arc::clone(&self.recall[i][usize::from(with_payload)])
    }
}

/// Builds `WHERE` clauses with `$n` placeholders numbered in order, for the
/// statements whose filters vary (count, scan). Only present filters are
/// written, so every variant can use the indexes.
#[derive(Debug, Default)]
pub(crate) struct Where {
    clauses: Vec<String>,
    next: usize,
}

impl Where {
    /// Adds `{column} {op} $n` and returns nothing; bind in the same order.
    pub(crate) fn push(&mut self, column: &str, op: &str) {
        self.next += 1;
        self.clauses.push(format!("{column} {op} ${}", self.next));
    }

    /// The next placeholder, for a clause after the WHERE (e.g. LIMIT).
    pub(crate) fn placeholder(&mut self) -> String {
        self.next += 1;
        format!("${}", self.next)
    }

    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The health probe, one round trip: what serving needs, not just a live
/// server. `$1` is the table name (unqualified, resolved through the
/// role's `search_path`, like every statement of the store).
/// `has_table_privilege` with a list is true when *any* is held, so each
/// privilege is checked on its own.
pub(crate) const HEALTH: &str = "SELECT current_setting('server_version') AS version, \
     current_user::text AS role, \
     t.oid IS NOT NULL AS table_exists, \
     ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p \
           WHERE t.oid IS NOT NULL AND NOT has_table_privilege(t.oid, p)) AS missing_privileges, \
     current_setting('transaction_read_only') = 'on' AS read_only, \
     pg_is_in_recovery() AS in_recovery \
     FROM (SELECT to_regclass($1) AS oid) AS t";

/// What [`HEALTH`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServingHealth {
    pub version: String,
    pub role: String,
    pub table_exists: bool,
    pub missing_privileges: Vec<String>,
    pub read_only: bool,
    pub in_recovery: bool,
}

impl ServingHealth {
    /// Why the store cannot serve, with the fix; `None` when it can. A
    /// missing table is a problem only once `ensure_schema` made it
    /// (`schema_ensured`): before that it is simply not created yet.
    pub(crate) fn problem(&self, table: &str, schema_ensured: bool) -> Option<String> {
        let role = &self.role;
        if self.in_recovery {
            return Some(
                "the server is a standby (in recovery) and refuses writes: point the store's URL \
                 at the primary (after a switchover, the new primary)"
                    .to_owned(),
            );
        }
        if self.read_only {
            return Some(
                "the server refuses writes (transaction_read_only is on, e.g. \
                 default_transaction_read_only = on): run `ALTER SYSTEM RESET \
                 default_transaction_read_only; SELECT pg_reload_conf();` as a superuser, or \
                 point the store's URL at a writable primary"
                    .to_owned(),
            );
        }
        if !self.table_exists && schema_ensured {
            return Some(format!(
                "table {table} is missing (dropped or renamed, or its schema is not usable by \
                 role {role}): rename it back, or let ensure_schema create it again and resync \
                 it from another store"
            ));
        }
        if !self.missing_privileges.is_empty() {
            let missing = self.missing_privileges.join(", ");
            return Some(format!(
                "role {role} lacks {missing} on table {table}: run `GRANT SELECT, INSERT, \
                 UPDATE, DELETE ON {table} TO {role};` as the table's owner or a superuser"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_each_problem_and_its_fix() {
        let good = ServingHealth {
            version: "15.8".into(),
            role: "vg".into(),
            table_exists: true,
            missing_privileges: Vec::new(),
            read_only: false,
            in_recovery: false,
        };
        assert_eq!(good.problem("vectors", true), None);
        let cases = [
            (
                ServingHealth {
                    in_recovery: true,
                    ..good.clone()
                },
                "standby",
            ),
            (
                ServingHealth {
                    read_only: true,
                    ..good.clone()
                },
                "default_transaction_read_only",
            ),
            (
                ServingHealth {
                    table_exists: false,
                    ..good.clone()
                },
                "table vectors is missing",
            ),
            (
                ServingHealth {
                    missing_privileges: vec!["INSERT".into(), "DELETE".into()],
                    ..good.clone()
                },
                "role vg lacks INSERT, DELETE on table vectors: run `GRANT",
            ),
        ];
        for (health, expected) in cases {
            let problem = health.problem("vectors", true).unwrap_or_default();
            assert!(problem.contains(expected), "{problem:?} lacks {expected:?}");
        }
        // Before ensure_schema a missing table is just not created yet.
        let fresh = ServingHealth {
            table_exists: false,
            ..good
        };
        assert_eq!(fresh.problem("vectors", false), None);
    }

    #[test]
    fn index_names_fit_and_stay_distinct() {
        assert_eq!(index_name("t", "hnsw"), "t_hnsw");
        let long_a = "a".repeat(63);
        let mut long_b = "a".repeat(62);
        long_b.push('b');
        for suffix in ["hnsw", "scope", "created"] {
            let a = index_name(&long_a, suffix);
            let b = index_name(&long_b, suffix);
            assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
            assert_ne!(a, b);
            assert!(a.ends_with(suffix));
        }
        assert_ne!(index_name(&long_a, "scope"), index_name(&long_a, "created"));
    }

    #[test]
    fn spec_comment_round_trips() {
        for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            let spec = IndexSpec::new(768, metric);
            assert_eq!(
                parse_spec_comment(&spec_comment(&spec)),
                Some((768, metric))
            );
        }
        assert_eq!(parse_spec_comment("something else"), None);
        assert_eq!(parse_spec_comment("vectorgate {\"dim\":-1}"), None);
    }

    #[test]
    fn where_numbers_placeholders() {
        let mut w = Where::default();
        assert_eq!(w.sql(), "");
        w.push("team_id", "=");
        w.push("id COLLATE \"C\"", ">");
        let limit = w.placeholder();
        assert_eq!(w.sql(), " WHERE team_id = $1 AND id COLLATE \"C\" > $2");
        assert_eq!(limit, "$3");
    }

    #[test]
    fn scores_follow_the_convention() {
        assert_eq!(score(Metric::Cosine, 0.25), 0.75);
        assert_eq!(score(Metric::InnerProduct, -3.0), 3.0);
        assert_eq!(score(Metric::L2, 2.0), -2.0);
        assert_eq!(literal("it's"), "'it''s'");
    }
}
