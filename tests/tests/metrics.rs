//! Metrics, scraped from the running services: the figures move as jobs run, fail and are
//! reclaimed.

use flinger_tests::{AgentSpec, Lab, eventually, free_port};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
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

// ----- the dashboard and the scrape configurations

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Every PromQL expression of the shipped Grafana dashboard, and the metric its `queue`
/// variable lists values of.
fn dashboard_exprs() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(repo_file("docs/grafana/flinger.json")).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = vec![];
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    let mut variables = vec![];
    for var in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["definition"].as_str()
            && let Some(args) = q.strip_prefix("label_values(")
        {
            variables.push(args.split(',').next().expect("a metric").trim().to_owned());
        }
    }
    (exprs, variables)
}

/// The metric names an expression reads: identifiers outside label matchers, ranges, strings
/// and grouping clauses that are neither functions, aggregations nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 10] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
    ];
    let chars: Vec<char> = expr.chars().collect();
    // Past the string that starts at `i` (a quote).
    let past_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Past the block that opens at `i`, strings inside it included.
    let past_block = |mut i: usize, close: char| {
        i += 1;
        while i < chars.len() && chars[i] != close {
            i = if chars[i] == '"' { past_string(i) } else { i + 1 };
        }
        i + 1
    };
    let word_at = |mut i: usize| {
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => i = past_string(i),
            '{' => i = past_block(i, '}'),
            '[' => i = past_block(i, ']'),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let (next, after) = word_at(i);
                let call = chars.get(after.max(i)).is_some_and(|c| *c == '(') && next.is_empty();
                if KEYWORDS.contains(&word.as_str()) {
                    // by (…), without (…), on (…): label names.
                    let mut j = i;
                    while j < chars.len() && chars[j] == ' ' {
                        j += 1;
                    }
                    if chars.get(j) == Some(&'(') {
                        i = past_block(j, ')');
                    }
                } else if !(call || next == "by" || next == "without") {
                    // Not a function, nor an aggregation followed by its grouping.
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (queue, le) (rate(a_seconds_bucket{queue=~"$q", x="/{y}/z"}[15m]))) / sum without (s) (b_total) * 60 + max(c)"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "a_seconds_bucket".to_owned(),
            "b_total".to_owned(),
            "c".to_owned()
        ])
    );
}

/// Metrics Prometheus makes itself, not a service.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exported_after_a_lab_run() {
    let (exprs, variables) = dashboard_exprs();
    let mut wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    wanted.extend(variables);
    for own in PROMETHEUS_OWN {
        wanted.remove(own);
    }
    assert!(wanted.len() > 20, "{wanted:?}");

    let q = "mdash";
    let gateway_port = free_port();
    let scheduler_port = free_port();
    let agents = ["mdash-1", "mdash-2", "mdash-3"];
    let mut builder = Lab::builder()
        .name(q)
        .gateway_env("FLINGER_METRICS_LISTEN", &gateway_port.to_string())
        .scheduler_arg("--metrics-listen", &scheduler_port.to_string())
        .scheduler_arg("--metrics-refresh-secs", "0.2")
        .scheduler_arg("--max-attempts", "2");
    let mut agent_ports = BTreeMap::new();
    for a in agents {
        let port = free_port();
        agent_ports.insert(a.to_owned(), port);
        builder =
            builder.agent(AgentSpec::fake(a, &[q]).with_yaml(&format!("metrics_listen: 127.0.0.1:{port}")));
    }
    let mut lab = builder.start().await;
    let http = lab.http.clone();
    let mut exported = BTreeSet::new();
    let scrape_all = async |lab: &Lab, exported: &mut BTreeSet<String>| {
        let mut ports = vec![gateway_port, scheduler_port];
        for (name, port) in &agent_ports {
            if lab.agents.iter().any(|a| &a.name == name) {
                ports.push(*port);
            }
        }
        for port in ports {
            if let Some(s) = scrape(&http, port).await {
                exported.extend(s.samples.into_iter().map(|(n, _, _)| n));
            }
        }
    };

    // Jobs that pass, fail their tests, fail on the device, and a reservation cancelled.
    let mut ids = vec![];
    for job in [
        json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"output": ["ok"]}}}),
        json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"exit_code": 1}}}),
        json!({"job_queue": q, "provision_data": {"url": "x", "fake": {"exit_code": 1}}}),
    ] {
        ids.push(lab.submit(&job).await);
    }
    let reservation = lab
        .submit(&json!({"job_queue": q, "reserve_data": {"ssh_keys": ["lp:someone"], "timeout": 60}}))
        .await;
    lab.cancel(reservation).await;
    for id in ids.iter().chain([&reservation]) {
        lab.wait_done(*id, DONE).await;
    }
    // A job whose agents die twice: reclaimed and requeued, then out of attempts.
    let slow = lab
        .submit(&json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"duration": "30s", "output": ["a"]}}}))
        .await;
    for attempt in [1, 2] {
        let running = eventually(DONE, "the slow job running", || async {
            lab.info(slow)
                .await
                .filter(|i| i["state"] == "test" && i["attempt"] == attempt)
        })
        .await;
        scrape_all(&lab, &mut exported).await;
        let holder = running["lease"]["agent"].as_str().expect("holder").to_owned();
        lab.agent(&holder).crash();
    }
    let info = lab.wait_done(slow, DONE).await;
    assert_eq!(info["failure"]["kind"], "agent_lost", "{info}");
    scrape_until(&http, scheduler_port, "the exhausted attempts counted", |s| {
        s.has("flinger_scheduler_attempts_exhausted_total")
    })
    .await;
    scrape_all(&lab, &mut exported).await;

    let missing: Vec<_> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no service exported: {missing:?}\nexported: {exported:?}"
    );
    lab.stop().await;
}

