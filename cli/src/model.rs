//! The API's answers as the CLI reads them: job ids, the job record (`/v1/job/<id>/info`), agents
//! and log batches. Parsed once at the edge; commands never dig in raw JSON for these fields.
//!
//! The raw JSON is kept alongside where `--json` prints it, so that fields this version does not
//! know about are passed through untouched.

use broker_schema::{FailureKind, JobState, Phase};
pub use flinger_api::Agent;
use flinger_api::{Attempt, Failure, LogAnswer};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A job id: a UUID, checked where it enters (argument or server answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(Uuid);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job id (job ids are UUIDs, such as 3f2504e0-4f89-41d3-9a0c-0305e82c3301)")]
pub struct NotAJobId(pub String);

impl FromStr for JobId {
    type Err = NotAJobId;

    fn from_str(s: &str) -> Result<JobId, NotAJobId> {
        Uuid::parse_str(s.trim())
            .map(JobId)
            .map_err(|_| NotAJobId(s.to_owned()))
    }
}

impl From<Uuid> for JobId {
    fn from(id: Uuid) -> JobId {
        JobId(id)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A log stream of a job, as named in `/v1/result/<id>/log/<stream>`.
pub use broker_schema::messages::LogStream;

/// The kind of a failure, `None` for a kind this version does not know (a newer server's).
pub fn known_kind(failure: &Failure) -> Option<FailureKind> {
    serde_json::from_value(Value::String(failure.kind.clone())).ok()
}

/// An answer the CLI decides on through its `flinger_api` type (`typed`) and prints, with
/// `--json`, as it came (`raw`: fields this version does not know are passed through).
#[derive(Clone, Debug)]
pub struct Answered<T> {
    pub raw: Value,
    pub typed: T,
}

impl<T: serde::de::DeserializeOwned> Answered<T> {
    pub fn parse(raw: Value) -> Result<Answered<T>, serde_json::Error> {
        Ok(Answered {
            typed: serde_json::from_value(raw.clone())?,
            raw,
        })
    }
}

/// The fields of the job record (`flinger_api::JobInfo`) the CLI decides on; `raw` is the whole
/// answer, printed as it came with `--json` (with fields this version does not know).
#[derive(Clone, Debug)]
pub struct JobInfo {
    pub raw: Value,
    pub queue: String,
    /// The true state (`failed` included), as the server spells it.
    pub state: String,
    /// Testflinger's name for the state (a failed job shows `complete`).
    pub job_state: String,
    pub attempt: u32,
    pub failure: Option<Failure>,
    /// Exit code of every phase that finished, by phase name.
    pub phase_status: Vec<(String, i64)>,
    /// 0-based place among the waiting jobs of its queue; only while waiting.
    pub position: Option<u64>,
    /// The agent that holds (or last held) the job.
    pub agent: Option<String>,
    /// Every attempt at running it, oldest first.
    pub attempts: Vec<Attempt>,
    /// A multi-device parent's children.
    pub children: Vec<Uuid>,
    /// Fragments of each log the current attempt had shipped by its latest recorded phase move
    /// (the record's `shipped`; zero from servers and agents that do not say).
    pub shipped: flinger_api::Shipped,
}

impl JobInfo {
    pub fn parse(raw: Value) -> Result<JobInfo, serde_json::Error> {
        let f: flinger_api::JobInfo = serde_json::from_value(raw.clone())?;
        Ok(JobInfo {
            raw,
            agent: f.agent().map(str::to_owned),
            queue: f.queue,
            job_state: if f.job_state.is_empty() {
                f.state.clone()
            } else {
                f.job_state
            },
            state: f.state,
            attempt: f.attempt,
            failure: f.failure,
            phase_status: f
                .phase_status
                .into_iter()
                .map(|(p, c)| (p, i64::from(c)))
                .collect(),
            position: f.position,
            attempts: f.attempts,
            children: f.children,
            shipped: f.shipped.unwrap_or_default(),
        })
    }

    /// Fragments of `stream` shipped by the latest recorded phase move: a follower shows them
    /// before the record's state.
    pub fn shipped(&self, stream: LogStream) -> u64 {
        match stream {
            LogStream::Output => self.shipped.output,
            LogStream::Serial => self.shipped.serial,
        }
    }

    pub fn known_state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }

    /// Whether the job has ended. A state this version does not know falls back on
    /// Testflinger's `job_state`, which only ends in `complete` or `cancelled`.
    pub fn is_terminal(&self) -> bool {
        match self.known_state() {
            Some(s) => s.is_terminal(),
            None => matches!(self.job_state.as_str(), "complete" | "cancelled"),
        }
    }
}

/// One phase's new text in a log answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseText {
    pub phase: String,
    pub last_fragment_number: i64,
    pub text: String,
}

/// The new output of one log read, in the order the phases ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogBatch {
    pub pieces: Vec<PhaseText>,
}

