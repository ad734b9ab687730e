//! The store: where the lab's state lives. Two backends (SQLite embedded, MongoDB) behind two
//! traits, and one contract suite (this crate's `tests/contract.rs`, test-only code) that both
//! backends pass.
//!
//! Jobs are single documents changed only through [`SchedulerStore::update_job`]: an atomic
//! compare-and-set whose precondition carries the expected state, so concurrent schedulers
//! cannot both win a transition. "Only the scheduler writes job state" is a type boundary: the
//! gateway opens the store with [`StoreConfig::open`], a [`Store`] that can read, insert new
//! jobs and discard jobs it never accepted, but has no `update_job`; the scheduler opens it with
//! [`StoreConfig::open_for_scheduler`].
//!
//! Besides jobs, output and agents, the store keeps small versioned documents ([`docs`]: clients,
//! tokens, secrets, restricted queues, …, whose meaning lives in [`records`]), large streamed
//! files ([`blobs`]: attachments and artifacts), and seals secrets at rest ([`sealing`]).
//!
//! **Architecture invariant:** this crate knows nothing about the broker's runtime, HTTP, leases
//! or the job lifecycle's rules; it stores what it is told, under the preconditions it is given.

pub mod backup;
mod blobs;
mod docs;
mod model;
mod query;
pub mod records;
mod update;

pub mod mongo;
pub mod sealing;
pub mod sqlite;

pub use backup::{BackupError, BackupSummary};
pub use blobs::{BLOB_CHUNK, BlobError, BlobInfo, BlobKind, BlobName, ByteStream};
pub use docs::{Doc, DocKind};
pub use model::{AgentRecord, AttemptRecord, JobRecord, Lease, OutputFragment, Reservation, ShippedOutput};
pub use query::{JobCount, JobOrder, JobQuery, OutputQuery};
pub use records::Records;
pub use records::{
    ClientRecord, DevicePoll, PendingSignOnRecord, PostedResultRecord, ProvisionEntry, ProvisionLogRecord,
    QueueRecord, RefreshTokenRecord, RestrictedQueueRecord, RetentionSettingsRecord, Revoked, Role,
    SecretRecord, SignOnFlow, secret_id,
};
pub use update::{JobUpdate, Precondition, StateChange};

use async_trait::async_trait;
use broker_schema::messages::{AdminState, Heartbeat, LogStream};
use broker_schema::{AgentName, Millis};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out: worth retrying with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be read back (schema drift, manual edits).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of inserting a job that may already exist (submissions are idempotent by `job_id`).
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    New,
    Existing(Box<JobRecord>),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    // ----- jobs

    /// Inserts a job unless one with its id exists (then returns that one, unchanged).
    async fn insert_job(&self, job: &JobRecord) -> StoreResult<Inserted>;

    async fn get_job(&self, job_id: Uuid) -> StoreResult<Option<JobRecord>>;

    /// Deletes a job that was never accepted: only if it is still `waiting` and was never seen
    /// on the broker. Returns whether it was deleted.
    async fn discard_job(&self, job_id: Uuid) -> StoreResult<bool>;

    async fn find_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRecord>>;

    /// How many jobs `find_jobs` would return for `query` (its `limit` caps the count).
    async fn count_jobs(&self, query: &JobQuery) -> StoreResult<u64>;

    /// How many jobs are in each live state (every state but `complete`, `cancelled` and
    /// `failed`), by queue; pairs with none are left out. One query, whose cost grows with the
    /// live jobs only, not the ended ones a large store keeps (for metrics' gauges).
    async fn count_live_jobs(&self) -> StoreResult<Vec<JobCount>>;

    // ----- output

    /// Stores fragments; a fragment whose key (job_id, attempt, stream, seq) is already stored
    /// is ignored, so redelivered chunks are harmless.
    async fn append_output(&self, fragments: &[OutputFragment]) -> StoreResult<()>;

    /// Fragments in `seq` order.
    async fn read_output(&self, query: &OutputQuery) -> StoreResult<Vec<OutputFragment>>;

    /// How many distinct fragments of a run's stream are stored.
    async fn count_output(&self, job_id: Uuid, attempt: u32, stream: LogStream) -> StoreResult<u64>;

    // ----- agents

    /// Records a heartbeat: creates the agent or updates what it reports, keeping the admin's
    /// decisions (`admin_state`, `admin_comment`). A heartbeat older (by its `at`) than the one
    /// recorded changes nothing; the stored record is returned either way.
    async fn record_heartbeat(&self, hb: &Heartbeat) -> StoreResult<AgentRecord>;

    /// Records an admin's decision about an agent, creating a placeholder record (state
    /// offline, never seen) if the agent has not reported yet. Semantics of
    /// [`AgentRecord::set_admin`]: `None` clears the decision, an empty comment clears the comment.
    async fn set_agent_admin(
        &self,
        name: &AgentName,
        state: Option<AdminState>,
        comment: &str,
        now: Millis,
    ) -> StoreResult<AgentRecord>;

    async fn get_agent(&self, name: &AgentName) -> StoreResult<Option<AgentRecord>>;

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>>;

    // ----- small documents (see [`docs`]; their meaning is in [`records`])

    async fn get_doc(&self, kind: DocKind, id: &str) -> StoreResult<Option<Doc>>;

    /// Writes `body` under (`kind`, `id`) if the stored version is `expected` (`None`: only if no
    /// such document exists), atomically. Returns the new version, or `None` when the
    /// expectation did not hold and nothing was written.
    async fn put_doc(
        &self,
        kind: DocKind,
        id: &str,
        expected: Option<u64>,
        body: &serde_json::Value,
    ) -> StoreResult<Option<u64>>;

    /// Deletes the document if its version is `expected` (`None`: whatever its version).
    /// Returns whether a document was deleted.
    async fn delete_doc(&self, kind: DocKind, id: &str, expected: Option<u64>) -> StoreResult<bool>;

    /// Every document of `kind` whose id starts with `prefix`, in id order.
    async fn list_docs(&self, kind: DocKind, prefix: &str) -> StoreResult<Vec<Doc>>;

    // ----- blobs (see [`blobs`])

    /// Streams `data` into the blob, replacing the previous one only once all of it is stored.
    /// More than `max_bytes` is refused ([`BlobError::TooLarge`]) and stores nothing.
    async fn put_blob(
        &self,
        name: &BlobName,
        data: ByteStream,
        max_bytes: u64,
    ) -> Result<BlobInfo, BlobError>;

    async fn blob_info(&self, name: &BlobName) -> StoreResult<Option<BlobInfo>>;

    /// The blob's size and a stream of its bytes, read as the stream is polled.
    async fn open_blob(&self, name: &BlobName) -> StoreResult<Option<(BlobInfo, ByteStream)>>;

    async fn delete_blob(&self, name: &BlobName) -> StoreResult<bool>;
}

