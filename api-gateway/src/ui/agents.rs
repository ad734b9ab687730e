//! `/agents` (every agent: state and comment, location, queues, current job, last heartbeat,
//! provisioning streak; searched and filtered) and `/agents/<name>` (one agent, its provision
//! history over a date range with its success rate).

use super::page::{Page, UiError, answer};
use super::session::Viewer;
use super::text;
use crate::auth::access;
use crate::routes::agents::views;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use broker_schema::{AgentName, Millis};
use flinger_api::Agent;
use flinger_store::Records;
use std::time::Duration;

/// The provision history's default range, in days.
const DEFAULT_DAYS: u32 = 2;

struct AgentRow {
    name: String,
    state: String,
    comment: String,
    location: String,
    queues: Vec<String>,
    job: String,
    seen: String,
    streak: String,
}

fn row(a: &Agent, seen: Millis, now: Millis) -> AgentRow {
    AgentRow {
        name: a.name.clone(),
        state: a.state.clone(),
        comment: a.comment.clone(),
        location: a.location.clone(),
        queues: a.queues.clone(),
        job: a.job_id.clone(),
        seen: text::ago(seen, now),
        streak: if a.provision_streak_count > 0 {
            format!("{} × {}", a.provision_streak_count, a.provision_streak_type)
        } else {
            String::new()
        },
    }
}

fn param(query: &str, key: &str) -> String {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "ui/agents_filters.html")]
struct AgentsFilters {
    q: String,
    state: String,
    queue: String,
}

#[derive(Template)]
#[template(path = "ui/agents.html")]
struct AgentsRegion {
    rows: Vec<AgentRow>,
    total: usize,
}

pub async fn list_region(state: &AppState, viewer: &Viewer, query: &str) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let (q, want_state, queue) = (param(query, "q"), param(query, "state"), param(query, "queue"));
    let mut records = state.store().list_agents().await?;
    records.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    let total = records.len();
    let seen: Vec<Millis> = records.iter().map(|a| a.last_seen).collect();
    let now = Millis::now();
    let rows = views(state, &records)
        .await?
        .iter()
        .zip(seen)
        .filter(|(a, _)| q.is_empty() || a.name.contains(&q) || a.location.contains(&q))
        .filter(|(a, _)| want_state.is_empty() || a.state == want_state)
        .filter(|(a, _)| queue.is_empty() || a.queues.contains(&queue))
        .map(|(a, seen)| row(a, seen, now))
        .collect();
    Ok(AgentsRegion { rows, total }.render()?)
}

/// `GET /agents`.
pub async fn list_page(State(state): State<AppState>, viewer: Viewer, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let result = async {
        let region = list_region(&state, &viewer, &query).await?;
        let mut page = Page::new(&viewer, "Agents").live_region("/agents", &query);
        page.before = AgentsFilters {
            q: param(&query, "q"),
            state: param(&query, "state"),
            queue: param(&query, "queue"),
        }
        .render()?;
        page.region = region;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}

struct ProvisionRow {
    job: String,
    at: String,
    exit_code: i32,
    detail: String,
}

#[derive(Template)]
#[template(path = "ui/agent.html")]
struct AgentRegion {
    a: AgentRow,
    provision_type: String,
    days: u32,
    history: Vec<ProvisionRow>,
    passed: usize,
    rate: String,
}

pub async fn agent_region(
    state: &AppState,
    viewer: &Viewer,
    name: &str,
    query: &str,
) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let unknown = || UiError::NotFound(format!("Agent {name} not found."));
    let agent_name = AgentName::parse(name.to_owned()).map_err(|_| unknown())?;
    let record = state.store().get_agent(&agent_name).await?.ok_or_else(unknown)?;
    let now = Millis::now();
    let view = views(state, std::slice::from_ref(&record)).await?.remove(0);
    let days = param(query, "days")
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=365).contains(d))
        .unwrap_or(DEFAULT_DAYS);
    let since = now.minus(Duration::from_secs(u64::from(days) * 86_400));
    let log = state.store().get_provision_log(name).await?.unwrap_or_default();
    let mut history: Vec<ProvisionRow> = log
        .entries
        .iter()
        .filter(|e| e.at >= since)
        .map(|e| ProvisionRow {
            job: e.job_id.clone(),
            at: text::when(e.at),
            exit_code: e.exit_code,
            detail: e.detail.clone(),
        })
        .collect();
    history.reverse();
    let passed = history.iter().filter(|h| h.exit_code == 0).count();
    let rate = if history.is_empty() {
        String::new()
    } else {
        format!("{:.0} %", 100.0 * passed as f64 / history.len() as f64)
    };
    Ok(AgentRegion {
        a: row(&view, record.last_seen, now),
        provision_type: view.provision_type.clone(),
        days,
        history,
        passed,
        rate,
    }
    .render()?)
}

#[derive(Template)]
#[template(path = "ui/agent_filters.html")]
struct AgentFilters {
    name: String,
    days: u32,
}

/// `GET /agents/<name>[?days=N]`.
pub async fn agent_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let result = async {
        let region = agent_region(&state, &viewer, &name, &query).await?;
        let mut page =
            Page::new(&viewer, format!("Agent {name}")).live_region(&format!("/agents/{name}"), &query);
        page.before = AgentFilters {
            name: name.clone(),
            days: param(&query, "days").parse().unwrap_or(DEFAULT_DAYS),
        }
        .render()?;
        page.region = region;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}
