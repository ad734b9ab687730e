//! Requests to the scheduler and its replies, carried by direct reply-to.
//!
//! Every request is idempotent: a client that timed out may send it again.

use super::Submission;
use crate::codec::Message;
use crate::ids::{AgentName, DeviceClass};
use crate::job_files::JobFiles;
use crate::messages::AdminState;
use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// An agent asks for the lease of a job it received. It carries the submission so that the
/// scheduler can record a job it has not seen yet (a direct producer's job may reach the agent
/// before the scheduler's own copy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub job_id: Uuid,
    pub agent: AgentName,
    pub submission: Submission,
    /// The RabbitMQ user that published the submission (its verified `user_id` property), so
    /// that a job first recorded from a lease request is judged as its own copy would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by: Option<String>,
    /// Whether the agent can move the job's files with a gateway client of its own
    /// (`server_address`). `None` from agents that predate the question: taken as yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetches_files: Option<bool>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub job_id: Uuid,
    /// The fencing token: every event of this run carries it.
    pub attempt: u32,
    pub lease_until: Millis,
    /// The lease's length: the agent counts it on its own clock from when it asked, so clock
    /// skew between hosts cannot make it run unleased.
    pub lease_ms: u64,
    /// How often the agent should renew (well before `lease_until`).
    pub renew_every_ms: u64,
    /// Secrets named by `test_data.secrets`, resolved for this run.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The reservation deadline already set for this job (an extension made before the run).
    #[serde(default)]
    pub reserve_until: Option<Millis>,
    /// Where and with what token to fetch the attachments and upload the artifacts, when the
    /// scheduler knows the gateway (`--gateway-url` and its token key).
    #[serde(default)]
    pub files: Option<JobFiles>,
    /// The most bytes of each stream (output, serial) the run may ship, when the lab sets it
    /// (the scheduler's `--output-cap-mib` or the job's queue's); otherwise the agent's own.
    #[serde(default)]
    pub output_cap: Option<u64>,
}

/// Secrets stay out of logs: only their names are shown.
impl std::fmt::Debug for LeaseGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGrant")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("lease_until", &self.lease_until)
            .field("lease_ms", &self.lease_ms)
            .field("renew_every_ms", &self.renew_every_ms)
            .field(
                "secrets",
                &self
                    .secrets
                    .keys()
                    .map(|k| format!("{k}=****"))
                    .collect::<Vec<_>>(),
            )
            .field("reserve_until", &self.reserve_until)
            .field("files", &self.files)
            .field("output_cap", &self.output_cap)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The job was cancelled before it started: drop the delivery.
    Cancelled,
    /// Another agent holds the lease: drop this (duplicate) delivery.
    AlreadyLeased,
    /// The job has ended: drop the delivery.
    Finished,
    /// The job excludes this agent: give the delivery back for another agent.
    Excluded,
    /// This agent is in maintenance or offline: give the delivery back.
    AgentUnavailable,
    /// The job is invalid and was rejected: drop the delivery.
    Rejected,
    /// The job is not ready yet (its attachments have not arrived): give the delivery back.
    NotReady,
}

impl DenyReason {
    /// Whether the delivery should go back to the queue for another agent (otherwise it is a
    /// duplicate or dead job and is acknowledged and dropped).
    pub fn requeue(self) -> bool {
        matches!(
            self,
            DenyReason::Excluded | DenyReason::AgentUnavailable | DenyReason::NotReady
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseDenial {
    pub job_id: Uuid,
    pub reason: DenyReason,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LeaseReply {
    Granted(LeaseGrant),
    Denied(LeaseDenial),
}

/// Renew the lease of a running attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub job_id: Uuid,
    pub attempt: u32,
    pub agent: AgentName,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RenewReply {
    /// Still yours until `lease_until`. The scheduler also repeats what the agent must obey, in
    /// case a control message was lost: a cancel, and the reservation deadline.
    Renewed {
        lease_until: Millis,
        #[serde(default)]
        cancel: Option<String>,
        #[serde(default)]
        reserve_until: Option<Millis>,
        /// A fresh job-files token, expiring with the renewed lease.
        #[serde(default)]
        files: Option<JobFiles>,
    },
    /// Not yours any more: stop the job now.
    Lost { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub job_id: Uuid,
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// Move a reservation's deadline: `by` seconds later than the current one, or to `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendRequest {
    pub job_id: Uuid,
    #[serde(default)]
    pub by_secs: Option<u64>,
    #[serde(default)]
    pub until: Option<Millis>,
    #[serde(default)]
    pub requested_by: Option<String>,
    /// Longest reservation this requester may have, from its permissions; `None` = no limit.
    #[serde(default)]
    pub max_total_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAgentStateRequest {
    pub agent: AgentName,
    /// `None` returns the agent to service.
    pub state: Option<AdminState>,
    #[serde(default)]
    pub comment: String,
}

/// An agent asks which of its queues are restricted (have owners). An agent serving a
/// restricted queue takes jobs only from its restricted queues, as Testflinger's does: a device
/// lent to a team serves that team alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictedQueuesRequest {
    pub agent: AgentName,
    pub queues: Vec<DeviceClass>,
}

/// A job's attachments have been stored: the job may be dispatched. Sent by the gateway after an
/// upload; idempotent (a job already dispatched is left alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentsReadyRequest {
    pub job_id: Uuid,
}

// A lease request carries its submission; requests are decoded once and handled, so the size
// difference between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum SchedulerRequest {
    Lease(LeaseRequest),
    Renew(RenewRequest),
    Cancel(CancelRequest),
    Extend(ExtendRequest),
    SetAgentState(SetAgentStateRequest),
    AttachmentsReady(AttachmentsReadyRequest),
    RestrictedQueues(RestrictedQueuesRequest),
}

impl Message for SchedulerRequest {
    const KIND: &'static str = "scheduler_request";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    NotFound,
    /// The job is in a state that does not allow it (already ended, not reserving, …).
    Conflict,
    Forbidden,
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandReply {
    Done {
        #[serde(default)]
        detail: String,
        #[serde(default)]
        reserve_until: Option<Millis>,
    },
    Refused {
        code: RefusalCode,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum SchedulerReply {
    Lease(LeaseReply),
    Renew(RenewReply),
    Command(CommandReply),
    /// Of the queues asked about, those that are restricted.
    RestrictedQueues {
        restricted: Vec<DeviceClass>,
    },
    /// The request could not be decoded or served.
    Error {
        reason: String,
    },
}

impl Message for SchedulerReply {
    const KIND: &'static str = "scheduler_reply";
}
