//! `/jobs` (the list, filtered and paged on the server) and `/jobs/<id>` (one job, its output
//! live), with the job page's two actions: cancel and extend the reservation.

use super::output::{self, Tail};
use super::page::{Page, UiError, answer};
use super::session::{CsrfField, Viewer};
use super::stream::Cursor;
use super::text;
use crate::auth::access;
use crate::cancel::{self, may_act_on};
use crate::error::ApiError;
use crate::estimate;
use crate::routes::jobs::position;
use crate::scheduler;
use crate::state::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use broker_schema::messages::{ExtendRequest, LogStream, SchedulerRequest};
use broker_schema::{DeviceClass, JobState, Millis, Phase};
use flinger_store::{BlobName, JobOrder, JobQuery, JobRecord, OutputQuery};
use serde::Deserialize;
use uuid::Uuid;

/// Jobs per page of `/jobs`.
const PAGE_SIZE: u32 = 50;

/// A job as a row of a table.
pub struct JobRow {
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub queue: String,
    pub state: String,
    pub failure: String,
    pub submitted: String,
    pub started: String,
    pub duration: String,
}

impl JobRow {
    pub fn of(j: &JobRecord) -> JobRow {
        let id = j.job_id.to_string();
        JobRow {
            short_id: id[..8].to_owned(),
            id,
            name: j.definition.name().unwrap_or_default().to_owned(),
            queue: j.queue.to_string(),
            state: j.state.as_str().to_owned(),
            failure: j
                .failure
                .as_ref()
                .map(|f| f.kind.as_str().to_owned())
                .unwrap_or_default(),
            submitted: text::when(j.created_at),
            started: text::opt_when(j.started_at),
            duration: if j.started_at.is_some() {
                text::span(j.started_at, j.ended_at)
            } else {
                String::new()
            },
        }
    }
}

/// A column header of a job table; on `/jobs`, a link that sorts the table by the column.
pub struct Header {
    pub label: &'static str,
    /// The element id of the sorting link is `sort-<id>`.
    pub id: &'static str,
    pub link: Option<String>,
    /// ▲ or ▼ on the column the table is sorted by.
    pub arrow: &'static str,
    /// Hidden on phone-width screens.
    pub hide_narrow: bool,
}

/// The columns of a job table: label, id, the `sort` value that sorts by it (the first click's,
/// for `Submitted` the other direction's when it is already sorted so), hidden when narrow.
const COLUMNS: [(&str, &str, Option<&str>, bool); 7] = [
    ("Job", "job", None, false),
    ("Name", "name", Some("name"), false),
    ("Queue", "queue", Some("queue"), false),
    ("State", "state", Some("state"), false),
    ("Submitted", "submitted", Some("submitted"), false),
    ("Started", "started", Some("started"), true),
    ("Duration", "duration", Some("duration"), true),
];

impl Header {
    /// The headers of a table that does not sort (the latest jobs on `/`, a queue's jobs).
    pub fn plain() -> Vec<Header> {
        COLUMNS
            .iter()
            .map(|&(label, id, _, hide_narrow)| Header {
                label,
                id,
                link: None,
                arrow: "",
                hide_narrow,
            })
            .collect()
    }
}

/// The order a `sort` value asks for: `submitted` oldest first, `-submitted` (the default)
/// newest first, `name` and `queue` and `state` by name (newest first within each), `started`
/// most recently started first, `duration` longest first.
fn order_of(sort: &str) -> JobOrder {
    match sort {
        "submitted" => JobOrder::CreatedAsc,
        "name" => JobOrder::NameNewest,
        "queue" => JobOrder::QueueNewest,
        "state" => JobOrder::StateNewest,
        "started" => JobOrder::StartedNewest,
        "duration" => JobOrder::LongestFirst,
        _ => JobOrder::CreatedDesc,
    }
}

/// The query string of `/jobs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    submitter: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<u32>,
    /// See [`order_of`].
    #[serde(default)]
    sort: String,
}

/// The state filter's choices: value, label.
const STATE_FILTERS: [(&str, &str); 7] = [
    ("", "any state"),
    ("active", "active"),
    ("waiting", "waiting"),
    ("ended", "ended"),
    ("complete", "complete"),
    ("cancelled", "cancelled"),
    ("failed", "failed"),
];

