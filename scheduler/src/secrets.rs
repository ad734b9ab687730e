//! Resolves the secrets a job names (`test_data.secrets`: variable → path) into their values when
//! the job is leased, for the agent to put into the phases' environment and mask in the output.
//!
//! Secrets belong to the client that submitted the job. A secret that cannot be read (unknown,
//! expired, deleted since the submission, or a job with no known submitter) resolves to the empty
//! string, as in Testflinger: the job runs, and its commands see an empty variable.
//! Values are never logged.

use crate::core::Core;
use crate::store::{JobRecord, Records, StoreResult};
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
            Some(client) => core.store.get_secret(client, &path, now).await?,
            None => None,
        };
        if value.is_none() {
            warn!(job_id = %job.job_id, variable = %var, %path, "secret not available; the variable is empty");
        }
        values.insert(var, value.unwrap_or_default());
    }
    Ok(values)
}
