//! `POST /v1/job/<id>/action`: the gateway asks the scheduler, the only writer of job state, to
//! cancel a job, and reports its verdict.
//!
//! The store answers the cases that cannot change any more (unknown job, job already ended:
//! end states are final), so those need no scheduler. Everything else is the scheduler's call.

use crate::auth::Caller;
use crate::scheduler::{self, CommandError};
use crate::state::AppState;
use broker_schema::messages::{CancelRequest, SchedulerRequest};
use flinger_store::StoreError;
use tracing::info;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("Job not found")]
    UnknownJob,
    #[error("The job has already ended ({0})")]
    AlreadyEnded(&'static str),
    #[error("Only the job's submitter, a manager or an admin may cancel it")]
    NotOwner,
    #[error(transparent)]
    Scheduler(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `caller` may act on a job submitted by `owner`: its submitter, a manager or an admin.
/// A job submitted anonymously (no known submitter) may be acted on by anyone let in.
pub fn may_act_on(caller: &Caller, owner: Option<&str>) -> bool {
    match owner {
        None => true,
        Some(owner) => caller.is_manager() || caller.client_id() == Some(owner),
    }
}

pub async fn cancel(state: &AppState, caller: &Caller, job_id: Uuid) -> Result<(), CancelError> {
    let job = state
        .store()
        .get_job(job_id)
        .await?
        .ok_or(CancelError::UnknownJob)?;
    if !may_act_on(caller, job.submitted_by.as_deref()) {
        return Err(CancelError::NotOwner);
    }
    if job.state.is_terminal() {
        return Err(CancelError::AlreadyEnded(job.state.testflinger_name()));
    }
    let request = SchedulerRequest::Cancel(CancelRequest {
        job_id,
        requested_by: caller.client_id().map(str::to_owned),
    });
    scheduler::command(state, &request).await?;
    info!(%job_id, was = %job.state, "cancel accepted by the scheduler");
    Ok(())
}
