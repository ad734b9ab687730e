//! Scenario `ui`, the web UI's speed (issue 12): with `--jobs` (100,000) jobs in the store,
//!
//! - `/jobs` (the first page, and a page filtered by state and queue) and `/jobs/<id>` answer
//!   p99 ≤ 50 ms;
//! - a line printed on the device appears in an open job page's event stream
//!   (`/jobs/<id>/live`, `event: output`) p50 ≤ 100 ms: a `command` device prints lines
//!   carrying their own wall-clock time (`$EPOCHREALTIME`); delay = received − printed;
//! - `--streams` (200) open job-page streams following idle jobs cost the gateway ≤ 5 % of a
//!   core, read from `/proc` over `--window` seconds.
//!
//! The jobs are written into the lab's store directly (the bench opens it as the gateway does):
//! ended jobs over 20 queues, tags and submitters, spread over the last 7 days, and the idle
//! jobs as running jobs whose lease, held by no live agent, lasts a day — nothing happens to
//! them, as to a long test that prints nothing. Seeded jobs have no output.

use crate::procstat::CpuMeter;
use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, http_client, submit};
use broker_schema::{AgentName, JobDefinition, JobState, Millis};
use clap::Args;
use flinger_store::{AttemptRecord, JobRecord, Lease, StoreConfig};
use flinger_tests::AgentSpec;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Args, Clone, Debug)]
pub struct UiArgs {
    /// Jobs written into the store before measuring.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Requests per page kind.
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
    /// Stamped lines the device prints (one every 50 ms).
    #[arg(long, default_value_t = 200)]
    pub lines: usize,
    /// Open job-page streams on idle jobs.
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Seconds the idle streams' cost is measured over.
    #[arg(long, default_value_t = 30.0)]
    pub window: f64,
}

const QUEUES: usize = 20;
const PACED_QUEUE: &str = "bench-ui-paced";

fn wall_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The i-th seeded job: ended (mostly complete), or running and idle.
fn seeded(i: usize, now: Millis, idle: bool) -> anyhow::Result<JobRecord> {
    let queue = format!("bench-ui-q{}", i % QUEUES);
    let def = JobDefinition::parse(json!({
        "job_queue": queue,
        "name": format!("seeded job {i}"),
        "tags": [format!("tag{}", i % 50), "bench"],
        "test_data": {"test_cmds": "true"},
    }))
    .map_err(|e| anyhow::anyhow!("job definition: {e:?}"))?;
    // Spread over the last 7 days, newest last.
    let created = now.minus(Duration::from_millis(((i as u64 * 7919) % 604_800) * 1000));
    let mut job = JobRecord::new_waiting(Uuid::new_v4(), def, Some(format!("client{}", i % 10)), created);
    let agent =
        AgentName::parse(format!("bench-ui-agent-{}", i % 40)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    job.attempt = 1;
    job.enqueued_at = Some(created);
    job.started_at = Some(created.plus(Duration::from_secs(5)));
    if idle {
        job.state = JobState::Test;
        job.started_at = Some(now);
        job.lease = Some(Lease {
            agent: agent.clone(),
            attempt: 1,
            until: now.plus(Duration::from_secs(86_400)),
        });
        job.attempts = vec![AttemptRecord {
            attempt: 1,
            agent,
            started_at: now,
            ended_at: None,
            outcome: None,
        }];
        return Ok(job);
    }
    let ended = created.plus(Duration::from_secs(60 + (i as u64 % 1800)));
    job.state = match i % 20 {
        0 => JobState::Failed,
        1 => JobState::Cancelled,
        _ => JobState::Complete,
    };
    job.ended_at = Some(ended);
    job.updated_at = ended;
    job.phase_status
        .insert("test".into(), i32::from(i.is_multiple_of(7)));
    job.attempts = vec![AttemptRecord {
        attempt: 1,
        agent,
        started_at: created.plus(Duration::from_secs(5)),
        ended_at: Some(ended),
        outcome: Some(job.state.as_str().into()),
    }];
    Ok(job)
}

/// GETs `path` `n` times, one after the other; the latencies.
async fn latencies(http: &reqwest::Client, base: &str, paths: &[String], n: usize) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    for i in 0..n {
        let path = &paths[i % paths.len()];
        let t = Instant::now();
        let r = http.get(format!("{base}{path}")).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        s.push(t.elapsed());
        anyhow::ensure!(status.is_success(), "GET {path}: {status}");
        anyhow::ensure!(body.len() > 100, "GET {path}: a short body");
    }
    Ok(s)
}

/// Reads a job page's event stream; the delay of every stamped line, until `lines` came.
async fn stream_delays(http: reqwest::Client, url: String, lines: usize) -> anyhow::Result<Sample> {
    let r = http
        .get(&url)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    let mut body = r.bytes_stream();
    let (mut buf, mut partial, mut delays, mut seen) = (String::new(), String::new(), Sample::default(), 0);
    while seen < lines {
        let Some(chunk) = body.next().await else {
            anyhow::bail!("the stream ended after {seen} lines");
        };
        let now = wall_secs();
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        // Whole events end with a blank line.
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if !event.lines().any(|l| l == "event: output") {
                continue;
            }
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .collect::<Vec<_>>()
                .join("\n");
            let v: Value = serde_json::from_str(&data)?;
            partial.push_str(v["text"].as_str().unwrap_or(""));
            while let Some(nl) = partial.find('\n') {
                let line: String = partial.drain(..=nl).collect();
                if let Some(ts) = line.split_whitespace().next().and_then(|t| t.parse::<f64>().ok())
                    && line.contains("ui line")
                {
                    delays.push_ms((now - ts) * 1000.0);
                    seen += 1;
                }
            }
        }
    }
    Ok(delays)
}