impl LogBatch {
    /// Reads `{"<stream>": {"<phase>": {"last_fragment_number": n, "log_data": "…"}}}`.
    ///
    /// Phases run one after the other and fragments are numbered across phases, so phase order
    /// is output order. Phases this version does not know (a newer server's) come last, by name.
    pub fn parse(answer: &LogAnswer, stream: LogStream) -> Result<LogBatch, String> {
        let phases = answer
            .get(stream.as_str())
            .ok_or_else(|| format!("no {:?} object in the log answer", stream.as_str()))?;
        let rank = |name: &str| {
            Phase::ALL
                .iter()
                .position(|p| p.as_str() == name)
                .unwrap_or(usize::MAX)
        };
        let mut names: Vec<&String> = phases.keys().collect();
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        let mut pieces = Vec::new();
        for name in names {
            let entry = &phases[name.as_str()];
            if entry.last_fragment_number >= 0 || !entry.log_data.is_empty() {
                pieces.push(PhaseText {
                    phase: name.clone(),
                    last_fragment_number: entry.last_fragment_number,
                    text: entry.log_data.clone(),
                });
            }
        }
        Ok(LogBatch { pieces })
    }

    /// The fragment number to ask for next, given the one asked for this time.
    pub fn next_fragment(&self, asked: u64) -> u64 {
        self.pieces
            .iter()
            .filter_map(|p| u64::try_from(p.last_fragment_number).ok())
            .map(|n| n + 1)
            .max()
            .map_or(asked, |n| n.max(asked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_answer(v: Value) -> LogAnswer {
        serde_json::from_value(v).unwrap()
    }

    /// A job record with `fields`, as the server would send it.
    fn info(mut fields: Value) -> JobInfo {
        fields["job_id"] = json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        JobInfo::parse(fields).unwrap()
    }

    #[test]
    fn job_ids_must_be_uuids() {
        assert!("3f2504e0-4f89-41d3-9a0c-0305e82c3301".parse::<JobId>().is_ok());
        let err = "12345".parse::<JobId>().unwrap_err();
        assert!(err.to_string().contains("\"12345\" is not a job id"), "{err}");
    }

    #[test]
    fn log_batches_come_in_phase_order_whatever_the_json_order() {
        let answer = json!({"output": {
            "test": {"last_fragment_number": 5, "log_data": "tested\n"},
            "cleanup": {"last_fragment_number": 6, "log_data": "cleaned\n"},
            "setup": {"last_fragment_number": 1, "log_data": "set up\n"},
            "provision": {"last_fragment_number": -1, "log_data": ""},
        }});
        let batch = LogBatch::parse(&log_answer(answer), LogStream::Output).unwrap();
        let phases: Vec<_> = batch.pieces.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(phases, ["setup", "test", "cleanup"]);
        assert_eq!(batch.next_fragment(0), 7);
    }

    #[test]
    fn an_empty_batch_keeps_the_fragment_asked_for() {
        let answer = json!({"output": {"test": {"last_fragment_number": -1, "log_data": ""}}});
        let batch = LogBatch::parse(&log_answer(answer), LogStream::Output).unwrap();
        assert!(batch.pieces.is_empty());
        assert_eq!(batch.next_fragment(4), 4);
    }

    #[test]
    fn unknown_phases_come_after_known_ones() {
        let answer = json!({"output": {"zeta": {"last_fragment_number": 9, "log_data": "z"}, "test": {"last_fragment_number": 3, "log_data": "t"}}});
        let batch = LogBatch::parse(&log_answer(answer), LogStream::Output).unwrap();
        assert_eq!(batch.pieces[0].phase, "test");
        assert_eq!(batch.pieces[1].phase, "zeta");
    }

    #[test]
    fn info_names_the_agent_from_the_lease_or_the_last_attempt() {
        let info = info(json!({
            "queue": "q", "state": "failed", "job_state": "complete", "attempt": 2,
            "attempts": [
                {"attempt": 1, "agent": "a1", "started_at": "2026-12-04T10:00:00Z"},
                {"attempt": 2, "agent": "a2", "started_at": "2026-12-04T10:05:00Z"},
            ],
            "lease": null,
            "failure": {"kind": "agent_lost", "reason": "lease expired"},
            "phase_status": {"setup": 0},
        }));
        assert_eq!(info.agent.as_deref(), Some("a2"));
        assert!(info.is_terminal());
        assert_eq!(known_kind(&info.failure.unwrap()), Some(FailureKind::AgentLost));
    }

    #[test]
    fn an_unknown_state_is_terminal_only_if_testflinger_says_so() {
        let running = info(json!({"state": "flashing", "job_state": "provision"}));
        assert!(!running.is_terminal());
        let ended = info(json!({"state": "exploded", "job_state": "complete"}));
        assert!(ended.is_terminal());
    }
}
