//! Results and output of a job's current attempt; what Testflinger-style agents post.
//!
//! Our agents report over the broker and the scheduler stores it; agents that speak
//! Testflinger's HTTP API may post results and output fragments here. Neither changes the job's
//! state (only the scheduler does): posted results are kept beside the job and shown where the
//! scheduler has nothing, posted fragments join the current attempt's output.

use crate::auth::{Caller, access};
use crate::error::{ApiError, Location};
use crate::extract::{Body, JobId, json_object};
use crate::logs::{self, LogFilter, LogParams};
use crate::state::AppState;
use crate::streaming;
use crate::validate;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use broker_schema::mask::Masker;
use broker_schema::messages::LogStream;
use broker_schema::{Millis, Phase};
use flinger_api::{LogFragment, ResultPost};
use flinger_store::sealing as secrets;
use flinger_store::{JobRecord, OutputFragment, OutputQuery, Records, secret_id};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// Testflinger refuses result posts of 16 MiB and more (MongoDB's document limit).
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// How often a long-polling log request looks for new fragments: soon at first (a follower
/// asks again right after each answer, and output comes in bursts), then less and less often,
/// down to [`POLL_EVERY`] for a quiet job.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_EVERY: Duration = Duration::from_millis(100);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/result/{job_id}", get(get_results).post(post_results))
        .route("/v1/result/{job_id}/log/{log_type}", get(get_log).post(post_log))
}

#[utoipa::path(
    get,
    path = "/v1/result/{job_id}",
    tag = "results",
    summary = "Flat results of the current attempt; 204 if the job is unknown",
    security(("bearer" = ["admin", "manager", "contributor", "agent"])),
    responses(
        (status = 200, body = flinger_api::Results),
        (status = 204),
    )
)]
async fn get_results(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    caller.require(access::ANYONE)?;
    let store = state.store();
    let job = store.get_job(id).await?.ok_or(ApiError::NoContent)?;
    let posted = store.get_posted_result(&id.to_string()).await?;
    // Streamed: a job's output may be hundreds of MiB (crate::streaming).
    let body = streaming::results(store.clone(), &job, posted.as_ref().map(|p| &p.fields)).await?;
    Ok(json_stream(body))
}

/// A JSON body written as it is read.
fn json_stream(body: streaming::JsonStream) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// The job an agent writes about; 404 when unknown (an agent must not create results for a job
/// that does not exist).
async fn job_for_agent(state: &AppState, id: uuid::Uuid) -> Result<JobRecord, ApiError> {
    state
        .store()
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Job not found".into()))
}

/// `POST /v1/result/<id>`: `{status: {phase: exit_code}, device_info: {…}, job_state}`, merged
/// into what was posted before, every string in it with the job's secrets masked.
#[utoipa::path(
    post,
    path = "/v1/result/{job_id}",
    tag = "results",
    summary = "Merge results posted by an agent (Testflinger's agents)",
    security(("bearer" = ["agent"])),
    request_body = flinger_api::ResultPost,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
        (status = 413, body = flinger_api::Error),
    )
)]
async fn post_results(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT)?;
    if body.len() >= MAX_RESULT_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    // The shape is ResultPost's; what its schema cannot say is that status is keyed by phase.
    let _: ResultPost = validate::body_checked(&body, |v, errors| {
        for phase in v["status"].as_object().into_iter().flat_map(|m| m.keys()) {
            if Phase::parse(phase).is_none() {
                errors.add(format!("status.{phase}"), "Not a phase.");
            }
        }
    })?;
    // Merged as posted: device_info is the agent's own.
    let fields = json_object(&body)?;
    let job = job_for_agent(&state, id).await?;
    let masker = job_masker(&state, &job).await?;
    let fields: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k, mask_strings(&masker, v)))
        .collect();
    state
        .store()
        .merge_posted_result(&id.to_string(), &fields, Millis::now())
        .await?;
    Ok("OK")
}

fn log_stream(log_type: &str) -> Result<LogStream, ApiError> {
    LogStream::parse(log_type)
        .ok_or_else(|| ApiError::NotFound(format!("Unknown log type {log_type:?}: use output or serial")))
}

