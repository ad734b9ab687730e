//! Prometheus metrics of the scheduler, served on `--metrics-listen` (`GET /metrics`). Without
//! that flag nothing is served, the gauges are never computed and the store is not timed.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `flinger_scheduler_jobs` | gauge | `queue`, `state` (every live state: `waiting`, `leased`, the phases, `allocated`) — from the store, every `--metrics-refresh-secs` |
//! | `flinger_scheduler_agents` | gauge | `state` (`waiting`, `leased`, a phase, `offline`, `maintenance`, as the API shows them) — from the store |
//! | `flinger_scheduler_jobs_ended_total` | counter | `queue`, `state` (`complete`, `cancelled`, `failed`), `failure` (the failure kind, `none`), `cause` (`none`, `test`, `infrastructure`) |
//! | `flinger_scheduler_job_wait_seconds` | histogram | `queue` — waiting (since submitted, or requeued) → leased |
//! | `flinger_scheduler_pickup_latency_seconds` | histogram | `queue` — waiting → first phase started (what `flinger-bench pickup` measures) |
//! | `flinger_scheduler_leases_granted_total` | counter | `queue` |
//! | `flinger_scheduler_lease_refusals_total` | counter | `reason` (`already_leased`, `cancelled`, `finished`, `excluded`, `agent_unavailable`, `rejected`, `not_ready`) |
//! | `flinger_scheduler_lease_renewals_total` | counter | `result` (`renewed`, `lost`) |
//! | `flinger_scheduler_leases_reclaimed_total` | counter | `queue`, `why` (`expired`: the agent stopped renewing; `abandoned`: it gave the run up) |
//! | `flinger_scheduler_requeues_total` | counter | `queue` — a reclaimed job waits again |
//! | `flinger_scheduler_attempts_exhausted_total` | counter | `queue` — a reclaimed job failed `agent_lost` on its last attempt |
//! | `flinger_scheduler_broker_connections_total` | counter | – (1 + reconnects) |
//! | `flinger_scheduler_store_call_duration_seconds` | histogram | `operation` (the store method), `result` (`ok`, `error`) |
//! | `flinger_scheduler_event_lag_seconds` | histogram | `kind` (`status`, `output`, `heartbeat`) — published by the agent (its clock) → projected into the store |
//!
//! Counters count what this scheduler did: with several schedulers, sum them. Gauges are read
//! from the shared store: with several, every one shows the same figure (take `max`).
//!
//! This module records; it decides nothing. Transitions are observed where every job change
//! is applied ([`crate::core`]), so no writer can change a job unseen.

mod metered;

pub use metered::Metered;

use crate::core::{Applied, Core};
use crate::lifecycle::{Cause, Reply};
use crate::store::{DynStore, JobRecord, StoreResult};
use broker_schema::messages::DenyReason;
use broker_schema::{FailureKind, JobState, Millis};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

/// How often the gauges are computed from the store by default.
pub const DEFAULT_REFRESH_SECS: f64 = 5.0;

/// Waiting and pickup: milliseconds for an idle lab, hours for a busy queue.
const WAIT_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];
/// Store calls and event lag: sub-millisecond to a timeout.
const CALL_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Starts the `/metrics` listener on `listen`. Once per process (the recorder is global).
pub fn install(listen: SocketAddr) -> Result<(), String> {
    let mut builder = PrometheusBuilder::new().with_http_listener(listen);
    for (name, buckets) in [
        ("flinger_scheduler_job_wait_seconds", &WAIT_BUCKETS[..]),
        ("flinger_scheduler_pickup_latency_seconds", &WAIT_BUCKETS[..]),
        ("flinger_scheduler_store_call_duration_seconds", &CALL_BUCKETS[..]),
        ("flinger_scheduler_event_lag_seconds", &CALL_BUCKETS[..]),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .map_err(|e| e.to_string())?;
    }
    builder
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    // Series whose labels are known in advance start at 0, so that a dashboard shows 0 rather
    // than no data before the first refusal or renewal.
    for reason in ALL_DENY_REASONS {
        counter!("flinger_scheduler_lease_refusals_total", "reason" => deny_reason(reason)).increment(0);
    }
    for result in ["renewed", "lost"] {
        counter!("flinger_scheduler_lease_renewals_total", "result" => result).increment(0);
    }
    tracing::info!(addr = %listen, "metrics listening");
    Ok(())
}

