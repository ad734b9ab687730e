//! A job's output for its page: the tail a page opens with, and the whole text behind its
//! "earlier output" link.
//!
//! A stream may hold 256 MiB. The page shows its last [`TAIL_BYTES`] or so, read from the store
//! backwards in windows of fragments (never the whole output); the page's live stream goes on
//! from the fragment after the last one shown. `/jobs/<id>/output` and `/jobs/<id>/serial`
//! answer the current attempt's whole stream as plain text, written as it is read from the
//! store in pages, so the gateway never holds it whole either.

use super::page::UiError;
use super::session::Viewer;
use crate::auth::access;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use broker_schema::messages::LogStream;
use bytes::Bytes;
use flinger_store::{DynStore, OutputFragment, OutputQuery, StoreError, StoreResult};
use uuid::Uuid;

/// About how much of a stream a job page opens with. Whole fragments are shown, so up to one
/// fragment (64 KiB) more.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Fewest fragments read at a time while looking backwards (agents ship at most 64 KiB each).
const MIN_WINDOW: u64 = 16;
/// Most fragments read at a time (short lines: about 100 bytes each).
const MAX_WINDOW: u64 = 1024;
/// Fragments read at a time for the whole text.
const PAGE: u32 = 16;

/// The end of a stream.
pub struct Tail {
    /// The newest fragments holding at least [`TAIL_BYTES`] (or all there are), by number.
    pub fragments: Vec<OutputFragment>,
    /// Whether fragments come before the first one shown.
    pub earlier: bool,
}

fn bytes_of(fragments: &[OutputFragment]) -> usize {
    fragments.iter().map(|f| f.data.len()).sum()
}

/// The end of `stream` of the job's `attempt`: windows of fragments read backwards from the
/// newest until they hold [`TAIL_BYTES`], each window sized from the fragments seen so far.
pub async fn tail(store: &DynStore, job_id: Uuid, attempt: u32, stream: LogStream) -> StoreResult<Tail> {
    let all = OutputQuery::all(job_id, attempt, stream);
    // Numbered 0..count when none is missing: the newest ones, and any stored meanwhile.
    let count = store.count_output(job_id, attempt, stream).await?;
    let mut from = count.saturating_sub(MIN_WINDOW);
    let mut fragments = store
        .read_output(&OutputQuery {
            from_seq: from,
            ..all.clone()
        })
        .await?;
    let mut bytes = bytes_of(&fragments);
    while bytes < TAIL_BYTES && from > 0 {
        let average = (bytes / fragments.len().max(1)).max(1);
        let window = (((TAIL_BYTES - bytes) / average) as u64 + 1).clamp(MIN_WINDOW, MAX_WINDOW);
        let start = from.saturating_sub(window);
        let mut older = store
            .read_output(&OutputQuery {
                from_seq: start,
                limit: Some((from - start) as u32),
                ..all.clone()
            })
            .await?;
        // With a number missing, the limit reaches past `from`.
        older.retain(|f| f.seq < from);
        bytes += bytes_of(&older);
        older.append(&mut fragments);
        fragments = older;
        from = start;
    }
    fragments.sort_by_key(|f| f.seq);
    // The fewest newest fragments that hold TAIL_BYTES.
    let (mut keep, mut kept) = (0, 0);
    for f in fragments.iter().rev() {
        if kept >= TAIL_BYTES {
            break;
        }
        kept += f.data.len();
        keep += 1;
    }
    let cut = fragments.len() - keep;
    fragments.drain(..cut);
    let earlier = fragments.first().is_some_and(|f| f.seq > 0);
    Ok(Tail { fragments, earlier })
}

/// `GET /jobs/<id>/output`: the current attempt's whole output, as text.
pub async fn whole_output(state: State<AppState>, viewer: Viewer, raw: Path<String>) -> Response {
    whole(state, viewer, raw, LogStream::Output).await
}

/// `GET /jobs/<id>/serial`: the current attempt's whole serial log, as text.
pub async fn whole_serial(state: State<AppState>, viewer: Viewer, raw: Path<String>) -> Response {
    whole(state, viewer, raw, LogStream::Serial).await
}

async fn whole(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
    stream: LogStream,
) -> Response {
    let found = async {
        viewer.caller.require(access::SUBMITTER)?;
        let job_id = Uuid::parse_str(&raw).map_err(|_| UiError::NotFound(format!("Job {raw} not found.")))?;
        state
            .store()
            .get_job(job_id)
            .await?
            .ok_or_else(|| UiError::NotFound(format!("Job {job_id} not found.")))
    }
    .await;
    let job = match found {
        Ok(job) => job,
        Err(e) => return e.page(Some(&viewer)).into_response(),
    };
    let pages = pages(
        state.store().clone(),
        OutputQuery::all(job.job_id, job.attempt, stream),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(pages),
    )
        .into_response()
}

/// The stream's bytes, [`PAGE`] fragments at a time, up to the first missing number.
fn pages(
    store: DynStore,
    query: OutputQuery,
) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    futures::stream::try_unfold(Some(query), move |query| {
        let store = store.clone();
        async move {
            let Some(query) = query else {
                return Ok(None);
            };
            let mut page = store
                .read_output(&OutputQuery {
                    limit: Some(PAGE),
                    ..query.clone()
                })
                .await?;
            page.sort_by_key(|f| f.seq);
            let mut next = query.from_seq;
            let mut text = Vec::new();
            for f in page.iter() {
                if f.seq != next {
                    break;
                }
                text.extend_from_slice(&f.data);
                next += 1;
            }
            let more = page.len() == PAGE as usize && next == query.from_seq + u64::from(PAGE);
            let query = more.then_some(OutputQuery {
                from_seq: next,
                ..query
            });
            Ok(Some((Bytes::from(text), query)))
        }
    })
}
