//! Limits that protect the lab (issue 14), through a real lab: a job's output past its cap is
//! dropped with a note while the job goes on; a large output is streamed back whole.
//! (Per-client request limits are tested on the gateway alone: api-gateway/tests/api/limits.rs.)

use flinger_tests::{AgentSpec, Lab, cli};
use serde_json::{Value, json};
use std::time::Duration;

const DONE: Duration = Duration::from_secs(90);
/// `seq 1 100000`: 588,895 bytes.
const FLOOD: &str = "seq 1 100000";
const FLOOD_BYTES: u64 = 588_895;

/// The test phase floods its output, then (after the cap was passed) leaves a marker: the
/// phase was not stopped.
fn flooding_agent(name: &str, queue: &str, marker: &std::path::Path) -> AgentSpec {
    let cmd = format!("{FLOOD}; echo went on > {}", marker.display());
    AgentSpec::commands(name, &[queue], &[("test", &cmd)])
}

async fn capped_run(lab: &Lab, queue: &str, marker: &std::path::Path, cap: u64) {
    let id = lab
        .submit(&json!({"job_queue": queue, "test_data": {"test_cmds": "x"}}))
        .await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["job_state"], "complete", "{info}\n{}", lab.log_tails(30));
    assert!(marker.exists(), "the phase went on past the cap");
    let out = lab.output(id).await;
    let note = "flinger-agent: output truncated: the output stream passed this job's cap";
    assert!(
        out.contains(note),
        "the output says it was truncated: …{}",
        tail(&out)
    );
    assert!(
        out.trim_end().ends_with("(the job goes on)"),
        "the note is the last line: …{}",
        tail(&out)
    );
    let shipped = out.find("\nflinger-agent: output truncated").unwrap() as u64;
    assert_eq!(shipped, cap, "exactly the cap is shipped before the note");
    assert!(
        out.len() as u64 <= cap + 200,
        "{} bytes stored for a cap of {cap}",
        out.len()
    );
    let results = lab.results(id).await;
    assert_eq!(results["test_status"], 0, "{results}");
    let dropped = results["output_truncated"]["output"]
        .as_u64()
        .unwrap_or_else(|| panic!("the results say the output was truncated: {results}"));
    assert_eq!(dropped, FLOOD_BYTES - cap, "{results}");
    assert!(results["output_truncated"].get("serial").is_none(), "{results}");
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(300)..]
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_cap_is_dropped_with_a_note_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (queue_marker, agent_marker, free_marker) = (
        dir.path().join("queue-cap"),
        dir.path().join("agent-cap"),
        dir.path().join("no-cap"),
    );
    // The lab caps one queue at 64 KiB; another agent caps its own jobs at 32 KiB; a third
    // runs under the default cap (256 MiB), which the flood does not reach.
    let lab = Lab::builder()
        .name("outcap")
        .scheduler_arg("--output-cap", "capq=0.0625")
        .agent(flooding_agent("cap-1", "capq", &queue_marker))
        .agent(flooding_agent("cap-2", "agentcapq", &agent_marker).with_yaml("output_cap_mib: 0.03125\n"))
        .agent(flooding_agent("cap-3", "freeq", &free_marker))
        .start()
        .await;
    capped_run(&lab, "capq", &queue_marker, 64 * 1024).await;
    capped_run(&lab, "agentcapq", &agent_marker, 32 * 1024).await;

    let id = lab
        .submit(&json!({"job_queue": "freeq", "test_data": {"test_cmds": "x"}}))
        .await;
    lab.wait_done(id, DONE).await;
    let out = lab.output(id).await;
    assert!(
        out.ends_with("\n99999\n100000\n"),
        "under the default cap everything is shipped: …{}",
        tail(&out)
    );
    assert!(!out.contains("output truncated"), "…{}", tail(&out));
    let results = lab.results(id).await;
    assert!(results.get("output_truncated").is_none(), "{results}");
    lab.stop().await;
}

/// The gateway streams `GET /v1/result/<id>` as it reads the store: a job whose output is tens
/// of MB reads back whole, byte for byte, through the API and through `flinger results`.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_output_reads_back_whole_through_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printed");
    // About 24 MB of base64 lines, with a copy of what was printed to compare.
    let cmd = format!(
        "head -c 18000000 /dev/urandom | base64 | tee {}",
        printed.display()
    );
    let lab = Lab::builder()
        .name("bigout")
        .agent(AgentSpec::commands("big-1", &["bigq"], &[("test", &cmd)]))
        .start()
        .await;
    let id = lab
        .submit(&json!({"job_queue": "bigq", "test_data": {"test_cmds": "x"}}))
        .await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["job_state"], "complete", "{info}\n{}", lab.log_tails(30));
    let expected = std::fs::read_to_string(&printed).unwrap();
    assert!(expected.len() > 20_000_000, "{} bytes printed", expected.len());

    let results = lab.results(id).await;
    let output = results["test_output"].as_str().expect("test_output");
    assert!(
        output.ends_with(&expected) && output.len() < expected.len() + 1000,
        "the API gives back what was printed: {} bytes for {}",
        output.len(),
        expected.len()
    );
    let run = cli::run(lab.cli(), &["results", &id.to_string()], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let printed_by_cli: Value = serde_json::from_str(&run.stdout).expect("flinger results prints JSON");
    assert!(
        printed_by_cli == results,
        "flinger results prints the same results"
    );
    lab.stop().await;
}
