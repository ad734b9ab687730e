//! Scenario `big-reads` (issue 14's "large bodies are streamed" benchmark): a job whose test
//! phase prints `--mib` (256) MiB of random base64 — the agents' default cap per stream — and
//! then `--clients` (20) clients at once each reading its two large bodies through the gateway,
//! `GET /v1/result/<id>` (every phase's output in one JSON) and `GET
//! /v1/result/<id>/log/output` (the output by phase), to the last byte. The gateway's resident
//! memory is read from `/proc` every 20 ms meanwhile: it must stay under 200 MB, as the
//! gateway writes those bodies as it reads the store, a page at a time
//! (`api-gateway/src/streaming.rs`).

use crate::procstat::{peak_rss_mib, rss_mib};
use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, submit};
use crate::tap::Tap;
use crate::tracker::Tracker;
use broker_schema::JobState;
use clap::Args;
use flinger_tests::AgentSpec;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Args, Clone, Debug)]
pub struct BigReadsArgs {
    /// MiB of base64 text the test phase prints (at most the agents' cap, 256, is stored).
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Clients reading at once, each both bodies.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
}

const QUEUE: &str = "bench-big-reads";
/// `base64` wraps its output at 76 characters: 57 bytes in, 77 out.
const IN_PER_LINE: u64 = 57;
const OUT_PER_LINE: u64 = 77;

/// The bodies each client reads.
fn paths(job: Uuid) -> [String; 2] {
    [
        format!("/v1/result/{job}"),
        format!("/v1/result/{job}/log/output"),
    ]
}

/// GETs `url` and drains the body without keeping it: its size and how long it took.
async fn drain(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let r = http.get(url).send().await?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    let mut body = r.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((bytes, t.elapsed()))
}

pub async fn run(store: Store, args: &BigReadsArgs) -> anyhow::Result<Report> {
    // Whole lines of base64 adding up to at most `mib` MiB.
    let lines = args.mib * 1024 * 1024 / OUT_PER_LINE;
    let printed = lines * OUT_PER_LINE;
    let command = format!("bash -c 'head -c {} /dev/urandom | base64'", lines * IN_PER_LINE);
    progress!("big-reads: starting a lab ({} store)", store.as_str());
    let lab = setup::lab(store, "big-reads")
        .agent(AgentSpec::commands(
            "big-reads-0",
            &[QUEUE],
            &[("test", &command)],
        ))
        .start()
        .await;
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let result = measure(&lab, &mut tracker, store, args, printed).await;
    tracker.stop().await;
    lab.stop().await;
    result
}

