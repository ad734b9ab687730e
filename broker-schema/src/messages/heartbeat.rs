use crate::codec::Message;
use crate::ids::{AgentName, DeviceClass};
use crate::phase::Phase;
use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// What an agent is doing, in Testflinger's vocabulary: `waiting`, a phase name, `offline`,
/// `maintenance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AgentState {
    Waiting,
    /// Holds a lease; no phase started yet.
    Leased,
    Running(Phase),
    Offline,
    Maintenance,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Waiting => "waiting",
            AgentState::Leased => "leased",
            AgentState::Running(p) => p.as_str(),
            AgentState::Offline => "offline",
            AgentState::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<AgentState> {
        Some(match s {
            "waiting" => AgentState::Waiting,
            "leased" => AgentState::Leased,
            "offline" => AgentState::Offline,
            "maintenance" => AgentState::Maintenance,
            other => AgentState::Running(Phase::parse(other)?),
        })
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for AgentState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AgentState::parse(&s).ok_or_else(|| format!("unknown agent state {s:?}"))
    }
}

impl From<AgentState> for String {
    fn from(s: AgentState) -> String {
        s.as_str().to_owned()
    }
}

/// An agent's periodic "I am here", on `agent.<name>.heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent: AgentName,
    pub state: AgentState,
    #[serde(default)]
    pub job_id: Option<Uuid>,
    pub queues: Vec<DeviceClass>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub provision_type: Option<String>,
    /// Why the agent is offline or in maintenance, if it is.
    #[serde(default)]
    pub comment: Option<String>,
    /// The agent heartbeats this often; it is shown offline after three silent intervals.
    pub interval_ms: u64,
    pub at: Millis,
    pub version: String,
}

impl Message for Heartbeat {
    const KIND: &'static str = "heartbeat";
}
