//! Submitting, reading, searching and cancelling jobs, and where a waiting job stands.

use crate::auth::{Caller, access};
use crate::cancel;
use crate::error::{ApiError, Location};
use crate::estimate;
use crate::extract::{Body, JobId};
use crate::state::AppState;
use crate::submit;
use crate::validate;
use crate::views;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::{JobState, ValidationErrors};
use flinger_api::{Action, ActionKind, Estimate, JobInfo, JobSummary, Submitted};
use flinger_store::{JobOrder, JobQuery, JobRecord};
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/job", post(submit_job).get(pull_job))
        .route("/v1/job/search", get(search_jobs))
        .route("/v1/job/{job_id}", get(get_job))
        .route("/v1/job/{job_id}/action", post(job_action))
        .route("/v1/job/{job_id}/position", get(job_position))
        .route("/v1/job/{job_id}/info", get(job_info))
        .route("/v1/job/{job_id}/estimate", get(job_estimate))
}

/// Most jobs a search answers (newest first).
const SEARCH_LIMIT: u32 = 1000;

#[utoipa::path(
    post,
    path = "/v1/job",
    tag = "jobs",
    summary = "Submit a job (a known job_id is a resubmission)",
    security(("bearer" = ["admin", "manager", "contributor"])),
    request_body = flinger_api::JobFile,
    responses(
        (status = 200, body = flinger_api::Submitted),
    )
)]
async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<Submitted>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job_id = submit::submit(&state, &caller, &body).await?;
    Ok(Json(Submitted { job_id }))
}

/// Testflinger's pull dispatch (`GET /v1/job?queue=…`, agents only). Flinger agents take jobs
/// from the broker, under a lease; a job handed out here would have no lease. So this answers
/// "no job" (204) after checking the request as Testflinger does.
#[utoipa::path(
    get,
    path = "/v1/job",
    tag = "jobs",
    summary = "Testflinger's pull dispatch: Flinger dispatches over the broker, so always 204",
    security(("bearer" = ["agent"])),
    params(
        ("queue" = Option<Vec<String>>, Query, description = "Repeatable"),
    ),
    responses(
        (status = 204),
        (status = 400, body = flinger_api::Error),
    )
)]
async fn pull_job(caller: Caller, RawQuery(query): RawQuery) -> Result<StatusCode, ApiError> {
    caller.require(access::AGENT)?;
    let queues = query_values(query.as_deref(), "queue");
    if queues.is_empty() {
        return Err(ApiError::BadRequest("No queue(s) specified in request".into()));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The values of one repeated query parameter (`?queue=a&queue=b`).
pub fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The job, or 204 (Testflinger's answer for an unknown job).
async fn find(state: &AppState, JobId(id): JobId) -> Result<JobRecord, ApiError> {
    state.store().get_job(id).await?.ok_or(ApiError::NoContent)
}

#[utoipa::path(
    get,
    path = "/v1/job/{job_id}",
    tag = "jobs",
    summary = "The job file as submitted, plus job_id; 204 if unknown",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = flinger_api::JobFile),
        (status = 204),
    )
)]
async fn get_job(State(state): State<AppState>, caller: Caller, id: JobId) -> Result<Json<Value>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = find(&state, id).await?;
    Ok(Json(job.definition.to_json_with_id(&job.job_id)))
}

