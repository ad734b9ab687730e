//! Prometheus metrics of the gateway, served on `--metrics-listen` (`GET /metrics`, a listener
//! of its own so that the API's port never exposes them). Without that flag nothing is served
//! and recording costs next to nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `flinger_gateway_http_requests_total` | counter | `route` (the route's template, e.g. `/v1/job/{job_id}`; `unmatched` for unknown paths), `method`, `status` |
//! | `flinger_gateway_http_request_duration_seconds` | histogram | `route`, `method`, `status` |
//! | `flinger_gateway_jobs_submitted_total` | counter | `queue` — a new job accepted |
//! | `flinger_gateway_requests_limited_total` | counter | `limit` (`rate`, `in_flight`) — a request answered 429 (`crate::limits`) |
//! | `flinger_gateway_live_streams` | gauge | `kind` (`log_poll`: a log read waiting for output; pages add theirs) — open now |
//!
//! And Testflinger's server counters under its names and labels (its `prometheus_client`
//! `Counter("jobs", namespace="testflinger")`, scraped as `_total`), so that a lab's
//! dashboards keep working:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `testflinger_jobs_total` | counter | `queue` — a job submitted |
//! | `testflinger_reservations_total` | counter | `queue` — a submitted job with `reserve_data` |
//!
//! This module only records and serves; it never reads the store.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use std::time::Instant;

/// Buckets of request latency: from a cached read to a minute-long poll.
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

/// Starts the `/metrics` listener on `listen`. Without an address, metrics are recorded
/// nowhere. Once per process (the recorder is global).
pub fn install(listen: Option<SocketAddr>) -> Result<(), String> {
    let Some(addr) = listen else { return Ok(()) };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("flinger_gateway_http_request_duration_seconds".into()),
            &HTTP_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    // Shown as 0, not as no data, before the first stream opens.
    gauge!("flinger_gateway_live_streams", "kind" => "log_poll").increment(0.0);
    for limit in ["rate", "in_flight"] {
        counter!("flinger_gateway_requests_limited_total", "limit" => limit).increment(0);
    }
    tracing::info!(%addr, "metrics listening");
    Ok(())
}

/// Middleware (`Router::layer`) counting and timing every request by its route's template, so
/// that label values stay few whatever the paths' ids.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    counter!("flinger_gateway_http_requests_total", &labels).increment(1);
    histogram!("flinger_gateway_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A new job was accepted (stored; a resubmission of a known job is not counted): ours and
/// Testflinger's counters.
pub fn job_submitted(queue: &str, reservation: bool) {
    counter!("flinger_gateway_jobs_submitted_total", "queue" => queue.to_owned()).increment(1);
    counter!("testflinger_jobs_total", "queue" => queue.to_owned()).increment(1);
    if reservation {
        counter!("testflinger_reservations_total", "queue" => queue.to_owned()).increment(1);
    }
}

/// A request refused by a client's `limit` (`rate` or `in_flight`).
pub fn request_limited(limit: &'static str) {
    counter!("flinger_gateway_requests_limited_total", "limit" => limit).increment(1);
}

/// Counts one open live stream of `kind` (a long poll, an output follower, a page's event
/// stream) until the returned guard is dropped. A streamed body (SSE) outlives its handler:
/// move the guard into the stream, so that it drops when the client goes away.
pub fn stream_opened(kind: &'static str) -> StreamGuard {
    gauge!("flinger_gateway_live_streams", "kind" => kind).increment(1.0);
    StreamGuard { kind }
}

/// Held while a live stream is open; dropping it (the request ended, the client went away)
/// counts the stream closed.
#[must_use = "the stream counts as open only while the guard is held"]
pub struct StreamGuard {
    kind: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        gauge!("flinger_gateway_live_streams", "kind" => self.kind).decrement(1.0);
    }
}
