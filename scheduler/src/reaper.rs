//! The reaper: reclaims expired leases and ends jobs whose agents overran a deadline.
//!
//! Every action is an atomic update whose precondition re-checks what the reaper saw (same
//! attempt, lease still expired), so several schedulers may reap at once and a renewal racing
//! the reaper either wins (the lease is valid again) or loses (the agent is told it lost it).

use crate::core::{Core, Modified};
use crate::lease::active_states;
use crate::store::{JobQuery, JobRecord, JobUpdate, Precondition, StoreResult};
use broker_schema::bus::PublishError;
use broker_schema::messages::ControlCommand;
use broker_schema::{AgentName, Failure, FailureKind, JobState, Millis};
use tracing::{info, warn};

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: usize,
    pub failed: usize,
    pub cancelled: usize,
}

pub async fn reap_once(core: &Core) -> StoreResult<ReapReport> {
    let mut report = ReapReport::default();
    let now = Millis::now();
    let expired = core
        .store
        .find_jobs(&JobQuery {
            states: Some(active_states()),
            lease_expired_before: Some(now),
            limit: Some(200),
            ..Default::default()
        })
        .await?;
    for job in expired {
        reclaim(core, &job, Reclaim::Expired, now, &mut report).await?;
    }
    let running = core
        .store
        .find_jobs(&JobQuery {
            states: Some(active_states()),
            ..Default::default()
        })
        .await?;
    for job in running {
        if let Some(failure) = overrun(core, &job, now) {
            force_fail(core, &job, failure, now, &mut report).await?;
        }
    }
    Ok(report)
}

/// Why a lease is being taken back.
pub enum Reclaim {
    /// The lease expired (the agent stopped renewing).
    Expired,
    /// The agent said it gave the run up; the lease need not have expired yet.
    Abandoned { agent: AgentName, reason: String },
}

/// Takes a job back from its agent: requeue it for another attempt, or end it (cancelled if a
/// cancel was pending, failed after the last attempt).
pub async fn reclaim(
    core: &Core,
    seen: &JobRecord,
    how: Reclaim,
    now: Millis,
    report: &mut ReapReport,
) -> StoreResult<()> {
    let attempt = seen.attempt;
    let agent = seen
        .lease
        .as_ref()
        .map(|l| l.agent.to_string())
        .unwrap_or_default();
    let why = match &how {
        Reclaim::Expired => format!("lease expired: agent {agent} stopped renewing"),
        Reclaim::Abandoned { reason, .. } => format!("agent {agent} gave the run up: {reason}"),
    };
    let result = core
        .modify(seen.job_id, |j| {
            if j.attempt != attempt || !j.state.is_active() {
                return None;
            }
            let mut pre = Precondition {
                states: Some(vec![j.state]),
                attempt: Some(attempt),
                ..Default::default()
            };
            match &how {
                Reclaim::Expired => {
                    if j.lease.as_ref().is_none_or(|l| l.until >= now) {
                        return None;
                    }
                    pre.lease_expired_at = Some(now);
                }
                Reclaim::Abandoned { agent, .. } => {
                    if j.lease.as_ref().map(|l| &l.agent) != Some(agent) {
                        return None;
                    }
                    pre.lease_agent = Some(agent.clone());
                }
            }
            let mut u = JobUpdate::at(now);
            u.lease = Some(None);
            u.close_attempt = Some((attempt, now, why.clone()));
            if j.cancel_requested.is_some() {
                u.state = Some(JobState::Cancelled);
                u.ended_at = Some(Some(now));
            } else if j.attempt >= core.config.max_attempts {
                u.state = Some(JobState::Failed);
                u.ended_at = Some(Some(now));
                u.failure = Some(Some(Failure {
                    kind: FailureKind::AgentLost,
                    reason: format!("{why} (attempt {attempt} of {})", core.config.max_attempts),
                }));
            } else {
                u.state = Some(JobState::Waiting);
                u.enqueued_at = Some(None);
                u.reservation = Some(None);
            }
            Some((pre, u))
        })
        .await?;
    let Modified::Changed(job) = result else {
        return Ok(());
    };
    match job.state {
        JobState::Waiting => {
            report.requeued += 1;
            info!(job_id = %job.job_id, attempt, %agent, %why, "job requeued");
            core.announce(&job, Some(format!("requeued: {why}"))).await;
            publish_again(core, &job).await?;
        }
        JobState::Cancelled => {
            report.cancelled += 1;
            info!(job_id = %job.job_id, "agent lost while a cancel was pending; job cancelled");
            core.announce(&job, Some(why)).await;
        }
        _ => {
            report.failed += 1;
            warn!(job_id = %job.job_id, attempt, %why, "last attempt lost; job failed");
            core.announce(&job, None).await;
        }
    }
    Ok(())
}

