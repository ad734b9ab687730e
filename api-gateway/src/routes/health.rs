//! Liveness, readiness and the banner agents and the CLI use as a health check.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{any, get};
use serde::Serialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1", get(banner))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/oidc", any(oidc))
        .route("/oidc/{*rest}", any(oidc))
        .route("/openapi.json", get(openapi))
}

async fn banner() -> String {
    format!(
        "Flinger {} (Testflinger API v1 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Each dependency: `ok`, or what is wrong with it.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub store: String,
    pub broker: String,
}

/// 200 when the store answers a ping and the broker connection is up, else 503. Both probes
/// are bounded: a reconnecting bus holds its lock while it retries.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let limit = state.timeouts().probe;
    let (store, broker) = tokio::join!(
        tokio::time::timeout(limit, state.store().ping()),
        tokio::time::timeout(limit, state.bus().is_connected()),
    );
    let store = match store {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {limit:?}"),
    };
    let broker = match broker {
        Ok(true) => "ok".to_owned(),
        Ok(false) => "not connected".to_owned(),
        Err(_) => "connecting".to_owned(),
    };
    let status = if store == "ok" && broker == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { store, broker }))
}

/// Testflinger's CLI asks `POST /oidc/auth-init` first and goes on anonymously (or with client
/// credentials) on a 404. Flinger has no OIDC device flow: every `/oidc/*` path answers 404,
/// whatever the method (a 405 would tell the CLI that OIDC exists).
async fn oidc() -> ApiError {
    ApiError::NotFound("OIDC is not configured".into())
}

/// The OpenAPI document of the whole API.
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
