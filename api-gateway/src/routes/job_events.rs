//! `POST /v1/job/<id>/events`: a Testflinger agent's status update, relayed to the job's
//! `job_status_webhook` with an HTTP PUT. The relay happens in the background with bounded
//! retries (see [`crate::webhooks`]); the agent is answered at once.
//! (Flinger's own agents publish events on the broker; the gateways relay those too.)

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::{Body, JobId, json_object};
use crate::state::AppState;
use crate::validate;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use flinger_api::StatusUpdate;
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
    // The shape is StatusUpdate's; what its schema cannot say is that the URL is http(s).
    let update: StatusUpdate = validate::body_checked(&body, |v, errors| {
        if let Some(s) = v["job_status_webhook"].as_str()
            && webhook_url(s).is_none()
        {
            errors.add("job_status_webhook", "Not a valid URL.");
        }
    })?;
    let url = webhook_url(&update.job_status_webhook).expect("checked above");
    // The update is relayed as the agent sent it (agents may add fields of their own).
    let mut doc = json_object(&body)?;
    doc.remove("job_status_webhook");
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

fn webhook_url(s: &str) -> Option<url::Url> {
    url::Url::parse(s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}
