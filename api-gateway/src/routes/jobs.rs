//! Submitting, reading, cancelling jobs, and where a waiting job stands in its queue.

use crate::cancel::{self, Action};
use crate::error::ApiError;
use crate::extract::{Body, JobId};
use crate::state::AppState;
use crate::submit;
use crate::views::JobInfo;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::JobState;
use flinger_scheduler::store::{JobQuery, JobRecord};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/job", post(submit_job))
        .route("/v1/job/{job_id}", get(get_job))
        .route("/v1/job/{job_id}/action", post(job_action))
        .route("/v1/job/{job_id}/position", get(job_position))
        .route("/v1/job/{job_id}/info", get(job_info))
}

async fn submit_job(State(state): State<AppState>, Body(body): Body) -> Result<Json<Value>, ApiError> {
    let job_id = submit::submit(&state, &body).await?;
    Ok(Json(json!({ "job_id": job_id })))
}

/// The job, or 204 (Testflinger's answer for an unknown job).
async fn find(state: &AppState, JobId(id): JobId) -> Result<JobRecord, ApiError> {
    state.store().get_job(id).await?.ok_or(ApiError::NoContent)
}

async fn get_job(State(state): State<AppState>, id: JobId) -> Result<Json<Value>, ApiError> {
    let job = find(&state, id).await?;
    Ok(Json(job.definition.to_json_with_id(&job.job_id)))
}

async fn job_action(
    State(state): State<AppState>,
    JobId(id): JobId,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    match Action::parse(&body)? {
        Action::Cancel => cancel::cancel(&state, id).await?,
    }
    Ok("OK")
}

/// 0-based place among the waiting jobs of the job's queue, in the order agents take them.
async fn position(state: &AppState, job: &JobRecord) -> Result<u64, ApiError> {
    let ahead = JobQuery {
        queue: Some(job.queue.clone()),
        states: Some(vec![JobState::Waiting]),
        ahead_of: Some((job.priority, job.created_at)),
        ..Default::default()
    };
    Ok(state.store().count_jobs(&ahead).await?)
}

async fn job_position(State(state): State<AppState>, id: JobId) -> Result<String, ApiError> {
    let job = find(&state, id).await?;
    if job.state != JobState::Waiting {
        return Err(ApiError::Gone(format!(
            "The job is not waiting (it is {})",
            job.state.testflinger_name()
        )));
    }
    Ok(position(&state, &job).await?.to_string())
}

async fn job_info(State(state): State<AppState>, id: JobId) -> Result<Json<JobInfo>, ApiError> {
    let job = find(&state, id).await?;
    let position = match job.state {
        JobState::Waiting => Some(position(&state, &job).await?),
        _ => None,
    };
    Ok(Json(JobInfo::new(&job, position)))
}
