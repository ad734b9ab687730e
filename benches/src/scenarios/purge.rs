//! Scenario `purge` (issue 14's retention benchmark): purging `--jobs` (100,000) ended jobs with
//! output while the lab runs leaves pickup latency's p99 within 2× its idle figure.
//!
//! The old jobs are written into the lab's store directly (the bench opens it as the gateway
//! does): ended 40 days ago, past the default 30-day retention, each with `--output-bytes` of
//! test output, in a queue nobody serves. The lab's first scheduler keeps jobs forever
//! (`--retention-days 0`): pickup is measured idle on the full store. Then it is replaced by one
//! with the default 30 days, its pass every `--every` seconds (the default, 60 s, would spread
//! the purge over an hour), and pickup is measured again until the store holds none of the old
//! jobs.

use crate::procstat::CpuMeter;
use crate::progress;
use crate::report::{Bound, Report};
use crate::scenarios::pickup::{Probes, probe};
use crate::setup::{self, Store};
use crate::tap::Tap;
use crate::tracker::Tracker;
use broker_schema::messages::LogStream;
use broker_schema::{AgentName, DeviceClass, JobDefinition, JobState, Millis, Phase};
use clap::Args;
use flinger_store::{AttemptRecord, DynStore, JobQuery, JobRecord, OutputFragment, StoreConfig};
use flinger_tests::AgentSpec;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Args, Clone, Debug)]
pub struct PurgeArgs {
    /// Ended jobs past their retention written into the store.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Bytes of test output each of them has.
    #[arg(long, default_value_t = 4096)]
    pub output_bytes: usize,
    /// Pickup probes measured idle (after the warm-up).
    #[arg(long, default_value_t = 300)]
    pub probes: usize,
    /// Probes run first and not measured.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Pause between one probe's end and the next submission, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub gap_ms: u64,
    /// The retention pass's period while purging, in seconds (`--retention-every-secs`).
    #[arg(long, default_value_t = 1.0)]
    pub every: f64,
    /// Give up on the purge after this many seconds.
    #[arg(long, default_value_t = 1800.0)]
    pub timeout: f64,
}

const QUEUE: &str = "bench-purge";
/// The old jobs' queue: nobody serves it, and counting it says what is left.
const OLD_QUEUE: &str = "bench-purge-old";

