//! Commands people give through the gateway: cancel a job, extend a reservation, take an agent
//! out of service, release a job whose attachments arrived. Each is one compare-and-set on the store, then a control message to the agent
//! that must obey (repeated in every lease renewal, in case the message is lost).

use crate::core::{Core, Modified};
use crate::store::{JobUpdate, Precondition, Reservation, StoreResult};
use broker_schema::messages::{
    AdminState, AttachmentsReadyRequest, CancelRequest, CommandReply, ControlCommand, ExtendRequest,
    RefusalCode, SetAgentStateRequest,
};
use broker_schema::{JobState, Millis};
use std::time::Duration;
use tracing::{info, warn};

fn refused(code: RefusalCode, reason: impl Into<String>) -> CommandReply {
    CommandReply::Refused {
        code,
        reason: reason.into(),
    }
}

fn done(detail: impl Into<String>) -> CommandReply {
    CommandReply::Done {
        detail: detail.into(),
        reserve_until: None,
    }
}

/// Cancels a job. A waiting job ends `cancelled` at once and never starts; a running one is
/// marked, and its agent is told to stop the phase, run cleanup and end `cancelled`.
pub async fn cancel(core: &Core, req: &CancelRequest) -> StoreResult<CommandReply> {
    let now = Millis::now();
    let reason = match &req.requested_by {
        Some(who) => format!("cancelled by {who}"),
        None => "cancelled".to_owned(),
    };
    let mut refusal = None;
    let outcome = core
        .modify(req.job_id, |job| {
            refusal = None;
            if job.state.is_terminal() {
                refusal = Some(refused(
                    RefusalCode::Conflict,
                    format!("the job is already {}", job.state),
                ));
                return None;
            }
            if job.cancel_requested.is_some() {
                return None; // asked before: nothing more to do
            }
            let mut update = JobUpdate::at(now);
            update.cancel_requested = Some(Some(reason.clone()));
            if job.state == JobState::Waiting {
                update.state = Some(JobState::Cancelled);
                update.ended_at = Some(Some(now));
            }
            Some((Precondition::observed(job), update))
        })
        .await?;
    Ok(match outcome {
        Modified::Missing => refused(RefusalCode::NotFound, "no such job"),
        Modified::Unchanged(_) => refusal.unwrap_or_else(|| done("a cancel was already requested")),
        Modified::Changed(job) if job.state == JobState::Cancelled => {
            info!(job_id = %job.job_id, "cancelled while waiting");
            core.announce(&job, Some(reason)).await;
            done("cancelled")
        }
        Modified::Changed(job) => {
            if let Some(lease) = &job.lease {
                info!(job_id = %job.job_id, agent = %lease.agent, "cancel requested while running");
                let cmd = ControlCommand::Cancel {
                    job_id: job.job_id,
                    attempt: job.attempt,
                    reason: reason.clone(),
                };
                if let Err(e) = core.control(&lease.agent, cmd).await {
                    // The next lease renewal carries the cancel anyway.
                    warn!(job_id = %job.job_id, error = %e, "cannot send cancel to the agent");
                }
            }
            done("cancel requested; the job stops after cleanup")
        }
    })
}

