//! Resync as the server runs it, online (`AdminService.Resync`) and offline
//! (`vectorgate resync --config`): the same [`run`] in both.
//!
//! 1. The source must have applied every journaled write first (a copy of
//!    a store that is behind would miss the writes it lacks).
//! 2. [`VectorManager::resync`] copies the pages, with the checkpoint file
//!    `<data_dir>/resync-<from>-<to>.json`, so an interrupted copy resumes
//!    where it stopped when it is asked again; the target is out of
//!    rotation meanwhile, and afterwards replays the journal from where the
//!    copy began.
//! 3. The verification waits until the target has replayed the journal,
//!    then counts each team in both stores directly (not through the
//!    manager's routing). The library's own counts are taken right after
//!    the copy, before that replay, so writes arriving during the copy
//!    would show as differences there. Under live writes, a count can
//!    still fall between a write reaching the source and the target: a
//!    difference is recounted a few times before it is reported.
//!    A difference that remains is reported, never hidden.

use crate::proto;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use vectorgate::resync::{ResyncOptions, ResyncProgress, TeamCount};
use vectorgate::{CountScope, DynStore, Error, VectorManager};

/// How long the source may take to apply the journal before a resync
/// starts.
pub const SOURCE_WAIT: Duration = Duration::from_secs(10);
/// How long the verification waits for the target to replay the journal.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// Recounts of teams whose counts differ (live writes), each after the
/// target caught up again.
const RECOUNTS: u32 = 5;
const POLL: Duration = Duration::from_millis(20);

/// The checkpoint of a copy from `from` to `to`.
pub fn checkpoint_path(data_dir: &Path, from: &str, to: &str) -> PathBuf {
    data_dir.join(format!("resync-{from}-{to}.json"))
}

/// The stores the manager runs, by name, for direct per-store counts.
#[derive(Clone, Default)]
pub struct Stores(Arc<Vec<DynStore>>);

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Stores {
    /// The stores, in priority order.
    pub fn new(stores: Vec<DynStore>) -> Stores {
        Stores(Arc::new(stores))
    }

    /// The store named `name`.
    pub fn get(&self, name: &str) -> Option<&DynStore> {
        self.0.iter().find(|s| s.name() == name)
    }

    /// Every store's name, in priority order.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|s| s.name()).collect()
    }
}

/// A checked resync request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Source store.
    pub from: String,
    /// Target store.
    pub to: String,
    /// Records per page.
    pub page_size: u32,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
}

impl Plan {
    /// Checks the names and the page size (errors name the field).
    pub fn new(
        stores: &Stores,
        data_dir: &Path,
        from: &str,
        to: &str,
        page_size: Option<u32>,
    ) -> Result<Plan, Error> {
        for (field, name) in [("from", from), ("to", to)] {
            if stores.get(name).is_none() {
                return Err(Error::invalid(
                    field,
                    format!("no store named {name:?}; stores are {:?}", stores.names()),
                ));
            }
        }
        if from == to {
            return Err(Error::invalid("to", "must be another store than `from`"));
        }
        let max = vectorgate::validate::MAX_UPSERT_BATCH as u32;
        let page_size = page_size.unwrap_or(max);
        if page_size == 0 || page_size > max {
            return Err(Error::invalid(
                "page_size",
                format!("is {page_size}, must be 1..={max}"),
            ));
        }
        Ok(Plan {
            from: from.to_owned(),
            to: to.to_owned(),
            page_size,
            checkpoint: checkpoint_path(data_dir, from, to),
        })
    }
}

/// What a resync did, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Records this run copied.
    pub copied_now: u64,
    /// Records copied in all, across resumptions.
    pub copied: u64,
    /// Journal entries committed while the pages were copied.
    pub journal_entries_during_copy: u64,
    /// The target had replayed the journal when counted.
    pub caught_up: bool,
    /// Per-team counts of both stores.
    pub teams: Vec<TeamCount>,
}

impl Outcome {
    /// Teams whose counts differ.
    pub fn mismatches(&self) -> Vec<&TeamCount> {
        self.teams.iter().filter(|t| t.source != t.target).collect()
    }

    /// The result message of the stream.
    pub fn to_proto(&self) -> proto::ResyncResult {
        proto::ResyncResult {
            copied_now: self.copied_now,
            copied: self.copied,
            journal_entries_during_copy: self.journal_entries_during_copy,
            caught_up: self.caught_up,
            teams: self.teams.iter().map(team_to_proto).collect(),
            mismatched_teams: self.mismatches().len() as u32,
        }
    }
}

fn team_to_proto(team: &TeamCount) -> proto::TeamCount {
    proto::TeamCount {
        team_id: team.team_id.clone(),
        source: team.source,
        target: team.target,
    }
}

/// A progress message of the stream.
pub fn progress_to_proto(progress: &ResyncProgress) -> proto::ResyncProgress {
    proto::ResyncProgress {
        copied: progress.copied,
        total: progress.total,
        done: progress.done,
        result: None,
    }
}

fn replicating(manager: &VectorManager) -> bool {
    manager.status().replication != "off"
}

/// True once `store` has applied every committed journal entry.
fn caught_up(manager: &VectorManager, store: &str) -> bool {
    manager
        .status()
        .store(store)
        .is_some_and(|s| s.in_sync && s.lag_entries == 0)
}

