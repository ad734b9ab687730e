//! Per-client request limits, so that one client (a runaway script, a dashboard polling in a
//! loop) cannot starve the others: a rate (a token bucket per client, `governor`) and a number
//! of requests in flight. Past either the gateway answers 429 with `Retry-After` (seconds)
//! before the request reaches its handler.
//!
//! A client is the client id of a valid access token, else the peer's IP address (anonymous
//! callers, agents without credentials, a bad token that the handler will refuse anyway). The
//! gateway reads no forwarded-address header: behind a proxy every anonymous caller shares the
//! proxy's address, so give such clients credentials (docs/operations.md).
//!
//! Not limited: health probes, and what waits rather than works — the web UI's event streams
//! and long-polling log reads (`wait=`). A follower makes those one at a time, and counting
//! them would starve a busy follower or a page left open. Everything else counts, including
//! agents' Testflinger-style polls and posts; the defaults are far above what an agent or a
//! person does.
//!
//! A request counts as in flight until its answer's body is sent, so a streamed body (results,
//! artifacts) holds its place while it streams.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Routes whose requests are never limited (see the module's doc).
const UNLIMITED_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/live", "/jobs/{job_id}/live"];

/// The long-polling log read, unlimited when it waits.
const LOG_ROUTE: &str = "/v1/result/{job_id}/log/{log_type}";

/// How often (in checked requests) the rate limiter forgets clients whose buckets are full
/// again, so that its memory follows the clients of the last moments, not of all time.
const FORGET_EVERY: u64 = 4096;

/// The limits' settings (see `Config`): `None` switches a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Requests per second a client may keep up, and how many it may send at once above that.
    pub rate: Option<(NonZeroU32, NonZeroU32)>,
    /// Requests a client may have in flight.
    pub in_flight: Option<usize>,
}

/// Who a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ClientKey {
    Client(String),
    Addr(std::net::IpAddr),
    /// No peer address (the router served without connection info: tests that call it directly).
    Unknown,
}

/// The gateway's per-client limiters. Shared by every request (in [`AppState`]).
pub struct ClientLimits {
    rate: Option<DefaultKeyedRateLimiter<ClientKey>>,
    max_in_flight: Option<usize>,
    in_flight: Counts,
    checked: AtomicU64,
}

impl ClientLimits {
    pub fn new(settings: Settings) -> ClientLimits {
        ClientLimits {
            rate: settings.rate.map(|(per_second, burst)| {
                RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
            }),
            max_in_flight: settings.in_flight,
            in_flight: Arc::default(),
            checked: AtomicU64::new(0),
        }
    }

    /// Counts a request of `key` against its rate: `Err(seconds to wait)` when it is over.
    fn check_rate(&self, key: &ClientKey) -> Result<(), u64> {
        let Some(rate) = &self.rate else { return Ok(()) };
        if self.checked.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        rate.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds (the header's unit), rounded up: retrying sooner is refused again.
            (wait.as_millis().div_ceil(1000) as u64).max(1)
        })
    }

    /// Takes one of `key`'s places in flight; `None` when it has none left.
    fn enter(&self, key: ClientKey) -> Option<InFlight> {
        let Some(max) = self.max_in_flight else {
            return Some(InFlight(None));
        };
        let mut counts = self.in_flight.lock().expect("in-flight counts");
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(InFlight(Some((self.in_flight.clone(), key))))
    }
}

/// One request in flight; dropping it frees the place (and forgets a client with none left).
struct InFlight(Option<(Counts, ClientKey)>);

/// Each client's requests in flight (a client with none is absent).
type Counts = Arc<Mutex<HashMap<ClientKey, usize>>>;

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some((counts, key)) = self.0.take() else {
            return;
        };
        let mut counts = counts.lock().expect("in-flight counts");
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// Whether the operation at `path` (a route's template) is never limited: the OpenAPI
/// document lists 429 for every other.
pub fn unlimited_operation(path: &str) -> bool {
    UNLIMITED_ROUTES.contains(&path)
}

/// Middleware (`Router::layer`): refuses a request over its client's limits with 429.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !limited(&req) {
        return next.run(req).await;
    }
    let limits = state.client_limits();
    let key = client_key(&state, &req);
    if let Err(seconds) = limits.check_rate(&key) {
        crate::metrics::request_limited("rate");
        return ApiError::TooManyRequests {
            retry_after: seconds,
            reason: format!("Too many requests: over this client's rate; retry in {seconds} s"),
        }
        .into_response();
    }
    let Some(place) = limits.enter(key) else {
        crate::metrics::request_limited("in_flight");
        return ApiError::TooManyRequests {
            retry_after: 1,
            reason: "Too many requests in flight from this client; retry when one has been answered".into(),
        }
        .into_response();
    };
    let response = next.run(req).await;
    if place.0.is_none() || axum::body::HttpBody::size_hint(response.body()).exact().is_some() {
        // The whole answer is in memory: its place is free now.
        return response;
    }
    // A streamed body: the place is held until the last chunk is sent or the client leaves.
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &place;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// Whether a request counts (see the module's doc).
fn limited(req: &Request) -> bool {
    let Some(route) = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str) else {
        return true;
    };
    if UNLIMITED_ROUTES.contains(&route) {
        return false;
    }
    let waits = || {
        req.uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("wait=")))
    };
    !(route == LOG_ROUTE && waits())
}

fn client_key(state: &AppState, req: &Request) -> ClientKey {
    let token = crate::auth::bearer_token(req.headers());
    if let Some(claims) = token.and_then(|t| state.auth().tokens.verify(t).ok()) {
        return ClientKey::Client(claims.permissions.client_id);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(ClientKey::Unknown, |ConnectInfo(addr)| ClientKey::Addr(addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_second: u32, burst: u32, in_flight: usize) -> Settings {
        Settings {
            rate: Some((
                NonZeroU32::new(per_second).unwrap(),
                NonZeroU32::new(burst).unwrap(),
            )),
            in_flight: Some(in_flight),
        }
    }

    #[test]
    fn a_client_over_its_burst_waits_and_others_do_not() {
        let limits = ClientLimits::new(settings(1, 2, 10));
        let (a, b) = (ClientKey::Client("a".into()), ClientKey::Client("b".into()));
        assert_eq!(limits.check_rate(&a), Ok(()));
        assert_eq!(limits.check_rate(&a), Ok(()));
        assert_eq!(limits.check_rate(&a), Err(1));
        assert_eq!(limits.check_rate(&b), Ok(()));
    }

    #[test]
    fn places_in_flight_free_when_dropped() {
        let limits = ClientLimits::new(settings(100, 100, 2));
        let key = ClientKey::Addr([127, 0, 0, 1].into());
        let one = limits.enter(key.clone()).unwrap();
        let two = limits.enter(key.clone()).unwrap();
        assert!(limits.enter(key.clone()).is_none());
        assert!(limits.enter(ClientKey::Unknown).is_some());
        drop(one);
        let three = limits.enter(key.clone()).unwrap();
        drop((two, three));
        assert!(
            limits.in_flight.lock().unwrap().is_empty(),
            "idle clients are forgotten"
        );
    }

    #[test]
    fn switched_off_limits_refuse_nothing() {
        let limits = ClientLimits::new(Settings {
            rate: None,
            in_flight: None,
        });
        for _ in 0..1000 {
            assert_eq!(limits.check_rate(&ClientKey::Unknown), Ok(()));
            std::mem::forget(limits.enter(ClientKey::Unknown).unwrap());
        }
    }
}