pub async fn run(store: Store, args: &UiArgs) -> anyhow::Result<Report> {
    let paced = format!(
        "bash -c 'sleep 3; for i in $(seq 1 {}); do echo \"$EPOCHREALTIME ui line $i\"; sleep 0.05; done'",
        args.lines
    );
    let lab = setup::lab(store, "ui")
        .agent(AgentSpec::commands(
            "bench-ui-paced-1",
            &[PACED_QUEUE],
            &[("test", &paced)],
        ))
        .start()
        .await;
    let http = http_client(args.streams + 8);

    // The store, as the gateway opens it.
    let db = StoreConfig::parse(&lab.store)
        .map_err(|e| anyhow::anyhow!("store {}: {e}", lab.store))?
        .open()
        .await?;
    progress!("ui: writing {} jobs into the store", args.jobs);
    let t = Instant::now();
    let now = Millis::now();
    let mut ended_ids = Vec::new();
    for i in 0..args.jobs {
        let job = seeded(i, now, false)?;
        if i % (args.jobs / 50).max(1) == 0 {
            ended_ids.push(job.job_id);
        }
        db.insert_job(&job).await?;
    }
    let mut idle_ids = Vec::new();
    for i in 0..args.streams {
        let job = seeded(args.jobs + i, now, true)?;
        idle_ids.push(job.job_id);
        db.insert_job(&job).await?;
    }
    let seed_secs = t.elapsed().as_secs_f64();

    // Page latencies.
    progress!("ui: page latencies ({} requests each)", args.requests);
    let first = latencies(&http, &lab.base, &["/jobs".to_owned()], args.requests).await?;
    let filtered_paths: Vec<String> = (0..QUEUES)
        .map(|q| format!("/jobs?state=failed&queue=bench-ui-q{q}"))
        .collect();
    let filtered = latencies(&http, &lab.base, &filtered_paths, args.requests).await?;
    let job_paths: Vec<String> = ended_ids.iter().map(|id| format!("/jobs/{id}")).collect();
    let job_page = latencies(&http, &lab.base, &job_paths, args.requests).await?;
    // The pages measured are the real ones.
    for (path, text) in [
        ("/jobs".to_owned(), "seeded job".to_owned()),
        (filtered_paths[1].clone(), "failed".to_owned()),
        (job_paths[0].clone(), ended_ids[0].to_string()),
    ] {
        let body = http
            .get(format!("{}{path}", lab.base))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(body.contains(&text), "GET {path} does not show {text:?}");
    }

    // A line printed on the device, in an open job page's stream.
    progress!("ui: {} stamped lines through a job page's stream", args.lines);
    let s = submit(
        &http,
        &lab.base,
        &json!({"job_queue": PACED_QUEUE, "test_data": {"test_cmds": "x"}}),
    )
    .await?;
    let follower = tokio::spawn(stream_delays(
        http.clone(),
        format!("{}/jobs/{}/live", lab.base, s.job_id),
        args.lines,
    ));
    let delays = follower.await??;

    // Idle streams: what they cost the gateway.
    progress!(
        "ui: {} open streams on idle jobs, {} s",
        args.streams,
        args.window
    );
    let gateway = lab
        .gateway
        .as_ref()
        .and_then(|g| g.pid())
        .ok_or_else(|| anyhow::anyhow!("no gateway process"))?;
    let mut readers = tokio::task::JoinSet::new();
    for id in &idle_ids {
        let (http, url) = (http.clone(), format!("{}/jobs/{id}/live", lab.base));
        readers.spawn(async move {
            let r = http
                .get(&url)
                .header("accept", "text/event-stream")
                .timeout(Duration::from_secs(3600))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                chunk?;
            }
            anyhow::Ok(())
        });
    }
    // Let every stream open and send its first events.
    tokio::time::sleep(Duration::from_secs(5)).await;
    anyhow::ensure!(
        readers.len() == args.streams && readers.try_join_next().is_none(),
        "a stream ended early"
    );
    let meter = CpuMeter::start(gateway);
    tokio::time::sleep(Duration::from_secs_f64(args.window)).await;
    let cpu = meter.cores() * 100.0;
    anyhow::ensure!(readers.try_join_next().is_none(), "a stream ended while measured");
    readers.abort_all();

    let mut r = Report::new(
        "ui",
        json!({"store": store.as_str(), "jobs": args.jobs, "requests": args.requests, "lines": args.lines, "streams": args.streams, "window_s": args.window}),
    );
    r.add("jobs written into the store", args.jobs as f64 / seed_secs, "/s");
    for (name, s) in [
        ("/jobs first page", &first),
        ("/jobs?state=failed&queue=…", &filtered),
        ("/jobs/<id>", &job_page),
    ] {
        r.add(format!("{name} p50"), s.quantile_ms(0.5), "ms");
        r.add_target(
            format!("{name} p99"),
            s.quantile_ms(0.99),
            "ms",
            Bound::AtMost,
            50.0,
        );
    }
    r.add_target(
        "line printed → job page stream p50",
        delays.quantile_ms(0.5),
        "ms",
        Bound::AtMost,
        100.0,
    );
    r.add(
        "line printed → job page stream p99",
        delays.quantile_ms(0.99),
        "ms",
    );
    r.add_target(
        format!("gateway CPU, {} idle job streams", args.streams),
        cpu,
        "%",
        Bound::AtMost,
        5.0,
    );
    r.note("seeded jobs have no output; each request is sequential, over one kept-alive connection");
    r.note("CPU is the gateway process's user + system time over the window, as a share of one core");
    lab.stop().await;
    Ok(r)
}
