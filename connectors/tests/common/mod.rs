//! Shared fixtures: a job's run directory, a phase context, a sink whose output is collected,
//! and a look at live processes through /proc.
#![allow(dead_code)] // each test binary uses its own subset

pub mod sshd;

use broker_schema::{JobDefinition, Phase};
use bytes::Bytes;
use flinger_connectors::{Connector, ConnectorError, OutputSink, PhaseContext, PhaseOutcome};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn job(doc: Value) -> Arc<JobDefinition> {
    Arc::new(JobDefinition::parse(doc).expect("a valid job"))
}

pub fn minimal_job() -> Arc<JobDefinition> {
    job(serde_json::json!({"job_queue": "fake-class"}))
}

/// A job's run directory as the agent prepares it: `testflinger.json` inside.
pub struct RunDir {
    pub dir: TempDir,
    pub job_id: Uuid,
    pub job: Arc<JobDefinition>,
}

impl RunDir {
    pub fn new(job: Arc<JobDefinition>) -> RunDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let job_id = Uuid::new_v4();
        let json = serde_json::to_vec_pretty(&job.to_json_with_id(&job_id)).unwrap();
        std::fs::write(dir.path().join("testflinger.json"), json).unwrap();
        RunDir { dir, job_id, job }
    }

    pub fn ctx(&self, phase: Phase) -> PhaseContext {
        PhaseContext {
            phase,
            job_id: self.job_id,
            job: self.job.clone(),
            run_dir: self.dir.path().to_path_buf(),
            env: BTreeMap::new(),
            env_remove: vec![],
            agent_name: "test-agent-1".into(),
            kill: CancellationToken::new(),
        }
    }
}

/// A phase context for connectors that do not look at the disk.
pub fn ctx_for(job: Arc<JobDefinition>, phase: Phase) -> PhaseContext {
    PhaseContext {
        phase,
        job_id: Uuid::new_v4(),
        job,
        run_dir: std::env::temp_dir(),
        env: BTreeMap::new(),
        env_remove: vec![],
        agent_name: "test-agent-1".into(),
        kill: CancellationToken::new(),
    }
}

/// A sink like the agent's: bounded.
pub fn sink(capacity: usize) -> (OutputSink, mpsc::Receiver<Bytes>) {
    let (output, rx) = mpsc::channel(capacity);
    let (serial, _) = mpsc::channel(1);
    (OutputSink { output, serial }, rx)
}

/// Runs one phase, collecting all its output.
pub async fn run(
    connector: &dyn Connector,
    ctx: &PhaseContext,
    cancel: CancellationToken,
) -> (Result<PhaseOutcome, ConnectorError>, Vec<u8>) {
    let (sink, mut rx) = sink(16);
    let collect = tokio::spawn(async move {
        let mut all = vec![];
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    });
    let result = connector.run_phase(ctx, &sink, cancel).await;
    drop(sink);
    (result, collect.await.unwrap())
}

pub async fn run_ok(connector: &dyn Connector, ctx: &PhaseContext) -> (PhaseOutcome, String) {
    let (result, out) = run(connector, ctx, CancellationToken::new()).await;
    (
        result.expect("the phase runs"),
        String::from_utf8(out).expect("UTF-8 output"),
    )
}

/// Reads from `rx` until the collected output contains `needle`; returns everything read.
pub async fn read_until(rx: &mut mpsc::Receiver<Bytes>, needle: &str) -> String {
    let mut all = vec![];
    while !String::from_utf8_lossy(&all).contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("output arrives")
            .expect("the sink stays open");
        all.extend_from_slice(&chunk);
    }
    String::from_utf8(all).unwrap()
}

/// `state` and `pgrp` of a process from /proc, or `None` when it is gone.
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether a process still runs (a zombie has finished running; only its parent's bookkeeping is left).
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Processes of the group that still run.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(
            |pid| matches!(stat(*pid), Some((state, pgrp)) if pgrp == pgid && state != 'Z' && state != 'X'),
        )
        .collect()
}

/// Waits (bounded) for a condition that a signal makes true a moment later.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not true after 5 s: {what}");
}
