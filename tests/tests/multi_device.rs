//! Multi-device jobs on real processes: children reach `allocated` and hold their device only
//! while their parent lives; the native `multi` connector does the parent's part; no device is
//! left held whatever ends, fails or is killed.

use flinger_tests::{AgentSpec, Lab, invariants};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A child job file, as Testflinger's `multi` connector submits it.
fn child_of(parent: Uuid, queue: &str) -> Value {
    json!({
        "job_queue": queue,
        "provision_data": {"distro": "noble"},
        "allocate_data": {"allocate": true},
        "parent_job_id": parent.to_string(),
    })
}

/// A parent that runs (its test phase hangs) until it is cancelled.
fn hanging_parent() -> Value {
    json!({"job_queue": "host", "test_data": {"test_cmds": "run", "fake": {"hang": true}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allocated_child_holds_its_device_until_its_parent_is_cancelled() {
    let lab = Lab::builder()
        .name("multi-hold")
        .agent(AgentSpec::fake("host-1", &["host"]))
        .agent(AgentSpec::fake_with("dut-1", &["dut"], "device_ip: 10.9.0.1"))
        .start()
        .await;
    let parent = lab.submit(&hanging_parent()).await;
    lab.wait_state(parent, &["test"], JOB_TIMEOUT).await;
    let child = lab.submit(&child_of(parent, "dut")).await;
    let held = lab.wait_state(child, &["allocated"], JOB_TIMEOUT).await;
    assert_eq!(held["device_info"]["device_ip"], "10.9.0.1", "{held}");
    assert_eq!(held["parent_job_id"], parent.to_string(), "{held}");
    assert_eq!(lab.results(child).await["job_state"], "allocated");
    let info = lab.info(parent).await.expect("parent");
    assert_eq!(info["children"], json!([child.to_string()]), "{info}");
    lab.wait_agent_state("dut-1", "allocate").await;

    assert_eq!(lab.cancel(parent).await, 200);
    let released = lab.wait_done(child, JOB_TIMEOUT).await;
    assert_eq!(released["state"], "cancelled", "{released}");
    let why = released["cancel_requested"].as_str().unwrap_or("");
    assert!(
        why.starts_with(&format!("released: parent job {parent}")),
        "{released}"
    );
    assert_eq!(
        lab.results(child).await["cleanup_status"],
        0,
        "the child cleaned up"
    );
    assert_eq!(lab.wait_done(parent, JOB_TIMEOUT).await["state"], "cancelled");
    lab.wait_agent_state("dut-1", "waiting").await;
    lab.wait_agent_state("host-1", "waiting").await;
    invariants::check(&lab.store, &[parent, child]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_of_an_ended_or_unknown_parent_is_released_at_once() {
    let lab = Lab::builder()
        .name("multi-orphan")
        .agent(AgentSpec::fake("host-1", &["host"]))
        .agent(AgentSpec::fake("dut-1", &["dut"]))
        .start()
        .await;
    let ended = lab.submit(&json!({"job_queue": "host"})).await;
    lab.wait_done(ended, JOB_TIMEOUT).await;
    for parent in [ended, Uuid::new_v4()] {
        let child = lab.submit(&child_of(parent, "dut")).await;
        let info = lab.wait_done(child, JOB_TIMEOUT).await;
        assert_eq!(info["state"], "cancelled", "{info}");
        assert!(
            info["phase_status"].get("allocate").is_none(),
            "it was never allocated: {info}"
        );
    }
    // A job file naming a parent that is not a job id is refused.
    let (status, body) = lab
        .post_job(&json!({"job_queue": "dut", "parent_job_id": "not-a-job"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("parent_job_id"), "{body}");
    lab.wait_agent_state("dut-1", "waiting").await;
    lab.stop().await;
}
