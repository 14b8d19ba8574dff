//! Copying every record of one store into another: how a fallback is added
//! to an existing deployment, or data is migrated between backends.
//!
//! [`copy_store`] walks the source with `scan` (id order, with vectors) and
//! upserts each page into the target. After every page it writes a small
//! checkpoint file (atomically: write, fsync, rename), so an interrupted copy
//! resumes after the last page it finished instead of starting over. At the
//! end it compares per-team counts of both stores. Records the target holds
//! but the source does not (a stale target, e.g. one that missed deletes)
//! are deleted as the copy passes their ids, so the target ends equal to
//! the source, not a superset of it.
//!
//! On its own, a copy does not see writes that land on the source while it
//! runs. [`crate::VectorManager::resync`] covers them: it holds the target out
//! of rotation, notes the journal's sequence number before copying, and
//! afterwards replays every journal entry from there into the target, in
//! order, so records copied in an older version are overwritten with the
//! newer one.

use crate::error::{Error, Result};
use crate::model::{CountScope, DeleteSelector, ScanRequest};
use crate::store::VectorStore;
use crate::validate::MAX_UPSERT_BATCH;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncOptions {
    /// Records per scan page (and per upsert), 1..=1000. Default 1000.
    pub page_size: u32,
    /// Where to keep the resume point. `None`: not resumable.
    pub checkpoint: Option<PathBuf>,
    /// Attempts per page on transient errors before giving up. Default 5.
    pub attempts: u32,
    /// One store call slower than this counts as a transient error (a hung
    /// store must not stall a resync forever). Default 30 s.
    pub call_timeout: Duration,
}

impl Default for ResyncOptions {
    fn default() -> Self {
        ResyncOptions {
            page_size: 1000,
            checkpoint: None,
            attempts: 5,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a copy stands, as reported after every page and saved in the
/// checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResyncProgress {
    /// Source store name (a checkpoint is only resumed for the same pair).
    pub from: String,
    /// Target store name.
    pub to: String,
    /// Last id copied; the next page starts after it.
    pub cursor: Option<String>,
    /// Records copied so far (across resumptions).
    pub copied: u64,
    /// Records in the source when the copy began (for progress and ETA).
    pub total: u64,
    /// Teams seen so far, for the final per-team check.
    pub teams: BTreeSet<String>,
    /// True once every page was copied.
    pub done: bool,
}

/// One team's counts after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamCount {
    /// The team.
    pub team_id: String,
    /// Records in the source.
    pub source: u64,
    /// Records in the target.
    pub target: u64,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncReport {
    /// Records copied by this run (a resumed run counts only its part).
    pub copied_now: u64,
    /// Records copied in all (across resumptions).
    pub copied: u64,
    /// Per-team counts of both stores, every team seen.
    pub teams: Vec<TeamCount>,
}

impl ResyncReport {
    /// Teams whose counts differ.
    pub fn mismatches(&self) -> Vec<&TeamCount> {
        self.teams.iter().filter(|t| t.source != t.target).collect()
    }
}

fn load_checkpoint(path: &Path, from: &str, to: &str) -> Result<Option<ResyncProgress>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::internal(
                "resync",
                format!("cannot read checkpoint {}: {e}", path.display()),
            ));
        }
    };
    let progress: ResyncProgress = serde_json::from_str(&text).map_err(|e| {
        Error::internal(
            "resync",
            format!("checkpoint {} is corrupt: {e}", path.display()),
        )
    })?;
    if progress.from != from || progress.to != to {
        return Err(Error::invalid(
            "checkpoint",
            format!(
                "{} belongs to a copy from {:?} to {:?}, not from {from:?} to {to:?}; remove it to start over",
                path.display(),
                progress.from,
                progress.to
            ),
        ));
    }
    Ok(Some(progress))
}

