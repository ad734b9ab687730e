//! Answers too large to build in memory, written as they are read from the store.
//!
//! `GET /v1/result/<id>` carries every phase's whole output: hundreds of MiB for a chatty job.
//! Its JSON is written here piece by piece — the envelope, then each phase's text read in pages
//! of [`PAGE`] fragments, decoded and JSON-escaped chunk by chunk — so the gateway holds one
//! page per reader whatever the output's size. The bytes are exactly those `serde_json` writes
//! for [`flinger_api::Results`] (Testflinger's CLI and ours parse them; a unit test compares).
//!
//! This module never holds a whole output, and never reads the store but through pages.

use crate::logs::LogFilter;
use crate::views;
use broker_schema::Phase;
use broker_schema::messages::LogStream;
use bytes::Bytes;
use flinger_store::{DynStore, JobRecord, OutputQuery, StoreError};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};

/// Fragments read from the store at a time: agents ship at most 64 KiB each, so about a MiB.
pub const PAGE: u32 = 16;

/// A JSON body as a stream of chunks (`axum::body::Body::from_stream`).
pub type JsonStream = futures::stream::BoxStream<'static, Result<Bytes, StoreError>>;

/// What follows a key of the results object.
enum Entry {
    /// A value already at hand (an exit code).
    Value(Value),
    /// A phase's text, read from the store when its turn comes.
    Text(LogStream, Phase),
}

/// The results of `job`'s current attempt as a stream of JSON chunks (see the module's doc).
/// `posted`: what a Testflinger-style agent posted for it.
pub async fn results(
    store: DynStore,
    job: &JobRecord,
    posted: Option<&Map<String, Value>>,
) -> Result<JsonStream, StoreError> {
    let mut envelope = views::results(job, &[], &[]);
    if let Some(posted) = posted {
        views::add_posted_results(&mut envelope, posted);
    }
    let mut entries: BTreeMap<String, Entry> = std::mem::take(&mut envelope.phases)
        .into_iter()
        .map(|(k, v)| (k, Entry::Value(v)))
        .collect();
    // Which phases have text: one small read each, so that keys come in serde_json's order.
    for stream in [LogStream::Output, LogStream::Serial] {
        for phase in Phase::ALL {
            let probe = OutputQuery {
                phase: Some(phase),
                limit: Some(1),
                ..OutputQuery::all(job.job_id, job.attempt, stream)
            };
            if !store.read_output(&probe).await?.is_empty() {
                entries.insert(
                    format!("{}_{}", phase.as_str(), stream.as_str()),
                    Entry::Text(stream, phase),
                );
            }
        }
    }
    // Every object has `job_state`: the envelope is never empty, so each entry adds `,"k":v`.
    let mut head = serde_json::to_string(&envelope).map_err(|e| StoreError::Other(e.to_string()))?;
    head.pop();
    let mut pieces = vec![Piece::Raw(head)];
    for (key, entry) in entries {
        match entry {
            Entry::Value(v) => pieces.push(Piece::Raw(format!(",{}:{v}", Value::String(key)))),
            Entry::Text(stream, phase) => {
                pieces.push(Piece::Raw(format!(",{}:\"", Value::String(key))));
                pieces.push(Piece::text(OutputQuery {
                    phase: Some(phase),
                    ..OutputQuery::all(job.job_id, job.attempt, stream)
                }));
                pieces.push(Piece::Raw("\"".into()));
            }
        }
    }
    pieces.push(Piece::Raw("}".into()));
    Ok(write(store, pieces))
}

/// A log answer (`GET /v1/result/<id>/log/<stream>`) of more than a page, as a stream of JSON
/// chunks, byte for byte what `serde_json` writes for [`crate::logs::log_answer`]'s.
/// `first_page`: the first [`PAGE`] fragments `filter` selects (read by the caller to see
/// whether the answer is large), after [`crate::logs::hold_back_after_gap`].
///
/// Two passes over the store, a page at a time: the first finds each phase's last fragment (its
/// number comes before its text), the second writes the text up to that fragment, so that
/// output arriving in between is neither shown nor counted.
pub async fn log(
    store: DynStore,
    job: &JobRecord,
    stream: LogStream,
    filter: &LogFilter,
    first_page: Vec<flinger_store::OutputFragment>,
) -> Result<JsonStream, StoreError> {
    let query = filter.query(job.job_id, job.attempt, stream);
    // Held back after a gap, as in the answer built whole: only a contiguous run of numbers.
    let contiguous = job.state.is_active() && filter.since.is_none() && filter.phase.is_none();
    let mut last: BTreeMap<Phase, u64> = BTreeMap::new();
    let mut page = first_page;
    let mut next = query.from_seq;
    loop {
        let full = page.len() as u32 >= PAGE;
        for f in &page {
            if contiguous && f.seq != next {
                break;
            }
            last.insert(f.phase, f.seq);
            next = f.seq + 1;
        }
        let gap = contiguous && page.iter().any(|f| f.seq >= next);
        let Some(after) = page.last().map(|f| f.seq + 1) else {
            break;
        };
        if !full || gap {
            break;
        }
        page = store
            .read_output(&OutputQuery {
                from_seq: after,
                limit: Some(PAGE),
                ..query.clone()
            })
            .await?;
    }
    let mut phases: BTreeMap<&'static str, Option<(Phase, u64)>> = last
        .iter()
        .map(|(p, seq)| (p.as_str(), Some((*p, *seq))))
        .collect();
    match filter.phase {
        Some(only) => {
            phases.retain(|name, _| *name == only.as_str());
            phases.entry(only.as_str()).or_insert(None);
        }
        None => {
            for p in crate::logs::phases_started(job) {
                phases.entry(p.as_str()).or_insert(None);
            }
        }
    }
    let mut pieces = vec![Piece::Raw(format!(
        "{{{}:{{",
        Value::String(stream.as_str().into())
    ))];
    for (i, (name, upto)) in phases.into_iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let key = Value::String(name.into());
        match upto {
            None => pieces.push(Piece::Raw(format!(
                "{comma}{key}:{{\"last_fragment_number\":-1,\"log_data\":\"\"}}"
            ))),
            Some((phase, seq)) => {
                pieces.push(Piece::Raw(format!(
                    "{comma}{key}:{{\"last_fragment_number\":{seq},\"log_data\":\""
                )));
                pieces.push(Piece::Text {
                    query: OutputQuery {
                        phase: Some(phase),
                        limit: Some(PAGE),
                        ..query.clone()
                    },
                    until: Some(seq),
                    decoder: LossyUtf8::default(),
                });
                pieces.push(Piece::Raw("\"}".into()));
            }
        }
    }
    pieces.push(Piece::Raw("}}".into()));
    Ok(write(store, pieces))
}

