//! [ext] When will a waiting job start: its place in the queue, and an ETA from how long recent
//! jobs of that queue ran and how many agents serve it now.
//!
//! The model, kept simple so that it can be explained: every agent serving the queue (and not
//! offline or in maintenance) becomes free when its current job ends — a job of this queue is
//! assumed to run the queue's recent median duration in total, a job of another queue to be
//! half done. The jobs ahead are handed out, one by one, to whichever agent frees first; the job
//! starts when the next agent frees after that. No estimate is given without an agent or
//! without a finished job of the queue in the last week, and the answer says why.

use crate::state::AppState;
use crate::views;
use broker_schema::messages::AgentState;
use broker_schema::{JobState, Millis};
use flinger_api::Estimate;
use flinger_store::{JobOrder, JobQuery, JobRecord, StoreError};
use std::time::Duration;

/// How far back finished jobs count, and how many at most.
const HISTORY: Duration = Duration::from_secs(7 * 86_400);
const HISTORY_JOBS: u32 = 50;

pub async fn estimate(state: &AppState, job: &JobRecord, position: u64) -> Result<Estimate, StoreError> {
    let store = state.store();
    let now = Millis::now();
    let queue = job.queue.clone();

    let finished = store
        .find_jobs(&JobQuery {
            queue: Some(queue.clone()),
            states: Some(vec![JobState::Complete, JobState::Cancelled, JobState::Failed]),
            created_after: Some(now.minus(HISTORY)),
            order: JobOrder::CreatedDesc,
            limit: Some(HISTORY_JOBS),
            ..Default::default()
        })
        .await?;
    let mut runs: Vec<u64> = finished
        .iter()
        .filter_map(|j| Some(j.ended_at?.since(j.started_at?).as_secs()))
        .collect();
    runs.sort_unstable();
    let median = (!runs.is_empty()).then(|| runs[runs.len() / 2].max(1));

    let agents: Vec<_> = store
        .list_agents()
        .await?
        .into_iter()
        .filter(|a| a.queues.contains(&queue))
        .filter(|a| {
            !matches!(
                a.effective_state(now),
                AgentState::Offline | AgentState::Maintenance
            )
        })
        .collect();
    let running = store
        .find_jobs(&JobQuery {
            queue: Some(queue.clone()),
            states: Some(JobState::ALL.into_iter().filter(|s| s.is_active()).collect()),
            ..Default::default()
        })
        .await?;
    let busy = agents
        .iter()
        .filter(|a| !matches!(a.state, AgentState::Waiting))
        .count();

    let (eta_seconds, basis) = match (agents.len(), median) {
        (0, _) => (None, "no agent serving the queue is available now".to_owned()),
        (_, None) => (
            None,
            "no job of this queue finished in the last 7 days".to_owned(),
        ),
        (n, Some(d)) => {
            // When each available agent is free, in seconds from now.
            let mut free: Vec<u64> = agents
                .iter()
                .map(|a| match a.job_id {
                    None if matches!(a.state, AgentState::Waiting) => 0,
                    Some(id) => match running.iter().find(|j| j.job_id == id) {
                        Some(j) => d.saturating_sub(j.started_at.map_or(0, |s| now.since(s).as_secs())),
                        None => d / 2,
                    },
                    None => d / 2,
                })
                .collect();
            for _ in 0..position {
                let (i, _) = free.iter().enumerate().min_by_key(|(_, t)| **t).expect("n > 0");
                free[i] += d;
            }
            let start = free.into_iter().min().unwrap_or(0);
            (
                Some(start),
                format!(
                    "{position} job(s) ahead, {n} agent(s) available ({busy} busy), median run {d} s over the last {} finished job(s)",
                    runs.len()
                ),
            )
        }
    };
    Ok(Estimate {
        job_id: job.job_id,
        queue: queue.to_string(),
        position,
        agents_available: agents.len() as u64,
        agents_busy: busy as u64,
        recent_runs: runs.len() as u64,
        median_run_seconds: median,
        eta_seconds,
        eta: eta_seconds.map(|s| views::time(now.plus(Duration::from_secs(s)))),
        basis,
    })
}
