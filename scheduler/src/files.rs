//! How agents move a job's files (attachments in, artifacts out) without an API client of
//! their own: with `--gateway-url` and the gateway's token key, every lease grant and renewal
//! carries the gateway's URL and a token for that job's attempt and those two operations only,
//! expiring with the lease ([`broker_schema::job_files`]).
//!
//! And the fact the rule that goes with it needs ([`fetches_files`]): a job with attachments is
//! never leased to an agent that could not fetch them ([`crate::lifecycle`]). Without a grant's
//! credential, only an agent with a gateway client of its own (`server_address`) can; any other
//! agent is told `not_ready` and passes the job on, so the job waits for one that can (see
//! `docs/operations.md`).

use crate::core::Core;
use broker_schema::Millis;
use broker_schema::job_files::{JobFiles, JobFilesKey};
use broker_schema::messages::LeaseRequest;
use uuid::Uuid;

/// Where the gateway is, as agents reach it, and the key its tokens are signed with.
#[derive(Clone, Debug)]
pub struct FilesAccess {
    /// Base URL, without a trailing slash.
    pub url: String,
    pub key: JobFilesKey,
}

impl FilesAccess {
    pub fn new(url: &str, signing_key: &[u8]) -> FilesAccess {
        FilesAccess {
            url: url.trim().trim_end_matches('/').to_owned(),
            key: JobFilesKey::new(signing_key),
        }
    }
}

/// The files credential for `job_id`'s `attempt`, valid until `lease_until`; `None` when this
/// scheduler was not told where the gateway is.
pub fn grant(core: &Core, job_id: Uuid, attempt: u32, lease_until: Millis) -> Option<JobFiles> {
    let access = core.config.files.as_ref()?;
    Some(JobFiles {
        url: access.url.clone(),
        token: access.key.issue(job_id, attempt, Millis::now(), lease_until),
        until: lease_until,
    })
}

/// Whether the asking agent could fetch a job's attachments: with a grant's credential, or a
/// gateway client of its own. What follows for a job with attachments is the lifecycle's
/// ([`crate::lifecycle::Cause::LeaseAsked`]).
pub fn fetches_files(core: &Core, req: &LeaseRequest) -> bool {
    req.fetches_files != Some(false) || core.config.files.is_some()
}
