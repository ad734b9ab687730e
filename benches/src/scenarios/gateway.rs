//! Scenario 4, the gateway: requests/s and latency of `GET /v1/result/<id>` (a finished job)
//! and `POST /v1/job` (to a declared queue nobody consumes, so the jobs wait) at a few
//! concurrency levels. The load generator runs in this process, on the same two cores.

use crate::procstat::CpuMeter;
use crate::progress;
use crate::report::{Bound, Report, Sample};
use crate::setup::{self, Store, quick_job, submit};
use broker_schema::{DeviceClass, topology};
use clap::Args;
use flinger_tests::AgentSpec;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Seconds of load per request kind and level.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Concurrency levels (requests in flight).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32, 128])]
    pub levels: Vec<usize>,
}

const RUN_QUEUE: &str = "bench-gw";
const WAIT_QUEUE: &str = "bench-gw-backlog";

struct Load {
    errors: usize,
    per_sec: f64,
    latency: Sample,
    gateway_cores: f64,
}

async fn load(
    http: &reqwest::Client,
    gateway_pid: u32,
    concurrency: usize,
    seconds: f64,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
) -> Load {
    let cpu = CpuMeter::start(gateway_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, make) = (http.clone(), make.clone());
        tasks.spawn(async move {
            let (mut latency, mut errors) = (Sample::default(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match make(&http).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latency.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latency, errors)
        });
    }
    let (mut latency, mut errors) = (Sample::default(), 0);
    while let Some(Ok((l, e))) = tasks.join_next().await {
        latency.extend(&l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Load {
        errors,
        per_sec: latency.len() as f64 / elapsed,
        latency,
        gateway_cores: cpu.cores(),
    }
}

pub async fn run(store: Store, args: &GatewayArgs) -> anyhow::Result<Report> {
    progress!("gateway: starting a lab ({} store)", store.as_str());
    let lab = setup::lab(store, "gateway")
        .agent(AgentSpec::fake("gw-0", &[RUN_QUEUE]))
        .start()
        .await;
    let result = measure(&lab, store, args).await;
    lab.stop().await;
    result
}

async fn measure(lab: &flinger_tests::Lab, store: Store, args: &GatewayArgs) -> anyhow::Result<Report> {
    let max = args.levels.iter().copied().max().unwrap_or(1);
    let http = setup::http_client(max);
    let gateway_pid = lab.gateway.as_ref().and_then(|g| g.pid()).expect("gateway pid");

    // A finished job to read, with every phase's output.
    let done = submit(&http, &lab.base, &quick_job(RUN_QUEUE)).await?;
    lab.wait_done(done.job_id, Duration::from_secs(30)).await;
    // A queue that takes submissions but that no agent consumes: submissions wait there.
    let conn = flinger_tests::broker::connect().await;
    let ch = conn.create_channel().await?;
    let class = DeviceClass::parse(WAIT_QUEUE).expect("class");
    topology::declare_class(&ch, &lab.names, &class).await?;

    let mut r = Report::new(
        "gateway",
        json!({"store": store.as_str(), "seconds": args.seconds, "levels": args.levels}),
    );
    let mut best_get: f64 = 0.0;
    for &c in &args.levels {
        progress!("gateway: GET /v1/result, {c} in flight");
        let url = lab.url(&format!("/v1/result/{}", done.job_id));
        let get = load(
            &http,
            gateway_pid,
            c,
            args.seconds,
            Arc::new(move |h: &reqwest::Client| h.get(&url)),
        )
        .await;
        best_get = best_get.max(get.per_sec);
        add(&mut r, &format!("GET /v1/result c={c}"), &get);

        progress!("gateway: POST /v1/job, {c} in flight");
        let url = lab.url("/v1/job");
        let job = quick_job(WAIT_QUEUE);
        let post = load(
            &http,
            gateway_pid,
            c,
            args.seconds,
            Arc::new(move |h: &reqwest::Client| h.post(&url).json(&job)),
        )
        .await;
        add(&mut r, &format!("POST /v1/job c={c}"), &post);
    }
    if store == Store::Sqlite {
        r.add_target("GET /v1/result best", best_get, "req/s", Bound::AtLeast, 5000.0);
    } else {
        r.add("GET /v1/result best", best_get, "req/s");
    }
    let _ = ch
        .queue_delete(lab.names.class_queue(&class).into(), Default::default())
        .await;
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    r.note(
        "the load generator (reqwest, keep-alive) shares the 2 cores with the gateway, scheduler and broker",
    );
    r.note("POST stores the job, then publishes it with confirms; the scheduler records each submission meanwhile");
    Ok(r)
}

fn add(r: &mut Report, name: &str, l: &Load) {
    r.add(format!("{name}: rate"), l.per_sec, "req/s");
    r.add(format!("{name}: p50"), l.latency.quantile_ms(0.5), "ms");
    r.add(format!("{name}: p99"), l.latency.quantile_ms(0.99), "ms");
    r.add(format!("{name}: gateway CPU"), l.gateway_cores * 100.0, "%core");
    if l.errors > 0 {
        r.add(format!("{name}: errors"), l.errors as f64, "");
    }
}
