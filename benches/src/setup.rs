//! How every scenario builds its lab: the release binaries, production timings (10 s
//! heartbeats, 30 s leases), quiet logs, and the store asked for.

use clap::ValueEnum;
use flinger_tests::{Lab, LabBuilder, StoreKind};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Store {
    Sqlite,
    Mongo,
}

impl Store {
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Mongo => "mongo",
        }
    }
}

/// The scheduler's timings as a deployment sets them (the fault tests shorten every timer).
pub const SCHEDULER_ARGS: [(&str, &str); 5] = [
    ("--lease-secs", "30"),
    ("--renew-secs", "10"),
    ("--reap-secs", "2"),
    ("--republish-secs", "15"),
    ("--backstop-grace-secs", "60"),
];

/// [`SCHEDULER_ARGS`] and `extra`, as a scheduler's command line (for one started mid-run).
pub fn scheduler_args(extra: &[(&str, &str)]) -> Vec<String> {
    SCHEDULER_ARGS
        .iter()
        .chain(extra)
        .flat_map(|(k, v)| [(*k).to_owned(), (*v).to_owned()])
        .collect()
}

/// A lab as a deployment would run it, not as the fault tests do (they shorten every timer).
pub fn lab(store: Store, name: &str) -> LabBuilder {
    let mut builder = Lab::builder()
        .name(name)
        .store(match store {
            Store::Sqlite => StoreKind::Sqlite,
            Store::Mongo => StoreKind::Mongo,
        })
        .agent_heartbeat(10.0);
    for (flag, value) in SCHEDULER_ARGS {
        builder = builder.scheduler_arg(flag, value);
    }
    builder
        // The load comes from one client (this process): per-client limits would measure
        // themselves, not the gateway.
        .gateway_env("FLINGER_RATE_LIMIT", "0")
        .gateway_env("FLINGER_MAX_IN_FLIGHT", "0")
}

/// A job for fake devices: setup, test and cleanup, each instant.
pub fn quick_job(queue: &str) -> Value {
    json!({"job_queue": queue, "test_data": {"test_cmds": "true"}})
}

/// An HTTP client for load: many connections, no overall timeout beyond a generous one.
pub fn http_client(connections: usize) -> reqwest::Client {
    flinger_tests::init_tls();
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A submission as the bench saw it.
pub struct Submitted {
    pub job_id: Uuid,
    /// When the request was sent.
    pub sent: Instant,
    /// When the 200 arrived.
    pub accepted: Instant,
}

/// POSTs a job that must be accepted.
pub async fn submit(http: &reqwest::Client, base: &str, job: &Value) -> anyhow::Result<Submitted> {
    let sent = Instant::now();
    let r = http.post(format!("{base}/v1/job")).json(job).send().await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let accepted = Instant::now();
    anyhow::ensure!(status.is_success(), "submission refused: {status} {body}");
    let job_id = body["job_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no job_id in {body}"))?;
    Ok(Submitted {
        job_id,
        sent,
        accepted,
    })
}

/// Submits `total` jobs (`job(i)` is the i-th) from `concurrency` clients at once, each sending
/// its next as soon as the last is answered; every submission, in the order they were answered.
pub async fn submit_many(
    http: &reqwest::Client,
    base: &str,
    total: usize,
    concurrency: usize,
    job: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> anyhow::Result<Vec<Submitted>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (next, job) = (Arc::new(AtomicUsize::new(0)), Arc::new(job));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, base, next, job) = (http.clone(), base.to_owned(), next.clone(), job.clone());
        clients.spawn(async move {
            let mut sent = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(sent);
                }
                sent.push(submit(&http, &base, &job(i)).await?);
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(r) = clients.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|s| s.accepted);
    Ok(all)
}

/// Milliseconds between two instants, negative when `to` came first.
pub fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

/// A queue's ready messages and consumers; `None` while the queue does not exist.
pub async fn queue_counts(conn: &lapin::Connection, queue: &str) -> Option<(u32, u32)> {
    use lapin::options::QueueDeclareOptions;
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .ok();
    let _ = ch.close(200, "done".into()).await;
    q.map(|q| (q.message_count(), q.consumer_count()))
}

/// A per-run progress line on stderr (stdout carries the results).
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[flinger-bench] {}", format!($($arg)*)) };
}
