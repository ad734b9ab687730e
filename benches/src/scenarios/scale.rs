//! Scenario 5, scale: 1,000 simulated agents heartbeating at the real interval and 10,000
//! waiting jobs; the scheduler's CPU and memory, and pickup latency on a live queue meanwhile.
//!
//! The simulated agents are not processes: the bench publishes their `Heartbeat` messages on
//! the events exchange exactly as agents do (transient, confirmed), spread evenly over the
//! interval. The waiting jobs are submitted over HTTP to ten queues the bench declares and
//! nobody consumes.

use crate::procstat::{CpuMeter, peak_rss_mib, rss_mib};
use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::scenarios::pickup::{Probes, probe};
use crate::setup::{self, Store, quick_job};
use crate::tap::Tap;
use crate::tracker::Tracker;
use broker_schema::messages::{AgentState, Heartbeat};
use broker_schema::{AgentName, CONTENT_TYPE, DeviceClass, Message, Millis, Names, encode, topology};
use clap::Args;
use flinger_tests::AgentSpec;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Waiting jobs.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Queues the simulated agents and the waiting jobs are spread over.
    #[arg(long, default_value_t = 10)]
    pub queues: usize,
    /// Heartbeat interval of the simulated agents, in seconds (agents default to 10).
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Seconds the scheduler is measured for, with everything in place.
    #[arg(long, default_value_t = 30.0)]
    pub window: f64,
}

const LIVE_QUEUE: &str = "bench-scale-live";

fn backlog_queue(i: usize) -> String {
    format!("bench-scale-{i}")
}

