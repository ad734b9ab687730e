//! `/queues` and `/queues/<name>`: each queue's agents by state, its waiting jobs in order with
//! their ETA, its running jobs and how long jobs waited. Also the queue cards of `/`.

use super::jobs::{Header, JobRow};
use super::page::{Page, UiError, answer};
use super::session::Viewer;
use super::text;
use crate::auth::access;
use crate::estimate::QueueNow;
use crate::routes::queues::percentile;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use broker_schema::messages::AgentState;
use broker_schema::{DeviceClass, JobState, Millis};
use flinger_store::{AgentRecord, JobOrder, JobQuery, Records};
use std::collections::BTreeMap;
use std::time::Duration;

/// How far back wait times count (as `GET /v1/queues/wait_times`).
const WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Most jobs looked at for wait times.
const WAIT_SAMPLE: u32 = 2000;
/// Waiting jobs given an ETA on a queue's page.
const ETA_JOBS: usize = 20;

/// One queue at a glance.
pub struct QueueCard {
    pub name: String,
    pub description: String,
    pub waiting_agents: usize,
    pub busy_agents: usize,
    pub offline_agents: usize,
    pub maintenance_agents: usize,
    pub jobs_waiting: u64,
    pub jobs_running: u64,
    /// p50 / p90 of the last week's waits, or empty.
    pub wait_p50: String,
    pub wait_p90: String,
}

/// The lab's queues: those agents serve and those advertised, with descriptions.
pub async fn known_queues(state: &AppState) -> Result<BTreeMap<String, String>, UiError> {
    let mut queues: BTreeMap<String, String> = BTreeMap::new();
    for a in state.store().list_agents().await? {
        for q in a.queues {
            queues.entry(q.to_string()).or_default();
        }
    }
    for (name, q) in state.store().list_queues().await? {
        let d = queues.entry(name).or_default();
        if let Some(desc) = q.description {
            *d = desc;
        }
    }
    Ok(queues)
}

/// Seconds from submission to first lease of the queue's jobs of the last week, sorted.
async fn waits(state: &AppState, queue: &DeviceClass) -> Result<Vec<f64>, UiError> {
    let jobs = state
        .store()
        .find_jobs(&JobQuery {
            queue: Some(queue.clone()),
            created_after: Some(Millis::now().minus(WINDOW)),
            order: JobOrder::CreatedDesc,
            limit: Some(WAIT_SAMPLE),
            ..Default::default()
        })
        .await?;
    let mut w: Vec<f64> = jobs
        .iter()
        .filter_map(|j| Some(j.attempts.first()?.started_at.since(j.created_at).as_secs_f64()))
        .collect();
    w.sort_by(f64::total_cmp);
    Ok(w)
}

fn secs(x: f64) -> String {
    text::duration_secs(x.round() as u64)
}

fn active_states() -> Vec<JobState> {
    JobState::ALL.into_iter().filter(|s| s.is_active()).collect()
}

pub async fn card(
    state: &AppState,
    name: &str,
    description: &str,
    agents: &[AgentRecord],
    now: Millis,
) -> Result<QueueCard, UiError> {
    let class = DeviceClass::parse(name.to_owned())
        .map_err(|_| UiError::NotFound(format!("Queue {name} not found.")))?;
    let mut c = QueueCard {
        name: name.to_owned(),
        description: description.to_owned(),
        waiting_agents: 0,
        busy_agents: 0,
        offline_agents: 0,
        maintenance_agents: 0,
        jobs_waiting: 0,
        jobs_running: 0,
        wait_p50: String::new(),
        wait_p90: String::new(),
    };
    for a in agents.iter().filter(|a| a.queues.contains(&class)) {
        match a.effective_state(now) {
            AgentState::Waiting => c.waiting_agents += 1,
            AgentState::Offline => c.offline_agents += 1,
            AgentState::Maintenance => c.maintenance_agents += 1,
            _ => c.busy_agents += 1,
        }
    }
    let count = |states| JobQuery {
        queue: Some(class.clone()),
        states: Some(states),
        ..Default::default()
    };
    c.jobs_waiting = state.store().count_jobs(&count(vec![JobState::Waiting])).await?;
    c.jobs_running = state.store().count_jobs(&count(active_states())).await?;
    let w = waits(state, &class).await?;
    if !w.is_empty() {
        c.wait_p50 = secs(percentile(&w, 50.0));
        c.wait_p90 = secs(percentile(&w, 90.0));
    }
    Ok(c)
}

