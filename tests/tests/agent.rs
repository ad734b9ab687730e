//! The agent as a Testflinger agent's replacement: Testflinger-style configuration and device
//! connector scripts, and the metrics an operator scrapes.

use flinger_tests::{AgentSpec, Lab, eventually};
use serde_json::json;
use std::time::Duration;

const DONE: Duration = Duration::from_secs(60);

/// A script that behaves like `testflinger-device-connector <type> <stage> -c <config> testflinger.json`.
const CONNECTOR: &str = r#"#!/bin/sh
stage="$1"
[ -f testflinger.json ] || { echo "no testflinger.json in $(pwd)"; exit 2; }
case "$stage" in
  provision)
    echo "provisioning $(grep -o '"distro": *"[a-z]*"' testflinger.json)"
    if grep -q '"recovery": *"broken"' testflinger.json; then echo "recovery failed" >&2; exit 46; fi
    printf '{"device_info": {"device_ip": "10.9.8.7", "agent_name": "%s"}}' "$FLINGER_AGENT_NAME" > device-info.json
    echo "provisioned";;
  runtest)
    echo "DEVICE_IP=$DEVICE_IP"
    for i in 1 2 3; do echo "test line $i"; sleep 0.3; done
    echo "to stderr" >&2
    exit 3;;
  cleanup) echo "cleaned";;
esac
"#;