fn states_for(filter: &str) -> Option<Vec<JobState>> {
    let all = JobState::ALL.into_iter();
    match filter {
        "active" => Some(all.filter(|s| !s.is_terminal()).collect()),
        "ended" => Some(all.filter(|s| s.is_terminal()).collect()),
        "" => None,
        other => JobState::parse(other).map(|s| vec![s]),
    }
}

fn parse_params(query: &str) -> ListParams {
    serde_urlencoded_lenient(query)
}

/// The query string as `ListParams`, ignoring what does not parse (a bad page number is page 1).
fn serde_urlencoded_lenient(query: &str) -> ListParams {
    let mut p = ListParams::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = v.trim().to_owned();
        match k.as_ref() {
            "state" => p.state = v,
            "queue" => p.queue = v,
            "tag" => p.tag = v,
            "submitter" => p.submitter = v,
            "q" => p.q = v,
            "page" => p.page = v.parse().ok().filter(|n| *n >= 1),
            "sort" => p.sort = v,
            _ => {}
        }
    }
    p
}

impl ListParams {
    fn query(&self) -> JobQuery {
        let mut tags = vec![];
        if !self.tag.is_empty() {
            tags.push(self.tag.clone());
        }
        JobQuery {
            queue: (!self.queue.is_empty())
                .then(|| DeviceClass::parse(self.queue.clone()).ok())
                .flatten(),
            states: states_for(&self.state),
            all_tags: true,
            tags,
            // The search box: a job id opens the job (see `list_page`); other text is looked
            // for in names and tags.
            text: (!self.q.is_empty() && Uuid::parse_str(&self.q).is_err()).then(|| self.q.clone()),
            submitted_by: (!self.submitter.is_empty()).then(|| self.submitter.clone()),
            order: order_of(&self.sort),
            ..Default::default()
        }
    }

    /// The table's headers, each a link sorting by its column (from the first page).
    fn headers(&self) -> Vec<Header> {
        let order = order_of(&self.sort);
        COLUMNS
            .iter()
            .map(|&(label, id, sort, hide_narrow)| {
                let sorted = sort.is_some_and(|sort| order_of(sort) == order)
                    || (id == "submitted" && order == JobOrder::CreatedDesc);
                let sort = match sort {
                    Some("submitted") if order == JobOrder::CreatedAsc => Some("-submitted"),
                    other => other,
                };
                Header {
                    label,
                    id,
                    link: sort.map(|sort| self.link(&[("sort", sort.to_owned()), ("page", String::new())])),
                    arrow: match (sorted, order) {
                        (false, _) => "",
                        (
                            true,
                            JobOrder::CreatedAsc
                            | JobOrder::NameNewest
                            | JobOrder::QueueNewest
                            | JobOrder::StateNewest,
                        ) => "▲",
                        (true, _) => "▼",
                    },
                    hide_narrow,
                }
            })
            .collect()
    }

    /// This page's query string with `changes` applied.
    fn link(&self, changes: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("state", self.state.clone()),
            ("queue", self.queue.clone()),
            ("tag", self.tag.clone()),
            ("submitter", self.submitter.clone()),
            ("q", self.q.clone()),
            ("sort", self.sort.clone()),
            ("page", self.page.map(|p| p.to_string()).unwrap_or_default()),
        ];
        for (k, v) in changes {
            if let Some(p) = pairs.iter_mut().find(|(key, _)| key == k) {
                p.1 = v.clone();
            }
        }
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            s.append_pair(k, v);
        }
        format!("/jobs?{}", s.finish())
    }
}

#[derive(Template)]
#[template(path = "ui/jobs_filters.html")]
struct JobsFilters<'a> {
    p: &'a ListParams,
    states: &'a [(&'static str, &'static str)],
}

#[derive(Template)]
#[template(path = "ui/jobs.html")]
struct JobsRegion {
    rows: Vec<JobRow>,
    total: u64,
    page: u32,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    headers: Vec<Header>,
}

