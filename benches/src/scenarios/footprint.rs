//! Scenario 6, footprint: resident memory of an idle agent, the scheduler and the gateway, and
//! how fast each binary starts: `--version` (exec to exit) and spawn to ready (the scheduler
//! consumes its request queue, the gateway answers `/readyz` 200, the agent's first heartbeat
//! arrives).

use crate::procstat::rss_mib;
use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, quick_job, submit};
use crate::tap::Tap;
use crate::tracker::Tracker;
use clap::Args;
use flinger_tests::proc::Proc;
use flinger_tests::{AgentSpec, bin};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct FootprintArgs {
    /// Seconds the processes sit idle before their memory is read.
    #[arg(long, default_value_t = 5.0)]
    pub idle: f64,
    /// Jobs the agent runs before its memory is read again.
    #[arg(long, default_value_t = 50)]
    pub jobs: usize,
}

const QUEUE: &str = "bench-footprint";

/// Median wall time of `<binary> --version`.
fn version_time(name: &str) -> f64 {
    let mut s = Sample::default();
    for _ in 0..11 {
        let t = std::time::Instant::now();
        let ok = std::process::Command::new(bin(name))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            s.push(t.elapsed());
        }
    }
    s.quantile_ms(0.5)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub async fn run(store: Store, args: &FootprintArgs) -> anyhow::Result<Report> {
    progress!(
        "footprint: starting processes one by one ({} store)",
        store.as_str()
    );
    let mut lab = setup::lab(store, "footprint")
        .schedulers(0)
        .without_gateway()
        .start()
        .await;
    let result = measure(&mut lab, store, args).await;
    lab.stop().await;
    result
}

async fn measure(lab: &mut flinger_tests::Lab, store: Store, args: &FootprintArgs) -> anyhow::Result<Report> {
    let mut r = Report::new(
        "footprint",
        json!({"store": store.as_str(), "idle_s": args.idle, "jobs": args.jobs}),
    );
    let conn = flinger_tests::broker::connect().await;
    let tap = Tap::start(&lab.broker_url, &lab.names, true).await?;
    let mut tracker = Tracker::new(tap);

    // Scheduler: ready when it consumes its request queue.
    let rpc = lab.names.scheduler_rpc_queue();
    let t = Instant::now();
    let scheduler_args: Vec<String> = ["--lease-secs", "30", "--renew-secs", "10"]
        .map(String::from)
        .to_vec();
    lab.start_scheduler("scheduler-0", &scheduler_args);
    while setup::queue_counts(&conn, &rpc)
        .await
        .map_or(0, |(_, consumers)| consumers)
        == 0
    {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the scheduler never consumed its queue"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let scheduler_ready = t.elapsed();

    // Gateway: ready when /readyz answers 200.
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("FLINGER_BROKER_URL", lab.broker_url.clone()),
        ("FLINGER_NAMESPACE", lab.namespace.clone()),
        ("FLINGER_STORE", lab.store.clone()),
        ("FLINGER_LOG_FORMAT", "json".into()),
        ("FLINGER_LISTEN", format!("127.0.0.1:{port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let http = setup::http_client(2);
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let t = Instant::now();
    let gateway = Proc::spawn("gateway", &bin("flinger-gateway"), &[], &env, lab.dir.path());
    loop {
        if let Ok(resp) = http.get(&ready_url).send().await
            && resp.status().is_success()
        {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the gateway never got ready"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let gateway_ready = t.elapsed();
    lab.base = format!("http://127.0.0.1:{port}");

    // Agent: ready when its first heartbeat arrives (it has declared its queues and consumes).
    let t = Instant::now();
    lab.add_agent(AgentSpec::fake("footprint-0", &[QUEUE])).await;
    let ok = tracker
        .wait_until(Duration::from_secs(30), |tr| {
            tr.heartbeats.contains_key("footprint-0")
        })
        .await;
    anyhow::ensure!(ok, "the agent never heartbeat");
    let agent_ready = tracker.heartbeats["footprint-0"].0 - t;

    progress!("footprint: idle for {} s", args.idle);
    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    let agent_pid = lab.agents[0].pid().expect("agent pid");
    let scheduler_pid = lab.schedulers[0].pid().expect("scheduler pid");
    let gateway_pid = gateway.pid().expect("gateway pid");
    let agent_idle = rss_mib(agent_pid).unwrap_or(f64::NAN);
    r.add_target("agent RSS, idle", agent_idle, "MiB", Bound::AtMost, 20.0);
    r.add(
        "scheduler RSS, idle",
        rss_mib(scheduler_pid).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add(
        "gateway RSS, idle",
        rss_mib(gateway_pid).unwrap_or(f64::NAN),
        "MiB",
    );

    progress!("footprint: the agent runs {} jobs", args.jobs);
    for _ in 0..args.jobs {
        let s = submit(&http, &lab.base, &quick_job(QUEUE)).await?;
        tracker
            .wait_ended(s.job_id, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("job {} did not end", s.job_id))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.add(
        format!("agent RSS, idle after {} jobs", args.jobs),
        rss_mib(agent_pid).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add(
        format!("scheduler RSS after {} jobs", args.jobs),
        rss_mib(scheduler_pid).unwrap_or(f64::NAN),
        "MiB",
    );
    r.add(
        format!("gateway RSS after {} jobs", args.jobs),
        rss_mib(gateway_pid).unwrap_or(f64::NAN),
        "MiB",
    );

    for name in ["flinger-agent", "flinger-scheduler", "flinger-gateway", "flinger"] {
        r.add(format!("{name} --version"), version_time(name), "ms");
    }
    r.add(
        "scheduler spawn → consuming",
        scheduler_ready.as_secs_f64() * 1000.0,
        "ms",
    );
    r.add(
        "gateway spawn → /readyz 200",
        gateway_ready.as_secs_f64() * 1000.0,
        "ms",
    );
    r.add(
        "agent spawn → first heartbeat",
        agent_ready.as_secs_f64() * 1000.0,
        "ms",
    );
    for name in ["flinger-agent", "flinger-scheduler", "flinger-gateway"] {
        let size = std::fs::metadata(bin(name)).map(|m| m.len()).unwrap_or(0);
        r.add(
            format!("{name} binary size"),
            size as f64 / 1024.0 / 1024.0,
            "MiB",
        );
    }
    r.note("RSS = VmRSS from /proc/<pid>/status; the binaries carry line tables (profile.release debug = line-tables-only)");
    tracker.stop().await;
    let mut gateway = gateway;
    gateway.stop(Duration::from_secs(10));
    let _ = conn.close(200, "done".into()).await;
    Ok(r)
}
