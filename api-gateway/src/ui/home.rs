//! `/`: the lab at a glance — every queue with its agents by state, jobs waiting and running,
//! wait-time p50/p90 of the last 7 days — and the latest jobs.

use super::jobs::JobRow;
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
    sort_link: Option<String>,
    sort_arrow: &'static str,
    queue_sort: Option<String>,
    state_sort: Option<String>,
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
        sort_link: None,
        sort_arrow: "",
        queue_sort: None,
        state_sort: None,
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