/// A part of a body being written.
enum Piece {
    /// Written as it is.
    Raw(String),
    /// The text of the fragments `query` selects (up to fragment `until`), decoded and escaped,
    /// read a page at a time.
    Text {
        query: OutputQuery,
        until: Option<u64>,
        decoder: LossyUtf8,
    },
}

impl Piece {
    fn text(query: OutputQuery) -> Piece {
        Piece::Text {
            query: OutputQuery {
                limit: Some(PAGE),
                ..query
            },
            until: None,
            decoder: LossyUtf8::default(),
        }
    }
}

/// The pieces as a stream of chunks, each text read from the store when its turn comes.
fn write(store: DynStore, pieces: Vec<Piece>) -> JsonStream {
    let pieces: VecDeque<Piece> = pieces.into();
    Box::pin(futures::stream::try_unfold(
        (store, pieces),
        |(store, mut pieces)| async move {
            loop {
                let Some(piece) = pieces.front_mut() else {
                    return Ok(None);
                };
                let chunk = match piece {
                    Piece::Raw(s) => {
                        let s = std::mem::take(s);
                        pieces.pop_front();
                        s
                    }
                    Piece::Text {
                        query,
                        until,
                        decoder,
                    } => {
                        let mut page = store.read_output(query).await?;
                        if let Some(until) = *until {
                            page.retain(|f| f.seq <= until);
                        }
                        let mut out = String::new();
                        match page.last() {
                            Some(last) => {
                                query.from_seq = last.seq + 1;
                                for fragment in &page {
                                    escape_into(&mut out, &decoder.push(&fragment.data));
                                }
                            }
                            None => {
                                escape_into(&mut out, &decoder.finish());
                                pieces.pop_front();
                            }
                        }
                        out
                    }
                };
                if !chunk.is_empty() {
                    return Ok(Some((Bytes::from(chunk), (store, pieces))));
                }
            }
        },
    ))
}

/// Appends `text` JSON-escaped as `serde_json` escapes a string's contents (without quotes).
fn escape_into(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    let quoted = Value::String(text.to_owned()).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// Decodes UTF-8 given in pieces as `String::from_utf8_lossy` decodes the whole: a character
/// split between two pieces survives, each invalid sequence becomes one U+FFFD.
#[derive(Default)]
struct LossyUtf8 {
    /// The start of a character whose end has not come yet.
    pending: Vec<u8>,
}

impl LossyUtf8 {
    fn push(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return out;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // Cut short by the end of this piece: the next may complete it.
                        None => {
                            self.pending = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// The end of the text: a character still incomplete is invalid.
    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_pieces_decodes_and_escapes_as_the_whole() {
        let text = "ascii é 漢字 🦀 \u{0} \u{1f} \"quoted\" \\ \n\t\r"
            .as_bytes()
            .to_vec();
        let mut broken = text.clone();
        broken.extend_from_slice(&[0xff, b'x', 0xe6, 0xbc, b'y', 0xf0, 0x9f]);
        for bytes in [text, broken] {
            let whole = String::from_utf8_lossy(&bytes).into_owned();
            let mut expected = String::new();
            escape_into(&mut expected, &whole);
            assert_eq!(format!("\"{expected}\""), serde_json::to_string(&whole).unwrap());
            for cut in 1..=bytes.len() {
                let mut d = LossyUtf8::default();
                let mut escaped = String::new();
                for piece in bytes.chunks(cut) {
                    escape_into(&mut escaped, &d.push(piece));
                }
                escape_into(&mut escaped, &d.finish());
                assert_eq!(escaped, expected, "pieces of {cut} bytes");
            }
        }
    }
}
