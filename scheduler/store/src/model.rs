//! What the store keeps: jobs (one document each), output fragments, agents.

use broker_schema::messages::{AdminState, AgentState, Heartbeat, LogStream};
use broker_schema::{AgentName, DeviceClass, Failure, JobDefinition, JobState, Millis, Phase};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// A job and everything the system knows about it. One document: every change to it is a
/// single-document atomic update (see [`super::Precondition`], [`super::JobUpdate`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: Uuid,
    /// Copied out of the definition so that queries can use it.
    pub queue: DeviceClass,
    pub definition: JobDefinition,
    pub state: JobState,
    /// Exact `job_priority` (the broker only has ten levels).
    pub priority: u32,
    pub tags: Vec<String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When the submission was seen on the broker. `None` means it may never have been
    /// published (the gateway died between storing and publishing): the sweeper republishes.
    #[serde(default)]
    pub enqueued_at: Option<Millis>,
    /// The job lists attachments that have not been uploaded yet; it is not dispatched.
    #[serde(default)]
    pub awaiting_attachments: bool,
    /// Number of leases granted so far; the current (or last) attempt's fencing token.
    pub attempt: u32,
    #[serde(default)]
    pub lease: Option<Lease>,
    /// One entry per lease granted, in order (`attempts[i].attempt == i + 1`).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// When the current attempt's lease was granted.
    #[serde(default)]
    pub started_at: Option<Millis>,
    #[serde(default)]
    pub ended_at: Option<Millis>,
    /// Exit code of each phase of the current attempt, by phase name.
    #[serde(default)]
    pub phase_status: BTreeMap<String, i32>,
    #[serde(default)]
    pub device_info: Option<serde_json::Value>,
    /// Why the job failed (state `failed`), or which phase failed (state `complete`).
    #[serde(default)]
    pub failure: Option<Failure>,
    /// A cancel was asked for while the job was running; why, and by whom.
    #[serde(default)]
    pub cancel_requested: Option<String>,
    #[serde(default)]
    pub reservation: Option<Reservation>,
    #[serde(default)]
    pub last_output_at: Option<Millis>,
    /// Multi-device children that named this job their parent, in the order the scheduler saw
    /// them: they are released when this job ends or is requeued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Uuid>,
    /// The streams (`output`, `serial`) of the last run that passed the job's output cap, and
    /// how many bytes of each the agent did not ship.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_truncated: BTreeMap<String, u64>,
    /// A multi-device child whose parent completed is released (why): its agent stops holding
    /// the device and the child ends `complete`, not `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// How many output chunks of each stream the current attempt had shipped by its latest
    /// recorded phase move. Output and states are stored from two queues, so a reader may find
    /// the record past a phase whose last output is not stored yet: it shows that much output
    /// before the record's state. `None` before any move, and from agents that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shipped: Option<ShippedOutput>,
}

/// Output chunks an attempt had shipped (sequence numbers `0..output`, `0..serial`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedOutput {
    pub attempt: u32,
    pub output: u64,
    pub serial: u64,
}

impl ShippedOutput {
    /// The chunks of `stream` shipped by `attempt` (0 for another attempt).
    pub fn of(this: Option<&ShippedOutput>, attempt: u32, stream: LogStream) -> u64 {
        match this {
            Some(s) if s.attempt == attempt => match stream {
                LogStream::Output => s.output,
                LogStream::Serial => s.serial,
            },
            _ => 0,
        }
    }
}

impl JobRecord {
    /// How long the current (or last) attempt ran, once it has ended.
    pub fn run_time(&self) -> Option<Duration> {
        Some(self.ended_at?.since(self.started_at?))
    }

    /// A freshly accepted job, waiting.
    pub fn new_waiting(
        job_id: Uuid,
        definition: JobDefinition,
        submitted_by: Option<String>,
        now: Millis,
    ) -> Self {
        JobRecord {
            job_id,
            queue: definition.job_queue().clone(),
            priority: definition.priority(),
            tags: definition.tags().to_vec(),
            awaiting_attachments: definition.has_attachments(),
            definition,
            state: JobState::Waiting,
            submitted_by,
            created_at: now,
            updated_at: now,
            enqueued_at: None,
            attempt: 0,
            lease: None,
            attempts: vec![],
            started_at: None,
            ended_at: None,
            phase_status: BTreeMap::new(),
            device_info: None,
            failure: None,
            cancel_requested: None,
            reservation: None,
            last_output_at: None,
            children: Vec::new(),
            output_truncated: BTreeMap::new(),
            released: None,
            output_shipped: None,
        }
    }
}

