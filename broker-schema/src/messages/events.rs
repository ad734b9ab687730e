//! Events agents (and the scheduler) publish on the events exchange; anyone may listen.

use crate::codec::Message;
use crate::ids::AgentName;
use crate::phase::Phase;
use crate::state::{Failure, JobState};
use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// How a run ended, as the agent saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned phase ran (some may have failed; their exit codes say so).
    Complete,
    Cancelled {
        reason: String,
    },
    Failed {
        failure: Failure,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Output,
    Serial,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Output => "output",
            LogStream::Serial => "serial",
        }
    }

    pub fn parse(s: &str) -> Option<LogStream> {
        match s {
            "output" => Some(LogStream::Output),
            "serial" => Some(LogStream::Serial),
            _ => None,
        }
    }
}

/// How many chunks of each stream a run published (sequence numbers `0..n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCounts {
    pub output: u64,
    pub serial: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventKind {
    PhaseStarted {
        phase: Phase,
    },
    PhaseFinished {
        phase: Phase,
        exit_code: i32,
        #[serde(default)]
        detail: Option<String>,
    },
    /// `device-info.json`'s `device_info`, read after provisioning.
    DeviceInfo {
        info: serde_json::Value,
    },
    /// A multi-device child finished its allocate phase and now holds its device for its parent
    /// (`parent_job_id`) until it is cancelled or its parent ends; `device_info` is what the
    /// parent's test phase needs to reach the device.
    Allocated {
        #[serde(default)]
        device_info: Option<serde_json::Value>,
    },
    /// The device is held for a person until `until`.
    ReservationStarted {
        until: Millis,
        #[serde(default)]
        device_ip: Option<String>,
        #[serde(default)]
        user: Option<String>,
    },
    /// The run is over. Sent after every output chunk of the run was confirmed by the broker;
    /// `output` lets the projector wait until it has stored them all.
    Finished {
        outcome: Outcome,
        output: OutputCounts,
        /// Every phase's exit code, so that finishing does not depend on the order in which
        /// earlier events are processed (several schedulers may process them).
        #[serde(default)]
        phase_status: BTreeMap<Phase, i32>,
        #[serde(default)]
        device_info: Option<serde_json::Value>,
        /// The streams that passed the job's output cap, and how many bytes of each were not
        /// shipped.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        output_truncated: BTreeMap<LogStream, u64>,
    },
    /// The agent gave the run up without finishing it (its lease could not be renewed, or the
    /// agent is shutting down): nothing of the run is its result. If the attempt still holds the
    /// lease, the scheduler reclaims the job at once instead of waiting for the lease to expire.
    RunAbandoned {
        reason: String,
    },
    /// Published by the scheduler whenever it changes a job's state itself (recorded, requeued,
    /// cancelled, failed, rejected), so webhooks and dashboards see every move.
    StateChanged {
        state: JobState,
        #[serde(default)]
        failure: Option<Failure>,
        #[serde(default)]
        detail: Option<String>,
    },
}

/// A job event on `job.<id>.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: Uuid,
    /// The attempt (fencing token) the event belongs to; 0 for events before any lease.
    pub attempt: u32,
    /// The agent that sent it; `None` when the scheduler did.
    #[serde(default)]
    pub agent: Option<AgentName>,
    pub at: Millis,
    /// How many output chunks of each stream the run had published when it sent the event
    /// (an agent sends it with every phase move): a reader shows that output before the move.
    /// `None` from the scheduler and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped: Option<OutputCounts>,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

impl Message for JobEvent {
    const KIND: &'static str = "job_event";
}

/// A numbered piece of a run's output on `job.<id>.output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub job_id: Uuid,
    pub attempt: u32,
    pub stream: LogStream,
    /// 0, 1, 2, … per run and stream: the idempotency key with `job_id`, `attempt`, `stream`.
    pub seq: u64,
    pub phase: Phase,
    pub at: Millis,
    pub data: bytes::Bytes,
}

impl Message for OutputChunk {
    const KIND: &'static str = "output_chunk";
}