async fn measure(
    lab: &flinger_tests::Lab,
    tracker: &mut Tracker,
    store: Store,
    args: &BigReadsArgs,
    printed: u64,
) -> anyhow::Result<Report> {
    flinger_tests::init_tls();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(Duration::from_secs(3600))
        .build()?;
    progress!(
        "big-reads: a job prints {:.0} MiB of random base64",
        printed as f64 / 1024.0 / 1024.0
    );
    let s = submit(
        &http,
        &lab.base,
        &json!({"job_queue": QUEUE, "test_data": {"test_cmds": "print"}}),
    )
    .await?;
    let t = tracker
        .wait_ended(s.job_id, Duration::from_secs(1800))
        .await
        .ok_or_else(|| anyhow::anyhow!("job {} did not end within 30 min", s.job_id))?;
    let (ended, state) = t.ended.expect("ended");
    anyhow::ensure!(state == JobState::Complete, "job {} ended {state}", s.job_id);
    let stored_secs = (ended - s.accepted).as_secs_f64();

    let gateway = lab
        .gateway
        .as_ref()
        .and_then(|g| g.pid())
        .ok_or_else(|| anyhow::anyhow!("no gateway process"))?;
    let rss_before = rss_mib(gateway).unwrap_or(f64::NAN);

    // One read first, kept and checked: the body is the whole output, as JSON.
    progress!("big-reads: one read of GET /v1/result/<id>, checked");
    let [results_path, log_path] = paths(s.job_id);
    let t0 = Instant::now();
    let body = http.get(lab.url(&results_path)).send().await?.bytes().await?;
    let single = t0.elapsed();
    let results: Value = serde_json::from_slice(&body)?;
    let text = results["test_output"].as_str().unwrap_or_default();
    anyhow::ensure!(
        text.len() as u64 == printed,
        "test_output holds {} bytes, the device printed {printed}",
        text.len()
    );
    let results_bytes = body.len() as u64;
    drop((results, body));
    let single_peak = rss_mib(gateway).unwrap_or(f64::NAN);

    progress!(
        "big-reads: {} clients each read both bodies ({:.0} MiB each), at once",
        args.clients,
        results_bytes as f64 / 1024.0 / 1024.0
    );
    let reading = Arc::new(AtomicBool::new(true));
    let sampler = {
        let reading = reading.clone();
        tokio::spawn(async move {
            let mut rss = Sample::default();
            while reading.load(Ordering::Relaxed) {
                rss.push_ms(rss_mib(gateway).unwrap_or(f64::NAN));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            rss
        })
    };
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let http = http.clone();
        // Half read the results first, half the log: both bodies are being read all along.
        let mut urls = [(true, lab.url(&results_path)), (false, lab.url(&log_path))];
        if i % 2 == 1 {
            urls.reverse();
        }
        clients.spawn(async move {
            let mut read = vec![];
            for (is_results, url) in &urls {
                let (bytes, took) = drain(&http, url).await?;
                read.push((*is_results, bytes, took));
            }
            anyhow::Ok(read)
        });
    }
    let (mut total, mut reads, mut failure) = (0u64, Sample::default(), None);
    while let Some(r) = clients.join_next().await {
        let read = match r? {
            Ok(read) => read,
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        for (is_results, bytes, took) in read {
            total += bytes;
            reads.push(took);
            // The log escapes the same text (each newline as `\n`): it is at least as long.
            let whole = if is_results {
                bytes == results_bytes
            } else {
                bytes > printed
            };
            if !whole {
                failure.get_or_insert(anyhow::anyhow!(
                    "a body of {bytes} bytes (results: {is_results}) is not whole"
                ));
            }
        }
    }
    let all_secs = start.elapsed().as_secs_f64();
    reading.store(false, Ordering::Relaxed);
    let rss = sampler.await?;
    if let Some(e) = failure {
        return Err(e);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut r = Report::new(
        "big-reads",
        json!({"store": store.as_str(), "mib": args.mib, "clients": args.clients}),
    );
    r.add(
        "test output stored (device printed)",
        printed as f64 / 1024.0 / 1024.0,
        "MiB",
    );
    r.add("submit → job complete", stored_secs, "s");
    r.add(
        "GET /v1/result/<id> body",
        results_bytes as f64 / 1024.0 / 1024.0,
        "MiB",
    );
    r.add("one read of it alone", single.as_secs_f64(), "s");
    r.add("gateway RSS before reading", rss_before, "MiB");
    r.add("gateway RSS after one read", single_peak, "MiB");
    r.add_target(
        format!("gateway RSS, {} clients reading (max)", args.clients),
        rss.quantile_ms(1.0),
        "MiB",
        Bound::AtMost,
        200.0 * 1e6 / 1024.0 / 1024.0,
    );
    r.add(
        "gateway peak RSS since start (VmHWM)",
        peak_rss_mib(gateway).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add(
        "gateway RSS after the reads",
        rss_mib(gateway).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add(
        format!("{} bodies read", 2 * args.clients),
        total as f64 / 1024.0 / 1024.0 / 1024.0,
        "GiB",
    );
    r.add("all reads, wall time", all_secs, "s");
    r.add(
        "read throughput, all clients",
        total as f64 / 1e6 / all_secs,
        "MB/s",
    );
    r.add("one body's read p50", reads.quantile_ms(0.5) / 1000.0, "s");
    r.add("one body's read max", reads.quantile_ms(1.0) / 1000.0, "s");
    r.note("RSS = VmRSS of the gateway process from /proc, every 20 ms while the clients read; target 200 MB = 190.7 MiB");
    r.note("each client drains its bodies as fast as it can, counting bytes and keeping none (the first, single read is parsed and checked)");
    Ok(r)
}
