//! Streams a run's output to the broker as numbered chunks while the phase runs.
//!
//! Bytes are gathered for at most [`FLUSH_AFTER`] or [`MAX_CHUNK`] bytes, whichever comes first,
//! then published and confirmed before the next chunk: a slow broker slows the device's output
//! down (the channels are bounded) instead of buffering it without limit. Chunks are numbered
//! 0, 1, 2… per run and stream, which makes them idempotent and lets the scheduler check that a
//! finished run's output has no gaps.
//!
//! The job's secret values are masked here, at the source, before any byte leaves the agent's
//! host ([`broker_schema::mask`]); bytes that could be the start of a secret are held back until
//! the next bytes of the phase, or its end, decide. The agent config's `sensitive_patterns`
//! (regular expressions) are applied line by line ([`LineMasker`]): with patterns configured, a
//! line is sent once it is complete, or after [`PARTIAL_LINE_AFTER`] without its end.
//!
//! A stream ships at most its cap ([`DEFAULT_CAP`], the agent's `output_cap_mib`, or the lab's
//! in the lease grant): past it, one last line says the output was truncated, the rest is
//! counted and dropped, and the phase goes on. [`OutputPipe::finish`] reports what was dropped,
//! for the run's results.

use crate::reporter::Reporter;
use broker_schema::mask::{MASK, Masker, StreamMasker};
use broker_schema::messages::{LogStream, OutputChunk};
use broker_schema::{Millis, Phase};
use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest a byte waits before it is sent: the live-output delay budget.
pub const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// Largest chunk.
pub const MAX_CHUNK: usize = 64 * 1024;
/// The most bytes of a stream one run ships when neither the lab nor the agent's config says.
pub const DEFAULT_CAP: u64 = 256 * 1024 * 1024;
/// With `sensitive_patterns`, how long the start of a line waits for its end before it is
/// masked and sent as it is.
pub const PARTIAL_LINE_AFTER: Duration = Duration::from_millis(500);
/// With `sensitive_patterns`, the longest line held back whole; a longer one is cut here.
const MAX_LINE: usize = 16 * 1024;

/// Masks the matches of regular expressions, one line at a time: a match never spans lines,
/// and a line is released once it ends (`\n` or `\r`), once it grows past [`MAX_LINE`], or
/// when [`LineMasker::finish`] is called.
#[derive(Clone, Debug, Default)]
pub struct LineMasker {
    patterns: Arc<[Regex]>,
    held: Vec<u8>,
}

impl LineMasker {
    pub fn new(patterns: &[Regex]) -> LineMasker {
        LineMasker {
            patterns: patterns.into(),
            held: Vec::new(),
        }
    }

    /// The masked complete lines of what was pushed so far.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        let cut = match self.held.iter().rposition(|b| *b == b'\n' || *b == b'\r') {
            Some(i) => i + 1,
            None if self.held.len() > MAX_LINE => self.held.len(),
            None => 0,
        };
        let ready: Vec<u8> = self.held.drain(..cut).collect();
        self.mask(ready)
    }

    /// Releases the line held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.mask(held)
    }

    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    fn mask(&self, mut data: Vec<u8>) -> Vec<u8> {
        for p in self.patterns.iter() {
            if let std::borrow::Cow::Owned(masked) = p.replace_all(&data, MASK) {
                data = masked;
            }
        }
        data
    }
}

enum Item {
    Data(Phase, Bytes),
    Flush(oneshot::Sender<()>),
}

/// One stream (`output` or `serial`) of one run.
pub struct OutputPipe {
    tx: mpsc::Sender<Item>,
    task: JoinHandle<PipeEnd>,
    /// When output last arrived (ms since epoch), for the output timeout.
    pub last_activity: Arc<AtomicI64>,
    /// Chunks published so far (sequence numbers `0..n`), for the phase moves' `shipped`.
    published: Arc<AtomicU64>,
}

/// What a finished pipe published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeEnd {
    /// Chunks published (sequence numbers `0..chunks`).
    pub chunks: u64,
    /// Bytes not shipped because the stream passed its cap; 0 when it did not.
    pub dropped: u64,
}

impl OutputPipe {
    pub fn start(reporter: Reporter, stream: LogStream) -> OutputPipe {
        Self::start_masked(reporter, stream, &Masker::default(), &[], DEFAULT_CAP)
    }