fn save_checkpoint(path: &Path, progress: &ResyncProgress) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        Error::internal(
            "resync",
            format!("cannot write checkpoint {}: {e}", path.display()),
        )
    };
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(progress)
        .map_err(|e| Error::internal("resync", format!("cannot encode checkpoint: {e}")))?;
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(&text).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Retries a call on transient errors, with doubling waits.
async fn with_retries<T, F, Fut>(options: &ResyncOptions, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let outcome = tokio::time::timeout(options.call_timeout, call())
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(
                    "resync",
                    format!(
                        "a store call took over {} ms",
                        options.call_timeout.as_millis()
                    ),
                ))
            });
        match outcome {
            Err(error) if error.is_retriable() && attempt < options.attempts => {
                tracing::warn!(%error, attempt, "resync: transient error, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Deletes the records of `to` with ids in `(after, through]` (`through`
/// `None`: to the end) whose (id, team) is not in `keep`. A record the
/// source holds under another team is an extra too: it is deleted before
/// the page is copied, or the target would refuse the copy (an id belongs
/// to one team).
async fn delete_extras(
    to: &dyn VectorStore,
    after: Option<&str>,
    through: Option<&str>,
    keep: &BTreeSet<(&str, &str)>,
    options: &ResyncOptions,
) -> Result<()> {
    let mut cursor = after.map(str::to_owned);
    loop {
        let request = ScanRequest {
            after_id: cursor.clone(),
            limit: options.page_size,
            ..Default::default()
        };
        let page = with_retries(options, || to.scan(&request)).await?;
        let mut extras: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut past_end = false;
        for record in &page.records {
            if through.is_some_and(|end| record.id.as_str() > end) {
                past_end = true;
                break;
            }
            if !keep.contains(&(record.id.as_str(), record.team_id.as_str())) {
                extras
                    .entry(record.team_id.clone())
                    .or_default()
                    .push(record.id.clone());
            }
        }
        for (team_id, ids) in extras {
            for ids in ids.chunks(crate::validate::MAX_DELETE_IDS) {
                let selector = DeleteSelector::Ids {
                    team_id: team_id.clone(),
                    ids: ids.to_vec(),
                };
                with_retries(options, || to.delete(&selector)).await?;
            }
        }
        match page.next_cursor {
            Some(next) if !past_end => cursor = Some(next),
            _ => return Ok(()),
        }
    }
}

/// Per-team record counts of `teams` in both stores.
pub async fn compare_counts(
    from: &dyn VectorStore,
    to: &dyn VectorStore,
    teams: &[String],
    options: &ResyncOptions,
) -> Result<Vec<TeamCount>> {
    let mut counts = Vec::with_capacity(teams.len());
    for team in teams {
        let scope = CountScope {
            team_id: Some(team.clone()),
            ..Default::default()
        };
        counts.push(TeamCount {
            team_id: team.clone(),
            source: with_retries(options, || from.count(&scope)).await?,
            target: with_retries(options, || to.count(&scope)).await?,
        });
    }
    Ok(counts)
}

/// Copies every record of `from` into `to` (see the module docs), calling
/// `on_progress` after every page. Resumes from `options.checkpoint` if it
/// holds an unfinished copy of the same pair.
pub async fn copy_store(
    from: &dyn VectorStore,
    to: &dyn VectorStore,
    options: &ResyncOptions,
    mut on_progress: impl FnMut(&ResyncProgress),
) -> Result<ResyncReport> {
    if options.page_size == 0 || options.page_size as usize > MAX_UPSERT_BATCH {
        return Err(Error::invalid(
            "page_size",
            format!("is {}, must be 1..={MAX_UPSERT_BATCH}", options.page_size),
        ));
    }
    let resumed = match &options.checkpoint {
        Some(path) => load_checkpoint(path, from.name(), to.name())?.filter(|p| !p.done),
        None => None,
    };
    let mut progress = match resumed {
        Some(progress) => {
            tracing::info!(copied = progress.copied, cursor = ?progress.cursor, "resync: resuming");
            progress
        }
        None => {
            let everything = CountScope::default();
            ResyncProgress {
                from: from.name().to_owned(),
                to: to.name().to_owned(),
                total: with_retries(options, || from.count(&everything)).await?,
                ..Default::default()
            }
        }
    };
    let mut copied_now = 0;
    loop {
        let request = ScanRequest {
            after_id: progress.cursor.clone(),
            limit: options.page_size,
            with_vectors: true,
            ..Default::default()
        };
        let page = with_retries(options, || from.scan(&request)).await?;
        let through = if page.next_cursor.is_none() {
            None
        } else {
            page.records.last().map(|r| r.id.clone())
        };
        let keep: BTreeSet<(&str, &str)> = page
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.team_id.as_str()))
            .collect();
        delete_extras(
            to,
            progress.cursor.as_deref(),
            through.as_deref(),
            &keep,
            options,
        )
        .await?;
        if !page.records.is_empty() {
            with_retries(options, || to.upsert(&page.records)).await?;
            copied_now += page.records.len() as u64;
            progress.copied += page.records.len() as u64;
            progress
                .teams
                .extend(page.records.iter().map(|r| r.team_id.clone()));
        }
        progress.cursor = page
            .records
            .last()
            .map(|r| r.id.clone())
            .or(progress.cursor);
        progress.done = page.next_cursor.is_none();
        if let Some(path) = &options.checkpoint {
            save_checkpoint(path, &progress)?;
        }
        on_progress(&progress);
        if progress.done {
            break;
        }
    }

    let teams: Vec<String> = progress.teams.iter().cloned().collect();
    let teams = compare_counts(from, to, &teams, options).await?;
    Ok(ResyncReport {
        copied_now,
        copied: progress.copied,
        teams,
    })
}
