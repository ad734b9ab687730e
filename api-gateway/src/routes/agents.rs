//! Agents and the queues they serve, as their heartbeats left them in the store.

use crate::error::ApiError;
use crate::state::AppState;
use crate::views::AgentView;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use broker_schema::{AgentName, DeviceClass, Millis};
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/data", get(list_agents))
        .route("/v1/agents/data/{name}", get(get_agent))
        .route("/v1/agents/queues", get(list_queues))
        .route("/v1/queues/{queue}/agents", get(queue_agents))
}

async fn list_agents(State(state): State<AppState>) -> Result<Json<Vec<AgentView>>, ApiError> {
    let now = Millis::now();
    let agents = state.store().list_agents().await?;
    Ok(Json(agents.iter().map(|a| AgentView::new(a, now)).collect()))
}

async fn get_agent(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let unknown = || ApiError::NotFound(format!("Agent {name:?} not found"));
    let agent_name = AgentName::parse(name.clone()).map_err(|_| unknown())?;
    let agent = state.store().get_agent(&agent_name).await?.ok_or_else(unknown)?;
    Ok(Json(AgentView::new(&agent, Millis::now())))
}

/// `{queue: description}` for every queue an agent serves. Agents do not describe their queues
/// yet, so descriptions are empty.
async fn list_queues(State(state): State<AppState>) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let agents = state.store().list_agents().await?;
    let queues = agents
        .iter()
        .flat_map(|a| a.queues.iter())
        .map(|q| (q.to_string(), String::new()))
        .collect();
    Ok(Json(queues))
}

async fn queue_agents(
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let unknown = || ApiError::NotFound(format!("No agent serves queue {queue:?}"));
    let class = DeviceClass::parse(queue.clone()).map_err(|_| unknown())?;
    let now = Millis::now();
    let agents: Vec<AgentView> = state
        .store()
        .list_agents()
        .await?
        .iter()
        .filter(|a| a.queues.contains(&class))
        .map(|a| AgentView::new(a, now))
        .collect();
    if agents.is_empty() {
        return Err(unknown());
    }
    Ok(Json(agents))
}
