//! Following a job with `flinger poll`, as a new user does it: the ETA it prints while the job
//! waits (the API's estimate, `flinger_api::eta`), and the order of output and state lines.
//!
//! Time bounds here are derived from the jobs' own recorded durations and start times, never
//! from how fast the machine is.

use broker_schema::Millis;
use broker_schema::Phase;
use broker_schema::messages::{JobEventKind, OutputCounts};
use flinger_tests::agent_double::AgentDouble;
use flinger_tests::{AgentSpec, Lab, eventually};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Starts the CLI with stdout and stderr into one file, as a terminal shows them, so that the
/// order of output lines and status lines can be checked. The file's path comes with it.
fn spawn_merged(lab: &Lab, args: &[&str]) -> (tokio::process::Child, std::path::PathBuf) {
    let path = lab.path(&format!("merged-{}.txt", Uuid::new_v4().simple()));
    let file = std::fs::File::create(&path).expect("output file");
    let mut cmd = lab.cli();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("file"))
        .stderr(file);
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("flinger runs");
    (child, path)
}

/// Waits for a CLI started by [`spawn_merged`] to end: its exit code and what it printed.
async fn ended(args: &[&str], mut child: tokio::process::Child, path: &std::path::Path) -> (i32, String) {
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            panic!("flinger {args:?} did not finish in {TIMEOUT:?}:\n{text}")
        })
        .expect("flinger exits");
    let text = std::fs::read_to_string(path).expect("output");
    (status.code().expect("exited"), text)
}

/// Runs the CLI to its end with stdout and stderr into one file ([`spawn_merged`]).
async fn merged(lab: &Lab, args: &[&str]) -> (i32, String) {
    let (child, path) = spawn_merged(lab, args);
    ended(args, child, &path).await
}

/// Submits `job` once its queue is routable (an agent declared it).
async fn first_job(lab: &Lab, job: &Value) -> Uuid {
    eventually(
        Duration::from_secs(30),
        "the queue to be routable",
        || async move {
            let (status, body) = lab.post_job(job).await;
            (status == 200)
                .then(|| body["job_id"].as_str().and_then(|s| s.parse().ok()))
                .flatten()
        },
    )
    .await
}

fn at(info: &Value, field: &str) -> Millis {
    info[field]
        .as_str()
        .and_then(Millis::parse_rfc3339)
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

/// A finished job's run, from lease to end, in seconds.
async fn duration(lab: &Lab, id: Uuid) -> f64 {
    let info = lab.wait_done(id, TIMEOUT).await;
    at(&info, "ended_at").since(at(&info, "started_at")).as_secs_f64()
}

async fn started(lab: &Lab, id: Uuid) -> Millis {
    at(&lab.wait_state(id, &["test"], TIMEOUT).await, "started_at")
}

async fn estimate(lab: &Lab, id: Uuid) -> Value {
    let r = lab
        .http
        .get(lab.url(&format!("/v1/job/{id}/estimate")))
        .send()
        .await
        .expect("GET estimate");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("estimate body")
}

fn fake_job(duration: &str) -> Value {
    json!({"job_queue": "local", "test_data": {"test_cmds": "x", "fake": {"duration": duration}}})
}

/// Waits until every job of `starts` has run longer than `secs`.
async fn run_longer_than(starts: &[Millis], secs: f64) {
    eventually(
        TIMEOUT,
        "the running jobs to outlast the recent runs",
        || async move {
            let now = Millis::now();
            starts
                .iter()
                .all(|s| now.since(*s).as_secs_f64() > secs)
                .then_some(())
        },
    )
    .await
}

/// The seconds of "Estimated start in Ns." on the line that says the job is next in line.
fn eta_printed(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("Next in line on queue local."))
        .unwrap_or_else(|| panic!("no position line in {text}"));
    line.split("Estimated start in ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("s."))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ETA in seconds in {line:?}"))
}

