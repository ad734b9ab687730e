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
use flinger_api::{Attempt, Failure};
use serde_json::{Value, json};
use uuid::Uuid;

pub async fn run(ctx: &Ctx<'_>, args: ShowArgs) -> Result<Exit, CliError> {
    let ui = ctx.ui;
    if args.yaml && ui.is_json() {
        return Err(CliError::Usage(
            "--yaml and --json cannot be used together".into(),
        ));
    }
    let job = ctx.client.job(args.job_id).await?;
    // A server without Flinger's record (Testflinger's) still shows the job file.
    let info = match ctx.client.info(args.job_id).await {
        Ok(info) => Some(info),
        Err(ClientError::Refused { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (attempts, failure, children) = match &info {
        Some(info) => (
            info.raw.get("attempts").cloned().unwrap_or(json!([])),
            info.raw.get("failure").cloned().unwrap_or(Value::Null),
            info.raw.get("children").cloned().unwrap_or(json!([])),
        ),
        None => (json!([]), Value::Null, json!([])),
    };
    let mut lines = info
        .as_ref()
        .map_or_else(Vec::new, |i| history_lines(&i.attempts, i.failure.as_ref()));
    lines.extend(family_lines(
        &job,
        info.as_ref().map_or(&[][..], |i| i.children.as_slice()),
    ));
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
pub fn history_lines(attempts: &[Attempt], failure: Option<&Failure>) -> Vec<String> {
    let mut lines = vec![];
    if !attempts.is_empty() {
        lines.push("attempts:".to_owned());
    }
    for a in attempts {
        let end = a.ended_at.as_deref().unwrap_or("running");
        let outcome = match a.outcome.as_deref() {
            None | Some("") => String::new(),
            Some(o) => format!(": {o}"),
        };
        lines.push(format!(
            "  {}. agent {}, {} → {end}{outcome}",
            a.attempt, a.agent, a.started_at
        ));
    }
    if let Some(f) = failure {
        lines.push(format!("failure: {}: {}", f.kind, f.reason));
    }
    lines
}

/// A multi-device child's parent (in its job file) and a parent's children, as lines for people.
pub fn family_lines(job: &Value, children: &[Uuid]) -> Vec<String> {
    let mut lines = vec![];
    if let Some(parent) = job.get("parent_job_id").and_then(Value::as_str) {
        lines.push(format!("parent job: {parent}"));
    }
    if !children.is_empty() {
        lines.push("children:".to_owned());
        for c in children {
            lines.push(format!("  {c}"));
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
        assert_eq!(family_lines(&child, &[]), ["parent job: p-1"]);
        let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            family_lines(&json!({}), &[c1, c2]),
            ["children:".to_owned(), format!("  {c1}"), format!("  {c2}")]
        );
        assert!(family_lines(&json!({}), &[]).is_empty());
    }

    #[test]
    fn attempts_and_failure_read_as_lines() {
        let attempts: Vec<Attempt> = serde_json::from_value(json!([
            {"attempt": 1, "agent": "a1", "started_at": "t1", "ended_at": "t2", "outcome": "lease expired"},
            {"attempt": 2, "agent": "a2", "started_at": "t3", "ended_at": null, "outcome": null},
        ]))
        .unwrap();
        let failure = Failure {
            kind: "agent_lost".into(),
            reason: "gone".into(),
        };
        let lines = history_lines(&attempts, Some(&failure));
        assert_eq!(
            lines,
            [
                "attempts:",
                "  1. agent a1, t1 → t2: lease expired",
                "  2. agent a2, t3 → running",
                "failure: agent_lost: gone"
            ]
        );
        assert!(history_lines(&[], None).is_empty());
    }
}
