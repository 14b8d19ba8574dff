//! Per-team admission control: no team can starve another.
//!
//! Every data call is admitted (or refused) before it touches the manager:
//! - **concurrency**: a team has at most `max_concurrent` calls in flight
//!   (a scan counts until its stream ends);
//! - **write rate**: a token bucket per team of `records_per_second`,
//!   holding at most `burst_records`. An upsert costs its records, a delete
//!   by ids its ids (at most a full bucket), a delete by scope 1. Reads cost
//!   no tokens (they are bounded by concurrency alone).
//!
//! Over a limit the call is refused at once with `RESOURCE_EXHAUSTED`, and
//! `retry-after-ms` metadata says when the bucket will hold enough (for the
//! concurrency limit: a short pause): admission never queues, so nothing
//! here grows with load. An upsert naming several teams is admitted for all
//! of them or refused for all.
//!
//! Limits come from `[admission]` (`default` for every team not listed in
//! `[[admission.teams]]`). Refusals are counted in
//! `vectorgate_throttled_total{reason}` (never labelled by team: team ids
//! would explode the metric's cardinality); the team is logged at `info`,
//! at most once per second, with the number of refusals not logged since.
//!
//! State is kept only for teams with calls in flight or a bucket that is
//! not yet full again; idle teams are swept, so the table is bounded by the
//! teams active in the last `burst_records / records_per_second` seconds.

// Handlers return `tonic::Status`, which is large.
#![allow(clippy::result_large_err)]

use crate::config::{AdmissionConfig, TeamLimits};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataValue;

/// The metadata key carrying the retry hint, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The pause suggested to a call refused for concurrency: in-flight calls
/// of a recall service finish in milliseconds.
const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_millis(100);

/// The key under which unscoped (all-teams) Count and Scan calls are
/// admitted: they share one budget, the default one.
pub const ALL_TEAMS: &str = "*";

/// Sweep idle teams once the table holds this many.
const SWEEP_ABOVE: usize = 1024;

/// Why a call was refused; the `reason` label of `vectorgate_throttled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The team had `max_concurrent` calls in flight.
    TeamConcurrency,
    /// The team's write bucket was empty.
    TeamWriteRate,
    /// The API key had `max_scans_per_key` scans open.
    KeyScans,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TeamConcurrency => "team_concurrency",
            Reason::TeamWriteRate => "team_write_rate",
            Reason::KeyScans => "key_scans",
        }
    }
}

/// A refused call: turn it into a status with [`Throttled::into_status`].
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    /// Which limit.
    pub reason: Reason,
    /// What the caller is told (names the team and the limit).
    pub message: String,
    /// When a retry may succeed.
    pub retry_after: Duration,
}

impl Throttled {
    /// `RESOURCE_EXHAUSTED` with `retry-after-ms` metadata; counts the
    /// refusal in `vectorgate_throttled_total{reason}`.
    pub fn into_status(self) -> Status {
        metrics::counter!("vectorgate_throttled_total", "reason" => self.reason.as_str())
            .increment(1);
        let millis = self.retry_after.as_millis().max(1);
        let mut status = Status::resource_exhausted(format!(
            "{}; retry in {millis} ms (metadata {RETRY_AFTER_MS})",
            self.message
        ));
        if let Ok(value) = MetadataValue::try_from(millis.to_string()) {
            status.metadata_mut().insert(RETRY_AFTER_MS, value);
        }
        status
    }
}

/// One team's share of a call: its id and the records it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'a> {
    /// The team.
    pub team: &'a str,
    /// Tokens taken from its write bucket (0 for reads).
    pub records: u64,
}

#[derive(Debug)]
struct TeamState {
    in_flight: u32,
    tokens: f64,
    refilled_at: Instant,
}

#[derive(Debug)]
struct Table {
    teams: HashMap<String, TeamState>,
    last_log: Option<Instant>,
    not_logged: u64,
}

#[derive(Debug)]
struct Shared {
    config: AdmissionConfig,
    table: Mutex<Table>,
}

/// The admission controller, shared by every handler.
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

