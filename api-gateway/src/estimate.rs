//! [ext] When will a waiting job start: the store-reading shell around [`flinger_api::eta`],
//! the one estimator (its rules are written and tested there).
//!
//! [`QueueNow::read`] gathers what the estimator needs about a queue — how long its finished
//! runs of the last week took (the latest 50), which agents serve it and what each runs now,
//! from the jobs' leases in the store (which the scheduler writes as it grants them, so an
//! agent's heartbeat lagging behind does not make a busy agent look idle) — and
//! [`estimate`] shapes `GET /v1/job/<id>/estimate`. The web pages take their positions' ETAs
//! from [`QueueNow::forecasts`]. Nothing here decides anything the estimator does not.

use crate::state::AppState;
use crate::views;
use broker_schema::messages::{AdminState, AgentState};
use broker_schema::{DeviceClass, JobState, Millis};
use flinger_api::Estimate;
use flinger_api::eta::{self, Agent, Durations, Forecast, Inputs};
use flinger_store::{JobOrder, JobQuery, JobRecord, Store, StoreError};
use std::collections::HashMap;
use std::time::Duration;

/// How far back finished jobs count, and how many at most.
pub const HISTORY: Duration = Duration::from_secs(7 * 86_400);
pub const HISTORY_JOBS: u32 = 50;

/// What one agent does now, as read from the store (the estimator's [`Agent`], owning its data).
#[derive(Clone, Debug)]
enum Doing {
    Idle,
    Running { elapsed: f64, queue: DeviceClass },
    Until(f64),
    Busy,
    Away,
}

/// A queue as the estimator sees it, read from the store at one instant.
#[derive(Clone, Debug)]
pub struct QueueNow {
    pub queue: DeviceClass,
    pub now: Millis,
    /// The queue's recent run durations.
    pub durations: Durations,
    /// Those of other queues whose jobs this queue's agents are running.
    others: HashMap<DeviceClass, Durations>,
    agents: Vec<Doing>,
}

