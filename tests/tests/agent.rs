//! The agent as a Testflinger agent's replacement: Testflinger-style configuration and device
//! connector scripts, the `ssh` connector against a real sshd, what a phase may and may not
//! see of the agent, and the metrics an operator scrapes.

use flinger_tests::keyserver::KeyServer;
use flinger_tests::private_broker::PrivateBroker;
use flinger_tests::proc::Proc;
use flinger_tests::{AgentSpec, Lab, bin, bin_dir, eventually};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The test device of the `ssh` connector's own tests: a real sshd on a loopback port.
#[allow(dead_code)]
#[path = "../../connectors/tests/common/sshd.rs"]
mod sshd;

const DONE: Duration = Duration::from_secs(60);

/// A script that behaves like `testflinger-device-connector <type> <stage> -c <config> testflinger.json`.
const CONNECTOR: &str = r#"#!/bin/sh
stage="$1"
[ -f testflinger.json ] || { echo "no testflinger.json in $(pwd)"; exit 2; }
case "$stage" in
  provision)
    echo "provisioning $(grep -o '"distro": *"[a-z]*"' testflinger.json)"
    echo "U-Boot 2024.01 (serial console of $FLINGER_AGENT_NAME)" > provision-serial.log
    if grep -q '"recovery": *"broken"' testflinger.json; then
      echo "recovery failed" >&2
      printf '{"provision_exception_info": {"exception_name": "RecoveryError", "exception_message": "the device did not boot", "exception_cause": "TimeoutError()"}}' >> device-connector-error.json
      exit 46
    fi
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
    // The connector's serial log file is the phase's serial log.
    let serial = results["provision_serial"].as_str().unwrap_or("");
    assert!(
        serial.contains("U-Boot 2024.01 (serial console of tf-1)"),
        "{results}"
    );
    let log: Value = lab
        .http
        .get(lab.url(&format!("/v1/result/{id}/log/serial")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        log["serial"]["provision"]["log_data"]
            .as_str()
            .unwrap_or("")
            .contains("U-Boot"),
        "{log}"
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
    // Why it failed, from device-connector-error.json, joins the agent's provision history.
    let url = lab.url("/v1/agents/provision_logs/tf-1");
    let entry = eventually(DONE, "the failed provision in the history", || {
        let (http, url) = (lab.http.clone(), url.clone());
        async move {
            let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            v["provision_log"]
                .as_array()?
                .iter()
                .find(|e| e["job_id"] == broken.to_string())
                .cloned()
        }
    })
    .await;
    assert_eq!(entry["exit_code"], 46, "{entry}");
    assert_eq!(
        entry["detail"], "RecoveryError: the device did not boot caused by TimeoutError()",
        "{entry}"
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

/// Starts an agent as `Lab::add_agent` does, with `extra_env` in its environment too; the lab
/// stops it with the others.
async fn add_agent_with_env(lab: &mut Lab, spec: AgentSpec, extra_env: &[(&str, &str)]) {
    let home = lab.dir.path().join("agents").join(&spec.name);
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "agent_id: {}\njob_queues: {}\nexecution_basedir: {}\nstate_dir: {}\nheartbeat_interval: 0.5\n{}",
        spec.name,
        serde_json::to_string(&spec.queues).unwrap(),
        home.join("run").display(),
        home.join("state").display(),
        spec.yaml
    );
    let path = home.join("agent.yaml");
    std::fs::write(&path, config).unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("FLINGER_BROKER_URL".into(), lab.broker_url.clone()),
        ("FLINGER_NAMESPACE".into(), lab.namespace.clone()),
        ("FLINGER_LOG_FORMAT".into(), "json".into()),
        (
            "PATH".into(),
            format!(
                "{}:{}",
                bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let args = vec!["--config".to_owned(), path.display().to_string()];
    let p = Proc::spawn(&spec.name, &bin("flinger-agent"), &args, &env, lab.dir.path());
    lab.agents.push(p);
    lab.wait_agent_state(&spec.name, "waiting").await;
}

/// Deletes the class queues an agent started by [`add_agent_with_env`] declared (the lab only
/// knows the classes of the agents it started).
async fn delete_class_queues(lab: &Lab, classes: &[&str]) {
    let conn = lapin::Connection::connect(&lab.broker_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let queues: Vec<String> = classes
        .iter()
        .map(|c| {
            lab.names
                .class_queue(&broker_schema::DeviceClass::parse(*c).unwrap())
        })
        .collect();
    flinger_tests::broker::delete(&conn, &queues, &[]).await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_credentials_never_reach_a_phase() {
    let mut lab = Lab::builder().name("creds").start().await;
    let secret = "agent-client-secret-3f9c1e";
    add_agent_with_env(
        &mut lab,
        AgentSpec::commands("cred-1", &["credq"], &[("test", "printenv")]),
        &[("FLINGER_AGENT_CLIENT_SECRET", secret)],
    )
    .await;
    let id = lab
        .submit(&json!({"job_queue": "credq", "test_data": {"test_cmds": "x"}}))
        .await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    let out = lab.output(id).await;
    assert!(
        out.contains(&format!("FLINGER_JOB_ID={id}")),
        "printenv ran: {out}"
    );
    for leaked in [
        "FLINGER_BROKER_URL",
        "FLINGER_AGENT_CLIENT_SECRET",
        secret,
        lab.broker_url.as_str(),
    ] {
        assert!(!out.contains(leaked), "{leaked} reached the phase:\n{out}");
    }
    delete_class_queues(&lab, &["credq"]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_kills_a_phase_that_ignores_sigterm_before_the_lease_ends() {
    let lease_secs = 3;
    let mut lab = Lab::builder()
        .name("leasekill")
        .scheduler_arg("--lease-secs", &lease_secs.to_string())
        .scheduler_arg("--renew-secs", "0.5")
        .start()
        .await;
    let beats = lab.path("beats.log");
    // The phase ignores SIGTERM (so do its children): only SIGKILL stops it, and the command
    // connector's grace before SIGKILL (10 s) is longer than the lease.
    let cmd = format!(
        "trap '' TERM; while true; do date +%s%N >> {}; sleep 0.1; done",
        beats.display()
    );
    lab.add_agent(AgentSpec::commands("lk-1", &["leasekill"], &[("test", &cmd)]))
        .await;
    let id = lab
        .submit(&json!({"job_queue": "leasekill", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_state(id, &["test"], DONE).await;
    eventually(DONE, "the test phase to write", || async {
        std::fs::metadata(&beats).ok().filter(|m| m.len() > 0)
    })
    .await;
    // The scheduler goes away: no renewal can succeed, the lease ends within `lease_secs`.
    lab.schedulers[0].crash();
    let lease_end_ns = now_ns() + lease_secs * 1_000_000_000;
    // Once the phase is over the agent notes the lost run in its journal.
    let journal = lab.path("agents/lk-1/state/journal.jsonl");
    eventually(DONE, "the agent to give the run up", || async {
        let text = std::fs::read_to_string(&journal).ok()?;
        text.contains(&id.to_string()).then_some(())
    })
    .await;
    let lines = std::fs::read_to_string(&beats).unwrap();
    let last_beat_ns: u128 = lines.lines().last().unwrap().parse().unwrap();
    assert!(
        last_beat_ns < lease_end_ns,
        "the phase ran {} ms past the end of the lease",
        (last_beat_ns - lease_end_ns) / 1_000_000
    );
    lab.stop().await;
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread")]
async fn sensitive_patterns_of_the_agent_config_are_masked_in_the_output() {
    let mut lab = Lab::builder().name("patterns").start().await;
    lab.add_agent(
        AgentSpec::commands(
            "pat-1",
            &["patq"],
            &[(
                "test",
                "echo 'login with tok-987654 now'; printf 'pass=hunter2'; sleep 1; echo ' end'",
            )],
        )
        .with_yaml("sensitive_patterns:\n  - 'tok-[0-9]+'\n  - 'pass=[a-z0-9]+'\n"),
    )
    .await;
    let id = lab
        .submit(&json!({"job_queue": "patq", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_done(id, DONE).await;
    let out = lab.output(id).await;
    assert!(out.contains("login with **** now"), "{out}");
    assert!(out.contains("**** end"), "{out}");
    assert!(!out.contains("tok-987654") && !out.contains("hunter2"), "{out}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_info_written_by_a_later_phase_is_published() {
    let mut lab = Lab::builder().name("devinfo").start().await;
    lab.add_agent(AgentSpec::commands(
        "di-1",
        &["diq"],
        &[(
            "test",
            r#"printf '{"device_info": {"device_ip": "10.20.30.40"}}' > device-info.json"#,
        )],
    ))
    .await;
    // No provision phase: the job only tests.
    let id = lab
        .submit(&json!({"job_queue": "diq", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_done(id, DONE).await;
    let results = lab.results(id).await;
    assert_eq!(results["device_info"]["device_ip"], "10.20.30.40", "{results}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_own_files_stay_out_of_the_run_directory() {
    let keys = KeyServer::start(BTreeMap::from([(
        "alice".to_string(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAliceKeyForTheTest alice@laptop\n".to_string(),
    )]))
    .await;
    let mut lab = Lab::builder().name("scratch").start().await;
    lab.add_agent(
        AgentSpec::commands(
            "sc-1",
            &["scq"],
            &[
                (
                    "reserve",
                    r#"ls -A; echo "keys in $FLINGER_SSH_KEYS_FILE"; cat "$FLINGER_SSH_KEYS_FILE""#,
                ),
                ("cleanup", "true"),
            ],
        )
        .with_yaml(&keys.agent_yaml()),
    )
    .await;
    let id = lab
        .submit(&json!({"job_queue": "scq", "reserve_data": {"ssh_keys": ["lp:alice"], "timeout": 600}}))
        .await;
    let out = eventually(DONE, "the reserve phase's output", || async {
        let out = lab.output(id).await;
        out.contains("alice@laptop").then_some(out)
    })
    .await;
    assert!(
        out.contains("testflinger.json"),
        "ls ran in the run directory: {out}"
    );
    assert!(
        !out.lines().any(|l| l.trim() == "authorized_keys"),
        "the keys file is in the run directory: {out}"
    );
    let state = lab.path("agents/sc-1/state");
    assert!(
        out.contains(&format!("keys in {}/", state.display())),
        "the keys file is not in the agent's state directory: {out}"
    );
    assert_eq!(lab.cancel(id).await, 200);
    lab.wait_done(id, DONE).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_agent_runs_a_job_on_a_real_device_and_reserves_it() {
    let Some(device) = sshd::Device::start() else {
        return; // said so; FLINGER_REQUIRE_SSHD=1 makes it a failure
    };
    // The reserving person's key pair, published by the key server as lp:alice.
    let person_key = device.dir.path().join("alice_key");
    let person_pub = sshd::keygen(&person_key);
    let keys = KeyServer::start(BTreeMap::from([("alice".to_string(), person_pub)])).await;
    let mut lab = Lab::builder().name("sshagent").start().await;
    lab.add_agent(
        AgentSpec {
            name: "ssh-1".into(),
            queues: vec!["sshq".into()],
            yaml: format!(
                "connector:\n  type: ssh\n  host: 127.0.0.1\n  port: {}\n  user: root\n  identity_file: {}\n  \
                 provision_timeout: 10\n  connect_timeout: 5\n  kill_grace: 1\n  authorized_keys: {}\n",
                device.port,
                device.client_key.display(),
                device.reserved_keys.display()
            ),
        }
        .with_yaml(&keys.agent_yaml()),
    )
    .await;
    assert!(
        !device.logs_in_with(&person_key).await,
        "the person's key must not log in before the reservation"
    );
    let id = lab
        .submit(&json!({
            "job_queue": "sshq",
            "provision_data": {"distro": "noble"},
            "test_data": {"test_cmds": "echo \"on the device as $(id -un), DEVICE_IP=$DEVICE_IP\""},
            "reserve_data": {"ssh_keys": ["lp:alice"], "timeout": 600},
        }))
        .await;
    eventually(DONE, "the reservation to start", || async {
        let out = lab.output(id).await;
        out.contains("the device is reserved").then_some(())
    })
    .await;
    assert!(
        device.logs_in_with(&person_key).await,
        "the reserved key does not log in: {}",
        lab.output(id).await
    );
    let info = lab.info(id).await.unwrap();
    assert_eq!(info["state"], "reserve", "{info}");
    assert_eq!(lab.cancel(id).await, 200);
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "cancelled", "{info}");
    let results = lab.results(id).await;
    assert_eq!(results["provision_status"], 0, "{results}");
    assert_eq!(results["test_status"], 0, "{results}");
    assert_eq!(results["cleanup_status"], 0, "{results}");
    assert_eq!(results["device_info"]["device_ip"], "127.0.0.1", "{results}");
    let test_output = results["test_output"].as_str().unwrap_or("");
    assert!(
        test_output.contains("on the device as root, DEVICE_IP=127.0.0.1"),
        "{results}"
    );
    // Cleanup took the reservation's key away again.
    assert!(
        !device.logs_in_with(&person_key).await,
        "the key outlived the reservation"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_given_up_while_the_broker_was_down_is_reported_once_it_is_back() {
    let broker = PrivateBroker::start();
    let mut lab = Lab::builder()
        .name("unreported")
        .broker(&broker.url())
        .scheduler_arg("--lease-secs", "3")
        .scheduler_arg("--renew-secs", "0.5")
        .start()
        .await;
    lab.add_agent(AgentSpec::commands(
        "ur-1",
        &["urq"],
        &[("test", "while true; do sleep 0.1; done")],
    ))
    .await;
    let id = lab
        .submit(&json!({"job_queue": "urq", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_state(id, &["test"], DONE).await;
    // A durable queue of the test's own gets the job's status events, across the restart.
    let watch = format!("{}.test-watch", lab.namespace);
    {
        let conn = lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            watch.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            watch.as_str().into(),
            lab.names.events_exchange().as_str().into(),
            broker_schema::Names::job_status_key(&id).as_str().into(),
            Default::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = ch.close(200, "bound".into()).await;
        let _ = conn.close(200, "bound".into()).await;
    }
    // The broker goes away: the lease cannot be renewed, the agent gives the run up, and the
    // broker is not there to be told.
    broker.down();
    let kept = lab.path("agents/ur-1/state/unreported");
    let kept_one = tokio::time::timeout(DONE, async {
        while !std::fs::read_dir(&kept).is_ok_and(|mut d| d.next().is_some()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    if kept_one.await.is_err() {
        panic!("the agent kept no unreported run:\n{}", lab.log_tails(80));
    }
    broker.up();
    // Once connected again the agent reports it, and keeps nothing more.
    eventually(DONE, "the agent to report the run given up", || async {
        std::fs::read_dir(&kept).ok()?.next().is_none().then_some(())
    })
    .await;
    let conn = lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let events: Vec<broker_schema::messages::JobEvent> = flinger_tests::broker::drain(&conn, &watch)
        .await
        .iter()
        .filter_map(|m| broker_schema::codec::decode(&m.body).ok())
        .collect();
    let abandoned = events
        .iter()
        .find_map(|e| match &e.kind {
            broker_schema::messages::JobEventKind::RunAbandoned { reason } if e.attempt == 1 => {
                Some(reason.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no run_abandoned for attempt 1 among {events:?}"));
    assert!(abandoned.contains("lease lost"), "{abandoned}");
    flinger_tests::broker::delete(&conn, std::slice::from_ref(&watch), &[]).await;
    let _ = conn.close(200, "done".into()).await;
    lab.stop().await;
}