/// Publishes every simulated agent's heartbeat once per interval, evenly spread, until aborted.
async fn heartbeats(
    conn: Arc<Connection>,
    names: Names,
    agents: Vec<(AgentName, DeviceClass)>,
    interval: Duration,
    sent: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = names.events_exchange();
    let step = interval / agents.len().max(1) as u32;
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for (agent, class) in agents.iter().cycle() {
        tick.tick().await;
        let hb = Heartbeat {
            agent: agent.clone(),
            state: AgentState::Waiting,
            job_id: None,
            queues: vec![class.clone()],
            location: Some("bench".into()),
            provision_type: Some("fake".into()),
            comment: None,
            interval_ms: interval.as_millis() as u64,
            at: Millis::now(),
            version: "bench".into(),
        };
        let props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_type(Heartbeat::KIND.into())
            .with_delivery_mode(1);
        let key = Names::heartbeat_key(agent);
        // Awaited in a task of its own, so a slow confirm never delays the next heartbeat.
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &encode(&hb),
                props,
            )
            .await?;
        let sent = sent.clone();
        tokio::spawn(async move {
            if confirm.await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

pub async fn run(store: Store, args: &ScaleArgs) -> anyhow::Result<Report> {
    progress!("scale: starting a lab ({} store)", store.as_str());
    let lab = setup::lab(store, "scale")
        .agent(AgentSpec::fake("scale-live-0", &[LIVE_QUEUE]))
        .agent(AgentSpec::fake("scale-live-1", &[LIVE_QUEUE]))
        .start()
        .await;
    let conn = Arc::new(flinger_tests::broker::connect().await);
    let classes: Vec<DeviceClass> = (0..args.queues)
        .map(|i| DeviceClass::parse(backlog_queue(i)).expect("class"))
        .collect();
    let result = measure(&lab, &conn, &classes, store, args).await;
    if let Ok(ch) = conn.create_channel().await {
        for c in &classes {
            let _ = ch
                .queue_delete(lab.names.class_queue(c).into(), Default::default())
                .await;
        }
        let _ = ch.close(200, "done".into()).await;
    }
    let _ = conn.close(200, "done".into()).await;
    lab.stop().await;
    result
}

async fn measure(
    lab: &flinger_tests::Lab,
    conn: &Arc<Connection>,
    classes: &[DeviceClass],
    store: Store,
    args: &ScaleArgs,
) -> anyhow::Result<Report> {
    let ch = conn.create_channel().await?;
    for c in classes {
        topology::declare_class(&ch, &lab.names, c).await?;
    }
    let _ = ch.close(200, "done".into()).await;
    let scheduler = lab.schedulers[0].pid().expect("scheduler pid");
    let gateway = lab.gateway.as_ref().and_then(|g| g.pid()).expect("gateway pid");
    let idle_rss = rss_mib(scheduler).unwrap_or(f64::NAN);

    progress!(
        "scale: {} simulated agents heartbeating every {} s",
        args.agents,
        args.interval
    );
    let agents: Vec<(AgentName, DeviceClass)> = (0..args.agents)
        .map(|i| {
            (
                AgentName::parse(format!("sim-{i:04}")).expect("name"),
                classes[i % classes.len()].clone(),
            )
        })
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let beating = tokio::spawn(heartbeats(
        conn.clone(),
        lab.names.clone(),
        agents,
        Duration::from_secs_f64(args.interval),
        sent.clone(),
    ));

    progress!("scale: submitting {} jobs that will wait", args.jobs);
    let http = setup::http_client(32);
    let submit_start = Instant::now();
    let queues = classes.len();
    let submitted = setup::submit_many(&http, &lab.base, args.jobs, 32, move |i| {
        quick_job(&backlog_queue(i % queues))
    })
    .await?;
    // The job deepest in its queue: the last one answered.
    let deep_job = submitted.last().map(|s| s.job_id);
    let submit_secs = submit_start.elapsed().as_secs_f64();
    // Until the scheduler has recorded every submission.
    let recorded = lab.names.scheduler_submissions_queue();
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while setup::queue_counts(conn, &recorded)
        .await
        .map_or(0, |(ready, _)| ready)
        > 0
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every simulated agent has beaten at least once.
    tokio::time::sleep_until(submit_start + Duration::from_secs_f64(args.interval)).await;

    progress!(
        "scale: measuring for {} s, with pickup probes on a live queue",
        args.window
    );
    let tap = Tap::start(&lab.broker_url, &lab.names, false).await?;
    let mut tracker = Tracker::new(tap);
    let cpu = CpuMeter::start(scheduler);
    let gw_cpu = CpuMeter::start(gateway);
    let sent_before = sent.load(Ordering::Relaxed);
    let window_start = Instant::now();
    let window_end = window_start + Duration::from_secs_f64(args.window);
    let mut probes = Probes::default();
    let mut rss = Sample::default();
    let mut next_rss = window_start;
    let probe_http = setup::http_client(2);
    while Instant::now() < window_end {
        probes.push(&probe(&probe_http, &lab.base, &mut tracker, LIVE_QUEUE).await?);
        if Instant::now() >= next_rss {
            rss.push_ms(rss_mib(scheduler).unwrap_or(f64::NAN));
            next_rss += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = window_start.elapsed().as_secs_f64();
    let scheduler_cores = cpu.cores();
    let gateway_cores = gw_cpu.cores();
    let heartbeats_per_sec = (sent.load(Ordering::Relaxed) - sent_before) as f64 / window;
    tracker.stop().await;

    // Reads that grow with the lab's size.
    let agents_url = lab.url("/v1/agents/data");
    let mut agents_list = Sample::default();
    let mut listed = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let v: serde_json::Value = http.get(&agents_url).send().await?.json().await?;
        agents_list.push(t.elapsed());
        listed = v.as_array().map_or(0, Vec::len);
    }
    let mut position = Sample::default();
    if let Some(job) = deep_job {
        let url = lab.url(&format!("/v1/job/{job}/position"));
        for _ in 0..20 {
            let t = Instant::now();
            http.get(&url).send().await?.bytes().await?;
            position.push(t.elapsed());
        }
    }
    beating.abort();

    let mut r = Report::new(
        "scale",
        json!({"store": store.as_str(), "agents": args.agents, "jobs": args.jobs, "queues": args.queues, "interval_s": args.interval, "window_s": args.window}),
    );
    r.add("waiting jobs submitted", args.jobs as f64 / submit_secs, "/s");
    r.add(
        "simulated heartbeats published (confirmed)",
        heartbeats_per_sec,
        "/s",
    );
    r.add("scheduler CPU (window)", scheduler_cores * 100.0, "%core");
    r.add("scheduler RSS idle before", idle_rss, "MiB");
    r.add("scheduler RSS (window, max)", rss.quantile_ms(1.0), "MiB");
    r.add(
        "scheduler peak RSS",
        peak_rss_mib(scheduler).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add("gateway CPU (window)", gateway_cores * 100.0, "%core");
    r.add("gateway RSS", rss_mib(gateway).unwrap_or(f64::NAN), "MiB");
    if store == Store::Sqlite {
        let start = &probes.accepted_to_start;
        r.add_target(
            "under load: accepted → first phase p50",
            start.quantile_ms(0.5),
            "ms",
            Bound::AtMost,
            5.0,
        );
        r.add_target(
            "under load: accepted → first phase p99",
            start.quantile_ms(0.99),
            "ms",
            Bound::AtMost,
            50.0,
        );
    } else {
        r.add_latency("under load: accepted → first phase", &probes.accepted_to_start);
    }
    r.add(
        "under load: submit sent → first phase p50",
        probes.sent_to_start.quantile_ms(0.5),
        "ms",
    );
    r.add_latency("under load: submit → complete", &probes.sent_to_complete);
    r.add("probes", probes.accepted_to_start.len() as f64, "");
    r.add(
        format!("GET /v1/agents/data ({listed} agents) p50"),
        agents_list.quantile_ms(0.5),
        "ms",
    );
    r.add(
        "GET /v1/job/<id>/position (deepest) p50",
        position.quantile_ms(0.5),
        "ms",
    );
    r.note("simulated agents are heartbeat messages published by the bench (not processes); waiting jobs sit in 10 queues nobody consumes");
    Ok(r)
}
