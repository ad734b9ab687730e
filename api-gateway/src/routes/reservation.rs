//! [ext] Reservations: where a reserved device is and until when, and moving the deadline.
//!
//! The scheduler owns the deadline: extending is a request to it (like cancel), and the agent
//! obeys what the scheduler decided.

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::{Body, JobId};
use crate::scheduler;
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::messages::{ExtendRequest, SchedulerRequest};
use broker_schema::{JobState, Millis};
use flinger_api::{Extend, ExtendBy, Extended, Reservation};
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/job/{job_id}/reservation", get(reservation))
        .route("/v1/job/{job_id}/reservation/extend", post(extend))
}

/// 200 with the reservation while the job holds one; 404 when it does not (yet, or any more);
/// 204 for an unknown job.
#[utoipa::path(
    get,
    path = "/v1/job/{job_id}/reservation",
    tag = "jobs",
    summary = "[ext] A reserved device: where and until when",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = flinger_api::Reservation),
        (status = 204),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn reservation(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> Result<Json<Reservation>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = state.store().get_job(id).await?.ok_or(ApiError::NoContent)?;
    let Some(r) = job
        .reservation
        .as_ref()
        .filter(|_| job.state == JobState::Reserve)
    else {
        return Err(ApiError::NotFound(format!(
            "job {id} is {} and holds no reservation",
            job.state
        )));
    };
    let now = Millis::now();
    let ssh = r
        .device_ip
        .as_ref()
        .map(|ip| format!("ssh {}@{ip}", r.user.as_deref().unwrap_or("ubuntu")));
    Ok(Json(Reservation {
        job_id: id,
        job_state: job.state.testflinger_name().to_owned(),
        agent: job.lease.as_ref().map(|l| l.agent.to_string()),
        device_ip: r.device_ip.clone(),
        user: r.user.clone(),
        ssh,
        started_at: r.started_at.to_rfc3339(),
        until: r.until.to_rfc3339(),
        remaining_secs: r.until.since(now).as_secs(),
    }))
}

/// Body `{"by": "2h30m" | seconds}` or `{"until": "<ISO-8601>"}`; 200 with the new deadline.
#[utoipa::path(
    post,
    path = "/v1/job/{job_id}/reservation/extend",
    tag = "jobs",
    summary = "[ext] Move a reservation's deadline ({\"by\": \"1h\"} or {\"until\": datetime})",
    security(("bearer" = ["admin", "manager", "contributor"])),
    request_body = flinger_api::Extend,
    responses(
        (status = 200, body = flinger_api::Extended),
        (status = 404, body = flinger_api::Error),
        (status = 409, body = flinger_api::Error),
    )
)]
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    Body(body): Body,
) -> Result<Json<Extended>, ApiError> {
    caller.require(access::SUBMITTER)?;
    // The shape is Extend's; what its schema cannot say: a duration's text, a datetime written
    // Testflinger's way, and that one of the two is given.
    let Extend { by, until } = validate::body_checked(&body, |v, errors| {
        match &v["by"] {
            Value::Number(n) if n.as_u64().is_some_and(|s| s == 0) => {
                errors.add("by", "Must be a positive number of seconds.")
            }
            Value::String(s) if by_text(s).is_none() => {
                errors.add("by", "Not a valid duration: use seconds or a form like 2h30m.")
            }
            _ => {}
        }
        if v["until"]
            .as_str()
            .is_some_and(|s| Millis::parse_rfc3339(s).is_none())
        {
            errors.add("until", "Not a valid ISO-8601 datetime.");
        }
        if v["by"].is_null() && v["until"].is_null() {
            errors.add("by", "Give `by` (a duration) or `until` (a datetime).");
        }
    })?;
    let by_secs = by.map(|by| match by {
        ExtendBy::Seconds(s) => s,
        ExtendBy::Text(s) => by_text(&s).expect("checked above"),
    });
    let until = until.map(|s| Millis::parse_rfc3339(&s).expect("checked above"));
    let Some(job) = state.store().get_job(id).await? else {
        return Err(ApiError::NotFound(format!("no job {id}")));
    };
    // issue 4: only the submitter, a manager or an admin; a client's own reservation limit holds.
    if !crate::cancel::may_act_on(&caller, job.submitted_by.as_deref()) {
        return Err(ApiError::Forbidden(
            "Only the job's submitter, a manager or an admin may extend its reservation".into(),
        ));
    }
    let max_total_secs = reservation_limit(&caller, job.queue.as_str());
    let requested_by = caller.client_id().map(str::to_owned);
    let request = SchedulerRequest::Extend(ExtendRequest {
        job_id: id,
        by_secs,
        until,
        requested_by,
        max_total_secs,
    });
    let done = scheduler::command(&state, &request).await?;
    Ok(Json(Extended {
        job_id: id,
        reserve_until: done.reserve_until.map(Millis::to_rfc3339),
        detail: done.detail,
    }))
}

/// The longest reservation `caller` may have on `queue`, in seconds: the unprivileged 6 h, or
/// the client's `max_reservation_time` when higher; no limit for managers and admins.
pub(crate) fn reservation_limit(caller: &Caller, queue: &str) -> Option<u64> {
    if caller.is_manager() {
        return None;
    }
    let base = broker_schema::job::UNPRIVILEGED_MAX_RESERVE.as_secs();
    Some(
        caller
            .permissions
            .as_ref()
            .map_or(base, |p| p.max_reservation_for(queue).max(base)),
    )
}

/// Seconds of a positive duration written as text (`2h30m`, `90`).
fn by_text(s: &str) -> Option<u64> {
    broker_schema::job::parse_human_duration(s)
        .filter(|d| !d.is_zero())
        .map(|d| d.as_secs())
}
