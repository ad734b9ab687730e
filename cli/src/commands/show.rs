//! `flinger show JOB [--yaml]`: the job file as submitted (with its `job_id`), and what the job
//! file cannot say: its attempts (agent, start, end, outcome), how it failed, and a
//! multi-device job's children (a child's parent is in its job file, `parent_job_id`).
//!
//! The job file stays clean on stdout, so that it can be saved and submitted again:
//! - plain: the job file as JSON on stdout; attempts and failure on stderr;
//! - `--yaml`: the job file as YAML, then the attempts and failure as YAML comment lines;
//! - `--json`: `{"job": <job file>, "attempts": [...], "failure": {kind, reason} | null,
//!   "children": [job ids]}`.

use super::Ctx;
use crate::args::ShowArgs;
use crate::client::ClientError;
use crate::exit::{CliError, Exit};
use serde_json::{Value, json};

pub async fn run(ctx: &Ctx<'_>, args: ShowArgs) -> Result<Exit, CliError> {
    let ui = ctx.ui;
    if args.yaml && ui.is_json() {
        return Err(CliError::Usage(
            "--yaml and --json cannot be used together".into(),
        ));
    }
    let job = ctx.client.job(args.job_id).await?;
    // A server without Flinger's record (Testflinger's) still shows the job file.
    let (attempts, failure, children) = match ctx.client.info(args.job_id).await {
        Ok(info) => (
            info.raw.get("attempts").cloned().unwrap_or(json!([])),
            info.raw.get("failure").cloned().unwrap_or(Value::Null),
            info.raw.get("children").cloned().unwrap_or(json!([])),
        ),
        Err(ClientError::Refused { status: 404, .. }) => (json!([]), Value::Null, json!([])),
        Err(e) => return Err(e.into()),
    };
    let mut lines = history_lines(&attempts, &failure);
    lines.extend(family_lines(&job, &children));
    if ui.is_json() {
        ui.document(&json!({"job": job, "attempts": attempts, "failure": failure, "children": children}))?;
    } else if args.yaml {
        let mut text = serde_yaml_ng::to_string(&job).map_err(std::io::Error::other)?;
        for l in &lines {
            text.push_str(&format!("# {l}\n"));
        }
        ui.raw(&text)?;
    } else {
        ui.document(&job)?;
        for l in &lines {
            ui.note(l);
        }
    }
    Ok(Exit::Success)
}

/// `attempts:` and `failure:` as lines for people.
pub fn history_lines(attempts: &Value, failure: &Value) -> Vec<String> {
    let mut lines = vec![];
    let list = attempts.as_array().map(Vec::as_slice).unwrap_or_default();
    if !list.is_empty() {
        lines.push("attempts:".to_owned());
    }
    for a in list {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("");
        let n = a.get("attempt").and_then(Value::as_u64).unwrap_or(0);
        let end = match s("ended_at") {
            "" => "running".to_owned(),
            t => t.to_owned(),
        };
        let outcome = match s("outcome") {
            "" => String::new(),
            o => format!(": {o}"),
        };
        lines.push(format!(
            "  {n}. agent {}, {} → {end}{outcome}",
            s("agent"),
            s("started_at")
        ));
    }
    if let Some(kind) = failure.get("kind").and_then(Value::as_str) {
        let reason = failure.get("reason").and_then(Value::as_str).unwrap_or("");
        lines.push(format!("failure: {kind}: {reason}"));
    }
    lines
}

/// A multi-device child's parent and a parent's children, as lines for people.
pub fn family_lines(job: &Value, children: &Value) -> Vec<String> {
    let mut lines = vec![];
    if let Some(parent) = job.get("parent_job_id").and_then(Value::as_str) {
        lines.push(format!("parent job: {parent}"));
    }
    let list = children.as_array().map(Vec::as_slice).unwrap_or_default();
    if !list.is_empty() {
        lines.push("children:".to_owned());
        for c in list {
            lines.push(format!("  {}", c.as_str().unwrap_or("?")));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_lists_its_children_and_a_child_names_its_parent() {
        let child = json!({"job_queue": "dut", "parent_job_id": "p-1"});
        assert_eq!(family_lines(&child, &json!([])), ["parent job: p-1"]);
        assert_eq!(
            family_lines(&json!({}), &json!(["c-1", "c-2"])),
            ["children:", "  c-1", "  c-2"]
        );
        assert!(family_lines(&json!({}), &Value::Null).is_empty());
    }

    #[test]
    fn attempts_and_failure_read_as_lines() {
        let attempts = json!([
            {"attempt": 1, "agent": "a1", "started_at": "t1", "ended_at": "t2", "outcome": "lease expired"},
            {"attempt": 2, "agent": "a2", "started_at": "t3", "ended_at": null, "outcome": null},
        ]);
        let lines = history_lines(&attempts, &json!({"kind": "agent_lost", "reason": "gone"}));
        assert_eq!(
            lines,
            [
                "attempts:",
                "  1. agent a1, t1 → t2: lease expired",
                "  2. agent a2, t3 → running",
                "failure: agent_lost: gone"
            ]
        );
        assert!(history_lines(&json!([]), &Value::Null).is_empty());
    }
}
