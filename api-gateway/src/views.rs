//! How store records are shown: Testflinger's shapes, plus our fields where the API says
//! **[ext]**. Datetimes are ISO-8601 UTC with a `Z`; `job_state` always uses Testflinger's
//! names, `state` and `failure` carry the truth.

use crate::logs;
use broker_schema::messages::{AgentState, LogStream};
use broker_schema::{Failure, Millis};
use flinger_api::{Agent, Attempt, JobInfo, Lease, ReservationInfo, Results, Shipped};
use flinger_store::{AgentRecord, JobRecord, OutputFragment};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn time(t: Millis) -> String {
    t.to_rfc3339()
}

fn opt_time(t: Option<Millis>) -> Option<String> {
    t.map(time)
}

/// `GET /v1/job/<id>/info` **[ext]**: the whole record.
pub fn job_info(job: &JobRecord, position: Option<u64>) -> JobInfo {
    JobInfo {
        job_id: job.job_id,
        queue: job.queue.to_string(),
        state: job.state.as_str().to_owned(),
        job_state: job.state.testflinger_name().to_owned(),
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
            .map(|a| Attempt {
                attempt: a.attempt,
                agent: a.agent.to_string(),
                started_at: time(a.started_at),
                ended_at: opt_time(a.ended_at),
                outcome: a.outcome.clone(),
            })
            .collect(),
        lease: job.lease.as_ref().map(|l| Lease {
            agent: l.agent.to_string(),
            until: time(l.until),
        }),
        phase_status: job.phase_status.clone(),
        failure: job.failure.as_ref().map(failure),
        cancel_requested: job.cancel_requested.clone(),
        reservation: job.reservation.as_ref().map(|r| ReservationInfo {
            started_at: time(r.started_at),
            until: time(r.until),
            device_ip: r.device_ip.clone(),
            user: r.user.clone(),
        }),
        device_info: job.device_info.clone(),
        position,
        parent_job_id: job.definition.parent_job_id(),
        children: job.children.clone(),
        released: job.released.clone(),
        shipped: job
            .output_shipped
            .filter(|s| s.attempt == job.attempt)
            .map(|s| Shipped {
                output: s.output,
                serial: s.serial,
            }),
    }
}

/// A failure as the API shows it: its kind by name.
pub fn failure(f: &Failure) -> flinger_api::Failure {
    flinger_api::Failure {
        kind: f.kind.as_str().to_owned(),
        reason: f.reason.clone(),
    }
}

/// `GET /v1/result/<id>`: Testflinger's flat results — `job_state`, `<phase>_status`,
/// `<phase>_output`, `<phase>_serial`, `device_info` — plus **[ext]** `state`, `failure`,
/// `attempt`. `output` and `serial` are the current attempt's fragments.
pub fn results(job: &JobRecord, output: &[OutputFragment], serial: &[OutputFragment]) -> Results {
    let mut phases = BTreeMap::new();
    for (phase, code) in &job.phase_status {
        phases.insert(format!("{phase}_status"), Value::from(*code));
    }
    for (stream, fragments) in [(LogStream::Output, output), (LogStream::Serial, serial)] {
        for (phase, log) in logs::by_phase(fragments) {
            phases.insert(
                format!("{}_{}", phase.as_str(), stream.as_str()),
                Value::String(log.log_data),
            );
        }
    }
    Results {
        job_state: job.state.testflinger_name().to_owned(),
        state: Some(job.state.as_str().to_owned()),
        failure: job.failure.as_ref().map(failure),
        attempt: Some(job.attempt),
        device_info: job.device_info.clone(),
        parent_job_id: job.definition.parent_job_id().map(|p| p.to_string()),
        children: job.children.iter().map(Uuid::to_string).collect(),
        output_truncated: job.output_truncated.clone(),
        phases,
    }
}

/// Adds what a Testflinger-style agent posted (`POST /v1/result/<id>`) where the scheduler's
/// results have nothing: `<phase>_status` from `status`, and `device_info`.
pub fn add_posted_results(results: &mut Results, posted: &Map<String, Value>) {
    if let Some(Value::Object(status)) = posted.get("status") {
        for (phase, code) in status {
            results
                .phases
                .entry(format!("{phase}_status"))
                .or_insert_with(|| code.clone());
        }
    }
    if let Some(info) = posted.get("device_info")
        && results.device_info.is_none()
    {
        results.device_info = Some(info.clone());
    }
}

/// An agent in `GET /v1/agents/data` and `GET /v1/queues/<q>/agents`. `restricted`: every
/// restricted queue and its owners; `streak`: the agent's provisioning streak.
pub fn agent(
    a: &AgentRecord,
    now: Millis,
    restricted: &BTreeMap<String, Vec<String>>,
    streak: Option<(&str, u32)>,
) -> Agent {
    // An admin's comment explains the admin's state, so it wins while that state holds.
    let comment = a
        .admin_state
        .and(a.admin_comment.clone())
        .or_else(|| a.comment.clone())
        .unwrap_or_default();
    Agent {
        name: a.name.to_string(),
        state: match a.effective_state(now) {
            // A lease is held for milliseconds before setup; Testflinger has no word for it.
            AgentState::Leased => "setup",
            other => other.as_str(),
        }
        .to_owned(),
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
                    .map(|owners| (q.to_string(), owners.clone()))
            })
            .collect(),
        provision_streak_type: streak.map(|(t, _)| t.to_owned()).unwrap_or_default(),
        provision_streak_count: streak.map_or(0, |(_, n)| n),
    }
}
