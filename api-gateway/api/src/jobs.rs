//! Jobs: submitting, reading, searching, estimating and reserving.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/job`: the id of the job accepted (or of the job already known, on resubmission).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub job_id: Uuid,
}

/// One job of `GET /v1/job/search`, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    pub job_id: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Testflinger's name of the state.
    pub job_state: String,
}

/// `GET /v1/queues/wait_times`: per queue, seconds from submission to the first lease at the
/// percentiles `"5"`, `"10"`, `"50"`, `"90"` and `"95"`.
pub type WaitTimes = BTreeMap<String, BTreeMap<String, f64>>;

/// One job of `GET /v1/queues/<queue>/jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueJob {
    pub job_id: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub job_state: String,
    pub job_queue: String,
}

/// Why a job failed: its kind (`agent_lost`, `phase_failed`, …, see docs/api.md) and a reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// **[ext]** `GET /v1/job/<id>/info`: the whole job record. Datetimes are ISO-8601 UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    pub job_id: Uuid,
    #[serde(default)]
    pub queue: String,
    /// The true state (`failed` included).
    pub state: String,
    /// Testflinger's name for the state (a failed job shows `complete`).
    #[serde(default)]
    pub job_state: String,
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(default)]
    pub enqueued_at: Option<String>,
    #[serde(default)]
    pub awaiting_attachments: bool,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Exit code of every phase that finished, by phase name.
    #[serde(default)]
    pub phase_status: BTreeMap<String, i32>,
    #[serde(default)]
    pub failure: Option<Failure>,
    #[serde(default)]
    pub cancel_requested: Option<String>,
    #[serde(default)]
    pub reservation: Option<ReservationInfo>,
    /// What the device connector reported about the device; its shape is the connector's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub device_info: Option<Value>,
    /// 0-based place among the waiting jobs of its queue; only while waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// A multi-device child's parent job (its `parent_job_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<Uuid>,
    /// A multi-device parent's children, in the order they were submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Uuid>,
    /// A multi-device child released because its parent completed: why (it then ends
    /// `complete`; a child released for any other reason shows it in `cancel_requested`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// How many fragments of each log the current attempt had shipped by its latest recorded
    /// phase move. Output and states are stored apart, so the record may reach a phase before
    /// the previous phase's last fragments are stored: a follower shows these fragments before
    /// `state`'s line. Absent before the first move and for agents that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped: Option<Shipped>,
}

/// Fragments shipped per log (numbers `0..output`, `0..serial`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shipped {
    pub output: u64,
    pub serial: u64,
}

impl JobInfo {
    /// The agent that holds the job, or else the one that last held it.
    pub fn agent(&self) -> Option<&str> {
        self.lease
            .as_ref()
            .map(|l| l.agent.as_str())
            .or_else(|| self.attempts.last().map(|a| a.agent.as_str()))
    }
}

/// One attempt at running a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub agent: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
}

/// The lease an agent holds on a running job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub agent: String,
    #[schema(format = DateTime)]
    pub until: String,
}

/// A reservation as the job record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationInfo {
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub until: String,
    #[serde(default)]
    pub device_ip: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// **[ext]** `GET /v1/job/<id>/estimate`: where a waiting job stands and when it may start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    pub job_id: Uuid,
    pub queue: String,
    /// 0-based place among the waiting jobs of its queue.
    pub position: u64,
    pub agents_available: u64,
    pub agents_busy: u64,
    /// Finished jobs of the queue the median is taken over.
    pub recent_runs: u64,
    pub median_run_seconds: Option<u64>,
    /// `None` when there is no honest figure; `unknown` says why.
    pub eta_seconds: Option<u64>,
    pub eta: Option<String>,
    /// Why there is no ETA: `no_agent`, `no_history` or `overrun` (the running jobs have run
    /// longer than any recent job of their queue). See [`crate::eta`].
    #[serde(default)]
    pub unknown: Option<String>,
    /// How the estimate was made, or why there is none, in words.
    pub basis: String,
}

/// **[ext]** `GET /v1/job/<id>/reservation`: where a reserved device is and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub job_id: Uuid,
    pub job_state: String,
    pub agent: Option<String>,
    pub device_ip: Option<String>,
    pub user: Option<String>,
    /// The command to reach the device, when its address is known.
    pub ssh: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub until: String,
    pub remaining_secs: u64,
}

/// **[ext]** `POST /v1/job/<id>/reservation/extend`: the new deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Extended {
    pub job_id: Uuid,
    pub reserve_until: Option<String>,
    pub detail: String,
}

/// `POST /v1/job`: Testflinger's job file (see docs/api.md and docs/job-schema.md), declared once
/// in `broker_schema::job`, where the gateway, the scheduler and the agent read it.
pub use broker_schema::job::JobFile;

/// `POST /v1/job/<id>/action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub action: ActionKind,
}

/// The actions Testflinger's API knows: only `cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Cancel,
}

/// **[ext]** `POST /v1/job/<id>/reservation/extend`: `by` (seconds, or a form like `2h30m`) or
/// `until` (an ISO-8601 datetime).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Extend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ExtendBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

/// How long to extend a reservation by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExtendBy {
    Seconds(u64),
    /// A duration such as `2h30m`.
    Text(String),
}

/// `POST /v1/job/<id>/events`: an agent's status update, relayed to the job's webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusUpdate {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub job_queue: Option<String>,
    pub job_status_webhook: String,
    #[serde(default)]
    pub events: Vec<StatusEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusEvent {
    pub event_name: String,
    pub timestamp: String,
    #[serde(default)]
    pub detail: String,
}
