//! Large files that belong to a job: its attachments (uploaded by the submitter, read by the agent)
//! and its artifacts (uploaded by the agent, read by the submitter).
//!
//! They are streamed in and out, never held in memory whole, and a write either stores the whole
//! file or nothing: a reader sees the previous version or the new one. A write over the size
//! limit is refused without storing anything.

use super::StoreError;
use broker_schema::Millis;
use bytes::Bytes;
use futures::Stream;
use std::fmt;
use std::pin::Pin;
use uuid::Uuid;

/// A stream of bytes in or out of the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Size of the pieces a blob is stored in (GridFS's default: under 16 MiB documents, and small
/// enough to stream).
pub const BLOB_CHUNK: usize = 255 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// The job's attachments archive (tar.gz, `<phase>/<path>` inside).
    Attachments,
    /// The `artifacts/` folder the agent packed at the end of the run (tar.gz).
    Artifact,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Attachments => "attachments",
            BlobKind::Artifact => "artifact",
        }
    }
}

/// Which blob: one of each kind per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobName {
    pub kind: BlobKind,
    pub job_id: Uuid,
}

impl BlobName {
    pub fn attachments(job_id: Uuid) -> Self {
        BlobName {
            kind: BlobKind::Attachments,
            job_id,
        }
    }

    pub fn artifact(job_id: Uuid) -> Self {
        BlobName {
            kind: BlobKind::Artifact,
            job_id,
        }
    }
}

/// The stored name: `attachments/<job_id>`, `artifact/<job_id>`.
impl fmt::Display for BlobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.job_id)
    }
}

/// What is known about a stored blob without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub stored_at: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload went past the limit; nothing was stored.
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The data could not be read (the client went away); nothing was stored.
    #[error("reading the upload failed: {0}")]
    Source(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}
