//! `POST /v1/job/<id>/events`: a Testflinger agent's status update, relayed to the job's
//! `job_status_webhook` with an HTTP PUT. The relay happens in the background with bounded
//! retries (see [`crate::webhooks`]); the agent is answered at once.
//! (Flinger's own agents publish events on the broker; the gateways relay those too.)

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::{Body, JobId, json_object};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use broker_schema::ValidationErrors;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/job/{job_id}/events", post(post_events))
}

#[utoipa::path(
    post,
    path = "/v1/job/{job_id}/events",
    tag = "jobs",
    summary = "Relay an agent's status update to the job's webhook (in the background)",
    security(("bearer" = ["agent"])),
    request_body = flinger_api::StatusUpdate,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn post_events(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT)?;
    let mut doc = json_object(&body)?;
    let mut errors = ValidationErrors::default();
    let url = match doc.remove("job_status_webhook") {
        Some(Value::String(s)) => match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                errors.add("job_status_webhook", "Not a valid URL.");
                None
            }
        },
        _ => {
            errors.add("job_status_webhook", "Missing data for required field.");
            None
        }
    };
    match doc.get("events") {
        None | Some(Value::Null) => {}
        Some(Value::Array(events)) => {
            for (i, e) in events.iter().enumerate() {
                let ok = e.get("event_name").is_some_and(Value::is_string)
                    && e.get("timestamp").is_some_and(Value::is_string);
                if !ok {
                    errors.add(format!("events.{i}"), "Needs event_name and timestamp strings.");
                }
            }
        }
        Some(_) => errors.add("events", "Not a valid list."),
    }
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid_fields(errors));
    };
    if state.store().get_job(id).await?.is_none() {
        return Err(ApiError::NotFound("Job not found".into()));
    }
    if !state.webhooks().allows(&url) {
        return Err(ApiError::Forbidden(
            "Invalid job_status_webhook URL specified".into(),
        ));
    }
    state.webhooks().relay(id, url, Value::Object(doc));
    Ok("OK")
}
