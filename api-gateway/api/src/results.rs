//! Results and logs of jobs, and the gateway's readiness.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::jobs::Failure;

/// `GET /v1/result/<id>`: Testflinger's flat results plus **[ext]** `state`, `failure`,
/// `attempt`. The per-phase keys (`<phase>_status`, `<phase>_output`, `<phase>_serial`) are
/// named after the phases that ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Results {
    pub job_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the job failed; `null` unless it did.
    #[serde(default)]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What the device connector reported; its shape is the connector's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub device_info: Option<Value>,
    /// **[ext]** A multi-device child's parent job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    /// **[ext]** A multi-device parent's children, in the order they were submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// **[ext]** The streams (`output`, `serial`) that passed the job's output cap, and how
    /// many bytes of each were not shipped; absent when nothing was truncated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_truncated: BTreeMap<String, u64>,
    /// `<phase>_status` (exit codes), `<phase>_output` and `<phase>_serial` (text).
    #[serde(flatten)]
    pub phases: BTreeMap<String, Value>,
}

/// The new text of one phase in a log answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhaseLog {
    /// The number of the last fragment included; -1 when none.
    pub last_fragment_number: i64,
    pub log_data: String,
}

/// `GET /v1/result/<id>/log/<stream>`: `{"<stream>": {"<phase>": PhaseLog}}`.
pub type LogAnswer = BTreeMap<String, BTreeMap<String, PhaseLog>>;

/// `GET /readyz`: each dependency, `ok` or what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub store: String,
    pub broker: String,
}

/// `POST /v1/result/<id>`: what a Testflinger agent posts about a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultPost {
    /// Exit code of each phase, by phase name.
    #[serde(default)]
    pub status: BTreeMap<String, i64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub device_info: Option<Value>,
    #[serde(default)]
    pub job_state: Option<String>,
}

/// `POST /v1/result/<id>/log/<stream>`: one fragment of a phase's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogFragment {
    pub fragment_number: u64,
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub phase: String,
    pub log_data: String,
}
