//! Scenario 3, live output, as a person following a job sees it through the output API
//! (`GET /v1/result/<id>/log/output` with `start_fragment` and the long-poll `wait`):
//!
//! - bandwidth: a fake device prints filler lines as fast as the pipeline takes them;
//!   MB/s from the test phase's start to the follower holding every byte;
//! - line delay: a `command` device whose test command prints lines carrying their own
//!   wall-clock time (`$EPOCHREALTIME`), paced and as a flood; delay = received − printed.
//!
//! Testflinger's CLI polls output every 10 s: lines arrive in 10 s lumps (delay 0–10 s).

use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, submit};
use crate::tap::Tap;
use crate::tracker::Tracker;
use clap::Args;
use flinger_tests::AgentSpec;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// MiB the fake device prints for the bandwidth run.
    #[arg(long, default_value_t = 64)]
    pub mib: u64,
    /// Lines of the paced run.
    #[arg(long, default_value_t = 1000)]
    pub lines: usize,
    /// Pause between paced lines, in seconds.
    #[arg(long, default_value_t = 0.005)]
    pub line_pause: f64,
    /// Lines of the flood run (printed without pause).
    #[arg(long, default_value_t = 100_000)]
    pub flood_lines: usize,
}

const FAKE_QUEUE: &str = "bench-out-fake";
const PACED_QUEUE: &str = "bench-out-paced";
const FLOOD_QUEUE: &str = "bench-out-flood";

/// What the follower saw.
#[derive(Default)]
struct Followed {
    bytes: u64,
    lines: usize,
    /// When the last byte arrived.
    last_at: Option<Instant>,
    delays: Sample,
    requests: usize,
}

fn wall_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Follows the test phase's output until `enough` holds or the job's output is over.
async fn follow(
    http: reqwest::Client,
    base: String,
    job: Uuid,
    enough: impl Fn(&Followed) -> bool,
    stamped: bool,
) -> anyhow::Result<Followed> {
    let mut f = Followed::default();
    let mut next = 0i64;
    let mut partial = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !enough(&f) {
        anyhow::ensure!(Instant::now() < deadline, "output not complete after 300 s");
        let url = format!("{base}/v1/result/{job}/log/output?phase=test&start_fragment={next}&wait=10");
        let v: Value = http.get(&url).send().await?.json().await?;
        f.requests += 1;
        let now = Instant::now();
        let now_wall = wall_secs();
        let test = &v["output"]["test"];
        let last = test["last_fragment_number"].as_i64().unwrap_or(-1);
        if last < next {
            continue;
        }
        next = last + 1;
        let data = test["log_data"].as_str().unwrap_or_default();
        f.bytes += data.len() as u64;
        f.last_at = Some(now);
        partial.push_str(data);
        let complete = partial.rfind('\n').map_or(0, |i| i + 1);
        for line in partial[..complete].lines() {
            f.lines += 1;
            if stamped && let Some(ts) = line.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()) {
                f.delays.push_ms((now_wall - ts) * 1000.0);
            }
        }
        partial.drain(..complete);
    }
    Ok(f)
}

/// Runs one job and follows it; returns what the follower saw and the job's event times.
async fn run_followed(
    lab: &flinger_tests::Lab,
    tracker: &mut Tracker,
    http: &reqwest::Client,
    job: Value,
    enough: impl Fn(&Followed) -> bool + Send + 'static,
    stamped: bool,
) -> anyhow::Result<(Followed, crate::tracker::Times)> {
    let s = submit(http, &lab.base, &job).await?;
    let follower = tokio::spawn(follow(http.clone(), lab.base.clone(), s.job_id, enough, stamped));
    let times = tracker
        .wait_ended(s.job_id, Duration::from_secs(300))
        .await
        .ok_or_else(|| anyhow::anyhow!("job {} did not end", s.job_id))?;
    let followed = tokio::time::timeout(Duration::from_secs(60), follower).await???;
    Ok((followed, times))
}

