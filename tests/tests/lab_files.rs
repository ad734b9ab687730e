//! A job's files on the lab as `scripts/lab` starts it (the harness sets the schedulers up the
//! same way: `--gateway-url` and the gateway's token key): agents with no API client of their
//! own fetch attachments and upload artifacts with the credential their lease grant carries;
//! an artifact upload that fails is visible to the submitter; and a job with attachments waits
//! for an agent that can fetch them.

use flinger_tests::{AgentSpec, Lab, eventually};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use uuid::Uuid;

const DONE: Duration = Duration::from_secs(90);

/// Runs the `flinger` CLI pointed at `lab` with `args`; (exit code, stdout, stderr).
async fn flinger(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let mut cmd = lab.cli();
    cmd.args(args).stdin(Stdio::null());
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .expect("flinger runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Submits `job` until its queue is routable (an agent binds it a moment after it shows as
/// waiting); the job's id.
async fn submit_when_routable(lab: &Lab, job: &Value) -> Uuid {
    eventually(
        Duration::from_secs(20),
        "the queue to be routable",
        || async move {
            let (status, body) = lab.post_job(job).await;
            (status == 200)
                .then(|| body["job_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()))
                .flatten()
        },
    )
    .await
}

/// An agent as `scripts/lab-configs/local-1.yaml` (without a `server_address`): its test phase
/// runs the job's `test_cmds` on this host.
fn local_agent(name: &str, queue: &str) -> AgentSpec {
    AgentSpec::commands(name, &[queue], &[("test", "flinger-agent run-test-cmds")])
}

/// A tar.gz with `test/<path>` entries, as the CLI packs attachments.
fn attachments_archive(files: &[(&str, &str)]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, format!("test/{path}"), text.as_bytes())
                .unwrap();
        }
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}

async fn upload_attachments(lab: &Lab, id: Uuid, files: &[(&str, &str)]) {
    let r = lab
        .http
        .post(lab.url(&format!("/v1/job/{id}/attachments")))
        .body(attachments_archive(files))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// The files of a tar.gz: (path, contents).
fn unpack(archive: &std::path::Path) -> Vec<(String, String)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(archive).unwrap(),
    ));
    let mut files = vec![];
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.push((path, text));
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_a_client_fetches_attachments_and_its_artifacts_come_back_with_the_cli() {
    // As scripts/lab's local agents: no server_address, no client (only the lease grant's
    // files credential), and the job's own test commands run by `flinger-agent run-test-cmds`.
    // The run outlasts the grant's token (the harness's leases last 4 s; the gateway allows 5 s
    // of leeway): the upload at its end needs the fresh token a renewal brought.
    let test_cmds = "cat attachments/test/data/input.txt\nsleep 15\nmkdir -p artifacts/logs\n\
                     cp attachments/test/data/input.txt artifacts/\necho made-by-the-test > artifacts/logs/out.txt";
    let lab = Lab::builder()
        .name("files-grant")
        .agent(local_agent("files-1", "filesq"))
        .start()
        .await;
    let id = submit_when_routable(
        &lab,
        &json!({"job_queue": "filesq", "test_data": {"test_cmds": test_cmds, "attachments": [{"agent": "data/input.txt"}]}}),
    )
    .await;
    upload_attachments(&lab, id, &[("data/input.txt", "attached input\n")]).await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["job_state"], "complete", "{info}\n{}", lab.log_tails(30));
    assert!(info["failure"].is_null(), "{info}");
    let output = lab.output(id).await;
    assert!(
        output.contains("attached input"),
        "the test phase read the attachment: {output}"
    );

    let target = lab.path("artifacts.tgz");
    let (code, stdout, stderr) = flinger(
        &lab,
        &[
            "artifacts",
            &id.to_string(),
            "--filename",
            target.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let files = unpack(&target);
    assert!(
        files.contains(&("artifacts/logs/out.txt".into(), "made-by-the-test\n".into())),
        "{files:?}"
    );
    assert!(
        files.contains(&("artifacts/input.txt".into(), "attached input\n".into())),
        "{files:?}"
    );

    // The credential serves that job's files only: no other read, and not once the job ended.
    let grant_only = lab
        .http
        .get(lab.url(&format!("/v1/job/{id}/attachments")))
        .send()
        .await
        .unwrap();
    assert_eq!(grant_only.status(), 401, "attachments are for agents");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_upload_the_gateway_refuses_shows_in_the_results_and_the_output() {
    // The gateway takes artifacts of at most 64 bytes: this job's are bigger.
    let test_cmds = "mkdir -p artifacts\nhead -c 100000 /dev/urandom > artifacts/big.bin\necho tested";
    let lab = Lab::builder()
        .name("files-refused")
        .gateway_env("FLINGER_MAX_ARTIFACT_BYTES", "64")
        .agent(local_agent("files-2", "refusedq"))
        .start()
        .await;
    let id = submit_when_routable(
        &lab,
        &json!({"job_queue": "refusedq", "test_data": {"test_cmds": test_cmds}}),
    )
    .await;
    let info = lab.wait_done(id, DONE).await;
    // Every phase passed, yet the job does not end `complete` as if nothing was lost.
    assert_eq!(info["state"], "failed", "{info}\n{}", lab.log_tails(30));
    assert_eq!(info["failure"]["kind"], "artifacts_lost", "{info}");
    let reason = info["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("413"),
        "the reason says what the gateway answered: {reason}"
    );
    let results = lab.results(id).await;
    assert_eq!(results["failure"]["kind"], "artifacts_lost", "{results}");
    assert_eq!(results["test_status"], 0, "{results}");
    let output = lab.output(id).await;
    assert!(output.contains("tested"), "{output}");
    assert!(
        output.contains("the job's artifacts were not saved"),
        "the submitter reads it in the output: {output}"
    );
    // And the CLI says so: no artifacts, an infrastructure failure.
    let (code, stdout, stderr) = flinger(&lab, &["artifacts", &id.to_string()]).await;
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_attachments_waits_for_an_agent_that_can_fetch_them() {
    // Schedulers without --gateway-url hand out no files credential: an agent without a
    // server_address cannot fetch attachments, so it must never get such a job.
    let mut lab = Lab::builder()
        .name("files-wait")
        .without_files_credential()
        .gateway_env("FLINGER_ALLOW_ANONYMOUS_AGENTS", "true")
        .agent(AgentSpec::commands(
            "blind-1",
            &["waitq"],
            &[("test", "cat attachments/test/in.txt")],
        ))
        .start()
        .await;
    // Positive control: the agent runs jobs without attachments.
    let plain = submit_when_routable(
        &lab,
        &json!({"job_queue": "waitq", "test_data": {"test_cmds": "x"}}),
    )
    .await;
    let info = lab.wait_done(plain, DONE).await;
    assert_eq!(info["job_state"], "complete", "{info}");

    let (status, body) = lab
        .post_job(&json!({"job_queue": "waitq", "test_data": {"test_cmds": "x", "attachments": [{"agent": "in.txt"}]}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    upload_attachments(&lab, id, &[("in.txt", "fetched by the capable agent\n")]).await;
    // The scheduler refused the blind agent the lease (its log says why), and the job waits.
    let log = lab.agents[0].log.clone();
    eventually(
        Duration::from_secs(30),
        "the blind agent to be refused the job",
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                text.lines()
                    .any(|l| l.contains(&id.to_string()) && l.contains("cannot fetch them"))
                    .then_some(())
            }
        },
    )
    .await;
    let info = lab.info(id).await.unwrap();
    assert_eq!(info["job_state"], "waiting", "{info}");

    // An agent with a client of its own (server_address) takes it and reads the attachment.
    let capable = AgentSpec::commands(
        "capable-1",
        &["waitq"],
        &[("test", "cat attachments/test/in.txt")],
    )
    .with_yaml(&format!("server_address: {}\n", lab.base));
    lab.add_agent(capable).await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["job_state"], "complete", "{info}\n{}", lab.log_tails(30));
    assert!(info["failure"].is_null(), "{info}");
    let output = lab.output(id).await;
    assert!(output.contains("fetched by the capable agent"), "{output}");
    lab.stop().await;
}
