//! The lease handshake: the single atomic transition waiting → leased that makes an agent the
//! job's only runner, and its renewals.

use crate::core::{Announcement, Core, Modified};
use crate::store::{AttemptRecord, JobRecord, JobUpdate, Lease, Precondition, StoreResult};
use crate::{provenance, submissions};
use broker_schema::JobState;
use broker_schema::messages::{
    DenyReason, LeaseDenial, LeaseGrant, LeaseReply, LeaseRequest, RenewReply, RenewRequest,
};
use broker_schema::{Millis, Phase};
use tracing::info;

/// States in which an agent holds the lease.
pub fn active_states() -> Vec<JobState> {
    JobState::ALL.into_iter().filter(|s| s.is_active()).collect()
}

/// Why the lease closure made no change.
enum Verdict {
    Deny(LeaseReply),
    /// The asker already holds the lease (its earlier reply was lost): grant it again.
    Regrant,
}

fn deny(req: &LeaseRequest, reason: DenyReason, detail: impl Into<String>) -> LeaseReply {
    LeaseReply::Denied(LeaseDenial {
        job_id: req.job_id,
        reason,
        detail: detail.into(),
    })
}

/// Grants the lease of a waiting job to the asking agent, or says why not. A grant comes with
/// the announcement of the job's new state, to publish once the agent has its reply.
pub async fn lease(core: &Core, req: &LeaseRequest) -> StoreResult<(LeaseReply, Option<Announcement>)> {
    // The agent may have the job before our own copy of the submission arrived.
    // It is judged as our own copy would be, by the user that published it.
    let known = core.store.get_job(req.job_id).await?;
    if let Some(job) = &known
        && job.state == JobState::Waiting
    {
        // Its webhook hears every event of the run: routed before the agent has a lease.
        core.follow_webhook(job, true).await;
    }
    if known.is_none() {
        let s = &req.submission;
        let claimed = s.submitted_by.as_deref();
        match provenance::submitter(core, req.published_by.as_deref(), claimed) {
            Ok(submitter) => {
                submissions::insert(core, s.clone(), submitter, "recorded from a lease request").await?;
            }
            Err(reason) => {
                submissions::reject(core, s.job_id, Some(s.job.clone()), &reason).await?;
            }
        }
    }
    let agent_record = core.store.get_agent(&req.agent).await?;
    let agent_unavailable = agent_record.as_ref().and_then(|a| a.admin_state);
    let now = Millis::now();
    let lease_until = now.plus(core.config.lease);
    // What the closure concluded when it made no change.
    let mut verdict = None;
    let outcome = core
        .modify(req.job_id, |job| {
            verdict = None;
            match job.state {
                JobState::Waiting => {}
                JobState::Cancelled => {
                    verdict = Some(Verdict::Deny(deny(
                        req,
                        DenyReason::Cancelled,
                        "the job was cancelled",
                    )));
                    return None;
                }
                s if s.is_terminal() => {
                    verdict = Some(Verdict::Deny(deny(
                        req,
                        DenyReason::Finished,
                        format!("the job already ended ({s})"),
                    )));
                    return None;
                }
                _ => {
                    // A retried request from the holder (its reply was lost) gets the same lease.
                    let mine = job.lease.as_ref().is_some_and(|l| l.agent == req.agent);
                    if mine && job.state == JobState::Leased {
                        verdict = Some(Verdict::Regrant);
                    } else {
                        let holder = job
                            .lease
                            .as_ref()
                            .map(|l| l.agent.to_string())
                            .unwrap_or_default();
                        verdict = Some(Verdict::Deny(deny(
                            req,
                            DenyReason::AlreadyLeased,
                            format!("leased by {holder}"),
                        )));
                    }
                    return None;
                }
            }
            if job.awaiting_attachments {
                verdict = Some(Verdict::Deny(deny(
                    req,
                    DenyReason::NotReady,
                    "the job's attachments have not been uploaded",
                )));
                return None;
            }
            if let Some(detail) = crate::files::unfetchable(core, &job.definition, req) {
                verdict = Some(Verdict::Deny(deny(req, DenyReason::NotReady, detail)));
                return None;
            }
            if job
                .definition
                .exclude_agents()
                .iter()
                .any(|a| a == req.agent.as_str())
            {
                verdict = Some(Verdict::Deny(deny(
                    req,
                    DenyReason::Excluded,
                    "the job excludes this agent",
                )));
                return None;
            }
            if let Some(state) = agent_unavailable {
                verdict = Some(Verdict::Deny(deny(
                    req,
                    DenyReason::AgentUnavailable,
                    format!("agent is set to {}", state.as_str()),
                )));
                return None;
            }
            let attempt = job.attempt + 1;
            let mut update = JobUpdate::at(now).state(JobState::Leased);
            update.attempt = Some(attempt);
            update.lease = Some(Some(Lease {
                agent: req.agent.clone(),
                attempt,
                until: lease_until,
            }));
            update.push_attempt = Some(AttemptRecord {
                attempt,
                agent: req.agent.clone(),
                started_at: now,
                ended_at: None,
                outcome: None,
            });
            update.started_at = Some(Some(now));
            update.ended_at = Some(None);
            update.clear_phase_status = true;
            update.device_info = Some(None);
            update.failure = Some(None);
            update.reservation = Some(None);
            Some((Precondition::observed(job), update))
        })
        .await?;
    Ok(match outcome {
        Modified::Changed(job) => {
            info!(job_id = %job.job_id, agent = %req.agent, attempt = job.attempt, "lease granted");
            let reply = grant(core, &job).await?;
            let detail = Some(format!("leased by {}", req.agent));
            (reply, Some(Announcement { job, detail }))
        }
        Modified::Unchanged(job) => match verdict {
            Some(Verdict::Deny(reply)) => (reply, None),
            Some(Verdict::Regrant) => (grant(core, &job).await?, None),
            // Lost every race: someone else is changing the job right now.
            None => (
                deny(req, DenyReason::AlreadyLeased, "the job is changing; try again"),
                None,
            ),
        },
        Modified::Missing => (deny(req, DenyReason::Finished, "unknown job"), None),
    })
}

