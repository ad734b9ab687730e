//! Backing up the embedded store while the lab runs (`flinger-scheduler backup PATH`).
//!
//! SQLite's `VACUUM INTO` writes a compact copy of the database as one read transaction: in WAL
//! mode the lab's writers go on while it runs, and the copy is the database as it was when the
//! transaction began — consistent, whatever was being written. Restoring is starting the lab on
//! the copy (`docs/operations.md`). MongoDB is backed up with its own tools (`mongodump`), so a
//! MongoDB store is refused here with a pointer to them.
//!
//! This module never writes to the store it backs up, and never overwrites an existing file.

use super::{StoreConfig, StoreError, StoreResult};
use std::path::{Path, PathBuf};
use tokio_rusqlite::rusqlite::{self, OpenFlags};

/// What a backup wrote, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub bytes: u64,
    /// Jobs in the copy, read back from it (the copy opens and answers).
    pub jobs: u64,
}

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "a MongoDB store is backed up with MongoDB's own tools: `mongodump --uri URI --db {database}`, \
         restored with `mongorestore` (see docs/operations.md, \"Backup and restore\")"
    )]
    Mongo { database: String },
    #[error("{0} already exists: a backup never overwrites a file")]
    Exists(PathBuf),
    #[error("{0} is not a Flinger store (no such file, or no jobs table)")]
    NotAStore(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreConfig {
    /// Writes a consistent copy of the store to `dest` while other processes use it.
    pub async fn backup(&self, dest: &Path) -> Result<BackupSummary, BackupError> {
        match self {
            StoreConfig::Mongo { database, .. } => Err(BackupError::Mongo {
                database: database.clone(),
            }),
            StoreConfig::Sqlite { path } => {
                let (src, dest) = (path.clone(), dest.to_owned());
                tokio::task::spawn_blocking(move || backup_sqlite(&src, &dest))
                    .await
                    .map_err(|e| StoreError::Other(format!("backup task: {e}")))?
            }
        }
    }
}

fn backup_sqlite(src: &Path, dest: &Path) -> Result<BackupSummary, BackupError> {
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    // Never create the source: a mistyped path must not back up an empty new database.
    let c = rusqlite::Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|_| BackupError::NotAStore(src.to_owned()))?;
    c.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(StoreError::from)?;
    if count_jobs(&c).is_err() {
        return Err(BackupError::NotAStore(src.to_owned()));
    }
    let dest_str = dest
        .to_str()
        .ok_or_else(|| StoreError::Other(format!("{} is not valid UTF-8", dest.display())))?;
    c.execute("VACUUM INTO ?1", [dest_str])
        .map_err(StoreError::from)?;
    drop(c);
    let copy = rusqlite::Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(StoreError::from)?;
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(StoreError::from)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!("the copy fails its check: {check}")).into());
    }
    let jobs = count_jobs(&copy)?;
    let bytes = std::fs::metadata(dest)
        .map_err(|e| StoreError::Other(format!("{}: {e}", dest.display())))?
        .len();
    Ok(BackupSummary {
        path: dest.to_owned(),
        bytes,
        jobs,
    })
}

fn count_jobs(c: &rusqlite::Connection) -> StoreResult<u64> {
    let n: i64 = c.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?;
    Ok(n as u64)
}
