//! Scenario 1, pickup latency: idle fake agents, jobs submitted one at a time over HTTP.
//! Testflinger's agents poll every 10 s, so its jobs wait 0–10 s (5 s on average) to start.

use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, quick_job, signed_ms, submit};
use crate::tap::Tap;
use crate::tracker::Tracker;
use broker_schema::{JobState, Millis};
use clap::Args;
use flinger_tests::AgentSpec;
use serde_json::json;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct PickupArgs {
    /// Jobs measured (after the warm-up).
    #[arg(long, default_value_t = 300)]
    pub jobs: usize,
    /// Idle agents serving the queue.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Pause between one job's end and the next submission, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub gap_ms: u64,
    /// Jobs run first and not measured.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
}

/// One job's latencies, in milliseconds.
pub struct Probe {
    /// Request sent → 200 received.
    pub http: f64,
    /// Request sent → the agent's first `phase_started` arrived.
    pub sent_to_start: f64,
    /// 200 received → first `phase_started` (negative: the job started before the client heard
    /// back from the gateway).
    pub accepted_to_start: f64,
    /// The same by the agent's own clock (1 ms resolution), from the wall-clock time of the 200.
    pub accepted_to_start_agent_clock: f64,
    /// Request sent → the scheduler's `complete` announcement arrived.
    pub sent_to_complete: f64,
}

/// Submits one job and follows it to its end.
pub async fn probe(
    http: &reqwest::Client,
    base: &str,
    tracker: &mut Tracker,
    queue: &str,
) -> anyhow::Result<Probe> {
    let s = submit(http, base, &quick_job(queue)).await?;
    let accepted_wall = Millis::now();
    let t = tracker
        .wait_ended(s.job_id, Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("job {} did not end within 60 s", s.job_id))?;
    let (ended, state) = t.ended.expect("ended");
    anyhow::ensure!(state == JobState::Complete, "job {} ended {state}", s.job_id);
    let (started, started_agent) = t
        .first_phase
        .ok_or_else(|| anyhow::anyhow!("job {} ended without starting a phase", s.job_id))?;
    Ok(Probe {
        http: signed_ms(s.sent, s.accepted),
        sent_to_start: signed_ms(s.sent, started),
        accepted_to_start: signed_ms(s.accepted, started),
        accepted_to_start_agent_clock: (started_agent.0 - accepted_wall.0) as f64,
        sent_to_complete: signed_ms(s.sent, ended),
    })
}

/// The samples of many probes.
#[derive(Default)]
pub struct Probes {
    pub http: Sample,
    pub sent_to_start: Sample,
    pub accepted_to_start: Sample,
    pub agent_clock: Sample,
    pub sent_to_complete: Sample,
}

impl Probes {
    pub fn push(&mut self, p: &Probe) {
        self.http.push_ms(p.http);
        self.sent_to_start.push_ms(p.sent_to_start);
        self.accepted_to_start.push_ms(p.accepted_to_start);
        self.agent_clock.push_ms(p.accepted_to_start_agent_clock);
        self.sent_to_complete.push_ms(p.sent_to_complete);
    }

    /// Adds the figures; the pickup targets apply to accepted (the 200) → first phase.
    pub fn report(&self, r: &mut Report, with_targets: bool) {
        r.add_latency("POST /v1/job answered", &self.http);
        r.add_latency("submit sent → first phase", &self.sent_to_start);
        let start = &self.accepted_to_start;
        if with_targets {
            r.add_target(
                "accepted → first phase p50",
                start.quantile_ms(0.5),
                "ms",
                Bound::AtMost,
                5.0,
            );
            r.add("accepted → first phase p90", start.quantile_ms(0.9), "ms");
            r.add_target(
                "accepted → first phase p99",
                start.quantile_ms(0.99),
                "ms",
                Bound::AtMost,
                50.0,
            );
        } else {
            r.add_latency("accepted → first phase", start);
        }
        r.add(
            "accepted → first phase p50 (agent clock)",
            self.agent_clock.quantile_ms(0.5),
            "ms",
        );
        r.add_latency("submit → complete", &self.sent_to_complete);
    }
}

pub async fn run(store: Store, args: &PickupArgs) -> anyhow::Result<Report> {
    let queue = "bench-pickup";
    let mut builder = setup::lab(store, "pickup");
    for i in 0..args.agents {
        builder = builder.agent(AgentSpec::fake(&format!("pickup-{i}"), &[queue]));
    }
    progress!(
        "pickup: starting a lab ({} store, {} agents)",
        store.as_str(),
        args.agents
    );
    let lab = builder.start().await;
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let http = setup::http_client(4);
    let mut probes = Probes::default();
    progress!(
        "pickup: {} warm-up jobs, then {} measured",
        args.warmup,
        args.jobs
    );
    let result = async {
        for i in 0..args.warmup + args.jobs {
            let p = probe(&http, &lab.base, &mut tracker, queue).await?;
            if i >= args.warmup {
                probes.push(&p);
            }
            tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        }
        anyhow::Ok(())
    }
    .await;
    tracker.stop().await;
    lab.stop().await;
    result?;

    let mut r = Report::new(
        "pickup",
        json!({"store": store.as_str(), "agents": args.agents, "jobs": args.jobs, "gap_ms": args.gap_ms}),
    );
    probes.report(&mut r, store == Store::Sqlite);
    r.note("sent = the POST leaves the client; accepted = its 200 arrives; first phase = the agent's phase_started event arrives on a private queue bound to the events exchange (includes that event's own broker hop)");
    r.note("Testflinger: agents poll every 10 s, so pickup is 0–10 s (mean 5 s)");
    Ok(r)
}
