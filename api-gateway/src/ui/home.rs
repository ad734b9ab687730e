//! `/`: the lab at a glance — every queue with its agents by state, jobs waiting and running,
//! wait-time p50/p90 of the last 7 days — and the latest jobs.

use super::jobs::{Header, JobRow};
use super::page::{Page, UiError, answer};
use super::queues::{QueueCard, cards};
use super::session::Viewer;
use crate::auth::access;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use flinger_store::{JobOrder, JobQuery};

const LATEST: u32 = 15;

#[derive(Template)]
#[template(path = "ui/home.html")]
struct HomeRegion {
    cards: Vec<QueueCard>,
    rows: Vec<JobRow>,
    headers: Vec<Header>,
}

pub async fn region(state: &AppState, viewer: &Viewer) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let latest = state
        .store()
        .find_jobs(&JobQuery {
            order: JobOrder::CreatedDesc,
            limit: Some(LATEST),
            ..Default::default()
        })
        .await?;
    Ok(HomeRegion {
        cards: cards(state).await?,
        rows: latest.iter().map(JobRow::of).collect(),
        headers: Header::plain(),
    }
    .render()?)
}

/// `GET /`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Response {
    let result = async {
        let mut page = Page::new(&viewer, "Lab").live_region("/", "");
        page.region = region(&state, &viewer).await?;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}
