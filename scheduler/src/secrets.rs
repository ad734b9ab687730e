//! Clients' secrets, resolved when a job is leased.
//!
//! Secrets belong to the client that submitted the job; their values are sealed at rest
//! ([`flinger_store::sealing`]). A secret that cannot be read (unknown, expired, deleted since
//! the submission, sealed under another key, or a job with no known submitter) resolves to the
//! empty string, as in Testflinger: the job runs, and its commands see an empty variable. Values
//! are never logged; they travel only in the lease grant, to the agent. A single-use secret is
//! deleted as it is taken for a lease: a later attempt of the same job (after its agent was
//! lost) sees it empty, as a later job does.

use crate::core::Core;
use crate::store::sealing::reveal;
use crate::store::{JobRecord, Records, StoreResult, secret_id};
use broker_schema::Millis;
use std::collections::BTreeMap;
use tracing::warn;

pub async fn resolve(core: &Core, job: &JobRecord) -> StoreResult<BTreeMap<String, String>> {
    let wanted = job.definition.secrets();
    let mut values = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(values);
    }
    let now = Millis::now();
    for (var, path) in wanted {
        let value = match &job.submitted_by {
            Some(client) => match core.store().take_secret(client, &path, now).await? {
                Some(stored) => match reveal(
                    core.config.secrets_key.as_deref(),
                    &secret_id(client, &path),
                    &stored,
                ) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        warn!(job_id = %job.job_id, variable = %var, %path, error = %e, "secret unreadable");
                        None
                    }
                },
                None => None,
            },
            None => None,
        };
        if value.is_none() {
            warn!(job_id = %job.job_id, variable = %var, %path, "secret not available; the variable is empty");
        }
        values.insert(var, value.unwrap_or_default());
    }
    Ok(values)
}
