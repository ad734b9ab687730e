//! The `flinger` CLI, run as a user runs it, against a real lab: what it prints on stdout and
//! stderr, and the exit codes scripts rely on (docs/cli.md).

use flinger_tests::cli::{Run, run as run_with};
use flinger_tests::{AgentSpec, Lab, bin};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// The CLI pointed at `lab`, with a home of its own (its config file, login and job history
/// live in the lab's directory, never in the user's).
fn cli(lab: &Lab) -> std::process::Command {
    let mut cmd = lab.cli();
    isolate(&mut cmd, &lab.path("home"));
    cmd
}

fn isolate(cmd: &mut std::process::Command, home: &std::path::Path) {
    std::fs::create_dir_all(home).expect("home");
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"));
    for var in [
        "FLINGER_CONFIG",
        "FLINGER_DATA_DIR",
        "FLINGER_CLIENT_ID",
        "TESTFLINGER_CLIENT_ID",
        "FLINGER_SECRET_KEY",
        "TESTFLINGER_SECRET_KEY",
    ] {
        cmd.env_remove(var);
    }
}

async fn flinger(lab: &Lab, args: &[&str]) -> Run {
    run_with(cli(lab), args, None).await
}

/// Writes a job file into the lab's directory; returns its path.
fn job_file(lab: &Lab, name: &str, job: &Value) -> String {
    let path = lab.path(name);
    let text = if name.ends_with(".json") {
        job.to_string()
    } else {
        as_yaml(job)
    };
    std::fs::write(&path, text).expect("job file");
    path.display().to_string()
}

/// JSON is YAML's flow style; behind a comment it goes through the CLI's YAML reader.
fn as_yaml(job: &Value) -> String {
    format!("# a job file\n{job}\n")
}

