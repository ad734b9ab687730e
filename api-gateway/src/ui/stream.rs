//! The pages' event streams (Server-Sent Events).
//!
//! A list page's stream (`/live?page=<path>`) sends its live region again (`event: region`),
//! rendered from the store for the same viewer, soon after an event that may change it — at most
//! every [`MIN_GAP`], and once more a second after the last event, for what the scheduler
//! recorded after the event went by.
//!
//! A job page's stream (`/jobs/<id>/live`) sends its summary region the same way and its output
//! as numbered chunks (`event: output`). Every event's `id:` is the page's output cursor,
//! `<attempt>.<output next>.<serial next>`: a browser reconnecting (after a gateway restart, say)
//! sends it back as `Last-Event-ID`, and the stream goes on from there — no gap, no line twice.
//! A chunk that arrives ahead of one not seen yet waits while the missing ones are read from the
//! store. A new attempt starts the output again (`event: reset`). The summary waits while the
//! record is past a phase move whose earlier output the page has not shown yet
//! (`output_shipped`), so a phase's last line comes before the next phase's state.
//!
//! Streams end when the gateway stops (the browser reconnects to another or the restarted one).

use super::page::UiError;
use super::session::Viewer;
use super::{jobs, live::Live};
use crate::auth::access;
use crate::extract::JobId;
use crate::state::AppState;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use broker_schema::messages::{LogStream, OutputChunk};
use flinger_store::{OutputFragment, OutputQuery};
use futures::Stream;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::debug;
use uuid::Uuid;

/// Least time between two renderings of one page's region.
const MIN_GAP: Duration = Duration::from_millis(300);
/// Delay before rendering after an event (events come in bursts).
const SETTLE: Duration = Duration::from_millis(60);
/// One more rendering this long after the last event.
const FOLLOW_UP: Duration = Duration::from_secs(1);
/// How often a page with a gap in its output, or without live events, reads the store.
const STORE_TICK: Duration = Duration::from_millis(500);
/// A list page is rendered again this often even without events: an agent that falls silent
/// sends none, yet turns offline; heartbeat ages move on.
const REFRESH: Duration = Duration::from_secs(15);
/// What the browser waits before reconnecting.
const RETRY: Duration = Duration::from_millis(1000);
/// The longest a job page's summary waits for the output its run shipped before the record's
/// latest phase move (normally milliseconds; output lost on the way must not freeze the page).
const HOLD_LIMIT: Duration = Duration::from_secs(5);

type Events = mpsc::Sender<Event>;

fn sse(rx: mpsc::Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn json_event(kind: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(data).expect("JSON"))
}

/// When to render next: soon after an event, not sooner than [`MIN_GAP`] after the last
/// rendering, and once more [`FOLLOW_UP`] after the last event.
#[derive(Default)]
struct Pacing {
    next: Option<Instant>,
    follow_up: Option<Instant>,
    last: Option<Instant>,
}

impl Pacing {
    fn event(&mut self) {
        let now = Instant::now();
        let earliest = self.last.map_or(now, |l| l + MIN_GAP).max(now + SETTLE);
        self.next = Some(self.next.map_or(earliest, |n| n.min(earliest)));
        self.follow_up = Some(now + FOLLOW_UP);
    }

