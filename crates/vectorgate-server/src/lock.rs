//! The data directory lock, `<data_dir>/vectorgate.lock`, and the journal
//! lock, `<journal>.lock`.
//!
//! `vectorgate serve` holds an exclusive advisory lock on both for as long
//! as it runs, and so does an offline `vectorgate resync --config`: two
//! processes never share the embedded stores of one data directory, nor a
//! journal, even one configured outside the data directory. The lock is the operating system's (`flock` on Linux, through
//! [`std::fs::File::try_lock`]), so it is released when its holder exits,
//! however it exits: a lock file left behind by a killed process does not
//! block anyone. The file itself is never removed (removing a lock file is
//! racy); it holds the holder's pid and role, for error messages.

use anyhow::Context;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "vectorgate.lock";

/// A held lock; released on drop (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    path: PathBuf,
    role: String,
    // Holds the lock until dropped.
    file: File,
}

impl LockError {
    /// The holder's gRPC address, when the holder is a server that noted it.
    pub fn holder_addr(&self) -> Option<&str> {
        match self {
            LockError::Held {
                holder: Some(holder),
                ..
            } => holder
                .split_whitespace()
                .find_map(|word| word.strip_prefix("addr=")),
            _ => None,
        }
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it (`pid 123 serve`), if readable.
        holder: Option<String>,
    },
    /// The file could not be created or locked.
    Io(anyhow::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { path, holder } => {
                write!(
                    f,
                    "{} is locked by another vectorgate process",
                    path.display()
                )?;
                if let Some(holder) = holder {
                    write!(f, " ({holder})")?;
                }
                Ok(())
            }
            LockError::Io(error) => write!(f, "{error:#}"),
        }
    }
}

impl std::error::Error for LockError {}

impl DataDirLock {
    /// Creates `data_dir` if needed and takes the lock without waiting;
    /// `role` (`serve`, `resync`) is written into the file with the pid.
    pub fn acquire(data_dir: &Path, role: &str) -> Result<DataDirLock, LockError> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))
            .map_err(LockError::Io)?;
        DataDirLock::acquire_file(data_dir.join(LOCK_FILE), role)
    }

    /// Takes `<journal>.lock` for the journal at `journal`: a journal may
    /// live outside the data directory (`journal_path`), and two processes
    /// must never share one whatever their data directories.
    pub fn acquire_journal(journal: &Path, role: &str) -> Result<DataDirLock, LockError> {
        if let Some(parent) = journal.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| {
                    format!("cannot create the journal's directory {}", parent.display())
                })
                .map_err(LockError::Io)?;
        }
        let mut path = journal.as_os_str().to_owned();
        path.push(".lock");
        DataDirLock::acquire_file(PathBuf::from(path), role)
    }

    fn acquire_file(path: PathBuf, role: &str) -> Result<DataDirLock, LockError> {
        // Not truncated on open: the holder's line stays readable for the
        // error message of whoever fails to take the lock.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|text| text.trim().to_owned())
                    .filter(|text| !text.is_empty());
                return Err(LockError::Held { path, holder });
            }
            Err(TryLockError::Error(error)) => {
                return Err(LockError::Io(
                    anyhow::Error::new(error).context(format!("cannot lock {}", path.display())),
                ));
            }
        }
        let mut lock = DataDirLock {
            path,
            role: role.to_owned(),
            file,
        };
        lock.describe("");
        Ok(lock)
    }

    /// Rewrites the holder's line as `pid <pid> <role> <detail>` (the
    /// server adds `addr=<its gRPC address>` once it listens).
    pub fn describe(&mut self, detail: &str) {
        let line = format!("pid {} {} {detail}", std::process::id(), self.role);
        let line = line.trim_end().to_owned() + "\n";
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(line.as_bytes(), 0))
            .and_then(|()| self.file.flush());
        if let Err(error) = written {
            // The lock is what matters; the text is only informative.
            tracing::warn!(path = %self.path.display(), %error, "cannot write the lock file");
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data, "serve").unwrap();
        assert_eq!(first.path(), data.join(LOCK_FILE));
        // Another open file description of the same file conflicts, as
        // another process's would.
        match DataDirLock::acquire(&data, "resync") {
            Err(LockError::Held { holder, .. }) => {
                let holder = holder.unwrap();
                assert!(holder.contains("serve"), "{holder}");
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        // The journal has its own lock, wherever it lives.
        let journal = dir.path().join("elsewhere/journal.db");
        let held = DataDirLock::acquire_journal(&journal, "serve").unwrap();
        assert_eq!(held.path(), dir.path().join("elsewhere/journal.db.lock"));
        assert!(matches!(
            DataDirLock::acquire_journal(&journal, "serve"),
            Err(LockError::Held { .. })
        ));
        drop(held);
        DataDirLock::acquire_journal(&journal, "resync").unwrap();
        let mut second = DataDirLock::acquire(&data, "resync").unwrap();
        let text = std::fs::read_to_string(second.path()).unwrap();
        assert_eq!(text, format!("pid {} resync\n", std::process::id()));
        second.describe("addr=http://127.0.0.1:1");
        second.describe("addr=http://127.0.0.1:2");
        let text = std::fs::read_to_string(second.path()).unwrap();
        assert_eq!(
            text,
            format!(
                "pid {} resync addr=http://127.0.0.1:2\n",
                std::process::id()
            )
        );
    }
}