/// A lab with one fake agent on queue `fake`, ready to route jobs to it.
///
/// The agent reports `waiting` (all the lab waits for) a moment before it has bound its class
/// queue, and a job submitted in between is refused as unroutable. Until the agent binds first,
/// a probe job is submitted until it is accepted, and followed to its end.
async fn fake_lab(name: &str) -> Lab {
    let lab = Lab::builder()
        .name(name)
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let probe = flinger_tests::eventually(Duration::from_secs(20), "queue fake to be routable", || {
        let lab = &lab;
        async move {
            let (status, body) = lab.post_job(&json!({"job_queue": "fake"})).await;
            (status == 200)
                .then(|| body["job_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()))
                .flatten()
        }
    })
    .await;
    lab.wait_done(probe, JOB_TIMEOUT).await;
    lab
}

fn passing_job() -> Value {
    passing_job_on("fake")
}

fn passing_job_on(queue: &str) -> Value {
    json!({
        "job_queue": queue,
        "provision_data": {"distro": "noble"},
        "test_data": {"test_cmds": "echo hello", "fake": {"output": ["hello from the fake device"]}},
    })
}

fn job_id_line(stdout: &str) -> Uuid {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("job_id: "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no job_id line in {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_poll_of_a_passing_job_prints_its_output_and_exits_0() {
    let lab = fake_lab("cli-pass").await;
    let file = job_file(&lab, "job.yaml", &passing_job());
    let run = flinger(&lab, &["submit", "--poll", &file]).await;
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    assert!(
        run.stdout.starts_with("Job submitted successfully!\njob_id: "),
        "{run}"
    );
    assert!(run.stdout.contains("hello from the fake device"), "{run}");
    assert!(run.stdout.contains("$ echo hello"), "{run}");
    assert!(run.stderr.contains("complete."), "{run}");
    // The output on stdout is the job's, exactly: the same text the API serves.
    let id = job_id_line(&run.stdout);
    let output = lab.output(id).await;
    assert!(
        run.stdout.ends_with(&output),
        "stdout is not the job's output:\n{run}\n--- api\n{output}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_jobs_exit_1_for_a_test_failure_and_3_for_a_device_failure() {
    let lab = fake_lab("cli-fail").await;
    let test_fails = job_file(
        &lab,
        "test-fails.json",
        &json!({"job_queue": "fake", "test_data": {"test_cmds": "x", "fake": {"exit_code": 1}}}),
    );
    let run = flinger(&lab, &["submit", "--poll", &test_fails]).await;
    assert_eq!(run.code, 1, "{run}\n{}", lab.logs());
    assert!(run.stderr.contains("test failed"), "{run}");

    let device_fails = job_file(
        &lab,
        "device-fails.json",
        &json!({
            "job_queue": "fake",
            "provision_data": {"url": "http://images/x.img", "fake": {"exit_code": 1, "output": ["flashing failed"]}},
            "test_data": {"test_cmds": "echo never"},
        }),
    );
    let run = flinger(&lab, &["submit", "--poll", "--quiet", &device_fails]).await;
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stdout.contains("flashing failed"), "{run}");
    assert!(run.stderr.is_empty(), "--quiet printed status lines: {run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_submit_prints_only_the_job_id_and_stdin_is_read_for_a_dash() {
    let lab = fake_lab("cli-quiet").await;
    let yaml =
        "job_queue: fake\ntest_data:\n  test_cmds: echo from stdin\n  fake:\n    output: [read from stdin]\n";
    let run = run_with(cli(&lab), &["submit", "-q", "-"], Some(yaml)).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout.lines().count(), 1, "{run}");
    let id: Uuid = run
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a job id: {run}"));
    assert!(run.stderr.is_empty(), "{run}");
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert!(lab.output(id).await.contains("read from stdin"));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_submissions_exit_2_naming_the_field_or_the_queue() {
    let lab = fake_lab("cli-refuse").await;
    let invalid = job_file(
        &lab,
        "invalid.yaml",
        &json!({"job_queue": "fake", "global_timeout": "soon", "bogus_key": 1}),
    );
    let run = flinger(&lab, &["submit", &invalid]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("global_timeout:"), "{run}");
    assert!(run.stderr.contains("bogus_key:"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    let unknown = job_file(&lab, "unknown.yaml", &json!({"job_queue": "nobody-serves-this"}));
    let run = flinger(&lab, &["submit", "--poll", &unknown]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("no agent serves queue \"nobody-serves-this\""),
        "{run}"
    );
    assert!(run.stderr.contains("not submitted"), "{run}");
    assert!(
        run.stderr.contains("fake"),
        "the served queues are not listed: {run}"
    );
    let logs = lab.logs();
    let submitted = logs
        .lines()
        .any(|l| l.contains("no agent serves its queue") && l.contains("nobody-serves-this"));
    assert!(!submitted, "the job was submitted:\n{logs}");

    // Testflinger's pre-check leaves out the agents the job excludes, and says so.
    let excluding = job_file(
        &lab,
        "excluding.yaml",
        &json!({"job_queue": "fake", "exclude_agents": ["fake-1"]}),
    );
    let run = flinger(&lab, &["submit", &excluding]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("online but excluded by the job's exclude_agents: fake-1"),
        "{run}"
    );

    let not_yaml = lab.path("broken.yaml");
    std::fs::write(&not_yaml, "job_queue: [unclosed\n").unwrap();
    let run = flinger(&lab, &["submit", not_yaml.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("broken.yaml"), "{run}");

    let run = flinger(&lab, &["status", "not-a-uuid"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("not a job id"), "{run}");

    let run = flinger(&lab, &["poll", &Uuid::new_v4().to_string()]).await;
    assert_eq!(run.code, 2, "an unknown job: {run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_show_results_and_cancel_of_a_waiting_job() {
    // The agent declared the queue, then went away.
    let mut lab = fake_lab("cli-wait").await;
    lab.agent("fake-1").stop(Duration::from_secs(10));
    lab.wait_agent_state("fake-1", "offline").await;
    let file = job_file(
        &lab,
        "job.yaml",
        &json!({"job_queue": "fake", "tags": ["cli"], "test_data": {"test_cmds": "echo never"}}),
    );
    // As in Testflinger: refused while every agent of the queue is offline…
    let run = flinger(&lab, &["submit", "-q", &file]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("every agent serving queue \"fake\" is offline (fake-1)"),
        "{run}"
    );
    assert!(run.stderr.contains("--wait-for-available-agents"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    // …and submitted with --wait-for-available-agents: the job waits for an agent.
    let run = flinger(&lab, &["submit", "-q", "--wait-for-available-agents", &file]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("the job will wait for one"), "{run}");
    let id = run.stdout.trim().to_owned();

    let run = flinger(&lab, &["status", &id]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "waiting\n"), "{run}");
    assert!(run.stderr.contains("Next in line on queue fake"), "{run}");

    let run = flinger(&lab, &["show", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let shown: Value = serde_json::from_str(&run.stdout).expect("show prints JSON");
    assert_eq!(
        (shown["job_queue"].as_str(), shown["job_id"].as_str()),
        (Some("fake"), Some(id.as_str()))
    );
    let run = flinger(&lab, &["show", "--yaml", &id]).await;
    assert!(run.stdout.contains("job_queue: fake"), "{run}");

    let run = flinger(&lab, &["results", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let results: Value = serde_json::from_str(&run.stdout).expect("results print JSON");
    assert_eq!(results["job_state"], "waiting", "{results}");

    let run = flinger(&lab, &["poll", "--oneshot", &id]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");
    // `poll --json` prints the log once and exits, as `testflinger poll --json` does, even
    // while the job waits.
    let run = flinger(&lab, &["poll", "--json", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(json_of(&run)["output"].is_object(), "{run}");

    let run = flinger(&lab, &["cancel", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("cancelled"), "{run}");
    let run = flinger(&lab, &["status", &id]).await;
    assert_eq!(run.stdout, "cancelled\n", "{run}");
    let run = flinger(&lab, &["poll", &id]).await;
    assert_eq!(run.code, 4, "polling a cancelled job: {run}");
    let run = flinger(&lab, &["cancel", &id]).await;
    assert_eq!(run.code, 2, "cancelling an ended job: {run}");
    assert!(run.stderr.contains("cannot cancel"), "{run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_oneshot_prints_the_output_so_far_from_the_fragment_asked() {
    let lab = fake_lab("cli-oneshot").await;
    let id = lab.submit(&passing_job()).await;
    lab.wait_done(id, JOB_TIMEOUT).await;
    let id = id.to_string();
    let run = flinger(&lab, &["poll", "--oneshot", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("hello from the fake device"), "{run}");
    let run = flinger(&lab, &["poll", "--oneshot", "--start_fragment", "100000", &id]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");
    let run = flinger(&lab, &["poll", "--oneshot", "--phase", "test", &id]).await;
    assert!(run.stdout.contains("hello from the fake device"), "{run}");
    let run = flinger(&lab, &["poll", "--oneshot", "--phase", "cleanup", &id]).await;
    assert!(!run.stdout.contains("hello from the fake device"), "{run}");
    // With --json, the server's log document (what `testflinger poll --json` prints).
    let run = flinger(&lab, &["poll", "--oneshot", "--json", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let doc = json_of(&run);
    let test = &doc["output"]["test"];
    assert!(
        test["log_data"]
            .as_str()
            .is_some_and(|t| t.contains("hello from the fake device")),
        "{doc}"
    );
    assert!(test["last_fragment_number"].as_i64() >= Some(0), "{doc}");
    let run = flinger(&lab, &["poll", "--json", "--phase", "test", &id]).await;
    let doc = json_of(&run);
    assert!(doc["output"]["test"].is_object(), "{doc}");
    assert!(
        doc["output"].get("setup").is_none(),
        "only the phase asked: {doc}"
    );
    // --events follows the job as JSON events, the last one its end.
    let run = flinger(&lab, &["poll", "--events", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let last: Value = serde_json::from_str(run.stdout.lines().last().expect("events")).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["exit_code"].as_i64()),
        (Some("end"), Some(0))
    );
    // Following a job that has ended prints its output and its outcome at once.
    let run = flinger(&lab, &["poll", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("hello from the fake device"), "{run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_outputs_parse_as_json() {
    let lab = fake_lab("cli-json").await;
    let file = job_file(&lab, "job.json", &passing_job());

    let run = flinger(&lab, &["submit", "--json", &file]).await;
    assert_eq!(run.code, 0, "{run}");
    let submitted: Value = serde_json::from_str(&run.stdout).expect("submit --json");
    let id = submitted["job_id"].as_str().expect("job_id").to_owned();
    lab.wait_done(id.parse().unwrap(), JOB_TIMEOUT).await;

    let run = flinger(&lab, &["status", "--json", &id]).await;
    let info: Value = serde_json::from_str(&run.stdout).expect("status --json");
    assert_eq!(
        (info["state"].as_str(), info["job_state"].as_str()),
        (Some("complete"), Some("complete"))
    );
    for cmd in ["results", "show"] {
        let run = flinger(&lab, &[cmd, &id, "--json"]).await;
        assert_eq!(run.code, 0, "{run}");
        let v: Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{cmd} --json: {e}\n{run}"));
        assert!(v.is_object(), "{cmd}: {v}");
    }

    // Following with --json: one event per line, the last one the end with the exit code.
    let run = flinger(&lab, &["submit", "--poll", "--json", &file]).await;
    assert_eq!(run.code, 0, "{run}");
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(events[0]["event"], "submitted", "{run}");
    let output: String = events
        .iter()
        .filter(|e| e["event"] == "output")
        .filter_map(|e| e["data"].as_str())
        .collect();
    assert!(output.contains("hello from the fake device"), "{run}");
    let end = events.last().expect("events");
    assert_eq!(
        (end["event"].as_str(), end["exit_code"].as_i64()),
        (Some("end"), Some(0)),
        "{run}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_exits_5() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, home.path());
    cmd.env_remove("FLINGER_SERVER")
        .env_remove("TESTFLINGER_SERVER")
        .env("NO_COLOR", "1");
    let server = format!("http://127.0.0.1:{port}");
    let run = run_with(
        cmd,
        &["--server", &server, "status", &Uuid::new_v4().to_string()],
        None,
    )
    .await;
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.contains("cannot reach the Flinger server"), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_testflinger_server_variable_is_honoured() {
    let lab = fake_lab("cli-env").await;
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, &lab.path("home"));
    cmd.env_remove("FLINGER_SERVER")
        .env("TESTFLINGER_SERVER", &lab.base);
    let file = job_file(&lab, "job.yaml", &passing_job());
    let run = run_with(cmd, &["submit", "-q", &file], None).await;
    assert_eq!(run.code, 0, "{run}");
    lab.stop().await;
}

// ----- the rest of Testflinger's commands

const ADMIN_SECRET: &str = "admin-secret-of-the-lab";

#[tokio::test(flavor = "multi_thread")]
async fn testflingers_ini_configuration_file_is_read_with_c() {
    let lab = lab_with_admin("cli-ini").await;
    // Testflinger's CLI configuration, as `testflinger-cli config` writes it (plus a key of its
    // own that Flinger leaves alone).
    let conf = lab.path("testflinger-cli.conf");
    std::fs::write(
        &conf,
        format!(
            "[testflinger-cli]\nserver = {}\nclient_id = admin\nsecret_key = {ADMIN_SECRET}\nlog_level = debug\n",
            lab.url("")
        ),
    )
    .unwrap();
    // Nothing but the file says where the server is or who is asking.
    let mut cmd = cli(&lab);
    cmd.env_remove("FLINGER_SERVER");
    let run = run_with(
        cmd,
        &[
            "-c",
            conf.to_str().unwrap(),
            "--json",
            "admin",
            "get",
            "client-permissions",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        json_of(&run)
            .as_array()
            .is_some_and(|clients| clients.iter().any(|c| c["client_id"] == "admin")),
        "{run}"
    );
    lab.stop().await;
}

/// A lab whose gateway has an admin client (`admin`), with one fake agent on queue `fake`.
async fn lab_with_admin(name: &str) -> Lab {
    let lab = Lab::builder()
        .name(name)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", "admin")
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    wait_routable(&lab, "fake").await;
    lab
}

/// Waits until a job submitted to `queue` is accepted (the agent has bound its queue), and
/// follows that probe job to its end.
async fn wait_routable(lab: &Lab, queue: &str) {
    let probe = flinger_tests::eventually(
        Duration::from_secs(20),
        "the queue to be routable",
        || async move {
            let (status, body) = lab.post_job(&json!({"job_queue": queue})).await;
            (status == 200)
                .then(|| body["job_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()))
                .flatten()
        },
    )
    .await;
    lab.wait_done(probe, JOB_TIMEOUT).await;
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_dry_run_prints_the_job_without_asking_the_server() {
    // Nothing listens there: a dry run must not need the server.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, home.path());
    cmd.env("FLINGER_SERVER", "http://127.0.0.1:9");
    let args = [
        "reserve",
        "--dry-run",
        "-q",
        "rpi4b",
        "-k",
        "lp:alice",
        "-k",
        "gh:bob",
        "--timeout",
        "2h",
        "--distro",
        "noble",
    ];
    let run = run_with(cmd, &args, None).await;
    assert_eq!(run.code, 0, "{run}");
    let start = run.stdout.find('{').expect("a JSON job on stdout");
    let job: Value = serde_json::from_str(&run.stdout[start..]).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(
        job,
        json!({
            "job_queue": "rpi4b",
            "provision_data": {"distro": "noble"},
            "reserve_data": {"ssh_keys": ["lp:alice", "gh:bob"], "timeout": "2h"},
        })
    );
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, home.path());
    cmd.env("FLINGER_SERVER", "http://127.0.0.1:9");
    let run = run_with(
        cmd,
        &["reserve", "--dry-run", "--json", "-q", "rpi4b", "-k", "lp:alice"],
        None,
    )
    .await;
    assert_eq!(json_of(&run)["reserve_data"]["timeout"], 3600, "{run}");
    // Testflinger's spellings: `reserve -d` is the dry run (`-d` before the command is debug),
    // one -k may take several keys, --ephemeral goes with --distro.
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, home.path());
    cmd.env("FLINGER_SERVER", "http://127.0.0.1:9");
    let args = [
        "-d",
        "reserve",
        "-d",
        "-q",
        "maas",
        "-k",
        "lp:alice",
        "gh:bob",
        "-k",
        "lp:carol",
        "--distro",
        "noble",
        "--ephemeral",
        "--json",
    ];
    let run = run_with(cmd, &args, None).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        json_of(&run),
        json!({
            "job_queue": "maas",
            "provision_data": {"distro": "noble", "ephemeral": true},
            "reserve_data": {"ssh_keys": ["lp:alice", "gh:bob", "lp:carol"], "timeout": 3600},
        })
    );
    // A key the agent could not install is refused before anything is submitted.
    let mut cmd = std::process::Command::new(bin("flinger"));
    isolate(&mut cmd, home.path());
    let run = run_with(cmd, &["reserve", "--dry-run", "-q", "rpi4b", "-k", "alice"], None).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("lp:USER"), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_follows_until_the_device_is_up_then_status_and_extend_move_the_deadline() {
    let mut lab = Lab::builder().name("cli-reserve").start().await;
    let authorized = lab.path("device-authorized_keys");
    let spec = AgentSpec::fake_with(
        "r1",
        &["res"],
        &format!("device_ip: 10.1.2.3\nauthorized_keys: {}", authorized.display()),
    );
    lab.add_agent(spec).await;
    wait_routable(&lab, "res").await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob bob@laptop";
    let run = flinger(
        &lab,
        &["reserve", "-q", "res", "-k", key, "--timeout", "120", "--yes"],
    )
    .await;
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    let id = job_id_line(&run.stdout).to_string();
    assert!(run.stdout.contains("Connect with: ssh ubuntu@10.1.2.3"), "{run}");
    assert!(
        run.stdout.contains(&format!("flinger reserve extend {id}")),
        "{run}"
    );
    let installed = std::fs::read_to_string(&authorized).unwrap_or_default();
    assert!(installed.contains("AAAAC3NzaC1lZDI1NTE5AAAAIBob"), "{installed}");

    let run = flinger(&lab, &["reserve", "status", &id, "--json"]).await;
    assert_eq!(run.code, 0, "{run}");
    let status = json_of(&run);
    assert_eq!(
        (status["device_ip"].as_str(), status["ssh"].as_str()),
        (Some("10.1.2.3"), Some("ssh ubuntu@10.1.2.3")),
        "{status}"
    );
    let until = broker_schema::Millis::parse_rfc3339(status["until"].as_str().unwrap()).unwrap();
    let run = flinger(&lab, &["reserve", "status", &id]).await;
    assert!(run.stdout.contains("device_ip: 10.1.2.3"), "{run}");

    let run = flinger(&lab, &["reserve", "extend", &id, "--by", "1m"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("now ends at"), "{run}");
    let run = flinger(&lab, &["reserve", "extend", &id, "--by", "30", "--json"]).await;
    let extended =
        broker_schema::Millis::parse_rfc3339(json_of(&run)["reserve_until"].as_str().unwrap()).unwrap();
    assert_eq!(extended.0 - until.0, 90_000, "{run}");
    let target = broker_schema::Millis(extended.0 + 60_000).to_rfc3339();
    let run = flinger(&lab, &["reserve", "extend", &id, "--until", &target, "--json"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(json_of(&run)["reserve_until"], target.as_str(), "{run}");

    let run = flinger(&lab, &["cancel", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    lab.wait_done(id.parse().unwrap(), JOB_TIMEOUT).await;
    let run = flinger(&lab, &["reserve", "status", &id]).await;
    assert_eq!(run.code, 2, "no reservation any more: {run}");
    let run = flinger(&lab, &["reserve", "extend", &id, "--by", "1h"]).await;
    assert_eq!(run.code, 2, "extending an ended reservation: {run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn show_tells_the_attempts_of_a_job_whose_agent_was_killed() {
    let mut lab = Lab::builder()
        .name("cli-attempts")
        .agent(AgentSpec::fake("a1", &["kill"]))
        .agent(AgentSpec::fake("a2", &["kill"]))
        .start()
        .await;
    wait_routable(&lab, "kill").await;
    let id = lab
        .submit(&json!({
            "job_queue": "kill",
            "test_data": {"test_cmds": "run-suite", "fake": {"duration": "3s", "output": ["step 1", "step 2", "step 3"]}},
        }))
        .await;
    let running = lab.wait_state(id, &["test"], JOB_TIMEOUT).await;
    let victim = running["lease"]["agent"]
        .as_str()
        .expect("lease holder")
        .to_owned();
    lab.agent(&victim).crash();
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["attempt"], 2, "{info}");
    let id = id.to_string();

    // Plain: the job file on stdout, unchanged; the attempts on stderr.
    let run = flinger(&lab, &["show", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    let job: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(job["job_queue"], "kill");
    assert!(run.stderr.contains("attempts:"), "{run}");
    assert!(run.stderr.contains(&format!("1. agent {victim}")), "{run}");
    assert!(run.stderr.contains("lease expired"), "{run}");
    assert!(run.stderr.contains("2. agent "), "{run}");

    // YAML: the attempts as comments after the job file.
    let run = flinger(&lab, &["show", "--yaml", &id]).await;
    assert!(run.stdout.contains("job_queue: kill"), "{run}");
    let comments: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        comments.iter().any(|l| l.contains(&format!("1. agent {victim}"))),
        "{run}"
    );
    let first_comment = run.stdout.find("\n#").expect("comments");
    assert!(
        !run.stdout[first_comment..]
            .lines()
            .skip(1)
            .any(|l| !l.starts_with('#')),
        "comments come last: {run}"
    );

    // JSON: separate keys.
    let run = flinger(&lab, &["show", "--json", &id]).await;
    let v = json_of(&run);
    assert_eq!(v["job"]["job_id"], id.as_str(), "{v}");
    assert_eq!(v["attempts"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["attempts"][0]["agent"], victim.as_str(), "{v}");
    assert!(v["failure"].is_null(), "{v}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_views_list_queues_agents_and_a_queues_status() {
    let lab = fake_lab("cli-views").await;
    let run = flinger(&lab, &["list-queues"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.starts_with("Advertised queues on this server:\n"),
        "{run}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.trim() == "fake" || l.trim().starts_with("fake -")),
        "{run}"
    );
    let run = flinger(&lab, &["list-queues", "--json"]).await;
    assert!(json_of(&run).get("fake").is_some(), "{run}");

    let run = flinger(&lab, &["list-agents"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("fake-1") && l.contains("waiting")),
        "{run}"
    );
    let run = flinger(
        &lab,
        &["list-agents", "--json", "--queue", "fake", "--state", "waiting"],
    )
    .await;
    assert_eq!(json_of(&run).as_array().map(Vec::len), Some(1), "{run}");
    let run = flinger(&lab, &["list-agents", "--json", "--queue", "other"]).await;
    assert_eq!(json_of(&run), json!([]), "{run}");

    let run = flinger(&lab, &["agent-status", "fake-1"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "waiting\n"), "{run}");
    let run = flinger(&lab, &["agent-status", "fake-1", "--json"]).await;
    let agent = json_of(&run);
    assert_eq!(
        (agent["agent"].as_str(), agent["status"].as_str()),
        (Some("fake-1"), Some("waiting")),
        "{agent}"
    );
    let run = flinger(&lab, &["agent-status", "nobody"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("does not exist"), "{run}");

    let run = flinger(&lab, &["queue-status", "fake"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("Agents in queue: 1"), "{run}");
    assert!(run.stdout.contains("Available:       1"), "{run}");
    assert!(run.stdout.contains("Jobs completed:  1"), "the probe job: {run}");
    let run = flinger(&lab, &["queue-status", "fake", "--json", "--verbose"]).await;
    let q = json_of(&run);
    assert_eq!(q["agents"].as_array().map(Vec::len), Some(1), "{q}");
    assert_eq!(q["jobs_completed"].as_array().map(Vec::len), Some(1), "{q}");
    assert!(q["wait_times"].is_object(), "the probe job waited: {q}");
    let run = flinger(&lab, &["queue-status", "nobody-serves-this"]).await;
    assert_eq!(run.code, 2, "{run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_lists_what_was_submitted_from_here_and_refreshes_its_state() {
    let lab = fake_lab("cli-history").await;
    let file = job_file(&lab, "job.yaml", &passing_job());
    let mut ids = vec![];
    for _ in 0..2 {
        let run = flinger(&lab, &["submit", "-q", &file]).await;
        assert_eq!(run.code, 0, "{run}");
        ids.push(run.stdout.trim().to_owned());
    }
    let run = flinger(&lab, &["jobs"]).await;
    assert_eq!(run.code, 0, "{run}");
    for id in &ids {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(id.as_str()) && l.ends_with("fake")),
            "{run}"
        );
    }
    for id in &ids {
        lab.wait_done(id.parse().unwrap(), JOB_TIMEOUT).await;
    }
    let run = flinger(&lab, &["jobs", "--status", "--json"]).await;
    let jobs = json_of(&run);
    let listed: Vec<(&str, &str)> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_id"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        ids.iter().map(|i| (i.as_str(), "complete")).collect::<Vec<_>>(),
        "{run}"
    );
    // The history lives in the data directory, readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let path = lab.path("home/.local/share/flinger/jobs.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_shows_where_each_setting_came_from() {
    let home = tempfile::tempdir().unwrap();
    async fn run_in(home: &std::path::Path, args: Vec<&str>, env: Vec<(&str, &str)>) -> Run {
        let mut cmd = std::process::Command::new(bin("flinger"));
        isolate(&mut cmd, home);
        cmd.env_remove("FLINGER_SERVER").env_remove("TESTFLINGER_SERVER");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with(cmd, &args, None).await
    }
    let run_in = |args, env| run_in(home.path(), args, env);
    let run = run_in(vec!["config", "--json"], vec![]).await;
    let v = json_of(&run);
    assert_eq!(v["settings"]["server"]["source"], "default", "{v}");
    assert_eq!(v["settings"]["client_id"]["value"], Value::Null, "{v}");

    let run = run_in(vec!["config", "server=http://from-file:1"], vec![]).await;
    assert_eq!(run.code, 0, "{run}");
    let run = run_in(vec!["config", "--json"], vec![]).await;
    let v = json_of(&run);
    assert_eq!(
        (
            v["settings"]["server"]["value"].as_str(),
            v["settings"]["server"]["source"].as_str()
        ),
        (Some("http://from-file:1"), Some("file")),
        "{v}"
    );

    let run = run_in(
        vec!["config", "--json", "--client-id", "me"],
        vec![
            ("TESTFLINGER_SERVER", "http://from-env:1"),
            ("FLINGER_SECRET_KEY", "do-not-print-me"),
        ],
    )
    .await;
    let v = json_of(&run);
    let s = &v["settings"];
    assert_eq!(
        (s["server"]["source"].as_str(), s["server"]["from"].as_str()),
        (Some("env"), Some("$TESTFLINGER_SERVER")),
        "{v}"
    );
    assert_eq!(
        (
            s["client_id"]["value"].as_str(),
            s["client_id"]["source"].as_str()
        ),
        (Some("me"), Some("flag")),
        "{v}"
    );
    assert!(
        !run.stdout.contains("do-not-print-me"),
        "the secret key is shown: {run}"
    );

    let run = run_in(vec!["config", "--server", "http://from-flag:1"], vec![]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("server") && l.contains("http://from-flag:1") && l.contains("--server")),
        "{run}"
    );
    let run = run_in(vec!["config", "server"], vec![]).await;
    assert_eq!(run.stdout, "server = http://from-file:1\n", "{run}");
    let run = run_in(vec!["config", "sever=x"], vec![]).await;
    assert_eq!(run.code, 2, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_produce_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef flinger"),
        ("fish", "complete -c flinger"),
    ] {
        let run = run_with(
            std::process::Command::new(bin("flinger")),
            &["completions", shell],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "{shell}: {run}");
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..run.stdout.len().min(300)]
        );
        assert!(run.stdout.contains("list-agents"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_keeps_jobs_off_an_agent_until_it_is_back_waiting() {
    let mut lab = lab_with_admin("cli-maint").await;
    // Without a login, admin commands are refused with exit 6 and nothing is sent.
    let run = flinger(
        &lab,
        &[
            "admin",
            "set",
            "agent-status",
            "--status",
            "maintenance",
            "--agents",
            "fake-1",
        ],
    )
    .await;
    assert_eq!(run.code, 6, "{run}");
    assert!(run.stderr.contains("flinger login"), "{run}");

    let run = flinger(
        &lab,
        &["login", "--client-id", "admin", "--secret-key", ADMIN_SECRET],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        run.stdout, "Successfully authenticated as user 'admin'\n",
        "{run}"
    );
    use std::os::unix::fs::PermissionsExt;
    let login_file = lab.path("home/.local/share/flinger/login.json");
    assert_eq!(
        std::fs::metadata(&login_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let run = flinger(
        &lab,
        &[
            "admin",
            "set",
            "agent-status",
            "--status",
            "maintenance",
            "--agents",
            "fake-1",
            "--comment",
            "new cable",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "Agent fake-1 status is now: maintenance\n", "{run}");
    lab.wait_agent_state("fake-1", "maintenance").await;
    let run = flinger(&lab, &["list-agents", "--state", "maintenance"]).await;
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("fake-1") && l.contains("maintenance") && l.contains("new cable")),
        "{run}"
    );

    // A job for the queue waits: its only agent is in maintenance.
    let file = job_file(&lab, "job.yaml", &passing_job());
    let run = flinger(&lab, &["submit", "-q", &file]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("offline or in maintenance"), "{run}");
    let id: Uuid = run.stdout.trim().parse().unwrap();
    // It is still there for an agent that starts after it, and runs there.
    lab.add_agent(AgentSpec::fake("fake-spare", &["fake"])).await;
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["attempts"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(info["attempts"][0]["agent"], "fake-spare", "{info}");
    lab.agent("fake-spare").stop(Duration::from_secs(10));
    // The next one waits for fake-1.
    let run = flinger(&lab, &["submit", "-q", &file]).await;
    assert_eq!(run.code, 0, "{run}");
    let id: Uuid = run.stdout.trim().parse().unwrap();

    let run = flinger(
        &lab,
        &[
            "admin",
            "set",
            "agent-status",
            "--status",
            "waiting",
            "--agents",
            "fake-1",
            "nobody",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "one agent does not exist: {run}");
    assert!(
        run.stdout.contains("Agent fake-1 status is now: waiting"),
        "{run}"
    );
    assert!(run.stderr.contains("Agent nobody does not exist"), "{run}");
    assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_log_in_write_secrets_and_are_refused_what_their_role_does_not_allow() {
    let lab = lab_with_admin("cli-clients").await;
    let admin = ["--client-id", "admin", "--secret-key", ADMIN_SECRET];
    let run = flinger(
        &lab,
        &[
            &[
                "admin",
                "set",
                "client-permissions",
                "--testflinger-client-id",
                "alice",
                "--testflinger-client-secret",
                "alice-secret-0123456",
                "--role",
                "contributor",
                "--max-priority",
                "fake=10",
            ][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains("Created permissions for client 'alice'"),
        "{run}"
    );
    let run = flinger(
        &lab,
        &[
            &[
                "admin",
                "get",
                "client-permissions",
                "--testflinger-client-id",
                "alice",
            ][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    let alice = json_of(&run);
    assert_eq!(
        (alice["role"].as_str(), alice["max_priority"]["fake"].as_u64()),
        (Some("contributor"), Some(10)),
        "{alice}"
    );
    // Testflinger's spelling: the whole body with --json.
    let bob = r#"{"client_id": "bob", "client_secret": "bob-secret-0123456", "role": "manager"}"#;
    let run = flinger(
        &lab,
        &[
            &["admin", "set", "client-permissions", "--json", bob][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let run = flinger(
        &lab,
        &[
            &[
                "admin",
                "get",
                "client-permissions",
                "--testflinger-client-id",
                "bob",
            ][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(json_of(&run)["role"], "manager", "{run}");

    // Alice logs in; later commands use her stored login.
    let run = flinger(
        &lab,
        &[
            "login",
            "--client-id",
            "alice",
            "--secret-key",
            "alice-secret-0123456",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let run = flinger(&lab, &["secret", "write", "ci/token", "s3cr3t-value"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Secret 'ci/token' written successfully\n"),
        "{run}"
    );
    let run = flinger(&lab, &["secret", "delete", "ci/token"]).await;
    assert_eq!(run.code, 0, "{run}");
    let run = flinger(&lab, &["secret", "delete", "ci/token"]).await;
    assert_eq!(run.code, 2, "deleting it twice: {run}");
    // Her priority allows 10 on the queue, not more.
    let high = job_file(
        &lab,
        "high.json",
        &json!({"job_queue": "fake", "job_priority": 50}),
    );
    let run = flinger(&lab, &["submit", &high]).await;
    assert_eq!(run.code, 6, "{run}");
    let ok = job_file(&lab, "ok.json", &json!({"job_queue": "fake", "job_priority": 10}));
    let run = flinger(&lab, &["submit", "-q", &ok]).await;
    assert_eq!(run.code, 0, "{run}");
    // A contributor may not manage clients.
    let run = flinger(&lab, &["admin", "get", "client-permissions"]).await;
    assert_eq!(run.code, 6, "{run}");
    let run = flinger(&lab, &["config", "--json"]).await;
    assert_eq!(json_of(&run)["login"]["client_id"], "alice", "{run}");

    // Credentials given for another client win over the stored login.
    let run = flinger(
        &lab,
        &[
            &[
                "admin",
                "delete",
                "client-permissions",
                "--testflinger-client-id",
                "alice",
            ][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let run = flinger(
        &lab,
        &[
            "login",
            "--client-id",
            "alice",
            "--secret-key",
            "alice-secret-0123456",
        ],
    )
    .await;
    assert_eq!(run.code, 6, "a deleted client cannot log in: {run}");
    let run = flinger(&lab, &["logout"]).await;
    assert_eq!(run.code, 0, "{run}");
    let run = flinger(&lab, &["secret", "write", "x", "y"]).await;
    assert_eq!(run.code, 6, "no login any more: {run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_reach_the_agent_and_artifacts_come_back() {
    let mut lab = lab_with_admin("cli-blobs").await;
    let admin = ["--client-id", "admin", "--secret-key", ADMIN_SECRET];
    let run = flinger(
        &lab,
        &[
            &[
                "admin",
                "set",
                "client-permissions",
                "--testflinger-client-id",
                "agent-files",
                "--testflinger-client-secret",
                "agent-secret-0123456",
                "--role",
                "agent",
            ][..],
            &admin[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let test_cmd = "cat attachments/test/data/input.txt; cat attachments/test/renamed.txt; mkdir -p artifacts && echo made-by-the-test > artifacts/out.txt";
    let spec = AgentSpec::commands("files-1", &["files"], &[("test", test_cmd)]).with_yaml(&format!(
        "server_address: {}\nclient_id: agent-files\nclient_secret: agent-secret-0123456\n",
        lab.base
    ));
    lab.add_agent(spec).await;
    wait_routable(&lab, "files").await;

    // Attachments are relative to the job file's directory.
    let dir = lab.path("jobdir");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/input.txt"), "attached input\n").unwrap();
    std::fs::write(dir.join("other.txt"), "attached under another name\n").unwrap();
    let job = json!({
        "job_queue": "files",
        "test_data": {"test_cmds": "unused", "attachments": [{"local": "data/input.txt"}, {"local": "other.txt", "agent": "renamed.txt"}]},
    });
    let file = dir.join("job.yaml");
    std::fs::write(&file, as_yaml(&job)).unwrap();
    let run = flinger(&lab, &["submit", "--poll", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    assert!(run.stdout.contains("attached input"), "{run}");
    assert!(run.stdout.contains("attached under another name"), "{run}");
    let id = job_id_line(&run.stdout).to_string();
    // The job as stored says where the agent finds the files, not where they were.
    let run = flinger(&lab, &["show", "--json", &id]).await;
    assert_eq!(
        json_of(&run)["job"]["test_data"]["attachments"],
        json!([{"agent": "data/input.txt"}, {"agent": "renamed.txt"}]),
        "{run}"
    );

    let target = lab.path("out.tgz");
    let run = flinger(&lab, &["artifacts", &id, "--filename", target.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("Artifacts downloaded to"), "{run}");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&target).unwrap(),
    ));
    let mut found = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("out.txt") {
            std::io::Read::read_to_string(&mut entry, &mut found).unwrap();
        }
    }
    assert_eq!(found, "made-by-the-test\n");

    // A job file elsewhere: `--attachments-relative-to` says where relative paths start.
    let elsewhere = lab.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = elsewhere.join("job.yaml");
    std::fs::write(&moved, as_yaml(&job)).unwrap();
    let moved = moved.to_str().unwrap();
    let run = flinger(&lab, &["submit", moved]).await;
    assert_eq!(run.code, 2, "relative to the job file's directory: {run}");
    assert!(run.stderr.contains("input.txt"), "{run}");
    let run = flinger(
        &lab,
        &[
            "submit",
            "--poll",
            "--attachments-relative-to",
            dir.to_str().unwrap(),
            moved,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    assert!(run.stdout.contains("attached input"), "{run}");
    assert!(run.stdout.contains("attached under another name"), "{run}");
    // The same from stdin, whose relative paths otherwise start at the current directory.
    let mut cmd = cli(&lab);
    cmd.current_dir(&elsewhere);
    let run = run_with(
        cmd,
        &[
            "submit",
            "-q",
            "--attachments-relative-to",
            dir.to_str().unwrap(),
            "-",
        ],
        Some(&as_yaml(&job)),
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let id: Uuid = run.stdout.trim().parse().unwrap();
    assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    assert!(lab.output(id).await.contains("attached input"));

    // A missing attachment stops the submission before anything is sent.
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        as_yaml(&json!({"job_queue": "files", "test_data": {"attachments": [{"local": "missing.txt"}]}})),
    )
    .unwrap();
    let run = flinger(&lab, &["submit", broken.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("missing.txt"), "{run}");
    // A job without artifacts has none to download.
    let plain = lab.submit(&json!({"job_queue": "fake"})).await;
    lab.wait_done(plain, JOB_TIMEOUT).await;
    let run = flinger(
        &lab,
        &[
            "artifacts",
            &plain.to_string(),
            "--filename",
            lab.path("none.tgz").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("no artifacts"), "{run}");
    lab.stop().await;
}

/// Runs the CLI on a pseudo-terminal (util-linux `script`), typing `answers` into it; returns
/// what the terminal showed (stdout and stderr together, answers echoed).
async fn on_a_terminal(lab: &Lab, args: &[&str], answers: &str) -> Run {
    on_a_terminal_with(lab, args, answers, &[]).await
}

/// [`on_a_terminal`], with environment variables changed (`None` removes one).
async fn on_a_terminal_with(lab: &Lab, args: &[&str], answers: &str, env: &[(&str, Option<&str>)]) -> Run {
    let mut line = shell_quote(&bin("flinger").display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    // `script` gets the environment the CLI would have had.
    let mut cmd = std::process::Command::new("script");
    for (k, v) in cli(lab).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    run_with(cmd, &["-qec", &line, "/dev/null"], Some(answers)).await
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_asks_for_what_is_missing_on_a_terminal() {
    let lab = fake_lab("cli-ask").await;
    let run = on_a_terminal(&lab, &["reserve", "--dry-run"], "fake\nlp:alice, gh:bob\n").await;
    assert_eq!(run.code, 0, "{run}");
    let screen = &run.stdout.replace("\r\n", "\n");
    // It lists the queues, then asks for one, then for keys.
    let queues = screen.find("Queues:").unwrap_or_else(|| panic!("{run}"));
    let asked_queue = screen.find("Queue: ").unwrap_or_else(|| panic!("{run}"));
    let asked_keys = screen.find("SSH keys").unwrap_or_else(|| panic!("{run}"));
    assert!(queues < asked_queue && asked_queue < asked_keys, "{run}");
    assert!(screen[queues..asked_queue].contains("fake"), "{run}");
    let start = screen[asked_keys..]
        .find('{')
        .map(|i| i + asked_keys)
        .unwrap_or_else(|| panic!("{run}"));
    let job: Value = serde_json::from_str(&screen[start..]).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(
        job,
        json!({"job_queue": "fake", "reserve_data": {"ssh_keys": ["lp:alice", "gh:bob"], "timeout": 3600}})
    );
    // Without a terminal it asks nothing and says what is missing.
    let run = run_with(cli(&lab), &["reserve", "--dry-run"], Some("fake\n")).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--queue"), "{run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_on_a_terminal_keeps_a_status_line_with_the_queue_position() {
    let lab = fake_lab("cli-tty").await;
    let busy = lab
        .submit(&json!({"job_queue": "fake", "test_data": {"test_cmds": "x", "fake": {"duration": "4s"}}}))
        .await;
    lab.wait_state(busy, &["test"], JOB_TIMEOUT).await;
    let queued = lab
        .submit(&json!({"job_queue": "fake", "test_data": {"test_cmds": "x", "fake": {"output": ["queued job ran"]}}}))
        .await;
    let id = queued.to_string();
    let run = on_a_terminal(&lab, &["poll", &id], "").await;
    assert_eq!(run.code, 0, "{run}");
    let screen = run.stdout.replace("\r\n", "\n");
    // The status line while the job waits: where, how long, which place in the queue.
    assert!(screen.contains("waiting on fake"), "{screen}");
    assert!(screen.contains("next in line"), "{screen}");
    assert!(screen.contains("(total "), "{screen}");
    // With a finished job of the queue (the probe) and an agent serving it, the server
    // estimates the start: the status line shows it.
    assert!(screen.contains("· ETA "), "{screen}");
    assert!(screen.contains("queued job ran"), "{screen}");
    // Piped, the same command prints the output and no status line.
    let run = flinger(&lab, &["poll", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("queued job ran"), "{run}");
    assert!(
        !run.stderr.contains("next in line") && !run.stderr.contains('\x1b'),
        "{run}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outcome_is_coloured_on_a_terminal_unless_no_color() {
    let lab = fake_lab("cli-colour").await;
    let id = lab.submit(&passing_job()).await;
    lab.wait_done(id, JOB_TIMEOUT).await;
    let id = id.to_string();
    let coloured = format!("\x1b[1;32mJob {id} complete.\x1b[0m");
    let colour_on = [("NO_COLOR", None), ("TERM", Some("xterm"))];
    let run = on_a_terminal_with(&lab, &["poll", &id], "", &colour_on).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains(&coloured), "{run:?}", run = run.stdout);
    // NO_COLOR, or a dumb terminal: the same words, no colour.
    for env in [
        [("NO_COLOR", Some("1")), ("TERM", Some("xterm"))],
        [("NO_COLOR", None), ("TERM", Some("dumb"))],
    ] {
        let run = on_a_terminal_with(&lab, &["poll", &id], "", &env).await;
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains(&format!("Job {id} complete.")), "{run}");
        assert!(!run.stdout.contains("\x1b[1;32m"), "{env:?}: {:?}", run.stdout);
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_on_a_terminal_asks_confirms_and_prints_how_to_connect() {
    let mut lab = Lab::builder().name("cli-reserve-tty").start().await;
    let authorized = lab.path("device-authorized_keys");
    let spec = AgentSpec::fake_with(
        "r1",
        &["res"],
        &format!("device_ip: 10.1.2.3\nauthorized_keys: {}", authorized.display()),
    );
    lab.add_agent(spec).await;
    wait_routable(&lab, "res").await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITty tty@laptop";
    // The queue, the keys, then the confirmation (empty: yes).
    let answers = format!("res\n{key}\n\n");
    let run = on_a_terminal(&lab, &["reserve", "--timeout", "120"], &answers).await;
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    let screen = run.stdout.replace("\r\n", "\n");
    let order = [
        "Queue: ",
        "SSH keys",
        "Proceed? (Y/n)",
        "Job submitted successfully!",
        "Connect with: ssh ubuntu@10.1.2.3",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|s| screen.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{screen}")))
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?} at {at:?}\n{screen}"
    );
    let installed = std::fs::read_to_string(&authorized).unwrap_or_default();
    assert!(installed.contains("AAAAC3NzaC1lZDI1NTE5AAAAITty"), "{installed}");
    let id = job_id_line(&screen);
    assert_eq!(lab.info(id).await.unwrap()["state"], "reserve");
    assert_eq!(lab.cancel(id).await, 200);
    lab.wait_done(id, JOB_TIMEOUT).await;

    // Answering no submits nothing.
    let before = flinger(&lab, &["jobs", "--json"]).await;
    let run = on_a_terminal(&lab, &["reserve", "-q", "res", "-k", key], "n\n").await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("Not submitted."), "{run}");
    let after = flinger(&lab, &["jobs", "--json"]).await;
    assert_eq!(json_of(&before), json_of(&after), "a job was submitted");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_serial_follows_the_serial_log() {
    // Flinger's connectors write no serial log; an agent that has one posts it over HTTP, as a
    // Testflinger agent does (anonymously here).
    let lab = Lab::builder()
        .name("cli-serial")
        .gateway_env("FLINGER_ALLOW_ANONYMOUS_AGENTS", "true")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    wait_routable(&lab, "fake").await;
    let id = lab
        .submit(&json!({
            "job_queue": "fake",
            "provision_data": {"distro": "noble"},
            "test_data": {"test_cmds": "x", "fake": {"duration": "3s", "output": ["on the output stream"]}},
        }))
        .await;
    lab.wait_state(id, &["test"], JOB_TIMEOUT).await;
    for (n, phase, text) in [
        (0, "provision", "serial: booting\n"),
        (1, "test", "serial: login:\n"),
    ] {
        let r = lab
            .http
            .post(lab.url(&format!("/v1/result/{id}/log/serial")))
            .json(&json!({"fragment_number": n, "timestamp": "2026-01-01T00:00:00Z", "phase": phase, "log_data": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    }
    let id = id.to_string();
    // Followed until the job ends: the serial log, exactly, in phase order.
    let run = flinger(&lab, &["poll-serial", &id]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "serial: booting\nserial: login:\n", "{run}");
    assert!(run.stderr.contains("complete."), "{run}");
    let run = flinger(&lab, &["poll-serial", "--oneshot", "--phase", "test", &id]).await;
    assert_eq!(run.stdout, "serial: login:\n", "{run}");
    let run = flinger(&lab, &["poll-serial", "--json", &id]).await;
    assert_eq!(
        json_of(&run)["serial"]["provision"]["log_data"],
        "serial: booting\n",
        "{run}"
    );
    // The output stream is another log.
    let run = flinger(&lab, &["poll", &id]).await;
    assert!(
        run.stdout.contains("on the output stream") && !run.stdout.contains("serial:"),
        "{run}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_with_a_phase_stops_when_that_phase_ends() {
    let lab = fake_lab("cli-phase").await;
    let id = lab
        .submit(&json!({
            "job_queue": "fake",
            "provision_data": {"distro": "noble", "fake": {"output": ["image written"]}},
            "test_data": {"test_cmds": "x", "fake": {"output": ["test running"], "hang": true}},
        }))
        .await;
    let run = flinger(&lab, &["poll", "--phase", "provision", &id.to_string()]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("image written"), "{run}");
    assert!(!run.stdout.contains("test running"), "{run}");
    assert!(
        run.stderr
            .contains("Phase 'provision' completed with exit code: 0"),
        "{run}"
    );
    assert!(run.stderr.contains("--start_fragment"), "{run}");
    // The job goes on.
    assert!(!matches!(
        lab.info(id).await.unwrap()["state"].as_str(),
        Some("complete" | "cancelled" | "failed")
    ));
    assert_eq!(lab.cancel(id).await, 200);
    lab.wait_done(id, JOB_TIMEOUT).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_waits_for_an_agent_when_no_agent_serves_the_queue_yet() {
    let mut lab = Lab::builder().name("cli-wait-agent").start().await;
    let file = job_file(&lab, "job.yaml", &passing_job_on("later"));
    // Without the flag, refused at once.
    let run = flinger(&lab, &["submit", &file]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("no agent serves queue \"later\""), "{run}");

    let stderr_path = lab.path("wait.stderr");
    let mut cmd = cli(&lab);
    cmd.args(["submit", "--poll", "--wait-for-available-agents", &file])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("flinger runs");
    flinger_tests::eventually(JOB_TIMEOUT, "the CLI to wait for an agent", || {
        let path = stderr_path.clone();
        async move {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| t.contains("Waiting for an agent on queue \"later\""))
        }
    })
    .await;
    lab.add_agent(AgentSpec::fake("late-1", &["later"])).await;
    let out = tokio::time::timeout(JOB_TIMEOUT, child.wait_with_output())
        .await
        .expect("the job ends once the agent is there")
        .unwrap();
    let run = Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    };
    assert_eq!(run.code, 0, "{run}\n{}", lab.logs());
    assert!(run.stdout.contains("hello from the fake device"), "{run}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_agents_filters_as_ours_and_testflinger_spell_them() {
    let lab = Lab::builder()
        .name("cli-agents")
        .agent(AgentSpec::fake("audino", &["q1"]).with_yaml("location: TXR3-DH1\nprovision_type: maas2"))
        .agent(AgentSpec::fake("petilil", &["q2"]).with_yaml("location: lab-b\nprovision_type: noprovision"))
        .start()
        .await;
    let names = |run: &Run| -> Vec<String> {
        let v = json_of(run);
        v.as_array()
            .unwrap_or_else(|| panic!("{run}"))
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let run = flinger(&lab, &["list-agents", "--json", "--location", "TXR3-DH1"]).await;
    assert_eq!(names(&run), ["audino"], "{run}");
    let run = flinger(
        &lab,
        &["list-agents", "--json", "--provision-type", "noprovision"],
    )
    .await;
    assert_eq!(names(&run), ["petilil"], "{run}");
    let run = flinger(&lab, &["list-agents", "--json", "--location", "DH1"]).await;
    assert_eq!(names(&run), Vec::<String>::new(), "--location is exact: {run}");

    // Testflinger's filters are regular expressions; -1 lists names for scripts.
    let one = |args: &'static [&'static str]| {
        let lab = &lab;
        async move {
            let run = flinger(lab, args).await;
            assert_eq!(run.code, 0, "{run}");
            run.stdout
        }
    };
    assert_eq!(
        one(&["list-agents", "-1", "--filter-location", "DH1"]).await,
        "audino\n"
    );
    assert_eq!(
        one(&["list-agents", "-1", "--filter-queue", "q1|q2"]).await,
        "audino\npetilil\n"
    );
    assert_eq!(
        one(&["list-agents", "-1", "--filter-provision-type", "^no"]).await,
        "petilil\n"
    );
    assert_eq!(
        one(&["list-agents", "-1", "--filter-name", "^pet"]).await,
        "petilil\n"
    );
    assert_eq!(
        one(&["list-agents", "-1", "--filter-status", "online,^waiting"]).await,
        ""
    );
    assert_eq!(
        one(&["list-agents", "-1", "--filter-status", "offline"]).await,
        ""
    );
    let summary = one(&["list-agents", "--summary"]).await;
    assert!(
        summary.starts_with("Online:           2\n  waiting         2\nOffline:          0"),
        "{summary}"
    );
    let table = one(&["list-agents", "--fields", "name,provision_type"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PROVISION", "TYPE"],
        "{table}"
    );
    assert!(
        lines[1].starts_with("audino") && lines[1].ends_with("maas2"),
        "{table}"
    );
    let run = flinger(&lab, &["list-agents", "--filter-name", "(unclosed"]).await;
    assert_eq!(run.code, 2, "{run}");
    lab.stop().await;
}