/// The store as the scheduler holds it: everything a [`Store`] does, and changing jobs.
#[async_trait]
pub trait SchedulerStore: Store {
    /// Applies `update` if `pre` holds, atomically. Returns the job as it is after the update,
    /// or `None` when the job does not exist or the precondition did not hold.
    async fn update_job(
        &self,
        job_id: Uuid,
        pre: &Precondition,
        update: &JobUpdate,
    ) -> StoreResult<Option<JobRecord>>;

    /// Retention: removes up to `limit` ended jobs (`complete`, `cancelled`, `failed`) last
    /// changed before `ended_before`, with their output, posted results, attachments and
    /// artifacts; with `queue`, only that queue's, and never those of `except_queues`. A job is
    /// removed only if it still matches when deleted, so waiting and running jobs are never
    /// touched, and several schedulers may purge at once (each job is counted by whoever
    /// deleted it). Returns how many jobs this call removed.
    async fn purge_ended_jobs(&self, purge: &Purge) -> StoreResult<u64>;
}

/// One batch of [`SchedulerStore::purge_ended_jobs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purge {
    pub ended_before: Millis,
    /// Only this queue's jobs.
    pub queue: Option<String>,
    /// Never these queues' jobs (they have retention settings of their own).
    pub except_queues: Vec<String>,
    pub limit: u32,
}

/// The states retention may remove.
pub const ENDED_STATES: [&str; 3] = ["complete", "cancelled", "failed"];

/// The store as the gateway (and every reader) holds it: no job-state writes.
pub type DynStore = Arc<dyn Store>;

/// The store as the scheduler holds it (it converts into a [`DynStore`] where only reads are
/// needed).
pub type DynSchedulerStore = Arc<dyn SchedulerStore>;

/// Which store to open, from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// A SQLite file (created if missing).
    Sqlite { path: std::path::PathBuf },
    /// A MongoDB URI and database name.
    Mongo { uri: String, database: String },
}

impl StoreConfig {
    /// Parses `sqlite:PATH` / a bare path, or `mongodb://…` (database from the URI path,
    /// default `flinger`).
    pub fn parse(s: &str) -> Result<StoreConfig, String> {
        if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
            let after_host = s.split_once("://").map(|(_, r)| r).unwrap_or("");
            let db = after_host
                .split_once('/')
                .map(|(_, rest)| rest.split('?').next().unwrap_or(""))
                .filter(|d| !d.is_empty())
                .unwrap_or("flinger");
            return Ok(StoreConfig::Mongo {
                uri: s.to_owned(),
                database: db.to_owned(),
            });
        }
        let path = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .unwrap_or(s);
        if path.is_empty() {
            return Err("empty store path".into());
        }
        Ok(StoreConfig::Sqlite { path: path.into() })
    }

    /// Opens the store for reading and inserting new jobs (the gateway's handle), creating
    /// tables or indexes as needed.
    pub async fn open(&self) -> StoreResult<DynStore> {
        Ok(self.open_for_scheduler().await?)
    }

    /// Opens the store with the right to change jobs: the scheduler's handle.
    pub async fn open_for_scheduler(&self) -> StoreResult<DynSchedulerStore> {
        match self {
            StoreConfig::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
            StoreConfig::Mongo { uri, database } => {
                Ok(Arc::new(mongo::MongoStore::open(uri, database).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_config_parses_both_backends() {
        assert_eq!(
            StoreConfig::parse("mongodb://h:27017/lab?directConnection=true").unwrap(),
            StoreConfig::Mongo {
                uri: "mongodb://h:27017/lab?directConnection=true".into(),
                database: "lab".into()
            }
        );
        assert_eq!(
            StoreConfig::parse("mongodb://h:27017").unwrap(),
            StoreConfig::Mongo {
                uri: "mongodb://h:27017".into(),
                database: "flinger".into()
            }
        );
        assert_eq!(
            StoreConfig::parse("sqlite:/var/lib/f.db").unwrap(),
            StoreConfig::Sqlite {
                path: "/var/lib/f.db".into()
            }
        );
        assert_eq!(
            StoreConfig::parse("/tmp/x.db").unwrap(),
            StoreConfig::Sqlite {
                path: "/tmp/x.db".into()
            }
        );
    }
}