/// An admitted call's concurrency slots; released when dropped (for a scan,
/// when its stream ends).
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    teams: Vec<String>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.shared.table.lock();
        for team in &self.teams {
            if let Some(state) = table.teams.get_mut(team) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Admission {
    /// A controller enforcing `config` (checked by `Config::check`).
    pub fn new(config: AdmissionConfig) -> Admission {
        Admission {
            shared: Arc::new(Shared {
                config,
                table: Mutex::new(Table {
                    teams: HashMap::new(),
                    last_log: None,
                    not_logged: 0,
                }),
            }),
        }
    }

    /// Admits a call touching these teams, or refuses it without changing
    /// anything. Charges for one team are summed.
    pub fn admit(&self, charges: &[Charge<'_>]) -> Result<Ticket, Throttled> {
        let now = Instant::now();
        let mut merged: Vec<(&str, u64)> = Vec::with_capacity(charges.len());
        for charge in charges {
            match merged.iter_mut().find(|(team, _)| *team == charge.team) {
                Some((_, records)) => *records += charge.records,
                None => merged.push((charge.team, charge.records)),
            }
        }

        let config = &self.shared.config;
        let mut table = self.shared.table.lock();
        if table.teams.len() > SWEEP_ABOVE {
            sweep(config, &mut table.teams, now);
        }
        // Check every team first: a refusal changes nothing.
        for (team, records) in &merged {
            let limits = config.limits_for(team);
            let state = table.teams.get(*team);
            let in_flight = state.map_or(0, |s| s.in_flight);
            if in_flight >= limits.max_concurrent {
                let refusal = Throttled {
                    reason: Reason::TeamConcurrency,
                    message: format!(
                        "team {team:?} has {in_flight} calls in flight, its limit is {} \
                         ([admission] max_concurrent)",
                        limits.max_concurrent
                    ),
                    retry_after: CONCURRENCY_RETRY_AFTER,
                };
                log_refusal(&mut table, team, &refusal, now);
                return Err(refusal);
            }
            if *records > 0 {
                let tokens = state.map_or(f64::from(limits.burst_records), |s| {
                    refilled(s, &limits, now)
                });
                let cost = charge_for(*records, &limits);
                if tokens < cost {
                    let wait = (cost - tokens) / f64::from(limits.records_per_second);
                    let refusal = Throttled {
                        reason: Reason::TeamWriteRate,
                        message: format!(
                            "team {team:?} writes more than {} records/s (burst {}) \
                             ([admission] records_per_second)",
                            limits.records_per_second, limits.burst_records
                        ),
                        retry_after: Duration::from_secs_f64(wait.max(0.001)),
                    };
                    log_refusal(&mut table, team, &refusal, now);
                    return Err(refusal);
                }
            }
        }
        for (team, records) in &merged {
            let limits = config.limits_for(team);
            let state = table
                .teams
                .entry((*team).to_owned())
                .or_insert_with(|| TeamState {
                    in_flight: 0,
                    tokens: f64::from(limits.burst_records),
                    refilled_at: now,
                });
            state.tokens = refilled(state, &limits, now) - charge_for(*records, &limits);
            state.refilled_at = now;
            state.in_flight += 1;
        }
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            teams: merged.iter().map(|(team, _)| (*team).to_owned()).collect(),
        })
    }

    /// Teams with state kept (calls in flight or a bucket refilling).
    pub fn tracked_teams(&self) -> usize {
        self.shared.table.lock().teams.len()
    }
}

/// Tokens a call costs: its records, at most a full bucket (so a delete of
/// more ids than the burst can still pass, once the bucket is full).
fn charge_for(records: u64, limits: &TeamLimits) -> f64 {
    records.min(u64::from(limits.burst_records)) as f64
}

fn refilled(state: &TeamState, limits: &TeamLimits, now: Instant) -> f64 {
    let elapsed = now
        .saturating_duration_since(state.refilled_at)
        .as_secs_f64();
    (state.tokens + elapsed * f64::from(limits.records_per_second))
        .min(f64::from(limits.burst_records))
}

