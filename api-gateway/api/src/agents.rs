//! Agents and their provisioning history.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// An agent in `GET /v1/agents/data[/<name>]` and `GET /v1/queues/<queue>/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub name: String,
    /// What to show now: `offline` when silent for three heartbeat intervals, the admin's
    /// decision once the agent is idle, else what the agent reported.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub provision_type: String,
    /// The job it runs, or empty.
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The restricted queues this agent serves, with their owners.
    #[serde(default)]
    pub restricted_to: BTreeMap<String, Vec<String>>,
    /// **[ext]** Its provisioning results in a row: `pass` or `fail` (empty before the first).
    #[serde(default)]
    pub provision_streak_type: String,
    #[serde(default)]
    pub provision_streak_count: u32,
}

impl Agent {
    /// Whether the agent may take a job soon: not offline and not taken out of service.
    pub fn is_available(&self) -> bool {
        !matches!(self.state.as_str(), "offline" | "maintenance")
    }
}

/// **[ext]** `GET /v1/agents/provision_logs/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvisionLog {
    pub name: String,
    pub provision_log: Vec<ProvisionLogEntry>,
    pub provision_streak_type: String,
    pub provision_streak_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvisionLogEntry {
    /// As the agent reported it.
    pub job_id: String,
    pub exit_code: i32,
    pub detail: String,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// `{"status": "OK"}`, Testflinger's answer to some writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    #[schema(example = "OK")]
    pub status: String,
}

impl Status {
    pub fn ok() -> Status {
        Status { status: "OK".into() }
    }
}

/// `POST /v1/agents/data/<name>`: from an admin or manager, `state` (and `comment`); from an
/// agent, what it reports about itself (only the fields given change).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// `POST /v1/agents/provision_logs/<name>`: one provisioning result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvisionLogIn {
    pub job_id: String,
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub exit_code: i32,
    #[serde(default)]
    pub detail: Option<String>,
}

/// `POST /v1/agents/queues`: queue name → description, as agents advertise their queues.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct QueuesIn(pub BTreeMap<String, String>);

/// `POST /v1/agents/images`: queue name → image name → provision data (YAML text).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct ImagesIn(pub BTreeMap<String, BTreeMap<String, String>>);