pub async fn run(store: Store, args: &OutputArgs) -> anyhow::Result<Report> {
    let paced = format!(
        "bash -c 'for i in $(seq 1 {}); do echo \"$EPOCHREALTIME paced line $i\"; sleep {}; done'",
        args.lines, args.line_pause
    );
    let flood = format!(
        "bash -c 'for ((i=1; i<={}; i++)); do echo \"$EPOCHREALTIME flood line $i of a job printing as fast as it can\"; done'",
        args.flood_lines
    );
    progress!("output: starting a lab ({} store)", store.as_str());
    let lab = setup::lab(store, "output")
        .agent(AgentSpec::fake("out-fake", &[FAKE_QUEUE]))
        .agent(AgentSpec::commands(
            "out-paced",
            &[PACED_QUEUE],
            &[("test", paced.as_str())],
        ))
        .agent(AgentSpec::commands(
            "out-flood",
            &[FLOOD_QUEUE],
            &[("test", flood.as_str())],
        ))
        .start()
        .await;
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let http = setup::http_client(4);
    let result = measure(&lab, &mut tracker, &http, store, args).await;
    tracker.stop().await;
    lab.stop().await;
    result
}

async fn measure(
    lab: &flinger_tests::Lab,
    tracker: &mut Tracker,
    http: &reqwest::Client,
    store: Store,
    args: &OutputArgs,
) -> anyhow::Result<Report> {
    let mut r = Report::new(
        "output",
        json!({"store": store.as_str(), "mib": args.mib, "lines": args.lines, "line_pause_s": args.line_pause, "flood_lines": args.flood_lines}),
    );
    let targets = store == Store::Sqlite;

    // Bandwidth.
    let bytes = args.mib * 1024 * 1024;
    progress!("output: a fake device prints {} MiB", args.mib);
    let job = json!({"job_queue": FAKE_QUEUE, "test_data": {"test_cmds": "flood", "fake": {"output_bytes": bytes}}});
    let (f, t) = run_followed(lab, tracker, http, job, move |f| f.bytes >= bytes, false).await?;
    let start = t
        .test_started
        .ok_or_else(|| anyhow::anyhow!("no test phase_started"))?;
    let secs = (f.last_at.expect("bytes arrived") - start).as_secs_f64();
    let mbps = f.bytes as f64 / 1e6 / secs;
    if targets {
        r.add_target("device → follower", mbps, "MB/s", Bound::AtLeast, 20.0);
    } else {
        r.add("device → follower", mbps, "MB/s");
    }
    if let Some(done) = t.test_finished {
        r.add(
            "device → broker (test phase ran)",
            f.bytes as f64 / 1e6 / (done - start).as_secs_f64(),
            "MB/s",
        );
    }
    r.add("follower requests", f.requests as f64, "");

    // Paced lines.
    progress!(
        "output: {} paced lines, one every {} s",
        args.lines,
        args.line_pause
    );
    let lines = args.lines;
    let job = json!({"job_queue": PACED_QUEUE, "test_data": {"test_cmds": "paced"}});
    let (f, _) = run_followed(lab, tracker, http, job, move |f| f.lines >= lines, true).await?;
    if targets {
        r.add_target(
            "paced line delay p50",
            f.delays.quantile_ms(0.5),
            "ms",
            Bound::AtMost,
            50.0,
        );
    } else {
        r.add("paced line delay p50", f.delays.quantile_ms(0.5), "ms");
    }
    r.add("paced line delay p90", f.delays.quantile_ms(0.9), "ms");
    r.add("paced line delay p99", f.delays.quantile_ms(0.99), "ms");

    // A flood of stamped lines.
    progress!("output: a flood of {} lines", args.flood_lines);
    let lines = args.flood_lines;
    let job = json!({"job_queue": FLOOD_QUEUE, "test_data": {"test_cmds": "flood"}});
    let (f, t) = run_followed(lab, tracker, http, job, move |f| f.lines >= lines, true).await?;
    if let (Some(a), Some(b)) = (t.test_started, f.last_at) {
        r.add(
            "flood lines → follower",
            f.lines as f64 / (b - a).as_secs_f64(),
            "lines/s",
        );
    }
    r.add("flood line delay p50", f.delays.quantile_ms(0.5), "ms");
    r.add("flood line delay p99", f.delays.quantile_ms(0.99), "ms");
    r.note("delay = the follower's wall clock when the line arrived − the $EPOCHREALTIME the line carries (same host)");
    r.note("Testflinger: the CLI polls output every 10 s, so a line waits 0–10 s");
    Ok(r)
}