fn spread(d: &[f64]) -> (f64, f64) {
    let min = d.iter().copied().fold(f64::INFINITY, f64::min);
    let max = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The reported case — both `local` agents a moment into long jobs, the next job "estimated to
/// start in 0s" — and its honest answers: unknown while the running jobs have outrun every
/// recent run, then the recent runs' time minus what the running jobs have already run.
#[tokio::test(flavor = "multi_thread")]
async fn estimates_count_the_running_jobs_elapsed_time_or_say_unknown() {
    let lab = Lab::builder()
        .name("eta")
        .agent(AgentSpec::fake("local-1", &["local"]))
        .agent(AgentSpec::fake("local-2", &["local"]))
        .start()
        .await;
    // The queue's history: quick jobs only.
    let quick = fake_job("0s");
    let q1 = first_job(&lab, &quick).await;
    let q2 = lab.submit(&quick).await;
    let mut quick_runs = vec![duration(&lab, q1).await, duration(&lab, q2).await];

    // Both agents in long jobs that have run longer than any recent run: no honest figure.
    let long = fake_job("10s");
    let (l1, l2) = (lab.submit(&long).await, lab.submit(&long).await);
    let starts = [started(&lab, l1).await, started(&lab, l2).await];
    run_longer_than(&starts, spread(&quick_runs).1).await;
    let w1 = lab.submit(&quick).await;
    let e = estimate(&lab, w1).await;
    assert_eq!(e["position"], 0, "{e}");
    assert_eq!(e["agents_available"], 2, "{e}");
    assert_eq!(e["agents_busy"], 2, "{e}");
    assert_eq!(e["eta_seconds"], Value::Null, "not 0 s: {e}");
    assert_eq!(e["unknown"], "overrun", "{e}");
    let (code, text) = merged(&lab, &["poll", &w1.to_string()]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Next in line on queue local. Estimated start unknown: the running jobs have run longer than any recent job of their queue."),
        "{text}"
    );
    let long_runs = vec![duration(&lab, l1).await, duration(&lab, l2).await];
    quick_runs.push(duration(&lab, w1).await);

    // Again both agents in long jobs, past the quick runs: now the long runs say how long.
    let (l3, l4) = (lab.submit(&long).await, lab.submit(&long).await);
    let starts = [started(&lab, l3).await, started(&lab, l4).await];
    let first_started = *starts.iter().min().expect("two");
    run_longer_than(&starts, spread(&quick_runs).1).await;
    let submitted = Millis::now();
    let w2 = lab.submit(&quick).await;
    let w2_id = w2.to_string();
    let args = ["poll", w2_id.as_str()];
    let follow = merged(&lab, &args);
    let asked = async {
        let before = Millis::now();
        let e = estimate(&lab, w2).await;
        (before, Millis::now(), e)
    };
    let ((code, text), (before, after, e)) = tokio::join!(follow, asked);
    assert_eq!(code, 0, "{text}");
    let eta = e["eta_seconds"].as_f64().unwrap_or_else(|| panic!("an ETA: {e}"));
    assert_eq!(e["unknown"], Value::Null, "{e}");
    assert_eq!(e["recent_runs"], 5, "{e}");

    // The job starts when the first running job ends: the earliest started one ends, by the
    // recent long runs, between their shortest and their longest after its start. Asked at a
    // moment between `before` and `after`, the ETA is that, minus what it has run (±0.5 s of
    // rounding).
    let (shortest, longest) = spread(&long_runs);
    let ran_before = before.since(first_started).as_secs_f64();
    let ran_after = after.since(first_started).as_secs_f64();
    assert!(
        eta >= shortest - ran_after - 0.5 && eta <= longest - ran_before + 0.5,
        "ETA {eta} s with the first job {ran_before:.1}…{ran_after:.1} s into runs of {long_runs:?}: {e}"
    );
    // And it lands near the truth: the first of the running jobs to end ended within the
    // spread of all the long runs of when the estimate said.
    let all_long = [
        long_runs.clone(),
        vec![duration(&lab, l3).await, duration(&lab, l4).await],
    ]
    .concat();
    let ends = [
        at(&lab.wait_done(l3, TIMEOUT).await, "ended_at"),
        at(&lab.wait_done(l4, TIMEOUT).await, "ended_at"),
    ];
    let first_end = *ends.iter().min().expect("two");
    let said = before.plus(Duration::from_secs_f64(eta));
    let off = (said.0 - first_end.0).abs() as f64 / 1000.0;
    let (lo, hi) = spread(&all_long);
    assert!(
        off <= hi - lo + 0.5 + after.since(before).as_secs_f64(),
        "estimated start {off:.1} s off the first free agent; runs {all_long:?}"
    );
    // The CLI printed the same estimator's answer, asked after the job was submitted and
    // before it started.
    let w2_started = at(&lab.wait_done(w2, TIMEOUT).await, "started_at");
    let printed = eta_printed(&text);
    assert!(
        printed >= shortest - w2_started.since(first_started).as_secs_f64() - 0.5
            && printed <= longest - submitted.since(first_started).as_secs_f64() + 0.5,
        "printed {printed} s; runs {long_runs:?}\n{text}"
    );
    lab.stop().await;
}

/// In the reported run "Job in cleanup" came before the test phase's last line: a phase's
/// output is now shown before the next phase's state line.
#[tokio::test(flavor = "multi_thread")]
async fn poll_shows_a_phase_output_before_the_next_phase_line() {
    let lab = Lab::builder()
        .name("poll-order")
        .agent(AgentSpec::commands(
            "order-1",
            &["order"],
            &[
                // The last line is printed right before the phase exits.
                (
                    "test",
                    "for i in 1 2 3 4 5 6; do echo test line $i; sleep 0.2; done; echo the last test line",
                ),
                ("cleanup", "sleep 1; echo cleaning up"),
            ],
        ))
        .start()
        .await;
    let id = first_job(
        &lab,
        &json!({"job_queue": "order", "test_data": {"test_cmds": "x"}}),
    )
    .await;
    let (code, text) = merged(&lab, &["poll", &id.to_string()]).await;
    assert_eq!(code, 0, "{text}");
    let find = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{text}"));
    assert!(
        find("Job in test on agent order-1.") < find("test line 1"),
        "{text}"
    );
    assert!(
        find("the last test line") < find("Job in cleanup on agent order-1."),
        "{text}"
    );
    assert!(
        find("Job in cleanup on agent order-1.") < find("cleaning up"),
        "{text}"
    );
    lab.stop().await;
}

/// The scheduler stores output and states from two queues, so the record can reach the next
/// phase before the previous phase's last line is stored. Here an agent double sends the move
/// to cleanup before the test phase's last line, and holds that line back until `flinger poll`
/// has read the record at cleanup (its `--debug` lines show each read): the line still comes
/// before "Job in cleanup", since the move says how much output came before it.
#[tokio::test(flavor = "multi_thread")]
async fn poll_waits_for_the_output_shipped_before_a_phase_move() {
    // The double does not renew its lease: a lease that outlasts the test.
    let lab = Lab::builder()
        .name("poll-late")
        .scheduler_arg("--lease-secs", "300")
        .start()
        .await;
    let agent = AgentDouble::start(&lab.broker_url, &lab.names, "poll-late").await;
    let id = lab
        .submit(&json!({"job_queue": "poll-late", "test_data": {"test_cmds": "x"}}))
        .await;
    let grant = agent.lease_next().await;
    agent.phase_started(&grant, Phase::Test, 0).await;
    agent.output(&grant, 0, Phase::Test, "test line 1\n").await;
    let args = ["--debug", "poll", &id.to_string()].map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, path) = spawn_merged(&lab, &args);
    let printed = || std::fs::read_to_string(&path).unwrap_or_default();
    eventually(TIMEOUT, "the first test line printed", || async {
        printed().contains("test line 1").then_some(())
    })
    .await;
    // The move to cleanup, two chunks in, before the second chunk.
    agent.phase_started(&grant, Phase::Cleanup, 2).await;
    lab.wait_state(id, &["cleanup"], TIMEOUT).await;
    // Three more reads of the record: the last two began after it said cleanup, and the CLI
    // decided what to print of the first of them before it asked again.
    let reads = |text: &str| text.matches("/info →").count();
    let before = reads(&printed());
    eventually(TIMEOUT, "the CLI to read the record at cleanup", || async {
        (reads(&printed()) >= before + 3).then_some(())
    })
    .await;
    agent.output(&grant, 1, Phase::Test, "the last test line\n").await;
    agent.output(&grant, 2, Phase::Cleanup, "cleaning up\n").await;
    agent
        .report_after(
            &grant,
            JobEventKind::PhaseFinished {
                phase: Phase::Cleanup,
                exit_code: 0,
                detail: None,
            },
            Some(OutputCounts { output: 3, serial: 0 }),
        )
        .await;
    agent
        .finished_complete(&grant, 3, &[Phase::Test, Phase::Cleanup])
        .await;
    let (code, text) = ended(&args, child, &path).await;
    assert_eq!(code, 0, "{text}");
    let find = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{text}"));
    let agent_name = agent.name.to_string();
    let cleanup = format!("Job in cleanup on agent {agent_name}.");
    assert!(find("test line 1") < find("the last test line"), "{text}");
    assert!(find("the last test line") < find(&cleanup), "{text}");
    assert!(find(&cleanup) < find("cleaning up"), "{text}");
    agent.stop().await;
    lab.stop().await;
}