pub async fn list_region(state: &AppState, viewer: &Viewer, query: &str) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let p = parse_params(query);
    let q = p.query();
    let page = p.page.unwrap_or(1);
    let total = state.store().count_jobs(&q).await?;
    let jobs = state
        .store()
        .find_jobs(&JobQuery {
            offset: Some((page - 1).saturating_mul(PAGE_SIZE)),
            limit: Some(PAGE_SIZE),
            ..q
        })
        .await?;
    let pages = total.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let region = JobsRegion {
        rows: jobs.iter().map(JobRow::of).collect(),
        total,
        page,
        pages,
        prev: (page > 1).then(|| p.link(&[("page", (page - 1).to_string())])),
        next: (u64::from(page) < pages).then(|| p.link(&[("page", (page + 1).to_string())])),
        headers: p.headers(),
    };
    Ok(region.render()?)
}

/// `GET /jobs`.
pub async fn list_page(State(state): State<AppState>, viewer: Viewer, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let p = parse_params(&query);
    if let Ok(id) = Uuid::parse_str(&p.q) {
        return Redirect::to(&format!("/jobs/{id}")).into_response();
    }
    let result = async {
        let region = list_region(&state, &viewer, &query).await?;
        let mut page = Page::new(&viewer, "Jobs").live_region("/jobs", &query);
        page.before = JobsFilters {
            p: &p,
            states: &STATE_FILTERS,
        }
        .render()?;
        page.region = region;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}

/// A phase of the timeline.
struct PhaseRow {
    phase: String,
    started: String,
    duration: String,
    exit_code: String,
    failed: bool,
}

struct AttemptRow {
    attempt: u32,
    agent: String,
    started: String,
    ended: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "ui/job_summary.html")]
struct JobSummary {
    id: String,
    row: JobRow,
    failure_reason: String,
    cancel_requested: String,
    tags: String,
    submitted_by: String,
    priority: u32,
    agent: String,
    ended: String,
    waiting: Option<WaitingView>,
    reservation: Option<ReservationView>,
    phases: Vec<PhaseRow>,
    attempts: Vec<AttemptRow>,
    artifact: bool,
    /// The signed-in viewer's CSRF token when it may act on the job.
    act_csrf: Option<String>,
    terminal: bool,
}

struct WaitingView {
    position: u64,
    eta: String,
    basis: String,
}

struct ReservationView {
    until_ms: i64,
    until: String,
    device_ip: String,
    ssh: String,
}

/// The job page's live region.
pub async fn summary_region(state: &AppState, viewer: &Viewer, job_id: Uuid) -> Result<String, UiError> {
    viewer.caller.require(access::SUBMITTER)?;
    let job = find(state, job_id).await?;
    Ok(summary(state, viewer, &job).await?.render()?)
}

async fn find(state: &AppState, job_id: Uuid) -> Result<JobRecord, UiError> {
    state
        .store()
        .get_job(job_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("Job {job_id} not found.")))
}