/// Who may run the job, until when. Granted as one atomic transition waiting → leased.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub agent: AgentName,
    pub attempt: u32,
    pub until: Millis,
}

/// One run of a job on one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub agent: AgentName,
    pub started_at: Millis,
    #[serde(default)]
    pub ended_at: Option<Millis>,
    /// `complete`, `cancelled`, `failed: <reason>`, `lease expired`, …
    #[serde(default)]
    pub outcome: Option<String>,
}

/// A device held for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub started_at: Millis,
    /// The deadline; the scheduler owns it, extensions move it.
    pub until: Millis,
    #[serde(default)]
    pub device_ip: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// A numbered piece of a run's output. Idempotent by (job_id, attempt, stream, seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFragment {
    pub job_id: Uuid,
    pub attempt: u32,
    pub stream: LogStream,
    pub seq: u64,
    pub phase: Phase,
    pub at: Millis,
    pub data: Vec<u8>,
}

/// What the lab knows about an agent: what it last reported and what an admin decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: AgentName,
    /// As last reported by the agent.
    pub state: AgentState,
    #[serde(default)]
    pub job_id: Option<Uuid>,
    #[serde(default)]
    pub queues: Vec<DeviceClass>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub provision_type: Option<String>,
    /// The agent's own comment (e.g. why it went offline).
    #[serde(default)]
    pub comment: Option<String>,
    /// Set by an admin; survives agent restarts; takes effect after the current job.
    #[serde(default)]
    pub admin_state: Option<AdminState>,
    #[serde(default)]
    pub admin_comment: Option<String>,
    pub interval_ms: u64,
    pub last_seen: Millis,
    #[serde(default)]
    pub version: Option<String>,
}

impl AgentRecord {
    /// Heartbeat interval assumed for an agent that has never reported.
    pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

    /// The record of an agent first heard of through `hb`.
    pub fn from_heartbeat(hb: &Heartbeat) -> Self {
        let mut a = AgentRecord::placeholder(hb.agent.clone());
        a.apply_heartbeat(hb);
        a
    }

    /// An agent an admin decided about before it ever reported: offline, never seen.
    pub fn placeholder(name: AgentName) -> Self {
        AgentRecord {
            name,
            state: AgentState::Offline,
            job_id: None,
            queues: vec![],
            location: None,
            provision_type: None,
            comment: None,
            admin_state: None,
            admin_comment: None,
            interval_ms: Self::DEFAULT_INTERVAL_MS,
            last_seen: Millis(0),
            version: None,
        }
    }

    /// Reference semantics of a heartbeat: takes everything the agent reports (`last_seen` is the
    /// heartbeat's `at`) and keeps the admin's decisions. A heartbeat older than the last one
    /// recorded (a redelivery, or another scheduler's late copy) changes nothing.
    pub fn apply_heartbeat(&mut self, hb: &Heartbeat) {
        if hb.at < self.last_seen {
            return;
        }
        self.state = hb.state;
        self.job_id = hb.job_id;
        self.queues = hb.queues.clone();
        self.location = hb.location.clone();
        self.provision_type = hb.provision_type.clone();
        self.comment = hb.comment.clone();
        self.interval_ms = hb.interval_ms;
        self.last_seen = hb.at;
        self.version = Some(hb.version.clone());
    }

    /// Reference semantics of an admin decision: `None` clears it; an empty comment clears the
    /// admin comment. What the agent reports is kept.
    pub fn set_admin(&mut self, state: Option<AdminState>, comment: &str) {
        self.admin_state = state;
        self.admin_comment = (!comment.is_empty()).then(|| comment.to_owned());
    }

    /// Silent for three heartbeat intervals: shown offline.
    pub fn is_silent(&self, now: Millis) -> bool {
        now.0 - self.last_seen.0 > 3 * self.interval_ms.max(1) as i64
    }

    /// The state to show: offline when silent, the admin's decision once the agent is idle,
    /// otherwise what the agent reported.
    pub fn effective_state(&self, now: Millis) -> AgentState {
        if self.is_silent(now) {
            return AgentState::Offline;
        }
        match (self.state, self.admin_state) {
            (AgentState::Waiting, Some(AdminState::Maintenance)) => AgentState::Maintenance,
            (AgentState::Waiting, Some(AdminState::Offline)) => AgentState::Offline,
            (s, _) => s,
        }
    }
}