fn connector_agent(lab: &Lab, name: &str, queue: &str) -> AgentSpec {
    let script = lab.path(&format!("{name}-connector.sh"));
    std::fs::write(&script, CONNECTOR).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let s = script.display();
    AgentSpec::commands(
        name,
        &[queue],
        &[
            ("provision", &format!("{s} provision -c /dev/null testflinger.json")),
            ("test", &format!("{s} runtest -c /dev/null testflinger.json")),
            ("cleanup", &format!("{s} cleanup -c /dev/null testflinger.json")),
        ],
    )
    .with_yaml("location: bench 3\nprovision_type: noprovision\nserver_address: http://testflinger.example\npolling_interval: 10\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_testflinger_style_agent_runs_connector_scripts_and_reports_what_testflinger_would() {
    let mut lab = Lab::builder().name("tfagent").start().await;
    let spec = connector_agent(&lab, "tf-1", "tfq");
    lab.add_agent(spec).await;
    let id = lab.submit(&json!({"job_queue": "tfq", "provision_data": {"distro": "noble"}, "test_data": {"test_cmds": "ignored by this connector"}})).await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["failure"]["kind"], "test_failed", "{info}");
    let results = lab.results(id).await;
    assert_eq!(results["provision_status"], 0, "{results}");
    assert_eq!(results["test_status"], 3, "{results}");
    assert_eq!(results["cleanup_status"], 0, "{results}");
    assert_eq!(results["device_info"]["device_ip"], "10.9.8.7", "{results}");
    let test_output = results["test_output"].as_str().unwrap_or("");
    assert!(test_output.contains("DEVICE_IP=10.9.8.7"), "{test_output}");
    assert!(
        test_output.contains("test line 3") && test_output.contains("to stderr"),
        "{test_output}"
    );
    assert!(
        results["provision_output"]
            .as_str()
            .unwrap_or("")
            .contains("\"distro\": \"noble\""),
        "{results}"
    );
    let agent = lab.wait_agent_state("tf-1", "waiting").await;
    assert_eq!(agent["location"], "bench 3");
    assert_eq!(agent["provision_type"], "noprovision");

    // A connector exiting 46 takes the agent offline with the reason.
    let broken = lab
        .submit(&json!({"job_queue": "tfq", "provision_data": {"distro": "noble", "recovery": "broken"}}))
        .await;
    let info = lab.wait_done(broken, DONE).await;
    assert_eq!(info["failure"]["kind"], "recovery_failed", "{info}");
    let agent = lab.wait_agent_state("tf-1", "offline").await;
    assert!(
        agent["comment"]
            .as_str()
            .unwrap_or("")
            .contains("recovery failed"),
        "{agent}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_streams_while_the_phase_runs() {
    let mut lab = Lab::builder().name("stream").start().await;
    let spec = connector_agent(&lab, "st-1", "stq");
    lab.add_agent(spec).await;
    let id = lab
        .submit(&json!({"job_queue": "stq", "test_data": {"test_cmds": "x"}}))
        .await;
    // The first line is readable before the test phase ends.
    let seen = eventually(DONE, "the first test line", || async {
        let info = lab.info(id).await?;
        let out = lab.output(id).await;
        out.contains("test line 1")
            .then_some(info["state"].as_str().unwrap_or("").to_owned())
    })
    .await;
    assert_eq!(seen, "test", "output only arrived once the phase was over");
    lab.wait_done(id, DONE).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_count_jobs_phases_and_lease_renewals() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lab = Lab::builder()
        .name("metrics")
        .agent(AgentSpec::fake("m-1", &["metricsq"]).with_yaml(&format!("metrics_listen: 127.0.0.1:{port}")))
        .start()
        .await;
    let ok = lab.submit(&json!({"job_queue": "metricsq", "test_data": {"test_cmds": "x", "fake": {"duration": "2500ms"}}})).await;
    let bad = lab
        .submit(&json!({"job_queue": "metricsq", "test_data": {"test_cmds": "x", "fake": {"exit_code": 1}}}))
        .await;
    lab.wait_done(ok, DONE).await;
    lab.wait_done(bad, DONE).await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = eventually(Duration::from_secs(10), "metrics", || {
        let (http, url) = (lab.http.clone(), url.clone());
        async move {
            let t = http.get(&url).send().await.ok()?.text().await.ok()?;
            t.contains("flinger_agent_jobs_total{outcome=\"complete\"} 2")
                .then_some(t)
        }
    })
    .await;
    assert!(
        text.contains("flinger_agent_phase_failures_total{phase=\"test\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flinger_agent_phase_duration_seconds_bucket{phase=\"test\""),
        "{text}"
    );
    assert!(
        text.contains("flinger_agent_lease_renewals_total{result=\"renewed\"}"),
        "{text}"
    );
    assert!(
        text.contains("flinger_agent_broker_connections_total 1"),
        "{text}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_config_caps_a_jobs_own_timeouts() {
    let lab = Lab::builder()
        .name("caps")
        .agent(AgentSpec::fake("capped", &["caps"]).with_yaml("global_timeout: 2\noutput_timeout: 1\n"))
        .start()
        .await;
    // The job asks for hours; the device's owner allows seconds.
    let hung = lab
        .submit(&json!({"job_queue": "caps", "global_timeout": 14400, "provision_data": {"fake": {"hang": true}}}))
        .await;
    let info = lab.wait_done(hung, DONE).await;
    assert_eq!(info["state"], "failed", "{info}");
    assert_eq!(info["failure"]["kind"], "global_timeout", "{info}");
    assert!(
        info["failure"]["reason"].as_str().unwrap().contains("2 s"),
        "{info}"
    );
    let silent = lab
        .submit(&json!({"job_queue": "caps", "output_timeout": 600, "test_data": {"test_cmds": "x", "fake": {"hang": true}}}))
        .await;
    let info = lab.wait_done(silent, DONE).await;
    assert_eq!(info["failure"]["kind"], "output_timeout", "{info}");
    assert!(
        info["failure"]["reason"].as_str().unwrap().contains("1 s"),
        "{info}"
    );
    // A job asking for less than the cap keeps its own.
    let short = lab
        .submit(
            &json!({"job_queue": "caps", "global_timeout": 1, "provision_data": {"fake": {"hang": true}}}),
        )
        .await;
    let info = lab.wait_done(short, DONE).await;
    assert!(
        info["failure"]["reason"].as_str().unwrap().contains("1 s"),
        "{info}"
    );
    lab.stop().await;
}
