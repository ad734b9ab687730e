//! Queues: what agents advertise (descriptions, images), who serves a queue, what is in it, and
//! how long jobs waited in it.

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::Body;
use crate::routes::agents;
use crate::routes::jobs::query_values;
use crate::state::AppState;
use crate::validate;
use crate::views;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::{DeviceClass, Millis};
use flinger_api::{Agent, ImagesIn, QueueJob, QueuesIn, WaitTimes};
use flinger_store::{JobOrder, JobQuery, Records};
use std::collections::BTreeMap;
use std::time::Duration;

/// How far back jobs count for queue listings and wait times.
const WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Most jobs looked at for wait times, per request.
const WAIT_SAMPLE: u32 = 5000;
/// The percentiles of `GET /v1/queues/wait_times`.
const PERCENTILES: [u32; 5] = [5, 10, 50, 90, 95];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/queues", get(list_queues).post(advertise_queues))
        .route("/v1/agents/images/{queue}", get(queue_images))
        .route("/v1/agents/images", post(set_images))
        .route("/v1/queues/wait_times", get(wait_times))
        .route("/v1/queues/{queue}/agents", get(queue_agents))
        .route("/v1/queues/{queue}/jobs", get(queue_jobs))
}

/// `{queue: description}`: every queue an agent serves or advertised.
#[utoipa::path(
    get,
    path = "/v1/agents/queues",
    tag = "queues",
    summary = "Queues agents serve or advertised, with descriptions",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = BTreeMap<String, String>),
    )
)]
async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let mut queues: BTreeMap<String, String> = state
        .store()
        .list_agents()
        .await?
        .iter()
        .flat_map(|a| a.queues.iter())
        .map(|q| (q.to_string(), String::new()))
        .collect();
    for (name, q) in state.store().list_queues().await? {
        if let Some(d) = q.description {
            queues.insert(name, d);
        } else {
            queues.entry(name).or_default();
        }
    }
    Ok(Json(queues))
}

/// `POST /v1/agents/queues` `{queue: description}`.
#[utoipa::path(
    post,
    path = "/v1/agents/queues",
    tag = "queues",
    summary = "Advertise queue descriptions",
    security(("bearer" = ["admin", "manager", "agent"])),
    request_body = flinger_api::QueuesIn,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
    )
)]
async fn advertise_queues(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT_DATA)?;
    // The shape is QueuesIn's; what its schema cannot say is what a queue name may be.
    let QueuesIn(queues) = validate::body_checked(&body, |v, errors| {
        for name in v.as_object().into_iter().flat_map(|m| m.keys()) {
            if let Err(e) = DeviceClass::parse(name.as_str()) {
                errors.add(name.clone(), format!("Invalid queue name: {e}."));
            }
        }
    })?;
    state.store().advertise_queues(&queues, Millis::now()).await?;
    Ok("OK")
}

/// `{image: provision_data}` for a queue (`{}` when none).
#[utoipa::path(
    get,
    path = "/v1/agents/images/{queue}",
    tag = "queues",
    summary = "Images of a queue ({} if none)",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = BTreeMap<String, String>),
    )
)]
async fn queue_images(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let images = state
        .store()
        .get_queue(&queue)
        .await?
        .map(|q| q.images)
        .unwrap_or_default();
    Ok(Json(images))
}

/// `POST /v1/agents/images` `{queue: {image: provision_data}}`: replaces each named queue's images.
#[utoipa::path(
    post,
    path = "/v1/agents/images",
    tag = "queues",
    summary = "Set queues' images",
    security(("bearer" = ["admin", "manager", "agent"])),
    request_body = flinger_api::ImagesIn,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
    )
)]
async fn set_images(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT_DATA)?;
    // The shape is ImagesIn's; what its schema cannot say is what queue and image names may be.
    let ImagesIn(all) = validate::body_checked(&body, |v, errors| {
        for (queue, images) in v.as_object().into_iter().flatten() {
            if DeviceClass::parse(queue.as_str()).is_err() {
                errors.add(queue.clone(), "Invalid queue name.");
            }
            if images.as_object().is_some_and(|m| m.contains_key("")) {
                errors.add(format!("{queue}."), "Image names must be non-empty strings.");
            }
        }
    })?;
    let now = Millis::now();
    for (queue, images) in all {
        state.store().set_queue_images(&queue, &images, now).await?;
    }
    Ok("OK")
}