/// `GET /v1/job/search?tags=a&tags=b&match=any|all&state=…`: `[{job_id, created_at, job_state}]`,
/// newest first. `state=active` means every state but the end states; `completed` is
/// Testflinger's older name for `complete`.
#[utoipa::path(
    get,
    path = "/v1/job/search",
    tag = "jobs",
    summary = "Search jobs by tags and state",
    security(("bearer" = ["admin", "manager", "contributor"])),
    params(
        ("tags" = Option<Vec<String>>, Query, description = "Repeatable"),
        ("match" = Option<String>, Query, description = "any (default) or all"),
        ("state" = Option<Vec<String>>, Query, description = "Repeatable; active means every state but the end states"),
    ),
    responses(
        (status = 200, body = Vec<flinger_api::JobSummary>),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn search_jobs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<JobSummary>>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let q = query.as_deref();
    let mut errors = ValidationErrors::default();
    let tags = query_values(q, "tags");
    let all_tags = match query_values(q, "match").last().map(String::as_str) {
        None | Some("any") => false,
        Some("all") => true,
        Some(_) => {
            errors.add("match", "Must be one of: any, all.");
            false
        }
    };
    let mut states: Option<Vec<JobState>> = None;
    for s in query_values(q, "state") {
        let wanted: Vec<JobState> = match s.as_str() {
            "active" => JobState::ALL.into_iter().filter(|s| !s.is_terminal()).collect(),
            "completed" => vec![JobState::Complete, JobState::Failed],
            other => match JobState::parse(other) {
                // What Testflinger clients see as `setup` and `complete` (see `testflinger_name`).
                Some(JobState::Setup) => vec![JobState::Setup, JobState::Leased],
                Some(JobState::Complete) => vec![JobState::Complete, JobState::Failed],
                Some(st) => vec![st],
                None => {
                    errors.add("state", format!("Unknown job state {other:?}."));
                    continue;
                }
            },
        };
        states.get_or_insert_with(Vec::new).extend(wanted);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation {
            location: Location::Query,
            errors,
        });
    }
    let jobs = state
        .store()
        .find_jobs(&JobQuery {
            tags,
            all_tags,
            states,
            order: JobOrder::CreatedDesc,
            limit: Some(SEARCH_LIMIT),
            ..Default::default()
        })
        .await?;
    Ok(Json(
        jobs.iter()
            .map(|j| JobSummary {
                job_id: j.job_id,
                created_at: views::time(j.created_at),
                job_state: j.state.testflinger_name().to_owned(),
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/job/{job_id}/action",
    tag = "jobs",
    summary = "Cancel a job ({\"action\": \"cancel\"}); only its submitter, a manager or an admin",
    security(("bearer" = ["admin", "manager", "contributor"])),
    request_body = flinger_api::Action,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
    )
)]
async fn job_action(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::SUBMITTER)?;
    let Action { action } = validate::body(&body)?;
    match action {
        ActionKind::Cancel => cancel::cancel(&state, &caller, id).await?,
    }
    Ok("OK")
}

/// 0-based place among the waiting jobs of the job's queue, in the order agents take them.
pub async fn position(state: &AppState, job: &JobRecord) -> Result<u64, ApiError> {
    let ahead = JobQuery {
        queue: Some(job.queue.clone()),
        states: Some(vec![JobState::Waiting]),
        ahead_of: Some((job.priority, job.created_at)),
        ..Default::default()
    };
    Ok(state.store().count_jobs(&ahead).await?)
}

fn not_waiting(job: &JobRecord) -> ApiError {
    ApiError::Gone(format!(
        "The job is not waiting (it is {})",
        job.state.testflinger_name()
    ))
}

#[utoipa::path(
    get,
    path = "/v1/job/{job_id}/position",
    tag = "jobs",
    summary = "0-based place among waiting jobs of its queue; 410 once started",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 204),
        (status = 410, body = flinger_api::Error),
    )
)]
async fn job_position(State(state): State<AppState>, caller: Caller, id: JobId) -> Result<String, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = find(&state, id).await?;
    if job.state != JobState::Waiting {
        return Err(not_waiting(&job));
    }
    Ok(position(&state, &job).await?.to_string())
}

#[utoipa::path(
    get,
    path = "/v1/job/{job_id}/info",
    tag = "jobs",
    summary = "[ext] The whole job record",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = flinger_api::JobInfo),
        (status = 204),
    )
)]
async fn job_info(
    State(state): State<AppState>,
    caller: Caller,
    id: JobId,
) -> Result<Json<JobInfo>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = find(&state, id).await?;
    let position = match job.state {
        JobState::Waiting => Some(position(&state, &job).await?),
        _ => None,
    };
    Ok(Json(views::job_info(&job, position)))
}

/// [ext] Position and ETA of a waiting job (see [`crate::estimate`]); 410 once it started.
#[utoipa::path(
    get,
    path = "/v1/job/{job_id}/estimate",
    tag = "jobs",
    summary = "[ext] Position and ETA of a waiting job",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = flinger_api::Estimate),
        (status = 204),
        (status = 410, body = flinger_api::Error),
    )
)]
async fn job_estimate(
    State(state): State<AppState>,
    caller: Caller,
    id: JobId,
) -> Result<Json<Estimate>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = find(&state, id).await?;
    if job.state != JobState::Waiting {
        return Err(not_waiting(&job));
    }
    let position = position(&state, &job).await?;
    Ok(Json(estimate::estimate(&state, &job, position).await?))
}
