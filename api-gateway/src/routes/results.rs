//! Results and output of a job's current attempt.

use crate::error::{ApiError, Location};
use crate::extract::JobId;
use crate::logs::{self, LogFilter, LogParams};
use crate::state::AppState;
use crate::views;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use broker_schema::messages::LogStream;
use flinger_scheduler::store::{OutputFragment, OutputQuery};
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/result/{job_id}", get(get_results))
        .route("/v1/result/{job_id}/log/{log_type}", get(get_log))
}

async fn get_results(State(state): State<AppState>, JobId(id): JobId) -> Result<Json<Value>, ApiError> {
    let job = state.store().get_job(id).await?.ok_or(ApiError::NoContent)?;
    let (mut output, mut serial) = (Vec::<OutputFragment>::new(), Vec::new());
    if job.attempt > 0 {
        let store = state.store();
        output = store
            .read_output(&OutputQuery::all(id, job.attempt, LogStream::Output))
            .await?;
        serial = store
            .read_output(&OutputQuery::all(id, job.attempt, LogStream::Serial))
            .await?;
    }
    Ok(Json(views::results(&job, &output, &serial)))
}

async fn get_log(
    State(state): State<AppState>,
    JobId(id): JobId,
    Path((_, log_type)): Path<(String, String)>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let stream = LogStream::parse(&log_type)
        .ok_or_else(|| ApiError::NotFound(format!("Unknown log type {log_type:?}: use output or serial")))?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = LogFilter::parse(&params).map_err(|errors| ApiError::Validation {
        location: Location::Query,
        errors,
    })?;
    let job = state.store().get_job(id).await?.ok_or(ApiError::NoContent)?;
    let fragments = if job.attempt > 0 {
        state
            .store()
            .read_output(&filter.query(id, job.attempt, stream))
            .await?
    } else {
        vec![]
    };
    Ok(Json(logs::log_answer(
        stream,
        &filter,
        &logs::phases_started(&job),
        &fragments,
    )))
}