/// The agents serving `queue`; 404 when no agent serves it (Testflinger's CLI asks this before
/// submitting and stops there), whether or not it was ever advertised.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/agents",
    tag = "queues",
    summary = "Agents serving a queue; 404 if no agent serves it",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = Vec<flinger_api::Agent>),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn queue_agents(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<Vec<Agent>>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let unknown = || ApiError::NotFound(format!("Queue '{queue}' does not exist."));
    let class = DeviceClass::parse(queue.clone()).map_err(|_| unknown())?;
    let serving: Vec<_> = state
        .store()
        .list_agents()
        .await?
        .into_iter()
        .filter(|a| a.queues.contains(&class))
        .collect();
    if serving.is_empty() {
        return Err(match state.store().get_queue(&queue).await? {
            Some(_) => ApiError::NotFound(format!("No agent serves queue '{queue}'.")),
            None => unknown(),
        });
    }
    Ok(Json(agents::views(&state, &serving).await?))
}

/// `[{job_id, created_at, job_state, job_queue}]` of the queue's jobs of the last 7 days, newest
/// first; 204 when there are none.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/jobs",
    tag = "queues",
    summary = "Jobs of a queue (last 7 days); 204 if none",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = Vec<flinger_api::QueueJob>),
        (status = 204),
    )
)]
async fn queue_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(access::SUBMITTER)?;
    let Ok(class) = DeviceClass::parse(queue.clone()) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let jobs = state
        .store()
        .find_jobs(&JobQuery {
            queue: Some(class),
            created_after: Some(Millis::now().minus(WINDOW)),
            order: JobOrder::CreatedDesc,
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    if jobs.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let list: Vec<QueueJob> = jobs
        .iter()
        .map(|j| QueueJob {
            job_id: j.job_id,
            created_at: views::time(j.created_at),
            job_state: j.state.testflinger_name().to_owned(),
            job_queue: j.queue.to_string(),
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /v1/queues/wait_times[?queue=a&queue=b]`: `{queue: {"5": s, "10": s, "50": s, "90": s,
/// "95": s}}`, seconds from submission to the first lease, over the last 7 days' jobs that
/// started; queues without such jobs are left out.
#[utoipa::path(
    get,
    path = "/v1/queues/wait_times",
    tag = "queues",
    summary = "Wait-time percentiles per queue (last 7 days)",
    security(("bearer" = ["admin", "manager", "contributor"])),
    params(
        ("queue" = Option<Vec<String>>, Query, description = "Repeatable"),
    ),
    responses(
        (status = 200, body = WaitTimes),
    )
)]
async fn wait_times(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<WaitTimes>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let wanted = query_values(query.as_deref(), "queue");
    let since = Millis::now().minus(WINDOW);
    let mut queries = vec![];
    if wanted.is_empty() {
        queries.push(None);
    }
    for q in &wanted {
        if let Ok(c) = DeviceClass::parse(q.as_str()) {
            queries.push(Some(c));
        }
    }
    let mut waits: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for queue in queries {
        let jobs = state
            .store()
            .find_jobs(&JobQuery {
                queue,
                created_after: Some(since),
                order: JobOrder::CreatedDesc,
                limit: Some(WAIT_SAMPLE),
                ..Default::default()
            })
            .await?;
        for j in jobs {
            if let Some(first) = j.attempts.first() {
                waits
                    .entry(j.queue.to_string())
                    .or_default()
                    .push(first.started_at.since(j.created_at).as_secs_f64());
            }
        }
    }
    Ok(Json(
        waits
            .into_iter()
            .map(|(q, mut w)| {
                w.sort_by(f64::total_cmp);
                let p = PERCENTILES
                    .iter()
                    .map(|p| (p.to_string(), round(percentile(&w, f64::from(*p)))))
                    .collect();
                (q, p)
            })
            .collect(),
    ))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `p`th percentile of sorted values, interpolating linearly between ranks (numpy's
/// default, which Testflinger uses).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = p / 100.0 * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 90.0), 4.6);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
    }
}
