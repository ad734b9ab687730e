//! Scenario 2, throughput: N fake agents over M queues, K jobs submitted over HTTP as fast as
//! the gateway takes them; jobs/s sustained to `complete`, against the raw broker's rate.

use crate::baseline;
use crate::procstat::CpuMeter;
use crate::progress;
use crate::report::{Bound, Report};
use crate::setup::{self, Store, quick_job, submit};
use crate::tap::Tap;
use crate::tracker::Tracker;
use clap::Args;
use flinger_tests::AgentSpec;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct ThroughputArgs {
    /// Agents (fake devices with instant phases).
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Queues the agents are spread over.
    #[arg(long, default_value_t = 5)]
    pub queues: usize,
    /// Jobs submitted.
    #[arg(long, default_value_t = 3000)]
    pub jobs: usize,
    /// HTTP requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Skip the raw broker baseline.
    #[arg(long)]
    pub no_baseline: bool,
}

/// The local RabbitMQ node's process (Erlang VM), if it runs on this machine.
fn broker_pid() -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "beam.smp"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

pub async fn run(store: Store, args: &ThroughputArgs) -> anyhow::Result<Report> {
    let queues: Vec<String> = (0..args.queues).map(|i| format!("bench-tp-{i}")).collect();
    let mut builder = setup::lab(store, "throughput");
    for i in 0..args.agents {
        builder = builder.agent(AgentSpec::fake(
            &format!("tp-{i}"),
            &[queues[i % queues.len()].as_str()],
        ));
    }
    progress!(
        "throughput: starting a lab ({} store, {} agents over {} queues)",
        store.as_str(),
        args.agents,
        args.queues
    );
    let lab = builder.start().await;
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let http = setup::http_client(args.concurrency);
    let scheduler_pid = lab.schedulers[0].pid().expect("scheduler pid");
    let gateway_pid = lab.gateway.as_ref().and_then(|g| g.pid()).expect("gateway pid");

    // Warm-up: one job per queue, so every connection and statement cache is in use.
    for q in &queues {
        let s = submit(&http, &lab.base, &quick_job(q)).await?;
        tracker.wait_ended(s.job_id, Duration::from_secs(30)).await;
    }
    let warm = tracker.ended;

    progress!(
        "throughput: {} jobs, {} requests in flight",
        args.jobs,
        args.concurrency
    );
    let scheduler_cpu = CpuMeter::start(scheduler_pid);
    let gateway_cpu = CpuMeter::start(gateway_pid);
    let agent_cpu: Vec<CpuMeter> = lab
        .agents
        .iter()
        .filter_map(|a| a.pid())
        .map(CpuMeter::start)
        .collect();
    let broker_cpu = broker_pid().map(CpuMeter::start);
    let start = Instant::now();
    let queues_for = queues.clone();
    let submitted = setup::submit_many(&http, &lab.base, args.jobs, args.concurrency, move |i| {
        quick_job(&queues_for[i % queues_for.len()])
    })
    .await?;
    let last_accepted = submitted.last().map_or(start, |s| s.accepted.max(start));
    let target = warm + args.jobs;
    let timeout = Duration::from_secs(120) + Duration::from_millis(args.jobs as u64 * 20);
    let all_ended = tracker.wait_until(timeout, |t| t.ended >= target).await;
    let scheduler_cores = scheduler_cpu.cores();
    let gateway_cores = gateway_cpu.cores();
    let agents_cores: f64 = agent_cpu.iter().map(CpuMeter::cores).sum();
    let broker_cores = broker_cpu.as_ref().map(CpuMeter::cores);
    let mut ends: Vec<Instant> = tracker
        .jobs
        .values()
        .filter_map(|t| t.ended.map(|(at, _)| at))
        .filter(|at| *at >= start)
        .collect();
    ends.sort();
    let not_complete = tracker.not_complete;
    let ended = tracker.ended - warm;
    tracker.stop().await;
    lab.stop().await;
    anyhow::ensure!(
        all_ended,
        "only {ended} of {} jobs ended in {timeout:?}",
        args.jobs
    );

    let last_end = *ends.last().expect("ends");
    let e2e = args.jobs as f64 / (last_end - start).as_secs_f64();
    let submit_rate = args.jobs as f64 / (last_accepted - start).as_secs_f64();
    // Steady state: from the 10th to the 90th percentile of completions.
    let (a, b) = (ends[ends.len() / 10], ends[ends.len() * 9 / 10]);
    let steady = (ends.len() * 8 / 10) as f64 / (b - a).as_secs_f64().max(1e-9);

    let mut r = Report::new(
        "throughput",
        json!({"store": store.as_str(), "agents": args.agents, "queues": args.queues, "jobs": args.jobs, "concurrency": args.concurrency}),
    );
    r.add("submissions accepted", submit_rate, "/s");
    let target = if store == Store::Sqlite { Some(500.0) } else { None };
    match target {
        Some(t) => r.add_target("jobs complete end to end", e2e, "/s", Bound::AtLeast, t),
        None => {
            r.add("jobs complete end to end", e2e, "/s");
        }
    }
    r.add("jobs complete, steady state (10–90 %)", steady, "/s");
    r.add("jobs not ending complete", not_complete as f64, "");
    // CPU per job: where the two cores go.
    let per_job = |cores: f64| cores * (last_end - start).as_secs_f64() / args.jobs as f64 * 1000.0;
    r.add("CPU per job: scheduler", per_job(scheduler_cores), "ms");
    r.add("CPU per job: gateway", per_job(gateway_cores), "ms");
    r.add("CPU per job: agents (all)", per_job(agents_cores), "ms");
    if let Some(b) = broker_cores {
        r.add("CPU per job: RabbitMQ", per_job(b), "ms");
    }
    if !args.no_baseline {
        let size = baseline::submission_size(&queues[0]);
        progress!(
            "throughput: raw broker baseline ({} messages of {size} bytes)",
            args.jobs.max(10_000)
        );
        let raw = baseline::measure(
            &flinger_tests::broker_url(),
            args.agents,
            args.queues,
            args.jobs.max(10_000),
            size,
            args.concurrency,
        )
        .await?;
        r.add("raw broker: publish+confirm → consume+ack", raw.per_sec, "msg/s");
        r.add("ratio jobs/s ÷ raw msg/s", e2e / raw.per_sec * 100.0, "%");
        r.note(format!(
            "raw baseline: {} persistent mandatory messages of {} bytes (a submission's size), {} in flight, {} consumers over {} priority queues, prefetch 1, manual ack",
            raw.messages, raw.size, args.concurrency, args.agents, args.queues
        ));
    }
    r.note("a job is ~30 broker messages (submission + scheduler copy, lease RPC and reply, 3 phases × started/finished, output chunks, heartbeats on each state change, finished, announcements) and ~15 store writes");
    Ok(r)
}
