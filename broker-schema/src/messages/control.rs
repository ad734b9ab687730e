use crate::codec::Message;
use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An operator's decision about an agent; it takes effect after the current job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    Offline,
    Maintenance,
    /// Testflinger's `restart`: the agent exits after its current job (or at once when idle)
    /// for its supervisor to start it again. A one-shot order, never a lasting state: the
    /// scheduler passes it on without recording it, so a restarted agent is not restarted again.
    Restart,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Offline => "offline",
            AdminState::Maintenance => "maintenance",
            AdminState::Restart => "restart",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Stop the job's current phase, run cleanup, end `cancelled` (or `failed` with `reason`
    /// for a scheduler-enforced timeout).
    Cancel {
        job_id: Uuid,
        attempt: u32,
        reason: String,
    },
    /// The reservation of this job now ends at `until`.
    SetReservationDeadline { job_id: Uuid, until: Millis },
    /// The scheduler recorded the end of this run: its lease is over, and the agent's lease
    /// keeper stops renewing it.
    RunRecorded { job_id: Uuid, attempt: u32 },
    /// Take the agent out of service (or back, with `None`) after its current job; with
    /// `Restart`, restart it after its current job (a restart ordered before the agent started
    /// is ignored: it has been restarted since).
    SetAdminState {
        state: Option<AdminState>,
        #[serde(default)]
        comment: String,
    },
}

/// A message on an agent's own control queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub at: Millis,
    #[serde(flatten)]
    pub command: ControlCommand,
}

impl Message for Control {
    const KIND: &'static str = "control";
}
