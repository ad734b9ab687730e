//! Liveness, readiness and the banner agents and the CLI use as a health check.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{any, get};
use flinger_api::Readiness;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1", get(banner))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// Every `/oidc` path of a lab without single sign-on.
pub fn oidc_off_routes() -> Router<AppState> {
    Router::new()
        .route("/oidc", any(oidc))
        .route("/oidc/{*rest}", any(oidc))
}

#[utoipa::path(
    get,
    path = "/v1",
    tag = "health",
    summary = "Banner with the version (agents' health check)",
    responses(
        (status = 200, body = String, content_type = "text/plain"),
    )
)]
async fn banner() -> String {
    format!(
        "Flinger {} (Testflinger API v1 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses(
        (status = 200, body = String, content_type = "text/plain"),
    )
)]
async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the store answers a ping and the broker connection is up, else 503. Both probes
/// are bounded: a reconnecting bus holds its lock while it retries.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness of the store and the broker",
    responses(
        (status = 200, body = flinger_api::Readiness),
        (status = 503, body = flinger_api::Readiness),
    )
)]
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
/// credentials) on a 404. Without `--oidc-issuer` every `/oidc/*` path answers 404, whatever the
/// method (a 405 would tell the CLI that OIDC exists); with it, the paths `routes/oidc.rs` does
/// not serve do.
pub(crate) async fn oidc() -> ApiError {
    ApiError::NotFound("OIDC is not configured".into())
}

/// The OpenAPI document of the whole API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    summary = "This document",
    responses(
        (status = 200, body = serde_json::Value),
    )
)]
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
