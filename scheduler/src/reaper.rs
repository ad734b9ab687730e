//! The reaper: reclaims expired leases and ends jobs whose agents overran a deadline.
//!
//! What to do is [`crate::lifecycle`]'s ([`Cause::LeaseExpired`], [`Cause::DeadlinesChecked`]):
//! every action is an atomic update whose precondition re-checks what the reaper saw (same
//! attempt, lease still expired), so several schedulers may reap at once and a renewal racing
//! the reaper either wins (the lease is valid again) or loses (the agent is told it lost it).
//! It also releases running multi-device children whose parent no longer runs
//! ([`crate::projector::release_if_orphan`]): no device is held for a dead parent.

use crate::core::{Applied, Core};
use crate::lifecycle::{Cause, active_states};
use crate::store::{JobQuery, StoreResult};
use broker_schema::{JobState, Millis};
use tracing::{info, warn};

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl ReapReport {
    /// Counts a job the reaper took back or ended.
    fn count(&mut self, applied: &Applied) {
        let Some(job) = applied.job.as_ref().filter(|_| applied.changed) else {
            return;
        };
        match job.state {
            JobState::Waiting => {
                self.requeued += 1;
                info!(job_id = %job.job_id, attempt = job.attempt, "job requeued");
            }
            JobState::Cancelled => {
                self.cancelled += 1;
                info!(job_id = %job.job_id, "agent lost while a cancel was pending; job cancelled");
            }
            _ => {
                self.failed += 1;
                let reason = job.failure.as_ref().map(|f| f.reason.as_str()).unwrap_or("");
                warn!(job_id = %job.job_id, attempt = job.attempt, %reason, "job ended by the scheduler");
            }
        }
    }
}

pub async fn reap_once(core: &Core) -> StoreResult<ReapReport> {
    let mut report = ReapReport::default();
    let now = Millis::now();
    let expired = core
        .store()
        .find_jobs(&JobQuery {
            states: Some(active_states()),
            lease_expired_before: Some(now),
            limit: Some(200),
            ..Default::default()
        })
        .await?;
    for job in expired {
        let cause = Cause::LeaseExpired { attempt: job.attempt };
        report.count(&core.settle_from(job, &cause, now).await?);
    }
    let running = core
        .store()
        .find_jobs(&JobQuery {
            states: Some(active_states()),
            ..Default::default()
        })
        .await?;
    for job in running {
        // A running child whose parent no longer runs (its release was lost in a crash, or
        // raced the child's own progress) is released here, within a pass.
        if job.cancel_requested.is_none() && job.released.is_none() {
            crate::projector::release_if_orphan(core, &job, now).await?;
        }
        let cause = Cause::DeadlinesChecked { attempt: job.attempt };
        report.count(&core.settle_from(job, &cause, now).await?);
    }
    Ok(report)
}