impl QueueNow {
    pub async fn read(store: &dyn Store, queue: &DeviceClass, now: Millis) -> Result<QueueNow, StoreError> {
        let durations = recent_durations(store, queue, now).await?;
        let serving: Vec<_> = store
            .list_agents()
            .await?
            .into_iter()
            .filter(|a| a.queues.contains(queue))
            .collect();
        // Leases of this queue's jobs, by agent; an agent on another queue's job is looked up
        // by the job its heartbeat names.
        let active: Vec<JobState> = JobState::ALL.into_iter().filter(|s| s.is_active()).collect();
        let mut leased: HashMap<String, JobRecord> = store
            .find_jobs(&JobQuery {
                queue: Some(queue.clone()),
                states: Some(active),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter_map(|j| Some((j.lease.as_ref()?.agent.to_string(), j)))
            .collect();
        let mut agents = Vec::with_capacity(serving.len());
        let mut others = HashMap::new();
        for a in serving {
            let going_away = matches!(a.admin_state, Some(AdminState::Maintenance | AdminState::Offline));
            let away = matches!(
                a.effective_state(now),
                AgentState::Offline | AgentState::Maintenance
            );
            if away || going_away {
                agents.push(Doing::Away);
                continue;
            }
            let mut job = leased.remove(a.name.as_str());
            // The job its heartbeat names ended: it is finishing up, as good as idle.
            let mut ended = false;
            if job.is_none()
                && let Some(id) = a.job_id
                && let Some(j) = store.get_job(id).await?
            {
                ended = !j.state.is_active();
                if !ended {
                    if j.queue != *queue && !others.contains_key(&j.queue) {
                        others.insert(j.queue.clone(), recent_durations(store, &j.queue, now).await?);
                    }
                    job = Some(j);
                }
            }
            agents.push(match job {
                Some(j) => doing(&j, now),
                None if ended || matches!(a.state, AgentState::Waiting) => Doing::Idle,
                // Busy, by its heartbeat, with a job the store does not know (yet).
                None => Doing::Busy,
            });
        }
        Ok(QueueNow {
            queue: queue.clone(),
            now,
            durations,
            others,
            agents,
        })
    }

    /// The estimate for the job at 0-based `position`.
    pub fn forecast(&self, position: u64) -> Forecast {
        self.with_inputs(|i| eta::forecast(i, position))
    }

    /// The estimates of the first `count` places, in one pass.
    pub fn forecasts(&self, count: usize) -> Vec<Forecast> {
        self.with_inputs(|i| eta::forecasts(i, count))
    }

    fn with_inputs<R>(&self, f: impl FnOnce(&Inputs<'_>) -> R) -> R {
        let agents: Vec<Agent<'_>> = self
            .agents
            .iter()
            .map(|d| match d {
                Doing::Idle => Agent::Idle,
                Doing::Running { elapsed, queue } => Agent::Running {
                    elapsed: *elapsed,
                    of: self.others.get(queue).unwrap_or(&self.durations),
                },
                Doing::Until(s) => Agent::Until { in_seconds: *s },
                Doing::Busy => Agent::Busy,
                Doing::Away => Agent::Away,
            })
            .collect();
        f(&Inputs {
            durations: &self.durations,
            agents: &agents,
        })
    }

    /// The forecast in words: how it was made, or why there is none.
    pub fn basis(&self, position: u64, f: &Forecast) -> String {
        let runs = self.durations.len();
        match f.start {
            Err(why) => why.to_string(),
            Ok(_) => {
                let mut basis = format!(
                    "{position} job(s) ahead, {} agent(s) available ({} busy)",
                    f.agents, f.busy
                );
                if let Some(mean) = self.durations.mean() {
                    basis += &format!(
                        ", running jobs' elapsed time against the last {runs} finished run(s) (mean {:.0} s)",
                        mean
                    );
                }
                if let Some((early, late)) = f.likely {
                    basis += &format!("; likely in {early:.0}–{late:.0} s");
                }
                if f.overrun > 0 {
                    basis += &format!(
                        "; {} running job(s) have run longer than any recent one and may end sooner",
                        f.overrun
                    );
                }
                basis
            }
        }
    }
}

/// What an agent's current job says about when it frees.
fn doing(job: &JobRecord, now: Millis) -> Doing {
    if let Some(r) = &job.reservation
        && job.state == JobState::Reserve
    {
        return Doing::Until(r.until.0.saturating_sub(now.0) as f64 / 1000.0);
    }
    match job.started_at {
        Some(s) => Doing::Running {
            elapsed: now.since(s).as_secs_f64(),
            queue: job.queue.clone(),
        },
        None => Doing::Busy,
    }
}

/// Seconds from lease to end of the queue's latest finished runs.
async fn recent_durations(
    store: &dyn Store,
    queue: &DeviceClass,
    now: Millis,
) -> Result<Durations, StoreError> {
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
    Ok(Durations::new(
        finished.iter().filter_map(|j| Some(j.run_time()?.as_secs_f64())),
    ))
}

/// `GET /v1/job/<id>/estimate`'s answer for a waiting job at `position`.
pub async fn estimate(state: &AppState, job: &JobRecord, position: u64) -> Result<Estimate, StoreError> {
    let queue = QueueNow::read(state.store().as_ref(), &job.queue, Millis::now()).await?;
    let f = queue.forecast(position);
    let eta_seconds = f.start.ok().map(|s| s.round() as u64);
    Ok(Estimate {
        job_id: job.job_id,
        queue: job.queue.to_string(),
        position,
        agents_available: f.agents as u64,
        agents_busy: f.busy as u64,
        recent_runs: queue.durations.len() as u64,
        median_run_seconds: queue.durations.median().map(|m| m.round() as u64),
        eta_seconds,
        eta: eta_seconds.map(|s| views::time(queue.now.plus(Duration::from_secs(s)))),
        unknown: f.start.err().map(|why| why.code().to_owned()),
        basis: queue.basis(position, &f),
    })
}
