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

/// A lab with two fake devices on queue `dut` (at 10.9.0.1 and 10.9.0.2 with `device_ips`) and
/// a `multi` agent `host-1`.
async fn two_devices_and_a_host(name: &str, device_ips: bool) -> Lab {
    let device = |n: u8| match device_ips {
        true => AgentSpec::fake_with(&format!("dut-{n}"), &["dut"], &format!("device_ip: 10.9.0.{n}")),
        false => AgentSpec::fake(&format!("dut-{n}"), &["dut"]),
    };
    let mut lab = Lab::builder()
        .name(name)
        .agent(device(1))
        .agent(device(2))
        .start()
        .await;
    add_multi_agent(&mut lab, "host-1").await;
    lab
}

/// A `multi` agent: the native connector, talking to the lab's gateway.
async fn add_multi_agent(lab: &mut Lab, name: &str) {
    add_multi_agent_as(lab, name, "").await;
}

/// A `multi` agent whose connector logs in with `credentials` (YAML lines, indented).
async fn add_multi_agent_as(lab: &mut Lab, name: &str, credentials: &str) {
    let spec = AgentSpec {
        name: name.into(),
        queues: vec!["multi".into()],
        yaml: format!(
            "connector:\n  type: multi\n  server: {}\n  poll_interval: 0.2\n{credentials}",
            lab.base
        ),
    };
    lab.add_agent(spec).await;
}

const ADMIN_SECRET: &str = "admin-secret-of-the-multi-lab";

/// A parent for the `multi` connector: one child job file per queue, then `test_cmds`.
fn multi_parent(child_queues: &[&str], test_cmds: &str) -> Value {
    let jobs: Vec<Value> = child_queues
        .iter()
        .map(|q| json!({"job_queue": q, "provision_data": {"distro": "noble"}}))
        .collect();
    json!({
        "job_queue": "multi",
        "provision_data": {"jobs": jobs},
        "test_data": {"test_cmds": test_cmds},
    })
}