    fn due(&self) -> Option<Instant> {
        match (self.next, self.follow_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rendered(&mut self) {
        let now = Instant::now();
        self.last = Some(now);
        if self.next.is_some_and(|n| n <= now) {
            self.next = None;
        } else if self.follow_up.is_some_and(|f| f <= now) {
            self.follow_up = None;
        }
        if self.follow_up.is_some_and(|f| f <= now) {
            self.follow_up = None;
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[derive(Deserialize)]
pub struct RegionParams {
    page: String,
}

/// `GET /live?page=<path?query>`: a list page's region, again whenever it may have changed.
pub async fn region(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<RegionParams>,
) -> Response {
    let (path, query) = match params.page.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (params.page.clone(), String::new()),
    };
    // Refused as the page itself would be.
    if let Err(e) = super::region(&state, &viewer, &path, &query).await {
        return e.page(Some(&viewer)).into_response();
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(region_feed(state, viewer, path, query, tx));
    sse(rx).into_response()
}

async fn region_feed(state: AppState, viewer: Viewer, path: String, query: String, tx: Events) {
    let mut events = state.live().subscribe();
    let stopping = state.stopping().clone();
    let mut pacing = Pacing::default();
    pacing.event();
    let mut refresh = tokio::time::interval_at(Instant::now() + REFRESH, REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tx.closed() => return,
            _ = refresh.tick() => pacing.event(),
            e = events.recv() => match e {
                Ok(Live::Output(_)) => {}
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => pacing.event(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = sleep_until(pacing.due()) => {
                pacing.rendered();
                match super::region(&state, &viewer, &path, &query).await {
                    Ok(html) => {
                        let event = json_event("region", &html).retry(RETRY);
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    // The store is away: the next event tries again.
                    Err(UiError::Api(_)) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// Where a job page's output stands: the attempt shown and the next chunk of each stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub attempt: u32,
    pub output: u64,
    pub serial: u64,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.trim().split('.').map(|p| p.parse::<u64>().ok());
        let attempt = u32::try_from(parts.next()??).ok()?;
        let (output, serial) = (parts.next()??, parts.next()??);
        Some(Cursor {
            attempt,
            output,
            serial,
        })
    }

    pub fn id(&self) -> String {
        format!("{}.{}.{}", self.attempt, self.output, self.serial)
    }

    fn next(&self, stream: LogStream) -> u64 {
        match stream {
            LogStream::Output => self.output,
            LogStream::Serial => self.serial,
        }
    }

    fn advance(&mut self, stream: LogStream) {
        match stream {
            LogStream::Output => self.output += 1,
            LogStream::Serial => self.serial += 1,
        }
    }
}

#[derive(Deserialize)]
pub struct JobStreamParams {
    cursor: Option<String>,
}

/// `GET /jobs/<id>/live[?cursor=a.o.s]`: the job's summary and output as they change.
pub async fn job(
    State(state): State<AppState>,
    viewer: Viewer,
    JobId(job_id): JobId,
    headers: HeaderMap,
    Query(params): Query<JobStreamParams>,
    RawQuery(_): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(access::SUBMITTER) {
        return UiError::Api(e).page(Some(&viewer)).into_response();
    }
    match state.store().get_job(job_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return UiError::NotFound(format!("Job {job_id} not found."))
                .page(Some(&viewer))
                .into_response();
        }
        Err(e) => return UiError::from(e).page(Some(&viewer)).into_response(),
    }
    // A reconnecting browser says where it was; a new page, where its rendering stopped.
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::parse)
        .or_else(|| params.cursor.as_deref().and_then(Cursor::parse))
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(job_feed(state, viewer, job_id, cursor, tx));
    sse(rx).into_response()
}

struct JobFeed {
    state: AppState,
    viewer: Viewer,
    job_id: Uuid,
    cursor: Cursor,
    /// Chunks that came ahead of a missing one, by stream and number.
    ahead: BTreeMap<(LogStream, u64), Arc<OutputChunk>>,
    /// The summary waits for output shipped before the record's latest phase move.
    held: Option<Held>,
    tx: Events,
}

/// A summary held back: since when, and the cursor it waits for.
struct Held {
    since: Instant,
    output: u64,
    serial: u64,
}

use std::sync::Arc;

/// The stream is gone (the browser left).
struct Gone;

impl JobFeed {
    async fn send(&self, event: Event) -> Result<(), Gone> {
        self.tx
            .send(event.id(self.cursor.id()).retry(RETRY))
            .await
            .map_err(|_| Gone)
    }

    async fn send_chunk(&mut self, stream: LogStream, phase: &str, data: &[u8]) -> Result<(), Gone> {
        self.cursor.advance(stream);
        let msg = serde_json::json!({
            "stream": stream.as_str(),
            "phase": phase,
            "text": String::from_utf8_lossy(data),
        });
        self.send(json_event("output", &msg)).await
    }

    /// A new attempt started: the page starts its output again.
    async fn reset(&mut self, attempt: u32) -> Result<(), Gone> {
        self.cursor = Cursor {
            attempt,
            output: 0,
            serial: 0,
        };
        self.ahead.clear();
        self.send(Event::default().event("reset").data("{}")).await
    }

    /// Sends the chunks waiting in `ahead` that are next now.
    async fn drain_ahead(&mut self) -> Result<(), Gone> {
        for stream in [LogStream::Output, LogStream::Serial] {
            while let Some(c) = self.ahead.remove(&(stream, self.cursor.next(stream))) {
                let phase = c.phase.as_str().to_owned();
                self.send_chunk(stream, &phase, &c.data).await?;
            }
            self.ahead
                .retain(|(s, seq), _| *s != stream || *seq >= self.cursor.next(stream));
        }
        Ok(())
    }

    /// Reads what the store has from the cursor on, in order, up to the first missing number.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        let Ok(Some(job)) = self.state.store().get_job(self.job_id).await else {
            return Ok(());
        };
        if job.attempt > self.cursor.attempt {
            self.reset(job.attempt).await?;
        }
        for stream in [LogStream::Output, LogStream::Serial] {
            let query = OutputQuery {
                from_seq: self.cursor.next(stream),
                ..OutputQuery::all(self.job_id, self.cursor.attempt, stream)
            };
            let Ok(mut fragments) = self.state.store().read_output(&query).await else {
                continue;
            };
            fragments.sort_by_key(|f: &OutputFragment| f.seq);
            for f in fragments {
                if f.seq != self.cursor.next(stream) {
                    break;
                }
                self.send_chunk(stream, f.phase.as_str(), &f.data).await?;
            }
        }
        self.drain_ahead().await
    }

    async fn chunk(&mut self, c: Arc<OutputChunk>) -> Result<(), Gone> {
        if c.attempt < self.cursor.attempt {
            return Ok(());
        }
        if c.attempt > self.cursor.attempt {
            self.reset(c.attempt).await?;
        }
        let next = self.cursor.next(c.stream);
        if c.seq < next {
            return Ok(());
        }
        if c.seq == next {
            self.send_chunk(c.stream, c.phase.as_str(), &c.data).await?;
            return self.drain_ahead().await;
        }
        self.ahead.insert((c.stream, c.seq), c);
        self.catch_up().await
    }

    /// Sends the summary, unless it waits for output ([`JobFeed::holds_back`]).
    async fn summary(&mut self) -> Result<(), Gone> {
        if self.holds_back().await {
            return Ok(());
        }
        self.held = None;
        match jobs::summary_region(&self.state, &self.viewer, self.job_id).await {
            Ok(html) => self.send(json_event("region", &html)).await,
            Err(_) => Ok(()),
        }
    }
}

impl JobFeed {
    /// Whether the summary waits: output and states are stored from two queues, so the record
    /// may be past a phase move whose earlier output this page has not shown yet (the run said
    /// how much it had shipped, `output_shipped`). A page shows a phase's output before the
    /// next phase's state, as `flinger poll` does — for at most [`HOLD_LIMIT`].
    async fn holds_back(&mut self) -> bool {
        let Ok(Some(job)) = self.state.store().get_job(self.job_id).await else {
            return false;
        };
        let Some(s) = job.output_shipped.filter(|s| {
            s.attempt == job.attempt && s.attempt == self.cursor.attempt && !job.state.is_terminal()
        }) else {
            return false;
        };
        if s.output <= self.cursor.output && s.serial <= self.cursor.serial {
            return false;
        }
        let since = match &self.held {
            Some(h) => h.since,
            None => {
                debug!(job_id = %self.job_id, shipped = s.output, shown = self.cursor.output,
                    "a job page's summary waits for the output shipped before the phase move");
                Instant::now()
            }
        };
        if since.elapsed() >= HOLD_LIMIT {
            return false;
        }
        self.held = Some(Held {
            since,
            output: s.output,
            serial: s.serial,
        });
        true
    }

    /// A held summary's output has all been sent.
    fn caught_up(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| self.cursor.output >= h.output && self.cursor.serial >= h.serial)
    }
}

async fn job_feed(state: AppState, viewer: Viewer, job_id: Uuid, cursor: Cursor, tx: Events) {
    let mut events = state.live().subscribe();
    // Bound before the store is read: no chunk falls between the two.
    let _following = state.live().follow(job_id).await;
    let stopping = state.stopping().clone();
    let mut feed = JobFeed {
        state: state.clone(),
        viewer,
        job_id,
        cursor,
        ahead: BTreeMap::new(),
        held: None,
        tx,
    };
    let mut pacing = Pacing::default();
    if feed.catch_up().await.is_err() || feed.summary().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(STORE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            () = stopping.cancelled() => return,
            () = feed.tx.closed() => return,
            e = events.recv() => match e {
                Ok(Live::Output(c)) if c.job_id == job_id => feed.chunk(c).await,
                Ok(Live::Job(id)) if id == job_id => {
                    pacing.event();
                    Ok(())
                }
                Ok(Live::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    pacing.event();
                    feed.catch_up().await
                }
                Ok(_) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = sleep_until(pacing.due()) => {
                pacing.rendered();
                // A run's end is recorded after all its output: read what may have been missed.
                match feed.catch_up().await {
                    Ok(()) => feed.summary().await,
                    Err(g) => Err(g),
                }
            }
            _ = tick.tick(), if !feed.ahead.is_empty() || !state.live().connected() || feed.held.is_some() => {
                match feed.catch_up().await {
                    // A held summary goes once its output came, or its wait is over.
                    Ok(()) if feed.held.is_some() => feed.summary().await,
                    other => other,
                }
            }
        };
        if step.is_err() {
            return;
        }
        if feed.caught_up() && feed.summary().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn a_cursor_reads_back_what_it_writes_and_refuses_the_rest() {
        let c = Cursor {
            attempt: 2,
            output: 17,
            serial: 0,
        };
        assert_eq!(c.id(), "2.17.0");
        assert_eq!(Cursor::parse(&c.id()), Some(c));
        for bad in ["", "1.2", "a.b.c", "1.2.x", "-1.0.0"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
