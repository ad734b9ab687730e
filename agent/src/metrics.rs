//! Prometheus metrics of the agent, served on `metrics_listen` (`GET /metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `flinger_agent_jobs_total` | counter | `outcome` (complete, cancelled, failed, abandoned) |
//! | `flinger_agent_phase_failures_total` | counter | `phase` |
//! | `flinger_agent_phase_duration_seconds` | histogram | `phase` |
//! | `flinger_agent_lease_renewals_total` | counter | `result` (renewed, lost, error) |
//! | `flinger_agent_broker_connections_total` | counter | – (1 + reconnects) |
//! | `flinger_agent_busy` | gauge | – (1 while running a job) |
//!
//! And Testflinger's agent metrics under Testflinger's names, types and labels, so that a lab's
//! dashboards and alerts keep working ([`Testflinger`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `jobs_total` | counter | `agent_id` — a job started |
//! | `failures_total` | counter | `agent_id`, `test_phase` — a phase but cleanup exited non-zero |
//! | `phase_duration_seconds` | histogram, whole seconds, buckets 60 … 14400 | `agent_id`, `test_phase`, `identifier` (the config's), `release` (the device's, after provision) |
//! | `recovery_failures_total` | counter | `agent_id` — a phase exited 46 |

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use std::time::Duration;

/// Starts the `/metrics` listener. Without an address, metrics are recorded nowhere (cheap).
pub fn install(listen: Option<SocketAddr>) -> Result<(), String> {
    let Some(addr) = listen else { return Ok(()) };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("flinger_agent_phase_duration_seconds".into()),
            &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0],
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(Testflinger::PHASE_DURATION.into()),
            &Testflinger::BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

pub fn job_ended(outcome: &'static str) {
    counter!("flinger_agent_jobs_total", "outcome" => outcome).increment(1);
}

pub fn phase_finished(phase: &'static str, exit_code: i32, took: Duration) {
    histogram!("flinger_agent_phase_duration_seconds", "phase" => phase).record(took.as_secs_f64());
    if exit_code != 0 {
        counter!("flinger_agent_phase_failures_total", "phase" => phase).increment(1);
    }
}

pub fn lease_renewal(result: &'static str) {
    counter!("flinger_agent_lease_renewals_total", "result" => result).increment(1);
}

pub fn broker_connections(total: u64) {
    counter!("flinger_agent_broker_connections_total").absolute(total);
}

/// How often [`follow_connections`] looks at the bus's connection count (an atomic read).
pub const CONNECTIONS_EVERY: Duration = Duration::from_millis(250);

/// Calls `changed` with the bus's connection count (`count`) each time it changes, the first
/// value included, until `shutdown`: a reconnect is seen within [`CONNECTIONS_EVERY`], while a
/// job runs or while the agent waits for one.
pub async fn follow_connections(
    count: impl Fn() -> u64,
    mut changed: impl FnMut(u64),
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last = 0;
    loop {
        let now = count();
        if now != last {
            last = now;
            changed(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

pub fn busy(yes: bool) {
    gauge!("flinger_agent_busy").set(if yes { 1.0 } else { 0.0 });
}

/// Testflinger's agent metrics (its `PrometheusHandler`), recorded beside ours.
#[derive(Clone, Debug)]
pub struct Testflinger {
    /// `agent_id`: the agent's name.
    pub agent_id: String,
    /// `identifier`: the agent config's `identifier` (a serial number…), `""` without one.
    pub identifier: String,
}

impl Testflinger {
    const PHASE_DURATION: &'static str = "phase_duration_seconds";
    /// Testflinger's buckets: phases take minutes to hours.
    const BUCKETS: [f64; 8] = [60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0];

    /// A job started (Testflinger counts it before its first phase).
    pub fn job_started(&self) {
        counter!("jobs_total", "agent_id" => self.agent_id.clone()).increment(1);
    }

    /// A phase but cleanup ended (Testflinger counts no cleanup): its duration, and a failure
    /// unless it succeeded. `release` is the device's, `""` until a provision told it.
    pub fn phase_finished(&self, phase: &'static str, exit_code: i32, took: Duration, release: &str) {
        histogram!(
            Self::PHASE_DURATION,
            "agent_id" => self.agent_id.clone(),
            "test_phase" => phase,
            "identifier" => self.identifier.clone(),
            "release" => release.to_owned(),
        )
        // Testflinger observes whole seconds.
        .record(took.as_secs() as f64);
        if exit_code != 0 {
            counter!("failures_total", "agent_id" => self.agent_id.clone(), "test_phase" => phase)
                .increment(1);
        }
        if exit_code == broker_schema::phase::RECOVERY_FAILED_EXIT {
            counter!("recovery_failures_total", "agent_id" => self.agent_id.clone()).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_reconnect_is_recorded_without_waiting_for_a_job() {
        let count = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(vec![]));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (count, seen, shutdown) = (count.clone(), seen.clone(), shutdown.clone());
            follow_connections(
                move || count.load(Ordering::Relaxed),
                move |n| seen.lock().unwrap().push(n),
                Duration::from_millis(10),
                shutdown,
            )
        });
        let wait_for = |n: u64| {
            let seen = seen.clone();
            async move {
                for _ in 0..500 {
                    if seen.lock().unwrap().last() == Some(&n) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{n} never recorded: {:?}", seen.lock().unwrap());
            }
        };
        count.store(1, Ordering::Relaxed);
        wait_for(1).await;
        count.store(2, Ordering::Relaxed); // the broker connection was replaced
        wait_for(2).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
