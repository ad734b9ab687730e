//! Agents: what their heartbeats (or Testflinger-style posts) left in the store, their
//! provisioning history, and the admin's say over their state.

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::{Body, json_object};
use crate::scheduler;
use crate::state::AppState;
use crate::validate;
use crate::views;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::messages::{AdminState, AgentState, Heartbeat, SchedulerRequest, SetAgentStateRequest};
use broker_schema::{AgentName, DeviceClass, Millis, ValidationErrors};
use flinger_api::{Agent, AgentIn, ProvisionLog, ProvisionLogEntry, ProvisionLogIn, Status};
use flinger_store::{AgentRecord, ProvisionEntry, Records};
use std::collections::BTreeMap;

/// Heartbeat interval assumed for an agent that reports over HTTP: Testflinger agents post
/// their data when their state changes, not periodically, so they are shown offline only after
/// three hours of silence.
const HTTP_AGENT_INTERVAL_MS: u64 = 3_600_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/data", get(list_agents))
        .route("/v1/agents/data/{name}", get(get_agent).post(post_agent))
        .route(
            "/v1/agents/provision_logs/{name}",
            post(post_provision_log).get(get_provision_log),
        )
}

/// Every restricted queue with its owners, for the views' `restricted_to`.
pub async fn restricted_owners(state: &AppState) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    Ok(state
        .store()
        .list_restricted_queues()
        .await?
        .into_iter()
        .map(|(q, r)| (q, r.owners.into_iter().collect()))
        .collect())
}

/// Views of `agents` as of now.
pub async fn views(state: &AppState, agents: &[AgentRecord]) -> Result<Vec<Agent>, ApiError> {
    let now = Millis::now();
    let restricted = restricted_owners(state).await?;
    let streaks: BTreeMap<String, (String, u32)> = state
        .store()
        .list_provision_logs()
        .await?
        .into_iter()
        .map(|(a, log)| (a, (log.streak_type, log.streak_count)))
        .collect();
    Ok(agents
        .iter()
        .map(|a| {
            let streak = streaks.get(a.name.as_str()).map(|(t, n)| (t.as_str(), *n));
            views::agent(a, now, &restricted, streak)
        })
        .collect())
}

#[utoipa::path(
    get,
    path = "/v1/agents/data",
    tag = "agents",
    summary = "Every agent",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = Vec<flinger_api::Agent>),
    )
)]
async fn list_agents(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Agent>>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let agents = state.store().list_agents().await?;
    Ok(Json(views(&state, &agents).await?))
}

fn unknown_agent(name: &str) -> ApiError {
    ApiError::NotFound(format!("Agent {name:?} not found"))
}

async fn find_agent(state: &AppState, name: &str) -> Result<AgentRecord, ApiError> {
    let agent_name = AgentName::parse(name).map_err(|_| unknown_agent(name))?;
    state
        .store()
        .get_agent(&agent_name)
        .await?
        .ok_or_else(|| unknown_agent(name))
}

#[utoipa::path(
    get,
    path = "/v1/agents/data/{name}",
    tag = "agents",
    summary = "One agent; 404 if unknown",
    security(("bearer" = ["admin", "manager", "contributor", "agent"])),
    responses(
        (status = 200, body = flinger_api::Agent),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    caller.require(access::ANYONE)?;
    let agent = find_agent(&state, &name).await?;
    let mut v = views(&state, std::slice::from_ref(&agent)).await?;
    Ok(Json(v.remove(0)))
}