/// The i-th old job: ended (mostly complete) 40 days ago, and its output.
fn old_job(i: usize, now: Millis, output_bytes: usize) -> anyhow::Result<(JobRecord, OutputFragment)> {
    let def = JobDefinition::parse(json!({
        "job_queue": OLD_QUEUE,
        "name": format!("old job {i}"),
        "test_data": {"test_cmds": "true"},
    }))
    .map_err(|e| anyhow::anyhow!("job definition: {e:?}"))?;
    let created = now.minus(Duration::from_secs(40 * 86_400 + (i as u64 % 86_400)));
    let ended = created.plus(Duration::from_secs(60));
    let agent =
        AgentName::parse(format!("bench-purge-agent-{}", i % 20)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut job = JobRecord::new_waiting(Uuid::new_v4(), def, Some("bench".into()), created);
    job.attempt = 1;
    job.enqueued_at = Some(created);
    job.started_at = Some(created.plus(Duration::from_secs(5)));
    job.state = if i.is_multiple_of(20) {
        JobState::Failed
    } else {
        JobState::Complete
    };
    job.ended_at = Some(ended);
    job.updated_at = ended;
    job.phase_status.insert("test".into(), 0);
    job.attempts = vec![AttemptRecord {
        attempt: 1,
        agent,
        started_at: created.plus(Duration::from_secs(5)),
        ended_at: Some(ended),
        outcome: Some(job.state.as_str().into()),
    }];
    let line = format!("old job {i}: a line of its test output\n");
    let data: Vec<u8> = line.bytes().cycle().take(output_bytes).collect();
    let fragment = OutputFragment {
        job_id: job.job_id,
        attempt: 1,
        stream: LogStream::Output,
        seq: 0,
        phase: Phase::Test,
        at: ended,
        data,
    };
    Ok((job, fragment))
}

/// Writes the old jobs, a few calls at a time, and their output in batches; returns jobs/s.
async fn seed(db: &DynStore, args: &PurgeArgs) -> anyhow::Result<f64> {
    let t = Instant::now();
    let now = Millis::now();
    const CHUNK: usize = 500;
    let mut written = 0;
    while written < args.jobs {
        let n = CHUNK.min(args.jobs - written);
        let mut output = Vec::with_capacity(n);
        let mut jobs = Vec::with_capacity(n);
        for i in written..written + n {
            let (job, fragment) = old_job(i, now, args.output_bytes)?;
            jobs.push(job);
            output.push(fragment);
        }
        let inserted: Vec<_> = futures::stream::iter(jobs.iter().map(|j| db.insert_job(j)))
            .buffer_unordered(8)
            .collect()
            .await;
        for r in inserted {
            r?;
        }
        db.append_output(&output).await?;
        written += n;
        if written.is_multiple_of(20_000) {
            progress!("purge: {written} jobs written");
        }
    }
    Ok(args.jobs as f64 / t.elapsed().as_secs_f64())
}

/// How many old jobs the store still holds.
async fn old_left(db: &DynStore) -> anyhow::Result<u64> {
    Ok(db
        .count_jobs(&JobQuery {
            queue: Some(DeviceClass::parse(OLD_QUEUE.to_owned()).map_err(|e| anyhow::anyhow!("{e:?}"))?),
            ..Default::default()
        })
        .await?)
}

/// The scheduler's store calls of one operation so far, from its metrics: (calls, seconds).
async fn store_calls(http: &reqwest::Client, metrics: &str, operation: &str) -> anyhow::Result<(f64, f64)> {
    let text = http.get(metrics).send().await?.text().await?;
    let label = format!("operation=\"{operation}\"");
    let sum = |suffix: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "flinger_scheduler_store_call_duration_seconds{suffix}{{"
                )) && l.contains(&label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((sum("_count"), sum("_sum")))
}

pub async fn run(store: Store, args: &PurgeArgs) -> anyhow::Result<Report> {
    progress!(
        "purge: starting a lab ({} store) whose scheduler keeps jobs forever",
        store.as_str()
    );
    let mut lab = setup::lab(store, "purge")
        .scheduler_arg("--retention-days", "0")
        .agent(AgentSpec::fake("purge-0", &[QUEUE]))
        .agent(AgentSpec::fake("purge-1", &[QUEUE]))
        .start()
        .await;
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let result = measure(&mut lab, &mut tracker, store, args).await;
    tracker.stop().await;
    lab.stop().await;
    result
}