const ALL_DENY_REASONS: [DenyReason; 7] = [
    DenyReason::Cancelled,
    DenyReason::AlreadyLeased,
    DenyReason::Finished,
    DenyReason::Excluded,
    DenyReason::AgentUnavailable,
    DenyReason::Rejected,
    DenyReason::NotReady,
];

fn seconds_between(from: Millis, to: Millis) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

/// Since when the job's current attempt waited: its submission, or the end of the attempt
/// before (a requeue).
fn waiting_since(job: &JobRecord, attempt: u32) -> Millis {
    attempt
        .checked_sub(2)
        .and_then(|i| job.attempts.get(i as usize))
        .and_then(|a| a.ended_at)
        .unwrap_or(job.created_at)
}

/// A job changed from `before` to `after` (one applied update).
pub fn job_moved(before: &JobRecord, after: &JobRecord) {
    let (from, to, queue) = (before.state, after.state, after.queue.as_str());
    let at = after.updated_at;
    if from == JobState::Waiting && to == JobState::Leased {
        counter!("flinger_scheduler_leases_granted_total", "queue" => queue.to_owned()).increment(1);
        histogram!("flinger_scheduler_job_wait_seconds", "queue" => queue.to_owned())
            .record(seconds_between(waiting_since(after, after.attempt), at));
    }
    if from == JobState::Leased && to.is_active() && to != JobState::Leased {
        histogram!("flinger_scheduler_pickup_latency_seconds", "queue" => queue.to_owned())
            .record(seconds_between(waiting_since(after, after.attempt), at));
    }
    if from.is_active() && to == JobState::Waiting {
        counter!("flinger_scheduler_requeues_total", "queue" => queue.to_owned()).increment(1);
    }
    if !from.is_terminal() && to.is_terminal() {
        let kind = after.failure.as_ref().map(|f| f.kind);
        if from.is_active() && kind == Some(FailureKind::AgentLost) {
            counter!("flinger_scheduler_attempts_exhausted_total", "queue" => queue.to_owned()).increment(1);
        }
        let cause = match kind {
            None => "none",
            Some(FailureKind::TestFailed) => "test",
            Some(_) => "infrastructure",
        };
        counter!(
            "flinger_scheduler_jobs_ended_total",
            "queue" => queue.to_owned(),
            "state" => to.as_str(),
            "failure" => kind.map_or("none", FailureKind::as_str),
            "cause" => cause,
        )
        .increment(1);
    }
}

/// What a lease request, a renewal or a reclaim came to.
pub fn cause_applied(cause: &Cause, applied: &Applied) {
    match (cause, &applied.reply) {
        (Cause::LeaseAsked { .. }, Some(Reply::Deny { reason, .. })) => {
            counter!("flinger_scheduler_lease_refusals_total", "reason" => deny_reason(*reason)).increment(1);
        }
        (Cause::LeaseRenewed { .. }, reply) => {
            let result = if matches!(reply, Some(Reply::Renewed)) {
                "renewed"
            } else {
                "lost"
            };
            counter!("flinger_scheduler_lease_renewals_total", "result" => result).increment(1);
        }
        (Cause::LeaseExpired { .. } | Cause::RunAbandoned { .. }, _) if applied.changed => {
            let why = if matches!(cause, Cause::LeaseExpired { .. }) {
                "expired"
            } else {
                "abandoned"
            };
            let queue = applied
                .job
                .as_ref()
                .map(|j| j.queue.to_string())
                .unwrap_or_default();
            counter!("flinger_scheduler_leases_reclaimed_total", "queue" => queue, "why" => why).increment(1);
        }
        _ => {}
    }
}