fn children_of(info: &Value) -> Vec<Uuid> {
    info["children"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Waits until the parent listed `n` children, and returns them.
async fn wait_children(lab: &Lab, parent: Uuid, n: usize) -> Vec<Uuid> {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let info = lab.info(parent).await.expect("parent");
        let children = children_of(&info);
        if children.len() == n {
            return children;
        }
        if tokio::time::Instant::now() >= deadline || info["state"] == "complete" {
            panic!(
                "parent {parent} never listed {n} children: {info}\n{}",
                lab.output(parent).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `children` in the order of their queues.
async fn by_queue(lab: &Lab, children: Vec<Uuid>, queues: &[&str]) -> Vec<Uuid> {
    let mut with_queue = vec![];
    for c in children {
        let info = lab.info(c).await.expect("child");
        with_queue.push((info["queue"].as_str().unwrap_or("").to_owned(), c));
    }
    queues
        .iter()
        .map(|q| {
            with_queue
                .iter()
                .find(|(cq, _)| cq == q)
                .map(|(_, c)| *c)
                .unwrap_or_else(|| panic!("no child on {q}"))
        })
        .collect()
}

/// Whether a child reached `allocated` during its run (its allocate phase passed).
fn was_allocated(info: &Value) -> bool {
    info["phase_status"]["allocate"] == 0
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

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_with_two_children_completes_with_both_devices_in_its_job_list() {
    let lab = two_devices_and_a_host("multi-ok", true).await;
    let parent = lab
        .submit(&multi_parent(
            &["dut", "dut"],
            "cat job_list.json; echo; echo DEVICES=$DEVICE_IP_1,$DEVICE_IP_2",
        ))
        .await;
    let info = lab.wait_done(parent, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.output(parent).await);
    assert_eq!(info["failure"], Value::Null, "{info}");
    let output = lab.output(parent).await;
    let list_line = output
        .lines()
        .find(|l| l.starts_with("[{"))
        .unwrap_or_else(|| panic!("no job_list.json in the output: {output}"));
    let list: Vec<Value> = serde_json::from_str(list_line).expect("job_list.json");
    let children = children_of(&info);
    assert_eq!(children.len(), 2, "{info}");
    let mut listed: Vec<Uuid> = list
        .iter()
        .map(|e| e["job_id"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut sorted = children.clone();
    listed.sort();
    sorted.sort();
    assert_eq!(listed, sorted, "job_list.json lists the children");
    let mut ips: Vec<&str> = list
        .iter()
        .map(|e| e["device_info"]["device_ip"].as_str().unwrap_or("?"))
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.9.0.1", "10.9.0.2"], "{list_line}");
    let devices = output.lines().find(|l| l.starts_with("DEVICES=")).unwrap_or("");
    assert!(
        devices.contains("10.9.0.1") && devices.contains("10.9.0.2"),
        "DEVICE_IP_n in the test phase: {output}"
    );
    for child in &children {
        // Released when the parent completed: it served its purpose, cleaned up, complete.
        let c = lab.wait_done(*child, JOB_TIMEOUT).await;
        assert!(was_allocated(&c), "{c}");
        assert_eq!(c["parent_job_id"], parent.to_string(), "{c}");
        assert_eq!(
            (&c["state"], &c["failure"]),
            (&json!("complete"), &Value::Null),
            "{c}"
        );
        assert_eq!(
            c["released"],
            format!("released: parent job {parent} ended (complete)"),
            "{c}"
        );
        assert_eq!(lab.results(*child).await["cleanup_status"], 0, "{c}");
    }
    for agent in ["dut-1", "dut-2", "host-1"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    let mut all = children.clone();
    all.push(parent);
    invariants::check(&lab.store, &all).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_the_parent_while_its_children_are_allocated_releases_every_device() {
    let lab = two_devices_and_a_host("multi-cancel", false).await;
    let parent = lab
        .submit(&multi_parent(&["dut", "dut"], "echo testing; sleep 600"))
        .await;
    lab.wait_state(parent, &["test"], JOB_TIMEOUT).await;
    let children = wait_children(&lab, parent, 2).await;
    for child in &children {
        assert_eq!(lab.info(*child).await.expect("child")["state"], "allocated");
    }
    assert_eq!(lab.cancel(parent).await, 200);
    assert_eq!(lab.wait_done(parent, JOB_TIMEOUT).await["state"], "cancelled");
    for child in &children {
        let c = lab.wait_done(*child, JOB_TIMEOUT).await;
        assert_eq!(c["state"], "cancelled", "{c}");
        assert_eq!(
            c["cancel_requested"],
            format!("released: parent job {parent} is being cancelled"),
            "{c}"
        );
        assert_eq!(lab.results(*child).await["cleanup_status"], 0, "{c}");
    }
    for agent in ["dut-1", "dut-2", "host-1"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_childs_agent_fails_that_child_and_the_parent_still_releases_the_other() {
    let mut lab = two_devices_and_a_host("multi-killchild", false).await;
    let parent = lab.submit(&multi_parent(&["dut", "dut"], "sleep 600")).await;
    lab.wait_state(parent, &["test"], JOB_TIMEOUT).await;
    let children = wait_children(&lab, parent, 2).await;
    let on_dut1 = {
        let mut found = None;
        for child in &children {
            let c = lab.info(*child).await.expect("child");
            if c["lease"]["agent"] == "dut-1" {
                found = Some(*child);
            }
        }
        found.expect("a child on dut-1")
    };
    let other = *children.iter().find(|c| **c != on_dut1).unwrap();
    lab.agent("dut-1").crash();
    let lost = lab.wait_done(on_dut1, JOB_TIMEOUT).await;
    assert_eq!(lost["state"], "failed", "{lost}");
    assert_eq!(lost["failure"]["kind"], "agent_lost", "{lost}");
    assert_eq!(lost["attempt"], 1, "an allocated child is not run again: {lost}");
    // The parent lives on, and so does the other child's allocation, until the parent ends.
    assert_eq!(lab.info(other).await.expect("child")["state"], "allocated");
    assert_eq!(lab.info(parent).await.expect("parent")["state"], "test");
    assert_eq!(lab.cancel(parent).await, 200);
    assert_eq!(lab.wait_done(other, JOB_TIMEOUT).await["state"], "cancelled");
    lab.agent("dut-1").restart();
    for agent in ["dut-1", "dut-2", "host-1"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_parents_agent_releases_every_child_and_the_parent_runs_again() {
    let mut lab = two_devices_and_a_host("multi-killparent", false).await;
    let parent = lab
        .submit(&multi_parent(
            &["dut", "dut"],
            "test -e job_list.json && sleep 600",
        ))
        .await;
    lab.wait_state(parent, &["test"], JOB_TIMEOUT).await;
    let first = wait_children(&lab, parent, 2).await;
    lab.agent("host-1").crash();
    for child in &first {
        let c = lab.wait_done(*child, JOB_TIMEOUT).await;
        assert_eq!(c["state"], "cancelled", "{c}");
        assert_eq!(
            c["cancel_requested"],
            format!("released: parent job {parent} was requeued"),
            "{c}"
        );
    }
    for agent in ["dut-1", "dut-2"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    // The parent's next attempt gets devices of its own.
    lab.agent("host-1").restart();
    let second = wait_children(&lab, parent, 4).await;
    lab.wait_state(parent, &["test"], JOB_TIMEOUT).await;
    assert_eq!(lab.info(parent).await.expect("parent")["attempt"], 2);
    for child in &second[2..] {
        assert_eq!(lab.info(*child).await.expect("child")["state"], "allocated");
    }
    assert_eq!(lab.cancel(parent).await, 200);
    for child in &second {
        assert_eq!(lab.wait_done(*child, JOB_TIMEOUT).await["state"], "cancelled");
    }
    for agent in ["dut-1", "dut-2", "host-1"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_that_cannot_get_every_device_in_time_cancels_its_children_and_says_why() {
    let mut lab = Lab::builder()
        .name("multi-timeout")
        .agent(AgentSpec::fake("dut-1", &["dut"]))
        .start()
        .await;
    add_multi_agent(&mut lab, "host-1").await;
    let mut job = multi_parent(&["dut", "dut"], "echo never");
    job["allocation_timeout"] = json!(3);
    let parent = lab.submit(&job).await;
    let info = lab.wait_done(parent, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["failure"]["kind"], "device_failed", "{info}");
    let output = lab.output(parent).await;
    assert!(
        output.contains("allocation_timeout: 3 s passed before every child was allocated"),
        "{output}"
    );
    assert!(!output.contains("never"), "the test phase ran: {output}");
    let children = children_of(&info);
    assert_eq!(children.len(), 2, "{info}");
    let mut allocated = 0;
    for child in &children {
        let c = lab.wait_done(*child, JOB_TIMEOUT).await;
        assert_eq!(c["state"], "cancelled", "{c}");
        if was_allocated(&c) {
            allocated += 1;
        } else {
            assert_eq!(c["attempt"], 0, "the second child never got a device: {c}");
        }
    }
    assert_eq!(allocated, 1, "one device was held, then released");
    for agent in ["dut-1", "host-1"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_parents_holding_half_each_do_not_deadlock_the_first_to_time_out_gives_way() {
    let mut lab = Lab::builder()
        .name("multi-compete")
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", "admin")
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .agent(AgentSpec::fake_with("devx-1", &["devx"], "device_ip: 10.9.1.1"))
        .agent(AgentSpec::fake_with("devy-1", &["devy"], "device_ip: 10.9.2.1"))
        .start()
        .await;
    // The connectors log in as a client allowed to give a child a priority.
    let out = lab
        .cli()
        .args([
            "admin",
            "set",
            "client-permissions",
            "--testflinger-client-id",
            "lab-host",
            "--testflinger-client-secret",
            "lab-host-secret-0123456",
            "--role",
            "contributor",
            "--max-priority",
            "devy=10",
            "--client-id",
            "admin",
            "--secret-key",
            ADMIN_SECRET,
        ])
        .output()
        .expect("flinger");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client = "  client_id: lab-host\n  secret_key: lab-host-secret-0123456\n";
    add_multi_agent_as(&mut lab, "host-1", client).await;
    add_multi_agent_as(&mut lab, "host-2", client).await;
    // Both devices busy, so that the four children queue up behind them.
    let blockers = [
        lab.submit(&json!({"job_queue": "devx", "test_data": {"test_cmds": "run", "fake": {"hang": true}}}))
            .await,
        lab.submit(&json!({"job_queue": "devy", "test_data": {"test_cmds": "run", "fake": {"hang": true}}}))
            .await,
    ];
    for b in blockers {
        lab.wait_state(b, &["test"], JOB_TIMEOUT).await;
    }
    // A asks for X then Y and gives up after 30 s; B asks for Y (first in its queue, by
    // priority) then X, and would wait two hours.
    let mut a = multi_parent(&["devx", "devy"], "echo A ran");
    a["allocation_timeout"] = json!(30);
    let a = lab.submit(&a).await;
    let a_children = by_queue(&lab, wait_children(&lab, a, 2).await, &["devx", "devy"]).await;
    let b = lab
        .submit(&json!({
            "job_queue": "multi",
            "provision_data": {"jobs": [
                {"job_queue": "devy", "job_priority": 10},
                {"job_queue": "devx"},
            ]},
            "test_data": {"test_cmds": "echo B ran on $DEVICE_IP_1 and $DEVICE_IP_2"},
        }))
        .await;
    let b_children = wait_children(&lab, b, 2).await;
    for b in blockers {
        assert_eq!(lab.cancel(b).await, 200);
    }
    // X goes to A's first child and Y to B's: each parent holds half. A gives way at its
    // timeout, which frees X for B.
    let a_info = lab.wait_done(a, Duration::from_secs(180)).await;
    assert_eq!(a_info["failure"]["kind"], "device_failed", "{a_info}");
    let a_output = lab.output(a).await;
    assert!(
        a_output.contains(&format!(
            "allocation_timeout: 30 s passed before every child was allocated (not allocated: {})",
            a_children[1]
        )),
        "{a_output}"
    );
    let a_x = lab.wait_done(a_children[0], JOB_TIMEOUT).await;
    assert!(was_allocated(&a_x), "A held X: {a_x}");
    let b_info = lab.wait_done(b, JOB_TIMEOUT).await;
    assert_eq!(b_info["state"], "complete", "{b_info}");
    assert_eq!(b_info["failure"], Value::Null, "{b_info}");
    let b_output = lab.output(b).await;
    assert!(b_output.contains("B ran on 10.9.2.1 and 10.9.1.1"), "{b_output}");
    for child in &a_children {
        assert_eq!(lab.wait_done(*child, JOB_TIMEOUT).await["state"], "cancelled");
    }
    for child in &b_children {
        assert_eq!(lab.wait_done(*child, JOB_TIMEOUT).await["state"], "complete");
    }
    for agent in ["devx-1", "devy-1", "host-1", "host-2"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}

/// What Testflinger's `poll-multi` GitHub action does, with our CLI in place of theirs: wait
/// for the parent to complete, find its children in its provision output (`Created job <id>`),
/// read each child's device address from its results, and follow each child until it completes.
const POLL_MULTI: &str = r#"
set -eu
parent="$1"
wait_complete() {
  for _ in $(seq 240); do
    [ "$(flinger status "$1")" = complete ] && return 0
    sleep 0.5
  done
  echo "job $1 never completed" >&2; return 1
}
wait_complete "$parent"
results=$(flinger results "$parent")
jq -e '.provision_status == 0' >/dev/null <<<"$results"
children=$(jq -r .provision_output <<<"$results" | sed -n 's/^.*Created job \(.*\)$/\1/p')
for child in $children; do
  address=$(flinger results "$child" | jq -r .device_info.device_ip)
  wait_complete "$child"
  echo "$child $address"
done
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_poll_multi_flow_follows_every_child_with_our_cli() {
    let lab = two_devices_and_a_host("multi-poll", true).await;
    let file = lab.path("parent.json");
    std::fs::write(&file, multi_parent(&["dut", "dut"], "echo testing").to_string()).unwrap();
    let out = lab
        .cli()
        .args(["submit", "--quiet"])
        .arg(&file)
        .output()
        .expect("flinger submit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parent: Uuid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("job id");
    let mut poll = lab.cli();
    poll.args(["-c", POLL_MULTI, "poll-multi"])
        .arg(parent.to_string());
    let poll = tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new("bash");
        c.args(poll.get_args());
        let path = format!(
            "{}:{}",
            flinger_tests::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path);
        for (k, v) in poll.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().expect("bash")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&poll.stdout).into_owned();
    assert!(
        poll.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&poll.stderr)
    );
    let mut addresses: Vec<&str> = text.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    addresses.sort();
    assert_eq!(addresses, ["10.9.0.1", "10.9.0.2"], "{text}");
    let listed: Vec<Uuid> = text
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let info = lab.info(parent).await.expect("parent");
    assert_eq!(listed, children_of(&info), "in submission order: {info}");

    // `flinger show` names a parent's children and a child's parent.
    let show = lab
        .cli()
        .args(["show", "--json"])
        .arg(parent.to_string())
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&show.stdout).expect("show --json");
    assert_eq!(shown["children"], info["children"], "{shown}");
    let show = lab.cli().arg("show").arg(listed[0].to_string()).output().unwrap();
    let notes = String::from_utf8_lossy(&show.stderr);
    assert!(notes.contains(&format!("parent job: {parent}")), "{notes}");
    let results = lab.cli().arg("results").arg(parent.to_string()).output().unwrap();
    let results: Value = serde_json::from_slice(&results.stdout).expect("results");
    assert_eq!(results["children"], info["children"], "{results}");
    lab.stop().await;
}

/// Testflinger's own `multi` connector, run through the `command` connector with its REST client
/// pointed at our gateway: a stand-in (tests/fixtures/tf-multi-connector.py) that makes exactly
/// the v1 calls Testflinger's `tfclient.py` makes, and nothing of ours.
#[tokio::test(flavor = "multi_thread")]
async fn testflingers_own_multi_connector_works_through_the_command_connector() {
    let mut lab = Lab::builder()
        .name("multi-tf")
        .agent(AgentSpec::fake_with("dut-1", &["dut"], "device_ip: 10.9.0.1"))
        .agent(AgentSpec::fake_with("dut-2", &["dut"], "device_ip: 10.9.0.2"))
        .start()
        .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tf-multi-connector.py");
    let stage = |s: &str| format!("python3 {script} {} {s} testflinger.json", lab.base);
    lab.add_agent(AgentSpec::commands(
        "tf-host",
        &["tf-multi"],
        &[
            ("provision", &stage("provision")),
            ("test", "cat job_list.json; echo"),
        ],
    ))
    .await;
    let mut parent = multi_parent(&["dut", "dut"], "unused");
    parent["job_queue"] = json!("tf-multi");
    let parent = lab.submit(&parent).await;
    let info = lab.wait_done(parent, JOB_TIMEOUT).await;
    let output = lab.output(parent).await;
    assert_eq!(info["state"], "complete", "{info}\n{output}");
    // The stand-in did the parent's part (not our native connector).
    assert_eq!(output.matches("Created job ").count(), 2, "{output}");
    assert!(
        output.contains("every child allocated; job_list.json written"),
        "{output}"
    );
    let list_line = output
        .lines()
        .find(|l| l.starts_with("[{"))
        .unwrap_or_else(|| panic!("no job_list.json in the output: {output}"));
    let list: Vec<Value> = serde_json::from_str(list_line).expect("job_list.json");
    let mut ips: Vec<&str> = list
        .iter()
        .map(|e| e["device_info"]["device_ip"].as_str().unwrap_or("?"))
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.9.0.1", "10.9.0.2"], "{list_line}");
    let children = children_of(&info);
    assert_eq!(children.len(), 2, "{info}");
    for child in &children {
        let c = lab.wait_done(*child, JOB_TIMEOUT).await;
        assert!(was_allocated(&c), "{c}");
        assert_eq!(c["parent_job_id"], parent.to_string(), "{c}");
    }
    for agent in ["dut-1", "dut-2", "tf-host"] {
        lab.wait_agent_state(agent, "waiting").await;
    }
    lab.stop().await;
}
