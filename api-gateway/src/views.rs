//! How store records are shown: Testflinger's shapes, plus our fields where the API says
//! **[ext]**. Datetimes are ISO-8601 UTC with a `Z`; `job_state` always uses Testflinger's
//! names, `state` and `failure` carry the truth.

use crate::logs;
use broker_schema::messages::{AgentState, LogStream};
use broker_schema::{Failure, Millis};
use flinger_store::{AgentRecord, JobRecord, OutputFragment};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn time(t: Millis) -> String {
    t.to_rfc3339()
}

fn opt_time(t: Option<Millis>) -> Option<String> {
    t.map(time)
}

/// `GET /v1/job/<id>/info` **[ext]**: the whole record.
#[derive(Clone, Debug, Serialize)]
pub struct JobInfo {
    pub job_id: Uuid,
    pub queue: String,
    pub state: &'static str,
    pub job_state: &'static str,
    pub priority: u32,
    pub tags: Vec<String>,
    pub submitted_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub enqueued_at: Option<String>,
    pub awaiting_attachments: bool,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub attempt: u32,
    pub attempts: Vec<AttemptView>,
    pub lease: Option<LeaseView>,
    pub phase_status: BTreeMap<String, i32>,
    pub failure: Option<Failure>,
    pub cancel_requested: Option<String>,
    pub reservation: Option<ReservationView>,
    pub device_info: Option<Value>,
    /// Only while waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub agent: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaseView {
    pub agent: String,
    pub until: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReservationView {
    pub started_at: String,
    pub until: String,
    pub device_ip: Option<String>,
    pub user: Option<String>,
}

impl JobInfo {
    pub fn new(job: &JobRecord, position: Option<u64>) -> JobInfo {
        JobInfo {
            job_id: job.job_id,
            queue: job.queue.to_string(),
            state: job.state.as_str(),
            job_state: job.state.testflinger_name(),
            priority: job.priority,
            tags: job.tags.clone(),
            submitted_by: job.submitted_by.clone(),
            created_at: time(job.created_at),
            updated_at: time(job.updated_at),
            enqueued_at: opt_time(job.enqueued_at),
            awaiting_attachments: job.awaiting_attachments,
            started_at: opt_time(job.started_at),
            ended_at: opt_time(job.ended_at),
            attempt: job.attempt,
            attempts: job
                .attempts
                .iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    agent: a.agent.to_string(),
                    started_at: time(a.started_at),
                    ended_at: opt_time(a.ended_at),
                    outcome: a.outcome.clone(),
                })
                .collect(),
            lease: job.lease.as_ref().map(|l| LeaseView {
                agent: l.agent.to_string(),
                until: time(l.until),
            }),
            phase_status: job.phase_status.clone(),
            failure: job.failure.clone(),
            cancel_requested: job.cancel_requested.clone(),
            reservation: job.reservation.as_ref().map(|r| ReservationView {
                started_at: time(r.started_at),
                until: time(r.until),
                device_ip: r.device_ip.clone(),
                user: r.user.clone(),
            }),
            device_info: job.device_info.clone(),
            position,
        }
    }
}

/// `GET /v1/result/<id>`: Testflinger's flat results — `job_state`, `<phase>_status`,
/// `<phase>_output`, `<phase>_serial`, `device_info` — plus **[ext]** `state`, `failure`,
/// `attempt`. `output` and `serial` are the current attempt's fragments.
pub fn results(job: &JobRecord, output: &[OutputFragment], serial: &[OutputFragment]) -> Value {
    let mut m = Map::new();
    m.insert("job_state".into(), json!(job.state.testflinger_name()));
    for (phase, code) in &job.phase_status {
        m.insert(format!("{phase}_status"), json!(code));
    }
    for (stream, fragments) in [(LogStream::Output, output), (LogStream::Serial, serial)] {
        for (phase, log) in logs::by_phase(fragments) {
            m.insert(
                format!("{}_{}", phase.as_str(), stream.as_str()),
                Value::String(log.log_data),
            );
        }
    }
    if let Some(info) = &job.device_info {
        m.insert("device_info".into(), info.clone());
    }
    m.insert("state".into(), json!(job.state.as_str()));
    m.insert("failure".into(), json!(job.failure));
    m.insert("attempt".into(), json!(job.attempt));
    Value::Object(m)
}

/// Adds what a Testflinger-style agent posted (`POST /v1/result/<id>`) where the scheduler's
/// results have nothing: `<phase>_status` from `status`, and `device_info`.
pub fn add_posted_results(results: &mut Value, posted: &Map<String, Value>) {
    let Some(m) = results.as_object_mut() else { return };
    if let Some(Value::Object(status)) = posted.get("status") {
        for (phase, code) in status {
            m.entry(format!("{phase}_status")).or_insert_with(|| code.clone());
        }
    }
    if let Some(info) = posted.get("device_info") {
        m.entry("device_info").or_insert_with(|| info.clone());
    }
}

/// An agent in `GET /v1/agents/data` and `GET /v1/queues/<q>/agents`.
#[derive(Clone, Debug, Serialize)]
pub struct AgentView {
    pub name: String,
    /// What to show now: `offline` when silent for three heartbeat intervals, the admin's
    /// decision once the agent is idle, else what the agent reported.
    pub state: &'static str,
    pub queues: Vec<String>,
    pub location: String,
    pub provision_type: String,
    pub job_id: String,
    pub comment: String,
    pub updated_at: String,
    /// The restricted queues this agent serves, with their owners.
    pub restricted_to: Map<String, Value>,
    /// [ext] Its provisioning results in a row: `pass` or `fail` (empty before the first).
    pub provision_streak_type: String,
    pub provision_streak_count: u32,
}

impl AgentView {
    /// `restricted`: every restricted queue and its owners; `streak`: the agent's provisioning
    /// streak.
    pub fn new(
        a: &AgentRecord,
        now: Millis,
        restricted: &BTreeMap<String, Vec<String>>,
        streak: Option<(&str, u32)>,
    ) -> AgentView {
        // An admin's comment explains the admin's state, so it wins while that state holds.
        let comment = a
            .admin_state
            .and(a.admin_comment.clone())
            .or_else(|| a.comment.clone())
            .unwrap_or_default();
        AgentView {
            name: a.name.to_string(),
            state: match a.effective_state(now) {
                // A lease is held for milliseconds before setup; Testflinger has no word for it.
                AgentState::Leased => "setup",
                other => other.as_str(),
            },
            queues: a.queues.iter().map(ToString::to_string).collect(),
            location: a.location.clone().unwrap_or_default(),
            provision_type: a.provision_type.clone().unwrap_or_default(),
            job_id: a.job_id.map(|j| j.to_string()).unwrap_or_default(),
            comment,
            updated_at: time(a.last_seen),
            restricted_to: a
                .queues
                .iter()
                .filter_map(|q| {
                    restricted
                        .get(q.as_str())
                        .map(|owners| (q.to_string(), serde_json::json!(owners)))
                })
                .collect(),
            provision_streak_type: streak.map(|(t, _)| t.to_owned()).unwrap_or_default(),
            provision_streak_count: streak.map_or(0, |(_, n)| n),
        }
    }
}