/// Publishes a waiting job to its class queue; if no queue takes it any more, the job fails.
/// On other errors the job stays waiting and unenqueued: the outbox publishes it later.
pub async fn publish_again(core: &Core, job: &JobRecord) -> StoreResult<()> {
    match core.enqueue(job).await {
        Ok(()) => Ok(()),
        Err(PublishError::Unroutable { reply_text, .. }) => {
            let reason = format!("no agent serves queue '{}' ({reply_text})", job.queue);
            reject(core, job, reason).await
        }
        Err(e) => {
            warn!(job_id = %job.job_id, error = %e, "cannot publish the job now; the outbox will retry");
            Ok(())
        }
    }
}

/// Fails a waiting job that can never be dispatched.
pub async fn reject(core: &Core, job: &JobRecord, reason: String) -> StoreResult<()> {
    let now = Millis::now();
    let result = core
        .modify(job.job_id, |j| {
            if j.state != JobState::Waiting {
                return None;
            }
            let mut u = JobUpdate::at(now).state(JobState::Failed);
            u.ended_at = Some(Some(now));
            u.failure = Some(Some(Failure {
                kind: FailureKind::Rejected,
                reason: reason.clone(),
            }));
            Some((Precondition::observed(j), u))
        })
        .await?;
    if let Modified::Changed(job) = result {
        warn!(job_id = %job.job_id, %reason, "job rejected");
        core.announce(&job, None).await;
    }
    Ok(())
}

/// A deadline the agent should have enforced and has overrun by more than the grace period.
fn overrun(core: &Core, job: &JobRecord, now: Millis) -> Option<Failure> {
    let grace = core.config.backstop_grace;
    let def = &job.definition;
    if let Some(started) = job.started_at
        && let Some(deadline) = global_deadline(core, job, started)
        && now > deadline.plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::GlobalTimeout,
            reason: format!(
                "global timeout of {} s exceeded (ended by the scheduler)",
                def.global_timeout().as_secs()
            ),
        });
    }
    if job.state == JobState::Test
        && let Some(last) = job.last_output_at.or(job.started_at)
        && now > last.plus(def.output_timeout()).plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::OutputTimeout,
            reason: format!(
                "no output for {} s in the test phase (ended by the scheduler)",
                def.output_timeout().as_secs()
            ),
        });
    }
    if job.state == JobState::Reserve
        && let Some(res) = &job.reservation
        && now > res.until.plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::AgentError,
            reason: format!(
                "the agent did not end the reservation at its deadline {}",
                res.until
            ),
        });
    }
    None
}

/// When the global timeout ends the job, as the agent applies it: it does not cut a
/// reservation short (the reservation's own deadline does, checked separately), and cleanup,
/// which always runs, gets its allowance after the later of the global timeout and the
/// reservation's end. `None`: no global deadline applies now.
fn global_deadline(core: &Core, job: &JobRecord, started: Millis) -> Option<Millis> {
    let global = started.plus(job.definition.global_timeout());
    match job.state {
        JobState::Reserve => None,
        JobState::Cleanup => {
            let reserved_until = job.reservation.as_ref().map(|r| r.until);
            let base = reserved_until.map_or(global, |until| until.max(global));
            Some(base.plus(core.config.cleanup_allowance))
        }
        _ => Some(global),
    }
}

/// Ends a job whose agent still renews its lease but ignores a deadline. The agent learns it
/// at its next renewal (the lease is lost) and stops.
async fn force_fail(
    core: &Core,
    seen: &JobRecord,
    failure: Failure,
    now: Millis,
    report: &mut ReapReport,
) -> StoreResult<()> {
    let attempt = seen.attempt;
    let result = core
        .modify(seen.job_id, |j| {
            if j.attempt != attempt || !j.state.is_active() {
                return None;
            }
            let mut u = JobUpdate::at(now).state(JobState::Failed);
            u.failure = Some(Some(failure.clone()));
            u.ended_at = Some(Some(now));
            u.lease = Some(None);
            u.close_attempt = Some((attempt, now, format!("failed: {}", failure.reason)));
            Some((Precondition::observed(j), u))
        })
        .await?;
    if let Modified::Changed(job) = result {
        report.failed += 1;
        warn!(job_id = %job.job_id, reason = %failure.reason, "job ended by the scheduler");
        if let Some(agent) = seen.lease.as_ref().map(|l| l.agent.clone()) {
            let cmd = ControlCommand::Cancel {
                job_id: job.job_id,
                attempt,
                reason: failure.reason.clone(),
            };
            let _ = core.control(&agent, cmd).await;
        }
        core.announce(&job, None).await;
    }
    Ok(())
}