async fn grant(core: &Core, job: &JobRecord) -> StoreResult<LeaseReply> {
    let lease_until = job.lease.as_ref().map(|l| l.until).unwrap_or_default();
    Ok(LeaseReply::Granted(LeaseGrant {
        job_id: job.job_id,
        attempt: job.attempt,
        lease_until,
        files: crate::files::grant(core, job.job_id, job.attempt, lease_until),
        lease_ms: core.config.lease.as_millis() as u64,
        renew_every_ms: core.config.renew_every.as_millis() as u64,
        secrets: crate::secrets::resolve(core, job).await?,
        reserve_until: job.reservation.as_ref().map(|r| r.until),
    }))
}

/// Extends a lease that is still valid and still the asker's. A late renewal is refused: the
/// agent must already have stopped, and the reaper may be reclaiming the job.
pub async fn renew(core: &Core, req: &RenewRequest) -> StoreResult<RenewReply> {
    let now = Millis::now();
    let pre = Precondition {
        states: Some(active_states()),
        attempt: Some(req.attempt),
        lease_agent: Some(req.agent.clone()),
        lease_valid_at: Some(now),
        ..Default::default()
    };
    let mut update = JobUpdate::at(now);
    let until = now.plus(core.config.lease);
    update.lease = Some(Some(Lease {
        agent: req.agent.clone(),
        attempt: req.attempt,
        until,
    }));
    if let Some(job) = core.store.update_job(req.job_id, &pre, &update).await? {
        return Ok(RenewReply::Renewed {
            lease_until: until,
            cancel: job.cancel_requested.clone(),
            reserve_until: job.reservation.as_ref().map(|r| r.until),
            files: crate::files::grant(core, req.job_id, req.attempt, until),
        });
    }
    let reason = match core.store.get_job(req.job_id).await? {
        None => "unknown job".to_owned(),
        Some(j) if j.attempt != req.attempt => format!(
            "attempt {} is stale; the job is on attempt {}",
            req.attempt, j.attempt
        ),
        Some(j) if j.state.is_terminal() => format!("the job ended ({})", j.state),
        Some(j) if !j.state.is_active() => format!("the job is {}", j.state),
        Some(_) => "the lease expired".to_owned(),
    };
    info!(job_id = %req.job_id, agent = %req.agent, %reason, "renewal refused");
    Ok(RenewReply::Lost { reason })
}

/// The first phase whose failure explains a finished job, if any (cleanup is not counted: a
/// failed cleanup does not make a passing test fail).
pub fn first_failure(phase_status: &std::collections::BTreeMap<String, i32>) -> Option<(Phase, i32)> {
    Phase::ALL
        .into_iter()
        .filter(|p| *p != Phase::Cleanup)
        .find_map(|p| phase_status.get(p.as_str()).filter(|c| **c != 0).map(|c| (p, *c)))
}
