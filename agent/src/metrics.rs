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

pub fn busy(yes: bool) {
    gauge!("flinger_agent_busy").set(if yes { 1.0 } else { 0.0 });
}
