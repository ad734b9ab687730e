//! The HTTP surface, one module per area of `docs/api.md`. Handlers only extract, call a flow
//! or the store, and shape the answer; errors go through [`crate::error::ApiError`].

pub mod agents;
pub mod health;
pub mod jobs;
pub mod reservation;
pub mod results;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;

/// Every route of the API. Paths are written without a trailing slash; the app strips one
/// from requests before routing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(jobs::routes())
        .merge(reservation::routes())
        .merge(results::routes())
        .merge(agents::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found".into())
}