fn deny_reason(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::Cancelled => "cancelled",
        DenyReason::AlreadyLeased => "already_leased",
        DenyReason::Finished => "finished",
        DenyReason::Excluded => "excluded",
        DenyReason::AgentUnavailable => "agent_unavailable",
        DenyReason::Rejected => "rejected",
        DenyReason::NotReady => "not_ready",
    }
}

/// The lag of an event published at `at` (the publisher's clock) and projected now.
pub fn event_projected(kind: &'static str, at: Millis) {
    histogram!("flinger_scheduler_event_lag_seconds", "kind" => kind)
        .record(seconds_between(at, Millis::now()));
}

/// The broker connection was made `total` times (1 + reconnects).
pub fn broker_connections(total: u64) {
    counter!("flinger_scheduler_broker_connections_total").absolute(total);
}

/// The label sets of the gauges set last time, so that one whose figure fell to nothing is set
/// to 0 rather than left at its old value.
#[derive(Default)]
pub struct Gauges {
    jobs: Mutex<BTreeSet<(String, &'static str)>>,
    agents: Mutex<BTreeSet<&'static str>>,
}

impl Gauges {
    /// Computes the jobs and agents gauges from the store: one count query, one agents list.
    pub async fn refresh(&self, store: &DynStore) -> StoreResult<()> {
        let counts = store.count_live_jobs().await?;
        let agents = store.list_agents().await?;
        let mut seen = BTreeSet::new();
        for c in counts {
            let key = (c.queue, c.state.as_str());
            gauge!("flinger_scheduler_jobs", "queue" => key.0.clone(), "state" => key.1).set(c.count as f64);
            seen.insert(key);
        }
        {
            let mut last = self.jobs.lock().expect("gauges");
            for (queue, state) in last.difference(&seen) {
                gauge!("flinger_scheduler_jobs", "queue" => queue.clone(), "state" => *state).set(0.0);
            }
            *last = seen;
        }
        let now = Millis::now();
        let mut by_state = std::collections::BTreeMap::<&'static str, u64>::new();
        for a in &agents {
            *by_state.entry(a.effective_state(now).as_str()).or_default() += 1;
        }
        let mut last = self.agents.lock().expect("gauges");
        for state in last.iter() {
            if !by_state.contains_key(state) {
                gauge!("flinger_scheduler_agents", "state" => *state).set(0.0);
            }
        }
        for (state, n) in &by_state {
            gauge!("flinger_scheduler_agents", "state" => *state).set(*n as f64);
        }
        *last = by_state.into_keys().collect();
        Ok(())
    }
}

/// Refreshes the gauges of `core`'s store (and the broker connection count) once.
pub async fn refresh_once(core: &Core, gauges: &Gauges, connections: u64) -> StoreResult<()> {
    broker_connections(connections);
    let store: DynStore = core.store().clone();
    gauges.refresh(&store).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptRecord;
    use broker_schema::{AgentName, JobDefinition};

    #[test]
    fn a_requeued_attempt_waits_from_the_end_of_the_one_before() {
        let def = JobDefinition::parse(serde_json::json!({"job_queue": "q"})).unwrap();
        let mut job = JobRecord::new_waiting(uuid::Uuid::new_v4(), def, None, Millis(1_000));
        assert_eq!(waiting_since(&job, 1), Millis(1_000));
        job.attempts.push(AttemptRecord {
            attempt: 1,
            agent: AgentName::parse("a").unwrap(),
            started_at: Millis(2_000),
            ended_at: Some(Millis(5_000)),
            outcome: Some("lease expired".into()),
        });
        assert_eq!(waiting_since(&job, 2), Millis(5_000));
        assert_eq!(seconds_between(Millis(5_000), Millis(6_500)), 1.5);
        assert_eq!(seconds_between(Millis(6_500), Millis(5_000)), 0.0);
    }
}
