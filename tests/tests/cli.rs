//! The `flinger` CLI, run as a user runs it, against a real lab: what it prints on stdout and
//! stderr, and the exit codes scripts rely on (docs/cli.md).

use flinger_tests::{AgentSpec, Lab, bin};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished CLI run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the CLI with `args` (and `stdin`, if given) and waits for it, bounded.
async fn run_with(mut cmd: std::process::Command, args: &[&str], stdin: Option<&str>) -> Run {
    use tokio::io::AsyncWriteExt;
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("flinger runs");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(JOB_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("flinger {args:?} did not finish in {JOB_TIMEOUT:?}"))
        .expect("flinger output");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn flinger(lab: &Lab, args: &[&str]) -> Run {
    run_with(lab.cli(), args, None).await
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
    json!({
        "job_queue": "fake",
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
    let run = run_with(lab.cli(), &["submit", "-q", "-"], Some(yaml)).await;
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
    // The agent declared the queue, then went away: the job waits.
    let mut lab = fake_lab("cli-wait").await;
    lab.agent("fake-1").stop(Duration::from_secs(10));
    let file = job_file(
        &lab,
        "job.yaml",
        &json!({"job_queue": "fake", "tags": ["cli"], "test_data": {"test_cmds": "echo never"}}),
    );
    let run = flinger(&lab, &["submit", "-q", &file]).await;
    assert_eq!(run.code, 0, "{run}");
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
    let mut cmd = std::process::Command::new(bin("flinger"));
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
    cmd.env_remove("FLINGER_SERVER")
        .env("TESTFLINGER_SERVER", &lab.base)
        .env("XDG_CONFIG_HOME", lab.path("no-config"));
    let file = job_file(&lab, "job.yaml", &passing_job());
    let run = run_with(cmd, &["submit", "-q", &file], None).await;
    assert_eq!(run.code, 0, "{run}");
    lab.stop().await;
}