#[derive(Template)]
#[template(path = "ui/queues.html")]
struct QueuesRegion {
    cards: Vec<QueueCard>,
}

pub async fn cards(state: &AppState) -> Result<Vec<QueueCard>, UiError> {
    let agents = state.store().list_agents().await?;
    let now = Millis::now();
    let mut cards = vec![];
    for (name, description) in known_queues(state).await? {
        if let Ok(c) = card(state, &name, &description, &agents, now).await {
            cards.push(c);
        }
    }
    Ok(cards)
}

pub async fn list_region(state: &AppState, viewer: &Viewer) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    Ok(QueuesRegion {
        cards: cards(state).await?,
    }
    .render()?)
}

/// `GET /queues`.
pub async fn list_page(State(state): State<AppState>, viewer: Viewer) -> Response {
    let result = async {
        let mut page = Page::new(&viewer, "Queues").live_region("/queues", "");
        page.region = list_region(&state, &viewer).await?;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}

struct AgentLine {
    name: String,
    state: String,
    job: String,
}

struct WaitingJob {
    position: usize,
    row: JobRow,
    eta: String,
}

#[derive(Template)]
#[template(path = "ui/queue.html")]
struct QueueRegion {
    card: QueueCard,
    agents: Vec<AgentLine>,
    waiting: Vec<WaitingJob>,
    more_waiting: u64,
    rows: Vec<JobRow>,
    headers: Vec<Header>,
    percentiles: Vec<(u32, String)>,
}

pub async fn queue_region(state: &AppState, viewer: &Viewer, name: &str) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let unknown = || UiError::NotFound(format!("Queue {name} not found."));
    let queues = known_queues(state).await?;
    let description = queues.get(name).ok_or_else(unknown)?;
    let class = DeviceClass::parse(name.to_owned()).map_err(|_| unknown())?;
    let all_agents = state.store().list_agents().await?;
    let now = Millis::now();
    let card = card(state, name, description, &all_agents, now).await?;
    let agents = all_agents
        .iter()
        .filter(|a| a.queues.contains(&class))
        .map(|a| AgentLine {
            name: a.name.to_string(),
            state: a.effective_state(now).as_str().to_owned(),
            job: a.job_id.map(|j| j.to_string()).unwrap_or_default(),
        })
        .collect();
    let waiting_jobs = state
        .store()
        .find_jobs(&JobQuery {
            queue: Some(class.clone()),
            states: Some(vec![JobState::Waiting]),
            order: JobOrder::QueueOrder,
            limit: Some(ETA_JOBS as u32),
            ..Default::default()
        })
        .await?;
    // One reading of the queue, one pass of the estimator for all the places shown.
    let forecasts = QueueNow::read(state.store().as_ref(), &class, now)
        .await?
        .forecasts(waiting_jobs.len());
    let waiting: Vec<WaitingJob> = waiting_jobs
        .iter()
        .zip(forecasts)
        .enumerate()
        .map(|(position, (j, f))| WaitingJob {
            position,
            row: JobRow::of(j),
            eta: f
                .start
                .map(|s| format!("in about {}", text::duration_secs(s.round() as u64)))
                .unwrap_or_else(|_| "unknown".to_owned()),
        })
        .collect();
    let running = state
        .store()
        .find_jobs(&JobQuery {
            queue: Some(class.clone()),
            states: Some(active_states()),
            order: JobOrder::CreatedAsc,
            limit: Some(200),
            ..Default::default()
        })
        .await?;
    let w = waits(state, &class).await?;
    let percentiles = if w.is_empty() {
        vec![]
    } else {
        [5, 10, 50, 90, 95]
            .into_iter()
            .map(|p| (p, secs(percentile(&w, f64::from(p)))))
            .collect()
    };
    Ok(QueueRegion {
        more_waiting: card.jobs_waiting.saturating_sub(waiting.len() as u64),
        card,
        agents,
        waiting,
        rows: running.iter().map(JobRow::of).collect(),
        headers: Header::plain(),
        percentiles,
    }
    .render()?)
}

/// `GET /queues/<name>`.
pub async fn queue_page(State(state): State<AppState>, viewer: Viewer, Path(name): Path<String>) -> Response {
    let result = async {
        let region = queue_region(&state, &viewer, &name).await?;
        let mut page =
            Page::new(&viewer, format!("Queue {name}")).live_region(&format!("/queues/{name}"), "");
        page.region = region;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}