/// Drops teams with nothing in flight and a full bucket: forgetting them
/// changes nothing.
fn sweep(config: &AdmissionConfig, teams: &mut HashMap<String, TeamState>, now: Instant) {
    teams.retain(|team, state| {
        let limits = config.limits_for(team);
        state.in_flight > 0 || refilled(state, &limits, now) < f64::from(limits.burst_records)
    });
}

/// Logs the team of a refusal at `info`, at most once per second.
fn log_refusal(table: &mut Table, team: &str, refusal: &Throttled, now: Instant) {
    let due = table
        .last_log
        .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
    if due {
        tracing::info!(
            team,
            reason = refusal.reason.as_str(),
            retry_after_ms = refusal.retry_after.as_millis() as u64,
            not_logged_since = table.not_logged,
            "call throttled"
        );
        table.last_log = Some(now);
        table.not_logged = 0;
    } else {
        table.not_logged += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::TeamLimitsEntry;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            default: TeamLimits {
                max_concurrent: 2,
                records_per_second: 100,
                burst_records: 1000,
            },
            teams: vec![TeamLimitsEntry {
                team: "big".into(),
                max_concurrent: Some(1),
                records_per_second: Some(10),
                burst_records: Some(1000),
            }],
        }
    }

    fn write(team: &str, records: u64) -> [Charge<'_>; 1] {
        [Charge { team, records }]
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_per_team_and_released_on_drop() {
        let admission = Admission::new(config());
        let a1 = admission.admit(&write("a", 0)).unwrap();
        let _a2 = admission.admit(&write("a", 0)).unwrap();
        let refused = admission.admit(&write("a", 0)).unwrap_err();
        assert_eq!(refused.reason, Reason::TeamConcurrency);
        assert!(refused.message.contains("\"a\""), "{}", refused.message);
        // Another team is not affected; a listed team has its own limit.
        let _b = admission.admit(&write("b", 0)).unwrap();
        let _big = admission.admit(&write("big", 0)).unwrap();
        assert!(admission.admit(&write("big", 0)).is_err());
        drop(a1);
        admission.admit(&write("a", 0)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn write_bucket_refills_and_hints_the_wait() {
        let admission = Admission::new(config());
        drop(admission.admit(&write("a", 1000)).unwrap());
        let refused = admission.admit(&write("a", 50)).unwrap_err();
        assert_eq!(refused.reason, Reason::TeamWriteRate);
        // 50 tokens at 100/s: half a second.
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(admission.admit(&write("a", 50)).is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        drop(admission.admit(&write("a", 50)).unwrap());
        // The listed team refills at its own rate: 10/s.
        drop(admission.admit(&write("big", 1000)).unwrap());
        let refused = admission.admit(&write("big", 10)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_for_one_team_charges_no_team() {
        let admission = Admission::new(config());
        drop(admission.admit(&write("b", 1000)).unwrap());
        let both = [
            Charge {
                team: "a",
                records: 10,
            },
            Charge {
                team: "b",
                records: 10,
            },
        ];
        assert!(admission.admit(&both).is_err());
        // "a" was not charged and holds no slot.
        drop(admission.admit(&write("a", 1000)).unwrap());
        let _one = admission.admit(&write("a", 0)).unwrap();
        let _two = admission.admit(&write("a", 0)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_charges_cost_one_full_bucket() {
        let admission = Admission::new(config());
        drop(admission.admit(&write("a", 10_000)).unwrap());
        assert!(admission.admit(&write("a", 1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_teams_are_forgotten() {
        let admission = Admission::new(config());
        for i in 0..=SWEEP_ABOVE {
            drop(admission.admit(&write(&format!("t{i}"), 0)).unwrap());
        }
        // Nothing in flight, buckets full: the next admission sweeps them.
        drop(admission.admit(&write("last", 0)).unwrap());
        assert!(
            admission.tracked_teams() <= 2,
            "{}",
            admission.tracked_teams()
        );
        let status = admission.admit(&write("last", 0)).map(drop);
        assert!(status.is_ok());
    }

    #[test]
    fn the_status_carries_the_hint() {
        let status = Throttled {
            reason: Reason::TeamWriteRate,
            message: "team \"a\" writes too much".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER_MS).unwrap(), "1500");
        assert!(status.message().contains("retry in 1500 ms"));
    }
}