/// Polls until `store` caught up with the journal or `wait` passed.
async fn wait_caught_up(manager: &VectorManager, store: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if caught_up(manager, store) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (at most [`SOURCE_WAIT`]) until the source applied every
/// journaled write; the error explains why the resync may not start.
pub async fn source_ready(manager: &VectorManager, from: &str) -> Result<(), String> {
    if wait_caught_up(manager, from, SOURCE_WAIT).await {
        return Ok(());
    }
    let status = manager.status();
    let detail = status.store(from).map_or_else(String::new, |s| {
        format!(
            " (in sync: {}, {} journal entries behind, breaker {}, last probe error: {})",
            s.in_sync,
            s.lag_entries,
            s.breaker.as_str(),
            s.last_probe_error.as_deref().unwrap_or("none")
        )
    });
    Err(format!(
        "the source store {from:?} has not applied every journaled write{detail}; a copy of it would miss them. Wait until `vectorgate status` shows it in sync (or fix it), then resync"
    ))
}

/// Copies, replays and verifies (see the module docs), calling
/// `on_progress` after every page. Call [`source_ready`] first.
pub async fn run(
    manager: &VectorManager,
    stores: &Stores,
    plan: &Plan,
    mut on_progress: impl FnMut(&ResyncProgress),
) -> Result<Outcome, Error> {
    let (Some(source), Some(target)) = (stores.get(&plan.from), stores.get(&plan.to)) else {
        return Err(Error::invalid("from", "unknown store"));
    };
    let options = ResyncOptions {
        page_size: plan.page_size,
        checkpoint: Some(plan.checkpoint.clone()),
        ..ResyncOptions::default()
    };
    let committed_before = manager.status().committed_seq;
    let mut committed_after = None;
    tracing::info!(from = %plan.from, to = %plan.to, page_size = plan.page_size, checkpoint = %plan.checkpoint.display(), "resync started");
    let report = manager
        .resync(&plan.from, &plan.to, &options, |progress| {
            if progress.done && committed_after.is_none() {
                committed_after = Some(manager.status().committed_seq);
            }
            on_progress(progress);
        })
        .await?;
    let committed_after = committed_after.unwrap_or_else(|| manager.status().committed_seq);
    tracing::info!(from = %plan.from, to = %plan.to, copied = report.copied, copied_now = report.copied_now, "resync: pages copied; verifying");

    let replicating = replicating(manager);
    let drained = manager.status().store(&plan.to).is_some_and(|s| s.drained);
    if drained && replicating {
        tracing::warn!(store = %plan.to, "resync target is drained by an operator: it replays the journal once returned to rotation (resume-auto); counts are taken now");
    }
    let mut caught_up =
        !replicating || (!drained && wait_caught_up(manager, &plan.to, CATCH_UP_WAIT).await);
    let mut teams = Vec::with_capacity(report.teams.len());
    for team in &report.teams {
        teams.push(count_team(source, target, &team.team_id).await?);
    }
    for _ in 0..RECOUNTS {
        if !replicating || !caught_up || teams.iter().all(|t| t.source == t.target) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        caught_up = wait_caught_up(manager, &plan.to, CATCH_UP_WAIT).await;
        for team in teams.iter_mut().filter(|t| t.source != t.target) {
            *team = count_team(source, target, &team.team_id).await?;
        }
    }
    let outcome = Outcome {
        copied_now: report.copied_now,
        copied: report.copied,
        journal_entries_during_copy: committed_after.saturating_sub(committed_before),
        caught_up,
        teams,
    };
    let mismatches = outcome.mismatches().len();
    if mismatches == 0 {
        tracing::info!(from = %plan.from, to = %plan.to, teams = outcome.teams.len(), copied = outcome.copied, "resync done: every team's counts match");
    } else {
        tracing::warn!(from = %plan.from, to = %plan.to, mismatches, caught_up, "resync done: some teams' counts differ");
    }
    Ok(outcome)
}

async fn count_team(source: &DynStore, target: &DynStore, team: &str) -> Result<TeamCount, Error> {
    let scope = CountScope {
        team_id: Some(team.to_owned()),
        ..CountScope::default()
    };
    // Target first: a write lands on the source before the target, so a
    // write between the two counts shows as source > target, which the
    // recount then resolves.
    let target = target.count(&scope).await?;
    let source = source.count(&scope).await?;
    Ok(TeamCount {
        team_id: team.to_owned(),
        source,
        target,
    })
}

/// Logs every unfinished copy left in `data_dir` (a resync interrupted by
/// a restart): its target is incomplete until the resync is asked again.
pub fn warn_about_unfinished(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("resync-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(progress) = serde_json::from_str::<ResyncProgress>(&text)
            && !progress.done
        {
            tracing::warn!(
                from = %progress.from,
                to = %progress.to,
                copied = progress.copied,
                total = progress.total,
                checkpoint = %entry.path().display(),
                "an interrupted resync left store {:?} incomplete; run `vectorgate resync --from {} --to {}` to finish it (it resumes from the checkpoint)",
                progress.to, progress.from, progress.to
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn checkpoints_are_named_after_the_pair() {
        assert_eq!(
            checkpoint_path(Path::new("/d"), "pg", "local"),
            PathBuf::from("/d/resync-pg-local.json")
        );
    }

    #[test]
    fn unfinished_checkpoints_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let progress = ResyncProgress {
            from: "a".into(),
            to: "b".into(),
            copied: 10,
            total: 20,
            ..ResyncProgress::default()
        };
        std::fs::write(
            checkpoint_path(dir.path(), "a", "b"),
            serde_json::to_string(&progress).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("resync-x-y.json"), "not json").unwrap();
        // Only logs; it must not fail on anything it finds.
        warn_about_unfinished(dir.path());
        warn_about_unfinished(&dir.path().join("missing"));
    }
}