/// Moves a running reservation's deadline. The scheduler owns the deadline; the agent is told
/// and obeys (and the reaper ends the reservation if it does not).
pub async fn extend(core: &Core, req: &ExtendRequest) -> StoreResult<CommandReply> {
    let now = Millis::now();
    let mut refusal = None;
    let outcome = core
        .modify(req.job_id, |job| {
            refusal = None;
            let Some(res) = job
                .reservation
                .as_ref()
                .filter(|_| job.state == JobState::Reserve)
            else {
                refusal = Some(refused(
                    RefusalCode::Conflict,
                    format!("the job is {} and has no running reservation", job.state),
                ));
                return None;
            };
            let until = match (req.until, req.by_secs) {
                (Some(t), _) => t,
                (None, Some(secs)) => res.until.plus(Duration::from_secs(secs)),
                (None, None) => {
                    refusal = Some(refused(
                        RefusalCode::Invalid,
                        "say how long to extend by, or until when",
                    ));
                    return None;
                }
            };
            if until <= now {
                refusal = Some(refused(RefusalCode::Invalid, "the new deadline is in the past"));
                return None;
            }
            if let Some(max) = req.max_total_secs
                && until.since(res.started_at) > Duration::from_secs(max)
            {
                refusal = Some(refused(
                    RefusalCode::Forbidden,
                    format!("a reservation may last at most {max} s in total for this client"),
                ));
                return None;
            }
            let mut update = JobUpdate::at(now);
            update.reservation = Some(Some(Reservation { until, ..res.clone() }));
            Some((Precondition::observed(job), update))
        })
        .await?;
    Ok(match outcome {
        Modified::Missing => refused(RefusalCode::NotFound, "no such job"),
        Modified::Unchanged(_) => {
            refusal.unwrap_or_else(|| refused(RefusalCode::Conflict, "the job is changing; try again"))
        }
        Modified::Changed(job) => {
            let until = job.reservation.as_ref().map(|r| r.until).unwrap_or(now);
            info!(job_id = %job.job_id, until = %until, "reservation extended");
            if let Some(lease) = &job.lease
                && let Err(e) = core
                    .control(
                        &lease.agent,
                        ControlCommand::SetReservationDeadline {
                            job_id: job.job_id,
                            until,
                        },
                    )
                    .await
            {
                warn!(job_id = %job.job_id, error = %e, "cannot tell the agent; its next renewal will");
            }
            core.announce(&job, Some(format!("reservation extended until {until}")))
                .await;
            CommandReply::Done {
                detail: format!("reserved until {until}"),
                reserve_until: Some(until),
            }
        }
    })
}

/// Records an admin's decision about an agent (it survives agent restarts: the agent reads it
/// back at start) and tells the agent, which applies it after its current job.
pub async fn set_agent_state(core: &Core, req: &SetAgentStateRequest) -> StoreResult<CommandReply> {
    if req.state == Some(AdminState::Restart) {
        return Ok(restart_agent(core, req).await);
    }
    let record = core
        .store
        .set_agent_admin(&req.agent, req.state, &req.comment, Millis::now())
        .await?;
    let cmd = ControlCommand::SetAdminState {
        state: req.state,
        comment: req.comment.clone(),
    };
    if let Err(e) = core.control(&req.agent, cmd).await {
        warn!(agent = %req.agent, error = %e, "cannot tell the agent now; it reads its state at start");
    }
    let state = record.admin_state.map(|s| s.as_str()).unwrap_or("in service");
    Ok(done(format!("agent {} is {state}", req.agent)))
}

/// Passes a restart on to the agent without recording it: it is an order, not a state the agent
/// returns to (a recorded restart would restart the restarted agent again). The agent's control
/// queue keeps it until the agent reads it, and it is refused when there is no such queue.
async fn restart_agent(core: &Core, req: &SetAgentStateRequest) -> CommandReply {
    let cmd = ControlCommand::SetAdminState {
        state: Some(AdminState::Restart),
        comment: req.comment.clone(),
    };
    match core.control(&req.agent, cmd).await {
        Ok(()) => done(format!("agent {} restarts after its current job", req.agent)),
        Err(e) => refused(
            RefusalCode::Conflict,
            format!("cannot tell agent {} to restart: {e}", req.agent),
        ),
    }
}

/// Releases a job whose attachments the gateway has stored: clears `awaiting_attachments` (only
/// while the job still waits for them) and publishes the job to its class queue. Idempotent: a
/// job already released is answered done (the outbox publishes it if its publish was lost).
pub async fn attachments_ready(core: &Core, req: &AttachmentsReadyRequest) -> StoreResult<CommandReply> {
    let now = Millis::now();
    let mut refusal = None;
    let outcome = core
        .modify(req.job_id, |job| {
            refusal = None;
            if job.state != JobState::Waiting {
                refusal = Some(refused(
                    RefusalCode::Conflict,
                    format!("the job is {} and no longer waits for attachments", job.state),
                ));
                return None;
            }
            if !job.awaiting_attachments {
                return None;
            }
            let mut update = JobUpdate::at(now);
            update.awaiting_attachments = Some(false);
            Some((Precondition::observed(job), update))
        })
        .await?;
    Ok(match outcome {
        Modified::Missing => refused(RefusalCode::NotFound, "no such job"),
        Modified::Unchanged(_) => refusal.unwrap_or_else(|| done("the attachments were already received")),
        Modified::Changed(job) => {
            info!(job_id = %job.job_id, queue = %job.queue, "attachments received; publishing the job");
            // Unroutable: the job fails as rejected; broker down: the outbox publishes it later.
            crate::reaper::publish_again(core, &job).await?;
            done("attachments received; the job is queued")
        }
    })
}
