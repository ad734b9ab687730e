//! The HTTP surface, one module per area of `docs/api.md`. Handlers only extract, call a flow
//! or the store, and shape the answer; errors go through [`crate::error::ApiError`].

pub mod admin;
pub mod agents;
pub mod auth;
pub mod blobs;
pub mod health;
pub mod job_events;
pub mod jobs;
pub mod oidc;
pub mod queues;
pub mod reservation;
pub mod results;
pub mod secrets;

use crate::state::AppState;
use axum::Router;

/// Every route of the API. Paths are written without a trailing slash; the app strips one
/// from requests before routing.
pub fn router(state: AppState) -> Router {
    let sso = match state.oidc() {
        Some(_) => oidc::routes(),
        None => health::oidc_off_routes(),
    };
    Router::new()
        .merge(health::routes())
        .merge(sso)
        .merge(jobs::routes())
        .merge(reservation::routes())
        .merge(results::routes())
        .merge(agents::routes())
        .merge(queues::routes())
        .merge(blobs::routes())
        .merge(job_events::routes())
        .merge(auth::routes())
        .merge(admin::routes())
        .merge(secrets::routes())
        .merge(crate::ui::routes())
        .fallback(crate::ui::fallback)
        .with_state(state)
}