async fn measure(
    lab: &mut flinger_tests::Lab,
    tracker: &mut Tracker,
    store: Store,
    args: &PurgeArgs,
) -> anyhow::Result<Report> {
    let db = StoreConfig::parse(&lab.store)
        .map_err(|e| anyhow::anyhow!("store {}: {e}", lab.store))?
        .open()
        .await?;
    progress!(
        "purge: writing {} ended jobs of 40 days ago, {} bytes of output each",
        args.jobs,
        args.output_bytes
    );
    let seed_rate = seed(&db, args).await?;
    anyhow::ensure!(
        old_left(&db).await? == args.jobs as u64,
        "the store does not hold the jobs written"
    );

    let http = setup::http_client(4);
    let gap = Duration::from_millis(args.gap_ms);
    progress!(
        "purge: pickup idle, {} warm-up probes, then {}",
        args.warmup,
        args.probes
    );
    let mut idle = Probes::default();
    for i in 0..args.warmup + args.probes {
        let p = probe(&http, &lab.base, tracker, QUEUE).await?;
        if i >= args.warmup {
            idle.push(&p);
        }
        tokio::time::sleep(gap).await;
    }
    anyhow::ensure!(
        old_left(&db).await? == args.jobs as u64,
        "jobs were purged while retention was off"
    );

    progress!(
        "purge: a scheduler with 30 days' retention, its pass every {} s, replaces the first",
        args.every
    );
    lab.schedulers[0].stop(Duration::from_secs(10));
    let every = args.every.to_string();
    let metrics_port = flinger_tests::free_port().to_string();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let scheduler_args = setup::scheduler_args(&[
        ("--retention-days", "30"),
        ("--retention-every-secs", &every),
        ("--metrics-listen", &metrics_port),
    ]);
    let started = Instant::now();
    lab.start_scheduler("scheduler-purging", &scheduler_args);
    let pid = lab
        .schedulers
        .last()
        .and_then(|s| s.pid())
        .ok_or_else(|| anyhow::anyhow!("no scheduler process"))?;
    let cpu = CpuMeter::start(pid);
    // Probes from the moment it serves lease requests (its first pass has begun by then).
    let conn = flinger_tests::broker::connect().await;
    let rpc = lab.names.scheduler_rpc_queue();
    while setup::queue_counts(&conn, &rpc)
        .await
        .map_or(0, |(_, consumers)| consumers)
        == 0
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the new scheduler never consumed its queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = conn.close(200, "done".into()).await;

    // The store is counted from another task, so probes keep their pace.
    let (left_tx, left_rx) = tokio::sync::watch::channel(args.jobs as u64);
    let counter = {
        let db = db.clone();
        tokio::spawn(async move {
            loop {
                let left = old_left(&db).await?;
                let _ = left_tx.send(left);
                if left == 0 {
                    return anyhow::Ok(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let mut purging = Probes::default();
    while *left_rx.borrow() > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} old jobs left after {} s",
            *left_rx.borrow(),
            args.timeout
        );
        purging.push(&probe(&http, &lab.base, tracker, QUEUE).await?);
        tokio::time::sleep(gap).await;
    }
    let purged_at = counter.await??;
    let purge_secs = (purged_at - started).as_secs_f64();
    let scheduler_cores = cpu.cores();
    let (batches, batch_secs) = store_calls(&http, &metrics, "purge_ended_jobs").await?;
    let (updates, update_secs) = store_calls(&http, &metrics, "update_job").await?;

    let mut r = Report::new(
        "purge",
        json!({"store": store.as_str(), "jobs": args.jobs, "output_bytes": args.output_bytes, "probes": args.probes, "gap_ms": args.gap_ms, "every_s": args.every}),
    );
    r.add("old jobs written into the store", seed_rate, "/s");
    let (idle_start, busy_start) = (&idle.accepted_to_start, &purging.accepted_to_start);
    let idle_p99 = idle_start.quantile_ms(0.99);
    r.add(
        "idle: accepted → first phase p50",
        idle_start.quantile_ms(0.5),
        "ms",
    );
    r.add("idle: accepted → first phase p99", idle_p99, "ms");
    r.add(
        "purging: accepted → first phase p50",
        busy_start.quantile_ms(0.5),
        "ms",
    );
    r.add_target(
        "purging: accepted → first phase p99",
        busy_start.quantile_ms(0.99),
        "ms",
        Bound::AtMost,
        2.0 * idle_p99,
    );
    r.add(
        "idle: POST /v1/job answered p99",
        idle.http.quantile_ms(0.99),
        "ms",
    );
    r.add(
        "purging: POST /v1/job answered p99",
        purging.http.quantile_ms(0.99),
        "ms",
    );
    r.add("probes while purging", busy_start.len() as f64, "");
    r.add("purge: scheduler start → none left", purge_secs, "s");
    r.add("purge: jobs removed", args.jobs as f64 / purge_secs, "/s");
    r.add("scheduler CPU while purging", scheduler_cores * 100.0, "%core");
    r.add("purge batches (store calls)", batches, "");
    r.add("purge batch, mean", batch_secs / batches * 1000.0, "ms");
    r.add(
        "job update (store call) while purging, mean",
        update_secs / updates * 1000.0,
        "ms",
    );
    r.note("idle = the first scheduler, retention off, on the full store; purging = its replacement with 30 days' retention, from the moment it consumes lease requests until the store holds no old job (counted every 250 ms)");
    r.note("target: p99 while purging ≤ 2 × the idle p99 of the same run");
    Ok(r)
}
