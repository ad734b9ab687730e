//! `flinger-agent` in place of `testflinger-agent`, on real processes: its command line
//! (`-c`, `-p`, `--token-file`), SIGUSR1 and the `restart` admin state (restart after the current
//! job, for the supervisor to start it again), Testflinger's metric names, restricted queues
//! served alone, a cancel that waits for the end of provision, and the job file's `debug` key.

use flinger_tests::{AgentSpec, Lab, eventually, free_port};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const DONE: Duration = Duration::from_secs(60);
const ADMIN: &str = "lab-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
/// The exit code of a requested restart (`flinger_agent::restart::EXIT_CODE`).
const RESTART_EXIT: i32 = 75;

/// A lab whose gateway has an admin and issues tokens.
async fn lab_with_admin(name: &str) -> Lab {
    Lab::builder()
        .name(name)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .gateway_env("FLINGER_JWT_SIGNING_KEY", "agent-dropin-signing-key")
        .start()
        .await
}

async fn admin_token(lab: &Lab) -> String {
    lab.login(ADMIN, ADMIN_SECRET).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn create_client(lab: &Lab, id: &str, role: &str, secret: &str) {
    let r = lab
        .http
        .put(lab.url(&format!("/v1/client-permissions/{id}")))
        .bearer_auth(admin_token(lab).await)
        .json(&json!({"client_secret": secret, "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create {id}: {}", r.text().await.unwrap());
}

async fn agent_view(lab: &Lab, name: &str) -> Value {
    lab.http
        .get(lab.url(&format!("/v1/agents/data/{name}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the agent's comment contains `text`.
async fn wait_comment(lab: &Lab, name: &str, text: &str) -> Value {
    eventually(DONE, &format!("{name}'s comment to say {text:?}"), || async {
        let v = agent_view(lab, name).await;
        v["comment"].as_str()?.contains(text).then_some(v)
    })
    .await
}

/// A test command that runs until the file `go` exists.
fn until(go: &std::path::Path) -> String {
    format!(
        "echo started; while [ ! -f {} ]; do sleep 0.05; done; echo finished",
        go.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_restarts_the_agent_after_its_current_job() {
    let mut lab = Lab::builder().name("usr1").start().await;
    let go = lab.path("go");
    lab.add_agent(AgentSpec::commands(
        "usr1-1",
        &["usr1q"],
        &[("test", &until(&go))],
    ))
    .await;
    let first = lab
        .submit(&json!({"job_queue": "usr1q", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_state(first, &["test"], DONE).await;

    // What Testflinger's charm does to every agent on upgrade.
    lab.agent("usr1-1").signal(Signal::SIGUSR1);
    // The agent heard it and goes on with its job.
    let view = wait_comment(&lab, "usr1-1", "restart pending").await;
    assert_eq!(view["state"], "test", "{view}");
    // A job that arrives meanwhile is left for after the restart.
    let second = lab
        .submit(&json!({"job_queue": "usr1q", "test_data": {"test_cmds": "x"}}))
        .await;

    std::fs::write(&go, "").unwrap();
    let info = lab.wait_done(first, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert!(lab.output(first).await.contains("finished"));
    // Then the agent exits, for its supervisor to start it again.
    assert_eq!(
        lab.agent("usr1-1").wait_exit(DONE),
        Some(RESTART_EXIT),
        "{}",
        lab.log_tails(30)
    );
    let view = wait_comment(&lab, "usr1-1", "restarting").await;
    assert_eq!(view["state"], "offline", "{view}");
    let info = lab.info(second).await.unwrap();
    assert_eq!(
        (info["state"].as_str(), info["attempt"].as_u64()),
        (Some("waiting"), Some(0)),
        "{info}"
    );

    // The supervisor's part: the new process takes the job that waited.
    lab.agent("usr1-1").restart();
    let info = lab.wait_done(second, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert!(lab.agent("usr1-1").is_running());
    lab.stop().await;
}

/// `flinger admin set agent-status --status restart`, logged in as the lab's admin.
fn admin_restart(lab: &Lab, agent: &str) -> (i32, String) {
    let out = lab
        .cli()
        .env("TESTFLINGER_CLIENT_ID", ADMIN)
        .env("TESTFLINGER_SECRET_KEY", ADMIN_SECRET)
        .args([
            "admin",
            "set",
            "agent-status",
            "--status",
            "restart",
            "--agents",
            agent,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_restart_admin_state_restarts_an_agent_after_its_job_and_only_once() {
    let mut lab = lab_with_admin("rstate").await;
    let go = lab.path("go");
    lab.add_agent(AgentSpec::commands("rst-1", &["rstq"], &[("test", &until(&go))]))
        .await;
    let job = json!({"job_queue": "rstq", "test_data": {"test_cmds": "x"}});
    let first = lab.submit(&job).await;
    lab.wait_state(first, &["test"], DONE).await;

    // Busy: the restart waits for the end of the job.
    let (code, out) = admin_restart(&lab, "rst-1");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Status restart deferred until job completion"),
        "{out}"
    );
    let view = wait_comment(&lab, "rst-1", "restart pending").await;
    assert_eq!(view["state"], "test", "{view}");
    std::fs::write(&go, "").unwrap();
    assert_eq!(lab.wait_done(first, DONE).await["state"], "complete");
    assert_eq!(lab.agent("rst-1").wait_exit(DONE), Some(RESTART_EXIT));
    // (So that `waiting` below can only come from the agent started again, which then has
    // started before the next order.)
    wait_comment(&lab, "rst-1", "restarting").await;
    lab.agent("rst-1").restart();
    lab.wait_agent_state("rst-1", "waiting").await;

    // Idle: it restarts at once.
    let (code, out) = admin_restart(&lab, "rst-1");
    assert_eq!(code, 0, "{out}");
    assert_eq!(lab.agent("rst-1").wait_exit(DONE), Some(RESTART_EXIT));

    // An order given while the agent is down waits in its control queue; the agent started
    // after it does not obey it (it has been restarted since): it runs the next job.
    let (code, out) = admin_restart(&lab, "rst-1");
    assert_eq!(code, 0, "{out}");
    lab.agent("rst-1").restart();
    let third = lab.submit(&job).await;
    assert_eq!(lab.wait_done(third, DONE).await["state"], "complete");
    assert!(
        lab.agent("rst-1").is_running(),
        "the agent obeyed a stale restart: {}",
        lab.log_tails(30)
    );
    // The restart was an order, not a state the agent is kept in.
    let view = lab.wait_agent_state("rst-1", "waiting").await;
    assert!(
        !view["comment"].as_str().unwrap_or("").contains("restart"),
        "{view}"
    );
    lab.stop().await;
}

/// The sample of `name` whose labels include every one of `labels`, from a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_testflinger_agent_command_line_token_file_and_metrics_work() {
    let mut lab = lab_with_admin("tfcli").await;
    create_client(&lab, "agent-host", "agent", "agent-host-secret-0123").await;
    // As Testflinger's agent host charm writes it.
    let refresh = lab.login("agent-host", "agent-host-secret-0123").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_file = lab.path("refresh_token");
    std::fs::write(
        &token_file,
        json!({"refresh_token": refresh, "obtained_at": "2026-01-01T00:00:00+00:00"}).to_string(),
    )
    .unwrap();
    let port = free_port();
    // Provision reports a device nobody can log into: its release is `unknown`.
    let provision = r#"printf '{"device_info": {"device_ip": "127.0.0.1"}}' > device-info.json"#;
    let test = "mkdir -p artifacts && echo built > artifacts/build.txt && exit 1";
    let spec = AgentSpec::commands(
        "tfcli-1",
        &["tfcliq"],
        &[("provision", provision), ("test", test)],
    )
    .with_yaml(&format!(
        "identifier: SN-1234\nserver_address: {}\n",
        lab.base.trim_start_matches("http://")
    ));
    let token_arg = token_file.display().to_string();
    lab.add_agent_with_args(spec, |config| {
        [
            "-c",
            &config.display().to_string(),
            "-p",
            &port.to_string(),
            "--token-file",
            &token_arg,
        ]
        .map(str::to_owned)
        .to_vec()
    })
    .await;
    let id = lab
        .submit(&json!({"job_queue": "tfcliq", "provision_data": {"url": "http://img"}, "test_data": {"test_cmds": "x"}}))
        .await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["failure"]["kind"], "test_failed", "{info}");
    // The artifacts reached the gateway, which takes them only from an agent with a token: the
    // one the refresh token in the file got.
    let r = lab
        .http
        .get(lab.url(&format!("/v1/result/{id}/artifact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", lab.log_tails(30));

    // Testflinger's metrics, on the port -p named, beside ours.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let page = eventually(Duration::from_secs(10), "the metrics of the job", || {
        let (http, url) = (lab.http.clone(), url.clone());
        async move {
            let t = http.get(&url).send().await.ok()?.text().await.ok()?;
            t.contains("flinger_agent_jobs_total").then_some(t)
        }
    })
    .await;
    let me = ("agent_id", "tfcli-1");
    assert_eq!(sample(&page, "jobs_total", &[me]), Some(1.0), "{page}");
    assert_eq!(
        sample(&page, "failures_total", &[me, ("test_phase", "test")]),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "failures_total", &[me, ("test_phase", "provision")]),
        None
    );
    let duration = |phase: &str, release: &str| {
        sample(
            &page,
            "phase_duration_seconds_count",
            &[
                me,
                ("test_phase", phase),
                ("identifier", "SN-1234"),
                ("release", release),
            ],
        )
    };
    // Provision's duration is recorded before the device is asked; the test phase's after.
    assert_eq!(duration("provision", ""), Some(1.0), "{page}");
    assert_eq!(duration("test", "unknown"), Some(1.0), "{page}");
    assert!(
        page.lines()
            .any(|l| l.starts_with("phase_duration_seconds_bucket{") && l.contains("le=\"14400\"")),
        "Testflinger's buckets: {page}"
    );
    assert_eq!(sample(&page, "recovery_failures_total", &[me]), None);
    assert!(
        page.contains("flinger_agent_jobs_total{outcome=\"complete\"} 1"),
        "{page}"
    );
    lab.stop().await;
}

/// The agent of a job's last attempt, from `/v1/job/<id>/info`.
fn ran_on(info: &Value) -> Option<&str> {
    info["attempts"].as_array()?.last()?["agent"].as_str()
}

/// The consumers of `queue` (of `lab`'s namespace) now.
fn consumers(lab: &Lab, class: &str) -> u32 {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "-p", "/", "name", "consumers"])
        .output()
        .expect("rabbitmqctl must be installed next to the broker (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queue = lab
        .names
        .class_queue(&broker_schema::DeviceClass::parse(class).unwrap());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (name, n) = l.split_once('\t')?;
            (name == queue).then(|| n.trim().parse().ok())?
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_serving_a_restricted_queue_takes_jobs_only_from_its_restricted_queues() {
    let mut lab = lab_with_admin("restricted").await;
    create_client(&lab, "team-a", "contributor", "team-a-secret-0123456").await;
    lab.add_agent(AgentSpec::commands(
        "rq-1",
        &["teamq", "openq"],
        &[("test", "echo ran")],
    ))
    .await;
    let r = lab
        .http
        .post(lab.url("/v1/restricted-queues/teamq"))
        .bearer_auth(admin_token(&lab).await)
        .json(&json!({"client_id": "team-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The agent, started again, asks which of its queues are restricted before taking a job.
    lab.agent("rq-1").stop(Duration::from_secs(10));
    lab.agent("rq-1").restart();
    eventually(DONE, "rq-1 to consume teamq alone", || async {
        (consumers(&lab, "teamq") == 1 && consumers(&lab, "openq") == 0).then_some(())
    })
    .await;

    // A job for its open queue, while it waits for jobs, is left alone…
    let open = lab
        .submit(&json!({"job_queue": "openq", "test_data": {"test_cmds": "x"}}))
        .await;
    // …while a team job submitted after it runs.
    let team = lab.login("team-a", "team-a-secret-0123456").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(&team)
        .json(&json!({"job_queue": "teamq", "test_data": {"test_cmds": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let team_job: Uuid = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let info = lab.wait_done(team_job, DONE).await;
    assert_eq!(
        (info["state"].as_str(), ran_on(&info)),
        (Some("complete"), Some("rq-1")),
        "{info}"
    );
    let info = lab.info(open).await.unwrap();
    assert_eq!(
        (info["state"].as_str(), info["attempt"].as_u64()),
        (Some("waiting"), Some(0)),
        "{info}"
    );

    // The open job was runnable all along: an agent without restricted queues runs it.
    lab.add_agent(AgentSpec::commands("rq-2", &["openq"], &[("test", "echo ran")]))
        .await;
    let info = lab.wait_done(open, DONE).await;
    assert_eq!(
        (info["state"].as_str(), ran_on(&info)),
        (Some("complete"), Some("rq-2")),
        "{info}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_provision_lets_provision_finish_then_cancels_the_job() {
    let mut lab = Lab::builder().name("cancelprov").start().await;
    let go = lab.path("go");
    let flash = format!(
        "echo flashing; while [ ! -f {} ]; do sleep 0.05; done; echo flashed",
        go.display()
    );
    lab.add_agent(AgentSpec::commands(
        "cp-1",
        &["cpq"],
        &[
            ("provision", &flash),
            ("test", "echo testing"),
            ("cleanup", "echo cleaned"),
        ],
    ))
    .await;
    let id = lab
        .submit(&json!({"job_queue": "cpq", "provision_data": {"url": "http://img"}, "test_data": {"test_cmds": "x"}}))
        .await;
    eventually(DONE, "provision to start flashing", || async {
        lab.output(id).await.contains("flashing").then_some(())
    })
    .await;
    assert_eq!(lab.cancel(id).await, 200);
    // The agent has the cancel, says so, and lets provision run on.
    eventually(DONE, "the agent to hold the cancel", || async {
        lab.output(id).await.contains("cancel requested").then_some(())
    })
    .await;
    assert_eq!(lab.info(id).await.unwrap()["state"], "provision");

    std::fs::write(&go, "").unwrap();
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "cancelled", "{info}");
    let results = lab.results(id).await;
    assert_eq!(
        results["provision_status"], 0,
        "provision ran to its end: {results}"
    );
    assert_eq!(results["cleanup_status"], 0, "{results}");
    assert!(results["test_status"].is_null(), "the test phase ran: {results}");
    let output = lab.output(id).await;
    for expected in [
        "flashed",
        "provision is over; cancelling the job as requested",
        "cleaned",
    ] {
        assert!(output.contains(expected), "{expected:?} not in {output}");
    }
    assert!(!output.contains("testing"), "{output}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_files_debug_key_reaches_the_device_connector() {
    let mut lab = Lab::builder().name("debugkey").start().await;
    lab.add_agent(AgentSpec::commands(
        "dbg-1",
        &["dbgq"],
        &[(
            "test",
            r#"grep -q '"debug": true' testflinger.json && echo debug-reached-the-connector"#,
        )],
    ))
    .await;
    // Marshmallow's spellings are Testflinger's: "yes" is true.
    let id = lab
        .submit(&json!({"job_queue": "dbgq", "debug": "yes", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_done(id, DONE).await;
    assert!(
        lab.output(id).await.contains("debug-reached-the-connector"),
        "{}",
        lab.output(id).await
    );
    let (status, body) = lab
        .post_job(&json!({"job_queue": "dbgq", "debug": "maybe"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"]["json"]["debug"],
        json!(["Not a valid boolean."]),
        "{body}"
    );
    lab.stop().await;
}