#[utoipa::path(
    get,
    path = "/v1/result/{job_id}/log/{log_type}",
    tag = "results",
    summary = "Output or serial log by phase, filtered; [ext] long poll with wait",
    security(("bearer" = ["admin", "manager", "contributor"])),
    params(
        ("start_fragment" = Option<u64>, Query, description = "Fragments numbered at least this"),
        ("start_timestamp" = Option<String>, Query, description = "Fragments written at or after this datetime"),
        ("phase" = Option<String>, Query, description = "One phase only"),
        ("wait" = Option<f64>, Query, description = "[ext] Seconds to wait for output (at most 60)"),
    ),
    responses(
        (status = 200, body = std::collections::BTreeMap<String, std::collections::BTreeMap<String, flinger_api::PhaseLog>>),
        (status = 204),
        (status = 404, body = flinger_api::Error),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn get_log(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Path((_, log_type)): Path<(String, String)>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(access::SUBMITTER)?;
    let stream = log_stream(&log_type)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = LogFilter::parse(&params).map_err(|errors| ApiError::Validation {
        location: Location::Query,
        errors,
    })?;
    let deadline = filter.wait.map(|w| Instant::now() + w);
    let mut pause = POLL_FIRST;
    // Open from its first wait until it answers (or the client goes away).
    let mut open_stream = None;
    loop {
        let job = state.store().get_job(id).await?.ok_or(ApiError::NoContent)?;
        // A page first: a longer answer is streamed as it is read (crate::streaming).
        let mut fragments = state
            .store()
            .read_output(&OutputQuery {
                limit: Some(streaming::PAGE),
                ..filter.query(id, job.attempt, stream)
            })
            .await?;
        let full = fragments.len() as u32 >= streaming::PAGE;
        logs::hold_back_after_gap(&mut fragments, &filter, job.state.is_active());
        if full && fragments.len() as u32 >= streaming::PAGE {
            let body = streaming::log(state.store().clone(), &job, stream, &filter, fragments).await?;
            return Ok(json_stream(body));
        }
        // A long poll answers as soon as there is something, the job is over, time is up, or
        // the gateway is stopping (a stop waits for requests in flight: it must not wait for
        // a minute-long poll; the client asks again, of another gateway).
        let keep_waiting = fragments.is_empty()
            && !job.state.is_terminal()
            && !state.stopping().is_cancelled()
            && deadline.is_some_and(|d| Instant::now() + pause < d);
        if !keep_waiting {
            return Ok(Json(logs::log_answer(
                stream,
                &filter,
                &logs::phases_started(&job),
                &fragments,
            ))
            .into_response());
        }
        open_stream.get_or_insert_with(|| crate::metrics::stream_opened("log_poll"));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = state.stopping().cancelled() => {}
        }
        pause = (pause * 2).min(POLL_EVERY);
    }
}

/// `POST /v1/result/<id>/log/<type>`: one fragment `{fragment_number, timestamp, phase,
/// log_data}` of the job's current attempt, with the job's secrets masked.
#[utoipa::path(
    post,
    path = "/v1/result/{job_id}/log/{log_type}",
    tag = "results",
    summary = "One log fragment from an agent",
    security(("bearer" = ["agent"])),
    request_body = flinger_api::LogFragment,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn post_log(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Path((_, log_type)): Path<(String, String)>,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT)?;
    let stream = log_stream(&log_type)?;
    // The schema says each field's type; what it cannot say (a phase name, a datetime written
    // Testflinger's way, a number the store can hold) is checked on the same pass.
    let posted: LogFragment = validate::body_checked(&body, |v, errors| {
        if v["fragment_number"].as_u64().is_some_and(|n| n > i64::MAX as u64) {
            errors.add("fragment_number", "Not a valid integer (0 or more).");
        }
        if v["timestamp"]
            .as_str()
            .is_some_and(|s| logs::parse_timestamp(s).is_none())
        {
            errors.add("timestamp", "Not a valid datetime.");
        }
        if v["phase"].as_str().is_some_and(|s| Phase::parse(s).is_none()) {
            errors.add("phase", "Not a phase.");
        }
    })?;
    let (Some(at), Some(phase)) = (
        logs::parse_timestamp(&posted.timestamp),
        Phase::parse(&posted.phase),
    ) else {
        unreachable!("checked with the body");
    };
    let (seq, data) = (posted.fragment_number, posted.log_data);
    let job = job_for_agent(&state, id).await?;
    let masker = job_masker(&state, &job).await?;
    let fragment = OutputFragment {
        job_id: id,
        attempt: job.attempt,
        stream,
        seq,
        phase,
        at,
        data: masker.mask(data.as_bytes()),
    };
    state.store().append_output(&[fragment]).await?;
    Ok("OK")
}

/// The values of the job's secrets, to mask them out of what agents post: unsealed as the
/// scheduler unseals them for the lease (a sealed value masked as stored would mask nothing).
async fn job_masker(state: &AppState, job: &JobRecord) -> Result<Masker, ApiError> {
    let Some(client) = job.submitted_by.as_deref() else {
        return Ok(Masker::default());
    };
    let now = Millis::now();
    let mut values = vec![];
    for path in job.definition.secrets().values() {
        let Some(stored) = state.store().get_secret(client, path, now).await? else {
            continue;
        };
        match secrets::reveal(state.secrets_key(), &secret_id(client, path), &stored) {
            Ok(v) => values.push(v),
            // The scheduler could not unseal it either: the job got an empty variable.
            Err(e) => warn!(job_id = %job.job_id, %path, error = %e, "secret unreadable; nothing to mask"),
        }
    }
    Ok(Masker::new(values))
}

/// `value` with every string in it (at any depth) masked.
fn mask_strings(masker: &Masker, value: Value) -> Value {
    if masker.is_empty() {
        return value;
    }
    match value {
        Value::String(s) => Value::String(masker.mask_str(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| mask_strings(masker, v)).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, mask_strings(masker, v))).collect()),
        other => other,
    }
}