    /// A pipe that masks `secrets` and the matches of `patterns` out of everything it sends,
    /// and ships at most `cap` bytes.
    pub fn start_masked(
        reporter: Reporter,
        stream: LogStream,
        secrets: &Masker,
        patterns: &[Regex],
        cap: u64,
    ) -> OutputPipe {
        let (tx, rx) = mpsc::channel(64);
        let last_activity = Arc::new(AtomicI64::new(Millis::now().0));
        let published = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            reporter,
            stream,
            seq: 0,
            published: published.clone(),
            cap,
            shipped: 0,
            dropped: 0,
        };
        let task = tokio::spawn(pump(
            sink,
            rx,
            last_activity.clone(),
            secrets.stream(),
            LineMasker::new(patterns),
        ));
        OutputPipe {
            tx,
            task,
            last_activity,
            published,
        }
    }

    /// How many chunks the pipe has published so far; after [`OutputPipe::flush`], every byte
    /// sent before it is in them.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// A sender that tags bytes with `phase`.
    pub async fn send(&self, phase: Phase, data: Bytes) {
        let _ = self.tx.send(Item::Data(phase, data)).await;
    }

    /// Waits until everything sent so far is published.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Item::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Publishes what is left and says how many chunks the run published and what it dropped.
    pub async fn finish(self) -> PipeEnd {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

/// Where a pipe's bytes go: numbered chunks, up to the stream's cap.
struct Sink {
    reporter: Reporter,
    stream: LogStream,
    seq: u64,
    /// `seq`, for [`OutputPipe::published`].
    published: Arc<AtomicU64>,
    cap: u64,
    /// Bytes shipped so far (the truncation line not counted).
    shipped: u64,
    /// Bytes dropped past the cap.
    dropped: u64,
}

impl Sink {
    fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// Ships `buf` (emptying it), or what of it fits under the cap and then the truncation line.
    async fn send(&mut self, phase: Phase, buf: &mut BytesMut) {
        if buf.is_empty() {
            return;
        }
        if self.truncated() {
            self.dropped += buf.len() as u64;
            buf.clear();
            return;
        }
        let room = self.cap.saturating_sub(self.shipped);
        if (buf.len() as u64) <= room {
            self.shipped += buf.len() as u64;
            self.publish(phase, buf.split().freeze()).await;
            return;
        }
        let fits = buf.split_to(room as usize);
        self.dropped = buf.len() as u64;
        buf.clear();
        self.shipped += fits.len() as u64;
        if !fits.is_empty() {
            self.publish(phase, fits.freeze()).await;
        }
        let note = format!(
            "\nflinger-agent: output truncated: the {} stream passed this job's cap of {} bytes; \
             the rest is not shipped (the job goes on)\n",
            self.stream.as_str(),
            self.cap
        );
        self.publish(phase, Bytes::from(note)).await;
    }

    async fn publish(&mut self, phase: Phase, data: Bytes) {
        let chunk = OutputChunk {
            job_id: self.reporter.job_id,
            attempt: self.reporter.attempt,
            stream: self.stream,
            seq: self.seq,
            phase,
            at: Millis::now(),
            data,
        };
        // Numbered even when it could not be confirmed (the run lost its lease): the numbers
        // are the run's, and a lost run's output is never read.
        self.reporter.chunk(&chunk).await;
        self.seq += 1;
        self.published.store(self.seq, Ordering::SeqCst);
    }
}

async fn pump(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Item>,
    last: Arc<AtomicI64>,
    mut masker: StreamMasker,
    mut lines: LineMasker,
) -> PipeEnd {
    let mut buf = BytesMut::new();
    let mut buf_phase = Phase::Setup;
    let mut deadline: Option<Instant> = None;
    // When the start of a line held back by `lines` is released without its end.
    let mut partial_deadline: Option<Instant> = None;
    // Everything held back, masked, for the end of a phase or a flush.
    let finish = |masker: &mut StreamMasker, lines: &mut LineMasker| {
        let mut out = lines.push(&masker.finish());
        out.extend(lines.finish());
        out
    };
    loop {
        if !lines.holds() {
            partial_deadline = None;
        } else if partial_deadline.is_none() {
            partial_deadline = Some(Instant::now() + PARTIAL_LINE_AFTER);
        }
        let item = tokio::select! {
            i = rx.recv() => i,
            _ = sleep_opt(deadline) => {
                sink.send(buf_phase, &mut buf).await;
                deadline = None;
                continue;
            }
            _ = sleep_opt(partial_deadline) => {
                buf.extend_from_slice(&lines.finish());
                sink.send(buf_phase, &mut buf).await;
                deadline = None;
                continue;
            }
        };
        match item {
            Some(Item::Data(phase, data)) => {
                last.store(Millis::now().0, Ordering::Relaxed);
                if sink.truncated() {
                    // Past the cap: counted, not masked nor shipped.
                    sink.dropped += data.len() as u64;
                    continue;
                }
                if phase != buf_phase {
                    buf.extend_from_slice(&finish(&mut masker, &mut lines));
                    if !buf.is_empty() {
                        sink.send(buf_phase, &mut buf).await;
                    }
                }
                buf_phase = phase;
                buf.extend_from_slice(&lines.push(&masker.push(&data)));
                while buf.len() >= MAX_CHUNK {
                    let rest = buf.split_off(MAX_CHUNK);
                    sink.send(buf_phase, &mut buf).await;
                    buf = rest;
                }
                if buf.is_empty() {
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + FLUSH_AFTER);
                }
            }
            Some(Item::Flush(ack)) => {
                buf.extend_from_slice(&finish(&mut masker, &mut lines));
                sink.send(buf_phase, &mut buf).await;
                deadline = None;
                let _ = ack.send(());
            }
            None => {
                buf.extend_from_slice(&finish(&mut masker, &mut lines));
                sink.send(buf_phase, &mut buf).await;
                return PipeEnd {
                    chunks: sink.seq,
                    dropped: sink.dropped,
                };
            }
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(patterns: &[&str]) -> LineMasker {
        let p: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
        LineMasker::new(&p)
    }

    #[test]
    fn a_match_split_across_pieces_of_a_line_is_masked() {
        let mut m = masker(&["tok-[0-9]+"]);
        let mut out = m.push(b"first line\nthe tok-12");
        assert_eq!(out, b"first line\n".to_vec(), "the incomplete line waits");
        assert!(m.holds());
        out.extend(m.push(b"345 end\nnext"));
        out.extend(m.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "first line\nthe **** end\nnext");
    }

    #[test]
    fn without_patterns_nothing_is_held_back() {
        let mut m = masker(&[]);
        assert_eq!(m.push(b"no newline"), b"no newline".to_vec());
        assert!(!m.holds());
    }

    #[test]
    fn a_carriage_return_ends_a_line_and_an_endless_line_is_cut() {
        let mut m = masker(&["secret"]);
        assert_eq!(m.push(b"10% secret\r20%"), b"10% ****\r".to_vec());
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(m.push(&long).len(), MAX_LINE + 4);
        assert!(!m.holds());
    }
}
