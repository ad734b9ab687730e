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
//! the next bytes of the phase, or its end, decide.

use crate::reporter::Reporter;
use broker_schema::mask::{Masker, StreamMasker};
use broker_schema::messages::{LogStream, OutputChunk};
use broker_schema::{Millis, Phase};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest a byte waits before it is sent: the live-output delay budget.
pub const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// Largest chunk.
pub const MAX_CHUNK: usize = 64 * 1024;

enum Item {
    Data(Phase, Bytes),
    Flush(oneshot::Sender<()>),
}

/// One stream (`output` or `serial`) of one run.
pub struct OutputPipe {
    tx: mpsc::Sender<Item>,
    task: JoinHandle<u64>,
    /// When output last arrived (ms since epoch), for the output timeout.
    pub last_activity: Arc<AtomicI64>,
}

impl OutputPipe {
    pub fn start(reporter: Reporter, stream: LogStream) -> OutputPipe {
        Self::start_masked(reporter, stream, &Masker::default())
    }

    /// A pipe that masks `secrets` out of everything it sends.
    pub fn start_masked(reporter: Reporter, stream: LogStream, secrets: &Masker) -> OutputPipe {
        let (tx, rx) = mpsc::channel(64);
        let last_activity = Arc::new(AtomicI64::new(Millis::now().0));
        let task = tokio::spawn(pump(
            reporter,
            stream,
            rx,
            last_activity.clone(),
            secrets.stream(),
        ));
        OutputPipe {
            tx,
            task,
            last_activity,
        }
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

    /// Publishes what is left and returns how many chunks the run published.
    pub async fn finish(self) -> u64 {
        drop(self.tx);
        self.task.await.unwrap_or(0)
    }
}

async fn pump(
    reporter: Reporter,
    stream: LogStream,
    mut rx: mpsc::Receiver<Item>,
    last: Arc<AtomicI64>,
    mut masker: StreamMasker,
) -> u64 {
    let mut seq = 0u64;
    let mut buf = BytesMut::new();
    let mut buf_phase = Phase::Setup;
    let mut deadline: Option<Instant> = None;
    loop {
        let item = match deadline {
            Some(d) => tokio::select! {
                i = rx.recv() => i,
                _ = tokio::time::sleep_until(d) => {
                    send(&reporter, stream, &mut seq, buf_phase, &mut buf).await;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match item {
            Some(Item::Data(phase, data)) => {
                last.store(Millis::now().0, Ordering::Relaxed);
                if phase != buf_phase {
                    buf.extend_from_slice(&masker.finish());
                    if !buf.is_empty() {
                        send(&reporter, stream, &mut seq, buf_phase, &mut buf).await;
                    }
                }
                buf_phase = phase;
                buf.extend_from_slice(&masker.push(&data));
                while buf.len() >= MAX_CHUNK {
                    let rest = buf.split_off(MAX_CHUNK);
                    send(&reporter, stream, &mut seq, buf_phase, &mut buf).await;
                    buf = rest;
                }
                if buf.is_empty() {
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + FLUSH_AFTER);
                }
            }
            Some(Item::Flush(ack)) => {
                buf.extend_from_slice(&masker.finish());
                send(&reporter, stream, &mut seq, buf_phase, &mut buf).await;
                deadline = None;
                let _ = ack.send(());
            }
            None => {
                buf.extend_from_slice(&masker.finish());
                send(&reporter, stream, &mut seq, buf_phase, &mut buf).await;
                return seq;
            }
        }
    }
}

async fn send(reporter: &Reporter, stream: LogStream, seq: &mut u64, phase: Phase, buf: &mut BytesMut) {
    if buf.is_empty() {
        return;
    }
    let chunk = OutputChunk {
        job_id: reporter.job_id,
        attempt: reporter.attempt,
        stream,
        seq: *seq,
        phase,
        at: Millis::now(),
        data: buf.split().freeze(),
    };
    // Numbered even when it could not be confirmed (the run lost its lease): the numbers
    // are the run's, and a lost run's output is never read.
    reporter.chunk(&chunk).await;
    *seq += 1;
}