async fn summary(state: &AppState, viewer: &Viewer, job: &JobRecord) -> Result<JobSummary, UiError> {
    let store = state.store();
    let waiting = if job.state == JobState::Waiting {
        let pos = position(state, job).await?;
        let e = estimate::estimate(state, job, pos).await?;
        Some(WaitingView {
            position: pos,
            eta: match e.eta_seconds {
                Some(s) => format!("in about {}", text::duration_secs(s)),
                None => "unknown".to_owned(),
            },
            basis: e.basis,
        })
    } else {
        None
    };
    let reservation = job
        .reservation
        .as_ref()
        .filter(|_| job.state == JobState::Reserve)
        .map(|r| ReservationView {
            until_ms: r.until.0,
            until: text::when(r.until),
            device_ip: r.device_ip.clone().unwrap_or_default(),
            ssh: r
                .device_ip
                .as_ref()
                .map(|ip| format!("ssh {}@{ip}", r.user.as_deref().unwrap_or("ubuntu")))
                .unwrap_or_default(),
        });
    // The timeline: when each phase's first output came, its exit code.
    let mut starts: Vec<(Phase, Option<Millis>)> = vec![];
    let running = crate::logs::running_phase(job.state);
    for phase in Phase::ALL {
        let ran = job.phase_status.contains_key(phase.as_str()) || running == Some(phase);
        if !ran {
            continue;
        }
        let first = store
            .read_output(&OutputQuery {
                phase: Some(phase),
                limit: Some(1),
                ..OutputQuery::all(job.job_id, job.attempt, LogStream::Output)
            })
            .await?;
        starts.push((phase, first.first().map(|f| f.at)));
    }
    let phases = starts
        .iter()
        .enumerate()
        .map(|(i, (phase, start))| {
            let end = starts.get(i + 1).and_then(|(_, s)| *s).or(job.ended_at);
            let code = job.phase_status.get(phase.as_str()).copied();
            PhaseRow {
                phase: phase.as_str().to_owned(),
                started: text::opt_when(*start),
                duration: match (start, code, running == Some(*phase)) {
                    (Some(_), _, true) => text::span(*start, None),
                    (Some(_), Some(_), _) => text::span(*start, end),
                    _ => String::new(),
                },
                exit_code: match code {
                    Some(c) => c.to_string(),
                    None if running == Some(*phase) => "running".to_owned(),
                    None => String::new(),
                },
                failed: code.is_some_and(|c| c != 0),
            }
        })
        .collect();
    let may_act = viewer.session.is_some() && may_act_on(&viewer.caller, job.submitted_by.as_deref());
    Ok(JobSummary {
        id: job.job_id.to_string(),
        row: JobRow::of(job),
        failure_reason: job.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default(),
        cancel_requested: job.cancel_requested.clone().unwrap_or_default(),
        tags: job.tags.join(", "),
        submitted_by: job.submitted_by.clone().unwrap_or_default(),
        priority: job.priority,
        agent: job
            .lease
            .as_ref()
            .map(|l| l.agent.to_string())
            .or_else(|| job.attempts.last().map(|a| a.agent.to_string()))
            .unwrap_or_default(),
        ended: text::opt_when(job.ended_at),
        waiting,
        reservation,
        phases,
        attempts: job
            .attempts
            .iter()
            .map(|a| AttemptRow {
                attempt: a.attempt,
                agent: a.agent.to_string(),
                started: text::when(a.started_at),
                ended: text::opt_when(a.ended_at),
                outcome: a.outcome.clone().unwrap_or_default(),
            })
            .collect(),
        artifact: store.blob_info(&BlobName::artifact(job.job_id)).await?.is_some(),
        act_csrf: may_act
            .then(|| viewer.session.as_ref().map(|s| s.csrf.clone()))
            .flatten(),
        terminal: job.state.is_terminal(),
    })
}

#[derive(Template)]
#[template(path = "ui/job_tail.html")]
struct JobTail {
    id: String,
    output: String,
    /// Output comes before what is shown (the whole text is behind a link).
    output_earlier: bool,
    serial: String,
    serial_earlier: bool,
    output_phase: String,
    serial_phase: String,
    yaml: String,
    provision_yaml: String,
    test_yaml: String,
    device_info: String,
}

/// A stream's tail as HTML, with a heading where each phase starts, and the cursor after it
/// (only the fragments numbered without a gap count: the live stream sends the rest).
fn render_output(tail: &Tail) -> (String, String, u64) {
    let fragments = &tail.fragments;
    let mut html = String::new();
    let mut phase = String::new();
    let mut next = fragments.first().map_or(0, |f| f.seq);
    let mut bytes: Vec<u8> = vec![];
    let flush = |html: &mut String, bytes: &mut Vec<u8>| {
        html.push_str(&text::ansi_html(&String::from_utf8_lossy(bytes)));
        bytes.clear();
    };
    for f in fragments.iter() {
        if f.seq != next {
            break;
        }
        next += 1;
        if f.phase.as_str() != phase {
            flush(&mut html, &mut bytes);
            phase = f.phase.as_str().to_owned();
            html.push_str(&format!("<span class=\"phase-head\">── {phase} ──\n</span>"));
        }
        bytes.extend_from_slice(&f.data);
    }
    flush(&mut html, &mut bytes);
    (html, phase, next)
}

fn yaml(value: &impl serde::Serialize) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_default()
}

