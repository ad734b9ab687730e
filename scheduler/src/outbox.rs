//! The outbox sweeper: publishes waiting jobs that were never seen on the broker.
//!
//! The gateway stores a job before publishing it, and answers 2xx once the store has it; if it
//! died (or the broker was down) before the publish was confirmed, the job would wait forever.
//! The scheduler's copy of every routed submission marks the job enqueued, so a waiting job
//! still unmarked after a while is published again. Duplicates are harmless: the lease refuses a
//! second runner.

use crate::core::Core;
use crate::reaper::publish_again;
use crate::store::{JobQuery, JobUpdate, Precondition, StoreResult};
use broker_schema::{JobState, Millis};
use tracing::info;

pub async fn sweep_once(core: &Core) -> StoreResult<usize> {
    let now = Millis::now();
    let stale = core
        .store
        .find_jobs(&JobQuery {
            states: Some(vec![JobState::Waiting]),
            not_enqueued_since: Some(now.minus(core.config.republish_after)),
            limit: Some(500),
            ..Default::default()
        })
        .await?;
    let mut published = 0;
    for job in stale.into_iter().filter(|j| !j.awaiting_attachments) {
        // Claim this round (bumping updated_at) so that other schedulers skip it.
        let pre = Precondition {
            not_enqueued: true,
            ..Precondition::observed(&job)
        };
        let Some(job) = core
            .store
            .update_job(job.job_id, &pre, &JobUpdate::at(now))
            .await?
        else {
            continue;
        };
        info!(job_id = %job.job_id, queue = %job.queue, "job not seen on the broker; publishing it again");
        publish_again(core, &job).await?;
        published += 1;
    }
    Ok(published)
}
