//! The lease handshake: the single atomic transition waiting → leased that makes an agent the
//! job's only runner, and its renewals. The rules are [`crate::lifecycle`]'s; this module reads,
//! applies and answers.

use crate::core::{Core, Deferred};
use crate::lifecycle::{Cause, Reply};
use crate::store::{JobRecord, StoreResult};
use crate::{provenance, submissions};
use broker_schema::JobState;
use broker_schema::Millis;
use broker_schema::messages::{
    DenyReason, LeaseDenial, LeaseGrant, LeaseReply, LeaseRequest, RenewReply, RenewRequest,
};
use tracing::info;

fn deny(req: &LeaseRequest, reason: DenyReason, detail: impl Into<String>) -> LeaseReply {
    LeaseReply::Denied(LeaseDenial {
        job_id: req.job_id,
        reason,
        detail: detail.into(),
    })
}

/// Grants the lease of a waiting job to the asking agent, or says why not. A grant comes with
/// the announcement of the job's new state, to publish once the agent has its reply.
pub async fn lease(core: &Core, req: &LeaseRequest) -> StoreResult<(LeaseReply, Option<Deferred>)> {
    // The agent may have the job before our own copy of the submission arrived.
    // It is judged as our own copy would be, by the user that published it.
    let known = core.store().get_job(req.job_id).await?;
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
    // A child whose parent no longer runs never starts: it is released (cancelled) first.
    if req.submission.job.is_allocated_child() {
        let job = match known {
            Some(job) => Some(job),
            None => core.store().get_job(req.job_id).await?,
        };
        if let Some(job) = job.filter(|j| j.state == JobState::Waiting) {
            crate::projector::release_if_orphan(core, &job, Millis::now()).await?;
        }
    }
    let agent_record = core.store().get_agent(&req.agent).await?;
    let cause = Cause::LeaseAsked {
        agent: req.agent.clone(),
        agent_unavailable: agent_record.as_ref().and_then(|a| a.admin_state),
        fetches_files: crate::files::fetches_files(core, req),
    };
    let applied = core.apply(req.job_id, &cause, Millis::now()).await?;
    let Some(job) = applied.job else {
        return Ok((deny(req, DenyReason::Finished, "unknown job"), None));
    };
    Ok(match applied.reply {
        Some(Reply::Grant) => {
            if applied.changed {
                info!(job_id = %job.job_id, agent = %req.agent, attempt = job.attempt, "lease granted");
            }
            let reply = grant(core, &job).await?;
            let deferred = Deferred {
                job,
                effects: applied.effects,
            };
            (reply, Some(deferred))
        }
        Some(Reply::Deny { reason, detail }) => (deny(req, reason, detail), None),
        // Lost every race: someone else is changing the job right now.
        _ => (
            deny(req, DenyReason::AlreadyLeased, "the job is changing; try again"),
            None,
        ),
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
        output_cap: core.config.output_cap.for_queue(job.queue.as_str()),
    }))
}

/// Extends a lease that is still valid and still the asker's; a late renewal is refused (see
/// [`crate::lifecycle`]). The reply repeats the orders the agent must obey: a cancel, the
/// reservation's deadline.
pub async fn renew(core: &Core, req: &RenewRequest) -> StoreResult<RenewReply> {
    let cause = Cause::LeaseRenewed {
        agent: req.agent.clone(),
        attempt: req.attempt,
    };
    let applied = core.apply(req.job_id, &cause, Millis::now()).await?;
    let reason = match (applied.job, applied.reply) {
        (Some(job), Some(Reply::Renewed)) => {
            let until = job.lease.as_ref().map(|l| l.until).unwrap_or_default();
            return Ok(RenewReply::Renewed {
                lease_until: until,
                // A released child stops holding as a cancelled one does (it ends `complete`).
                cancel: job.cancel_requested.clone().or_else(|| job.released.clone()),
                reserve_until: job.reservation.as_ref().map(|r| r.until),
                files: crate::files::grant(core, req.job_id, req.attempt, until),
            });
        }
        (None, _) => "unknown job".to_owned(),
        (Some(_), Some(Reply::Lost { reason })) => reason,
        (Some(_), _) => "the lease expired".to_owned(),
    };
    info!(job_id = %req.job_id, agent = %req.agent, %reason, "renewal refused");
    Ok(RenewReply::Lost { reason })
}