/// `POST /v1/agents/data/<name>`. From an admin or manager: `{state, comment}` sets the agent's
/// admin state through the scheduler (`waiting`/`online` returns it to service, `restart`
/// restarts it; the change takes effect after the agent's current job). From an agent: what it reports about itself
/// (`state`, `queues`, `location`, `provision_type`, `job_id`, `comment`), recorded like a
/// heartbeat.
#[utoipa::path(
    post,
    path = "/v1/agents/data/{name}",
    tag = "agents",
    summary = "Admins: set an agent's state; agents: report about themselves",
    security(("bearer" = ["admin", "manager", "agent"])),
    request_body = flinger_api::AgentIn,
    responses(
        (status = 200, body = flinger_api::Status),
        (status = 404, body = flinger_api::Error),
        (status = 409, body = flinger_api::Error),
    )
)]
async fn post_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Json<Status>, ApiError> {
    caller.require(access::AGENT_DATA)?;
    // The shape is AgentIn's; what its schema cannot say: a job id is a UUID (or empty), a
    // queue is a valid queue name.
    let AgentIn {
        state: wanted,
        comment,
        queues,
        location,
        provision_type,
        job_id,
    } = validate::body_checked(&body, |v, errors| {
        if let Some(id) = v["job_id"].as_str()
            && !id.is_empty()
            && id.parse::<uuid::Uuid>().is_err()
        {
            errors.add("job_id", "Not a valid UUID.");
        }
        for (i, q) in v["queues"].as_array().into_iter().flatten().enumerate() {
            if q.as_str().is_some_and(|q| DeviceClass::parse(q).is_err()) {
                errors.add(format!("queues.{i}"), "Not a valid queue name.");
            }
        }
    })?;
    let mut errors = ValidationErrors::default();
    if caller.is_manager() {
        let admin_state = match wanted.as_deref() {
            Some("waiting" | "online") => None,
            Some("offline") => Some(AdminState::Offline),
            Some("maintenance") => Some(AdminState::Maintenance),
            // Restart after the current job; the agent's admin state is left as it was.
            Some("restart") => Some(AdminState::Restart),
            Some(_) => {
                errors.add(
                    "state",
                    "Must be one of: waiting, online, offline, maintenance, restart.",
                );
                None
            }
            None => {
                errors.add("state", "Missing data for required field.");
                None
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(errors));
        }
        let agent = find_agent(&state, &name).await?;
        let request = SchedulerRequest::SetAgentState(SetAgentStateRequest {
            agent: agent.name,
            state: admin_state,
            comment: comment.unwrap_or_default(),
        });
        scheduler::command(&state, &request).await?;
        return Ok(Json(Status::ok()));
    }
    // An agent reporting about itself.
    let agent =
        AgentName::parse(name.clone()).map_err(|e| ApiError::BadRequest(format!("agent name: {e}")))?;
    let reported_state = match wanted.as_deref() {
        None => None,
        Some(s) => Some(
            AgentState::parse(s)
                .ok_or_else(|| ApiError::invalid_field("state", format!("Unknown agent state {s:?}.")))?,
        ),
    };
    // Checked above.
    let job_id = job_id.filter(|s| !s.is_empty()).and_then(|s| s.parse().ok());
    let queues: Option<Vec<DeviceClass>> = queues.map(|qs| {
        qs.iter()
            .filter_map(|q| DeviceClass::parse(q.as_str()).ok())
            .collect()
    });
    // `job_id` sent (even empty or null) says what the agent runs now; absent, it is unchanged.
    let sent_job_id = json_object(&body)?.contains_key("job_id");
    // Testflinger sets only the fields given: start from what is known.
    let known = state.store().get_agent(&agent).await?;
    let base = known.unwrap_or_else(|| AgentRecord::placeholder(agent.clone()));
    let hb = Heartbeat {
        agent: agent.clone(),
        state: reported_state.unwrap_or(if base.last_seen.0 == 0 {
            AgentState::Waiting
        } else {
            base.state
        }),
        job_id: if sent_job_id { job_id } else { base.job_id },
        queues: queues.unwrap_or(base.queues),
        location: location.or(base.location),
        provision_type: provision_type.or(base.provision_type),
        comment: comment.or(base.comment),
        interval_ms: HTTP_AGENT_INTERVAL_MS,
        at: Millis::now(),
        version: "testflinger-http".into(),
    };
    state.store().record_heartbeat(&hb).await?;
    Ok(Json(Status::ok()))
}

/// `POST /v1/agents/provision_logs/<name>`: `{job_id, exit_code, detail}` joins the agent's
/// provision history and extends or restarts its pass/fail streak.
#[utoipa::path(
    post,
    path = "/v1/agents/provision_logs/{name}",
    tag = "agents",
    summary = "Record a provisioning result (history and streak)",
    security(("bearer" = ["agent"])),
    request_body = flinger_api::ProvisionLogIn,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn post_provision_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::AGENT)?;
    let ProvisionLogIn {
        job_id,
        exit_code,
        detail,
    } = validate::body(&body)?;
    let agent = find_agent(&state, &name).await?;
    let entry = ProvisionEntry {
        job_id,
        exit_code,
        detail: detail.unwrap_or_default(),
        at: Millis::now(),
    };
    state
        .store()
        .record_provision(agent.name.as_str(), &entry)
        .await?;
    Ok("OK")
}

/// [ext] `GET /v1/agents/provision_logs/<name>`: `{entries: [{job_id, exit_code, detail,
/// timestamp}], streak_type, streak_count}`.
#[utoipa::path(
    get,
    path = "/v1/agents/provision_logs/{name}",
    tag = "agents",
    summary = "[ext] An agent's provisioning history and streak",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = flinger_api::ProvisionLog),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn get_provision_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ProvisionLog>, ApiError> {
    caller.require(access::SUBMITTER)?;
    let agent = find_agent(&state, &name).await?;
    let log = state
        .store()
        .get_provision_log(agent.name.as_str())
        .await?
        .unwrap_or_default();
    Ok(Json(ProvisionLog {
        name: agent.name.to_string(),
        provision_log: log
            .entries
            .iter()
            .map(|e| ProvisionLogEntry {
                job_id: e.job_id.clone(),
                exit_code: e.exit_code,
                detail: e.detail.clone(),
                timestamp: views::time(e.at),
            })
            .collect(),
        provision_streak_type: log.streak_type,
        provision_streak_count: log.streak_count,
    }))
}
