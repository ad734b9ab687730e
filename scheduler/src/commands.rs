//! Commands people give through the gateway: cancel a job, extend a reservation, take an agent
//! out of service, release a job whose attachments arrived. A job's command is decided by
//! [`crate::lifecycle`], applied with one compare-and-set on the store, then followed by a
//! control message to the agent that must obey (repeated in every lease renewal, in case the
//! message is lost).

use crate::core::{Applied, Core};
use crate::lifecycle::{Cause, Reply};
use crate::store::StoreResult;
use broker_schema::messages::{
    AdminState, AttachmentsReadyRequest, CancelRequest, CommandReply, ControlCommand, ExtendRequest,
    RefusalCode, SetAgentStateRequest,
};
use broker_schema::{JobState, Millis};
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

/// Cancels a job ([`Cause::CancelAsked`]): a waiting one ends at once, a running one's agent
/// is told to stop.
pub async fn cancel(core: &Core, req: &CancelRequest) -> StoreResult<CommandReply> {
    let reason = match &req.requested_by {
        Some(who) => format!("cancelled by {who}"),
        None => "cancelled".to_owned(),
    };
    let applied = core
        .settle(req.job_id, &Cause::CancelAsked { reason }, Millis::now())
        .await?;
    if let Some(job) = applied.job.as_ref().filter(|_| applied.changed) {
        match &job.lease {
            Some(lease) if job.state != JobState::Cancelled => {
                info!(job_id = %job.job_id, agent = %lease.agent, "cancel requested while running")
            }
            _ => info!(job_id = %job.job_id, "cancelled while waiting"),
        }
    }
    Ok(answer(applied))
}

/// Moves a running reservation's deadline ([`Cause::ReservationExtended`]).
pub async fn extend(core: &Core, req: &ExtendRequest) -> StoreResult<CommandReply> {
    let cause = Cause::ReservationExtended {
        until: req.until,
        by_secs: req.by_secs,
        max_total_secs: req.max_total_secs,
    };
    let applied = core.settle(req.job_id, &cause, Millis::now()).await?;
    if let Some(job) = applied.job.as_ref().filter(|_| applied.changed) {
        let until = job.reservation.as_ref().map(|r| r.until);
        info!(job_id = %job.job_id, ?until, "reservation extended");
    }
    Ok(answer(applied))
}

/// The reply owed for a command: the lifecycle's, or why there is none (no such job, or the
/// job kept changing under us).
fn answer(applied: Applied) -> CommandReply {
    match applied {
        Applied { job: None, .. } => refused(RefusalCode::NotFound, "no such job"),
        Applied {
            reply: Some(Reply::Command(reply)),
            ..
        } => reply,
        _ => refused(RefusalCode::Conflict, "the job is changing; try again"),
    }
}

/// Records an admin's decision about an agent (it survives agent restarts: the agent reads it
/// back at start) and tells the agent, which applies it after its current job.
pub async fn set_agent_state(core: &Core, req: &SetAgentStateRequest) -> StoreResult<CommandReply> {
    if req.state == Some(AdminState::Restart) {
        return Ok(restart_agent(core, req).await);
    }
    let record = core
        .store()
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

/// Releases a job whose attachments the gateway has stored ([`Cause::AttachmentsReady`]): it
/// stops waiting for them and is published to its class queue. Idempotent: a job already
/// released is answered done (the outbox publishes it if its publish was lost).
pub async fn attachments_ready(core: &Core, req: &AttachmentsReadyRequest) -> StoreResult<CommandReply> {
    let applied = core
        .settle(req.job_id, &Cause::AttachmentsReady, Millis::now())
        .await?;
    if let Some(job) = applied.job.as_ref().filter(|_| applied.changed) {
        info!(job_id = %job.job_id, queue = %job.queue, "attachments received; job published");
    }
    Ok(answer(applied))
}