/// `count` consecutive free local ports, from the first.
fn free_port_block(count: u16) -> u16 {
    for _ in 0..200 {
        let first = free_port();
        if first.checked_add(count).is_none() {
            continue;
        }
        let all_free = (first..first + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no block of {count} free ports");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_with_the_shipped_lab_configuration_reports_every_service_up() {
    let prometheus = which("prometheus").expect(
        "Debian's prometheus package is needed (apt-get install prometheus; scripts/test installs it)",
    );
    // The compose deployment's configuration is valid for Prometheus too.
    let check = std::process::Command::new(which("promtool").expect("promtool (the prometheus package)"))
        .args(["check", "config"])
        .arg(repo_file("docs/prometheus/compose.yml"))
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A lab laid out as scripts/lab lays its metrics ports (gateway, scheduler next, agents 10
    // above), moved from its default 9180 to free ports.
    const LAB_BASE: u16 = 9180;
    let base = free_port_block(14);
    let agents = ["mprom-1", "mprom-2", "mprom-3", "mprom-4"];
    let mut builder = Lab::builder()
        .name("mprom")
        .gateway_env("FLINGER_METRICS_LISTEN", &format!("127.0.0.1:{base}"))
        .scheduler_arg("--metrics-listen", &format!("127.0.0.1:{}", base + 1));
    for (i, a) in agents.iter().enumerate() {
        builder = builder.agent(
            AgentSpec::fake(a, &["mprom"])
                .with_yaml(&format!("metrics_listen: 127.0.0.1:{}", base + 10 + i as u16)),
        );
    }
    let lab = builder.start().await;

    // The shipped configuration, its ports moved to the lab's and its interval shortened (so
    // that the first scrapes come within a second).
    let shipped = std::fs::read_to_string(repo_file("docs/prometheus/lab.yml")).expect("lab.yml");
    let mut config = shipped.replace("scrape_interval: 15s", "scrape_interval: 1s");
    let mut targets = 0;
    for port in LAB_BASE..LAB_BASE + 14 {
        let from = format!("127.0.0.1:{port}\"");
        if config.contains(&from) {
            targets += 1;
            config = config.replace(&from, &format!("127.0.0.1:{}\"", base + (port - LAB_BASE)));
        }
    }
    assert_eq!(targets, 6, "the lab's six processes:\n{shipped}");
    let dir = lab.path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let web = free_port();
    let _prometheus = flinger_tests::proc::Proc::spawn(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{web}"),
        ],
        &[],
        lab.dir.path(),
    );
    let api = format!("http://127.0.0.1:{web}/api/v1");
    let http = lab.http.clone();
    let targets = eventually(
        Duration::from_secs(60),
        "every target up in Prometheus",
        || async {
            let v: serde_json::Value = http
                .get(format!("{api}/targets?state=active"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let active = v["data"]["activeTargets"].as_array()?.clone();
            (active.len() == 6 && active.iter().all(|t| t["health"] == "up")).then_some(active)
        },
    )
    .await;
    let jobs: BTreeSet<&str> = targets
        .iter()
        .filter_map(|t| t["labels"]["job"].as_str())
        .collect();
    assert_eq!(
        jobs,
        BTreeSet::from(["flinger-agent", "flinger-gateway", "flinger-scheduler"])
    );
    // Every expression of the dashboard is one Prometheus evaluates.
    let (exprs, _) = dashboard_exprs();
    for expr in exprs {
        let query = expr.replace("$queue", ".*");
        let v: serde_json::Value = http
            .get(format!("{api}/query"))
            .query(&[("query", query.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
    }
    lab.stop().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_gauge_is_computed_from_a_mongodb_store_too() {
    let q = "mmongo";
    let port = free_port();
    let lab = Lab::builder()
        .name(q)
        .store(flinger_tests::StoreKind::Mongo)
        .scheduler_arg("--metrics-listen", &port.to_string())
        .scheduler_arg("--metrics-refresh-secs", "0.2")
        .agent(AgentSpec::fake("mmongo-1", &[q]))
        .start()
        .await;
    let http = lab.http.clone();
    // One job holds the only agent; the next one waits behind it.
    let busy = lab
        .submit(&json!({"job_queue": q, "test_data": {"test_cmds": "x", "fake": {"hang": true}}}))
        .await;
    lab.wait_state(busy, &["test"], DONE).await;
    let waiting = lab.submit(&json!({"job_queue": q})).await;
    scrape_until(&http, port, "one job running and one waiting", |s| {
        s.sum("flinger_scheduler_jobs", &[("queue", q), ("state", "test")]) == 1.0
            && s.sum("flinger_scheduler_jobs", &[("queue", q), ("state", "waiting")]) == 1.0
    })
    .await;
    assert_eq!(lab.cancel(busy).await, 200);
    lab.wait_done(waiting, DONE).await;
    let s = scrape_until(&http, port, "no job left in the gauge", |s| {
        s.sum("flinger_scheduler_jobs", &[("queue", q)]) == 0.0
    })
    .await;
    assert_eq!(
        s.sum("flinger_scheduler_agents", &[("state", "waiting")]),
        1.0,
        "{}",
        s.text
    );
    lab.stop().await;
}
