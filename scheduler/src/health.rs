//! `/healthz` and `/readyz` of a scheduler, served when `--health-listen` is given, for a
//! service manager's or a container's probes. The listener starts before the store is open, so
//! a scheduler waiting for its database is alive (200 on `/healthz`) but not ready.

use crate::store::DynStore;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::get;
use broker_schema::bus::Bus;
use serde::Serialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long each readiness probe of a dependency may take.
const PROBE: Duration = Duration::from_secs(2);

/// What readiness looks at, filled in as the scheduler starts.
#[derive(Clone, Default)]
pub struct Health {
    store: Arc<OnceLock<DynStore>>,
    bus: Arc<OnceLock<Bus>>,
}

impl Health {
    pub fn store_opened(&self, store: DynStore) {
        let _ = self.store.set(store);
    }

    pub fn bus_created(&self, bus: Bus) {
        let _ = self.bus.set(bus);
    }
}

/// Each dependency: `ok`, or what is wrong with it.
#[derive(Debug, Serialize)]
struct Readiness {
    store: String,
    broker: String,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// 200 when the store answers a ping and the broker connection is up, else 503 with reasons.
async fn readyz(State(h): State<Health>) -> (StatusCode, Json<Readiness>) {
    let store = async {
        match h.store.get() {
            None => "opening".to_owned(),
            Some(s) => match tokio::time::timeout(PROBE, s.ping()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PROBE:?}"),
            },
        }
    };
    let broker = async {
        match h.bus.get() {
            None => "starting".to_owned(),
            Some(b) => match tokio::time::timeout(PROBE, b.is_connected()).await {
                Ok(true) => "ok".to_owned(),
                Ok(false) => "not connected".to_owned(),
                Err(_) => "connecting".to_owned(),
            },
        }
    };
    let (store, broker) = tokio::join!(store, broker);
    let status = if store == "ok" && broker == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { store, broker }))
}