/// `GET /jobs/<id>`.
pub async fn job_page(State(state): State<AppState>, viewer: Viewer, Path(raw): Path<String>) -> Response {
    let result = async {
        viewer.caller.require(access::SUBMITTER)?;
        let job_id = Uuid::parse_str(&raw).map_err(|_| UiError::NotFound(format!("Job {raw} not found.")))?;
        let job = find(&state, job_id).await?;
        let summary = summary(&state, &viewer, &job).await?;
        let store = state.store();
        // The end of each stream: earlier output is behind a link.
        let out = output::tail(store, job_id, job.attempt, LogStream::Output).await?;
        let serial = output::tail(store, job_id, job.attempt, LogStream::Serial).await?;
        let (output, output_phase, out_next) = render_output(&out);
        let (serial_html, serial_phase, serial_next) = render_output(&serial);
        let cursor = Cursor {
            attempt: job.attempt,
            output: out_next,
            serial: serial_next,
        };
        let raw = job.definition.raw();
        let tail = JobTail {
            id: job_id.to_string(),
            output,
            output_earlier: out.earlier,
            serial: serial_html,
            serial_earlier: serial.earlier,
            output_phase,
            serial_phase,
            yaml: yaml(raw),
            provision_yaml: raw.get("provision_data").map(yaml).unwrap_or_default(),
            test_yaml: raw.get("test_data").map(yaml).unwrap_or_default(),
            device_info: job
                .device_info
                .as_ref()
                .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
                .unwrap_or_default(),
        };
        let title = match job.definition.name() {
            Some(n) => format!("Job {n}"),
            None => format!("Job {}", &summary.id[..8]),
        };
        let mut page = Page::new(&viewer, title);
        page.live = Some(format!("/jobs/{job_id}/live?cursor={}", cursor.id()));
        page.region = summary.render()?;
        page.after = tail.render()?;
        Ok(page)
    }
    .await;
    answer(&viewer, result)
}

fn job_id(raw: &str) -> Result<Uuid, UiError> {
    Uuid::parse_str(raw).map_err(|_| UiError::NotFound(format!("Job {raw} not found.")))
}

/// `POST /jobs/<id>/cancel` (form with `csrf`): the API's cancel, for the signed-in viewer.
pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
    Form(form): Form<CsrfField>,
) -> Response {
    let result = async {
        viewer.check_csrf(Some(&form.csrf))?;
        let id = job_id(&raw)?;
        cancel::cancel(&state, &viewer.caller, id)
            .await
            .map_err(ApiError::from)?;
        Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
    }
    .await;
    result.unwrap_or_else(|e: UiError| e.page(Some(&viewer)).into_response())
}

#[derive(Deserialize)]
pub struct ExtendFields {
    #[serde(default)]
    csrf: String,
    /// `1h`, `30m`, or seconds.
    #[serde(default)]
    by: String,
}

/// `POST /jobs/<id>/extend` (form with `csrf` and `by`): the API's reservation extension.
pub async fn extend(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
    Form(form): Form<ExtendFields>,
) -> Response {
    let result = async {
        viewer.check_csrf(Some(&form.csrf))?;
        let id = job_id(&raw)?;
        let by = form.by.trim();
        let by_secs = by
            .parse::<u64>()
            .ok()
            .or_else(|| broker_schema::job::parse_human_duration(by).map(|d| d.as_secs()))
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                ApiError::invalid_field("by", "Not a valid duration: use seconds or a form like 2h30m.")
            })?;
        let job = find(&state, id).await?;
        if !may_act_on(&viewer.caller, job.submitted_by.as_deref()) {
            return Err(ApiError::Forbidden(
                "Only the job's submitter, a manager or an admin may extend its reservation".into(),
            )
            .into());
        }
        let request = SchedulerRequest::Extend(ExtendRequest {
            job_id: id,
            by_secs: Some(by_secs),
            until: None,
            requested_by: viewer.caller.client_id().map(str::to_owned),
            max_total_secs: crate::routes::reservation::reservation_limit(&viewer.caller, job.queue.as_str()),
        });
        scheduler::command(&state, &request)
            .await
            .map_err(ApiError::from)?;
        Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
    }
    .await;
    result.unwrap_or_else(|e: UiError| e.page(Some(&viewer)).into_response())
}
