//! The web UI: server-rendered pages at Testflinger's paths (`/`, `/jobs`, `/jobs/<id>`,
//! `/agents`, `/agents/<name>`, `/queues`, `/queues/<name>`), made live by Server-Sent Events
//! fed from the broker's events exchange (`docs/web-ui.md`).
//!
//! - [`page`]: the layout every page shares, and errors as HTML pages (404, 401, 403, 503);
//! - [`session`]: signing in with a client id and secret, the encrypted session cookie, CSRF;
//!   [`sso`]: signing in through the lab's identity provider (authorization code, PKCE);
//! - [`home`], [`jobs`], [`agents`], [`queues`]: one module per page family. Each page is a
//!   fixed part (title, filters) around a *live region* that the page's event stream renders
//!   again when something it shows changes;
//! - [`output`]: the tail of a job's output a job page opens with, and the whole text behind
//!   its link;
//! - [`live`]: the gateway's own queue of events (status, heartbeats, the output of jobs whose
//!   pages are open) and their fan-out to open pages; [`stream`]: the pages' event streams;
//! - [`text`]: how output, times and durations are shown (output is text: escaped, ANSI colours
//!   as spans); [`assets`]: the stylesheet and script, compiled into the binary.
//!
//! Architecture invariant: the UI reads through the same store queries and authorization as
//! the API ([`crate::auth::Caller`], [`crate::cancel`], [`crate::estimate`]); it keeps no copy of
//! the data, and broker events only tell an open page *when* to read the store again (output
//! chunks are shown as they come, numbered, and any gap is filled from the store).

pub mod assets;
pub mod live;
mod output;
mod page;
mod session;
mod sso;
mod stream;
pub mod text;

mod agents;
mod home;
mod jobs;
mod queues;

pub use session::SessionKey;

use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The UI's routes. None is under `/v1` (the API's) and none clashes with the API's others
/// (`/healthz`, `/readyz`, `/oidc`, `/openapi.json`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home::page))
        .route("/jobs", get(jobs::list_page))
        .route("/jobs/{job_id}", get(jobs::job_page))
        .route("/jobs/{job_id}/live", get(stream::job))
        .route("/jobs/{job_id}/output", get(output::whole_output))
        .route("/jobs/{job_id}/serial", get(output::whole_serial))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/extend", post(jobs::extend))
        .route("/agents", get(agents::list_page))
        .route("/agents/{name}", get(agents::agent_page))
        .route("/queues", get(queues::list_page))
        .route("/queues/{name}", get(queues::queue_page))
        .route("/live", get(stream::region))
        .route("/login", get(session::sign_in_page).post(session::sign_in))
        .route("/logout", post(session::sign_out))
        .route("/auth/login", get(sso::login))
        .route("/auth/callback", get(sso::callback))
        .route("/auth/logout", get(sso::logout_page).post(session::sign_out))
        .route("/static/{file}", get(assets::serve))
}

/// Unknown paths: the API's JSON 404 under `/v1` or for clients that do not ask for HTML, a
/// "not found" page for browsers.
pub async fn fallback(uri: Uri, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if uri.path().starts_with("/v1") || !wants_html {
        return crate::error::ApiError::NotFound("Not found".into()).into_response();
    }
    page::UiError::NotFound(format!("There is no page at {}.", uri.path())).into_response()
}

/// The live region a page path shows, rendered for `viewer` (what [`stream::region`] sends).
async fn region(
    state: &AppState,
    viewer: &session::Viewer,
    path: &str,
    query: &str,
) -> Result<String, page::UiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        [] => home::region(state, viewer).await,
        ["jobs"] => jobs::list_region(state, viewer, query).await,
        ["agents"] => agents::list_region(state, viewer, query).await,
        ["agents", name] => agents::agent_region(state, viewer, name, query).await,
        ["queues"] => queues::list_region(state, viewer).await,
        ["queues", name] => queues::queue_region(state, viewer, name).await,
        _ => Err(page::UiError::NotFound(format!("No live page at {path}."))),
    }
}
