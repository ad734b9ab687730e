//! The outbox sweeper: publishes waiting jobs that were never seen on the broker.
//!
//! The gateway stores a job before publishing it, and answers 2xx once the store has it; if it
//! died (or the broker was down) before the publish was confirmed, the job would wait forever.
//! The scheduler's copy of every routed submission marks the job enqueued, so a waiting job
//! still unmarked after a while is published again ([`Cause::RepublishDue`]). Duplicates are
//! harmless: the lease refuses a second runner.

use crate::core::Core;
use crate::lifecycle::Cause;
use crate::store::{JobQuery, StoreResult};
use broker_schema::{JobState, Millis};
use tracing::info;

pub async fn sweep_once(core: &Core) -> StoreResult<usize> {
    let now = Millis::now();
    let stale = core
        .store()
        .find_jobs(&JobQuery {
            states: Some(vec![JobState::Waiting]),
            not_enqueued_since: Some(now.minus(core.config.republish_after)),
            limit: Some(500),
            ..Default::default()
        })
        .await?;
    let mut published = 0;
    for job in stale {
        let (job_id, queue) = (job.job_id, job.queue.clone());
        // The change claims this round (bumping updated_at), so other schedulers skip it.
        if core.settle_from(job, &Cause::RepublishDue, now).await?.changed {
            info!(%job_id, %queue, "job not seen on the broker; published it again");
            published += 1;
        }
    }
    Ok(published)
}
