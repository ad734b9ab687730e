//! Metrics, scraped from the running services: the figures move as jobs run, fail and are
//! reclaimed.

use flinger_tests::{AgentSpec, Lab, eventually, free_port};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const DONE: Duration = Duration::from_secs(60);

/// One scrape in Prometheus's text format: every sample with its labels.
#[derive(Debug)]
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                let value = value.parse().unwrap_or_else(|_| panic!("a value in {line:?}"));
                (name.to_owned(), labels, value)
            })
            .collect();
        Scrape {
            samples,
            text: text.to_owned(),
        }
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(e);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

async fn scrape(http: &reqwest::Client, port: u16) -> Option<Scrape> {
    let r = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    Some(Scrape::parse(&r.text().await.ok()?))
}

/// Scrapes `port` until `ok` holds of a scrape (bounded), and returns that scrape.
async fn scrape_until(http: &reqwest::Client, port: u16, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(DONE, what, || async {
        scrape(http, port).await.filter(|s| ok(s))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_counts_requests_by_route_submissions_by_queue_and_open_log_polls() {
    let port = free_port();
    let lab = Lab::builder()
        .name("mgw")
        .gateway_env("FLINGER_METRICS_LISTEN", &port.to_string())
        .agent(AgentSpec::fake("mgw-1", &["mgw"]))
        .start()
        .await;
    let http = lab.http.clone();
    // The job holds the only agent until it is cancelled; the reservation waits behind it.
    let busy = lab
        .submit(&json!({"job_queue": "mgw", "test_data": {"test_cmds": "x", "fake": {"output": ["started"], "hang": true}}}))
        .await;
    lab.wait_state(busy, &["test"], DONE).await;
    let reservation = lab
        .submit(&json!({"job_queue": "mgw", "reserve_data": {"ssh_keys": ["lp:someone"], "timeout": 60}}))
        .await;
    let s = scrape_until(&http, port, "both submissions counted", |s| {
        s.sum("testflinger_jobs_total", &[("queue", "mgw")]) == 2.0
    })
    .await;
    assert_eq!(
        s.sum("testflinger_reservations_total", &[("queue", "mgw")]),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.sum("flinger_gateway_jobs_submitted_total", &[("queue", "mgw")]),
        2.0
    );
    let post_job = [("route", "/v1/job"), ("method", "POST"), ("status", "200")];
    assert_eq!(
        s.sum("flinger_gateway_http_requests_total", &post_job),
        2.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.sum("flinger_gateway_http_request_duration_seconds_count", &post_job),
        2.0,
        "{}",
        s.text
    );
    assert!(
        s.has("flinger_gateway_http_request_duration_seconds_bucket"),
        "{}",
        s.text
    );
    // Reads are counted under their route's template, not their path.
    assert!(
        s.sum(
            "flinger_gateway_http_requests_total",
            &[("route", "/v1/job/{job_id}/info")]
        ) >= 1.0,
        "{}",
        s.text
    );
    let unknown = http.get(lab.url("/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    scrape_until(&http, port, "the unknown path counted as unmatched", |s| {
        s.sum(
            "flinger_gateway_http_requests_total",
            &[("route", "unmatched"), ("status", "404")],
        ) >= 1.0
    })
    .await;

    // A long poll for output that does not come is an open stream until the job ends.
    let poll = tokio::spawn({
        let (http, url) = (
            http.clone(),
            lab.url(&format!(
                "/v1/result/{busy}/log/output?start_fragment=100000&wait=50"
            )),
        );
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let streams = [("kind", "log_poll")];
    scrape_until(&http, port, "the long poll counted open", |s| {
        s.sum("flinger_gateway_live_streams", &streams) == 1.0
    })
    .await;
    assert_eq!(lab.cancel(busy).await, 200);
    assert_eq!(poll.await.unwrap().unwrap(), 200);
    scrape_until(&http, port, "the long poll counted closed", |s| {
        s.sum("flinger_gateway_live_streams", &streams) == 0.0
    })
    .await;
    assert_eq!(lab.cancel(reservation).await, 200);
    lab.wait_done(reservation, DONE).await;
    lab.stop().await;
}

/// A lab whose scheduler and agents serve metrics: (lab, the scheduler's port, agents' ports).
async fn lab_with_metrics(name: &str, agents: &[&str]) -> (Lab, u16, Vec<u16>) {
    let scheduler_port = free_port();
    let mut builder = Lab::builder()
        .name(name)
        .scheduler_arg("--metrics-listen", &scheduler_port.to_string())
        .scheduler_arg("--metrics-refresh-secs", "0.2");
    let mut agent_ports = vec![];
    for agent in agents {
        let port = free_port();
        agent_ports.push(port);
        builder = builder
            .agent(AgentSpec::fake(agent, &[name]).with_yaml(&format!("metrics_listen: 127.0.0.1:{port}")));
    }
    (builder.start().await, scheduler_port, agent_ports)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_counts_jobs_as_they_run_fail_and_are_reclaimed() {
    let q = "msched";
    let (mut lab, port, _) = lab_with_metrics(q, &["msched-1", "msched-2"]).await;
    let http = lab.http.clone();
    let s = scrape_until(&http, port, "both agents waiting", |s| {
        s.sum("flinger_scheduler_agents", &[("state", "waiting")]) == 2.0
    })
    .await;
    assert!(
        s.sum("flinger_scheduler_broker_connections_total", &[]) >= 1.0,
        "{}",
        s.text
    );

    // One passes, one fails its tests, one fails on the device (an infrastructure failure).
    let passes = lab
        .submit(&json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"output": ["ok"]}}}))
        .await;
    let fails = lab
        .submit(&json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"exit_code": 1}}}))
        .await;
    let device = lab
        .submit(&json!({"job_queue": q, "provision_data": {"url": "x", "fake": {"exit_code": 1}}}))
        .await;
    for id in [passes, fails, device] {
        assert_eq!(lab.wait_done(id, DONE).await["state"], "complete");
    }
    let ended = |failure: &'static str, cause: &'static str| {
        [
            ("queue", q),
            ("state", "complete"),
            ("failure", failure),
            ("cause", cause),
        ]
    };
    let s = scrape_until(&http, port, "three jobs ended", |s| {
        s.sum("flinger_scheduler_jobs_ended_total", &[("queue", q)]) == 3.0
    })
    .await;
    assert_eq!(
        s.sum("flinger_scheduler_jobs_ended_total", &ended("none", "none")),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.sum(
            "flinger_scheduler_jobs_ended_total",
            &ended("test_failed", "test")
        ),
        1.0
    );
    assert_eq!(
        s.sum(
            "flinger_scheduler_jobs_ended_total",
            &ended("device_failed", "infrastructure")
        ),
        1.0
    );
    assert_eq!(
        s.sum("flinger_scheduler_leases_granted_total", &[("queue", q)]),
        3.0
    );
    for histogram in [
        "flinger_scheduler_job_wait_seconds",
        "flinger_scheduler_pickup_latency_seconds",
    ] {
        assert_eq!(
            s.sum(&format!("{histogram}_count"), &[("queue", q)]),
            3.0,
            "{histogram}"
        );
        assert!(s.has(&format!("{histogram}_bucket")), "{histogram}: {}", s.text);
    }
    for kind in ["status", "output", "heartbeat"] {
        assert!(
            s.sum("flinger_scheduler_event_lag_seconds_count", &[("kind", kind)]) >= 1.0,
            "{kind}: {}",
            s.text
        );
    }
    for operation in [
        "get_job",
        "update_job",
        "count_live_jobs",
        "list_agents",
        "record_heartbeat",
    ] {
        assert!(
            s.sum(
                "flinger_scheduler_store_call_duration_seconds_count",
                &[("operation", operation), ("result", "ok")]
            ) >= 1.0,
            "{operation}: {}",
            s.text
        );
    }

    // A job whose agent dies mid-test: its lease expires, it is reclaimed and requeued, and
    // it runs again on the other agent.
    let slow = lab
        .submit(&json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"duration": "3s", "output": ["a", "b"]}}}))
        .await;
    let running = lab.wait_state(slow, &["test"], DONE).await;
    scrape_until(&http, port, "the running job in the gauge", |s| {
        s.sum("flinger_scheduler_jobs", &[("queue", q), ("state", "test")]) == 1.0
    })
    .await;
    let victim = running["lease"]["agent"].as_str().expect("holder").to_owned();
    lab.agent(&victim).crash();
    let info = lab.wait_done(slow, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["attempt"], 2, "{info}");
    let s = scrape_until(
        &http,
        port,
        "the reclaim counted and the dead agent offline",
        |s| {
            s.sum("flinger_scheduler_agents", &[("state", "offline")]) == 1.0
                && s.sum("flinger_scheduler_jobs", &[("queue", q), ("state", "test")]) == 0.0
        },
    )
    .await;
    assert_eq!(
        s.sum(
            "flinger_scheduler_leases_reclaimed_total",
            &[("queue", q), ("why", "expired")]
        ),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.sum("flinger_scheduler_requeues_total", &[("queue", q)]), 1.0);
    assert_eq!(
        s.sum("flinger_scheduler_leases_granted_total", &[("queue", q)]),
        5.0
    );
    assert_eq!(
        s.sum("flinger_scheduler_jobs_ended_total", &ended("none", "none")),
        2.0
    );
    assert!(s.sum("flinger_scheduler_lease_renewals_total", &[("result", "renewed")]) >= 1.0);
    lab.stop().await;
}
