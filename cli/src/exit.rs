//! Exit codes: the one place that decides them, for job outcomes and for errors alike.
//!
//! Scripts rely on these numbers (docs/cli.md); change them only with a major version.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for a followed job: it completed and no phase failed |
//! | 1 | the job's test phase failed (the software under test) |
//! | 2 | the request was wrong or refused: usage, invalid job file, unknown queue or job, a refused action |
//! | 3 | the job failed for an infrastructure reason: device phase, timeout, agent lost, rejected… |
//! | 4 | the job was cancelled |
//! | 5 | the server could not be reached, failed (5xx) or answered nonsense |
//! | 6 | authentication needed or refused: no login, bad credentials, an expired login, or a role that does not allow the request (401/403) |
//! | 130 | interrupted (Ctrl-C) while following a job |

use crate::client::ClientError;
use crate::config::ConfigError;
use crate::jobfile::JobFileError;
use crate::model::JobInfo;
use broker_schema::{FailureKind, JobState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    TestFailed = 1,
    Usage = 2,
    Infrastructure = 3,
    Cancelled = 4,
    Unavailable = 5,
    Auth = 6,
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// How an ended job went, as CI needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Complete, and no phase failed.
    Passed,
    /// The test phase failed: the software under test is to blame.
    TestFailed {
        reason: String,
    },
    /// The lab is to blame (device phase, timeout, lost agent, rejection…): worth a retry.
    InfrastructureFailed {
        kind: String,
        reason: String,
    },
    Cancelled,
}

impl Outcome {
    /// The outcome of an ended job; `None` while it has not ended.
    ///
    /// Decided by the true `state` and `failure.kind`. Should a complete job carry no failure
    /// although a phase exited non-zero (an older server), the failing phase decides.
    pub fn of(info: &JobInfo) -> Option<Outcome> {
        if !info.is_terminal() {
            return None;
        }
        let cancelled = match info.known_state() {
            Some(s) => s == JobState::Cancelled,
            None => info.job_state == "cancelled",
        };
        if cancelled {
            return Some(Outcome::Cancelled);
        }
        if let Some(f) = &info.failure {
            return Some(match crate::model::known_kind(f) {
                Some(FailureKind::TestFailed) => Outcome::TestFailed {
                    reason: f.reason.clone(),
                },
                // A kind this version does not know is not claimed as a test failure.
                _ => Outcome::InfrastructureFailed {
                    kind: f.kind.clone(),
                    reason: f.reason.clone(),
                },
            });
        }
        if info.known_state() == Some(JobState::Failed) {
            return Some(Outcome::InfrastructureFailed {
                kind: "unknown".into(),
                reason: "the job failed".into(),
            });
        }
        let failed_phase = broker_schema::Phase::ALL.iter().find_map(|p| {
            let (_, code) = info.phase_status.iter().find(|(name, _)| name == p.as_str())?;
            (*code != 0).then_some((*p, *code))
        });
        Some(match failed_phase {
            None => Outcome::Passed,
            Some((broker_schema::Phase::Test, code)) => Outcome::TestFailed {
                reason: format!("test exited {code}"),
            },
            Some((phase, code)) => Outcome::InfrastructureFailed {
                kind: "device_failed".into(),
                reason: format!("{phase} exited {code}"),
            },
        })
    }

    pub fn exit(&self) -> Exit {
        match self {
            Outcome::Passed => Exit::Success,
            Outcome::TestFailed { .. } => Exit::TestFailed,
            Outcome::InfrastructureFailed { .. } => Exit::Infrastructure,
            Outcome::Cancelled => Exit::Cancelled,
        }
    }
}

/// Everything that can stop a command before it has done its work.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    JobFile(#[from] JobFileError),
    /// The server refused the job; `fields` are its field errors, one `path: message` each.
    #[error("the server refused the job in {origin}: {message}")]
    JobRefused {
        origin: String,
        message: String,
        fields: Vec<String>,
    },
    /// Refused before submitting: no agent serves the queue.
    #[error("no agent serves queue {queue:?}, so the job was not submitted{}", known_queues(.known))]
    UnknownQueue { queue: String, known: Vec<String> },
    /// Refused before submitting: every agent serving the queue is offline (or excluded).
    #[error(
        "every agent serving queue {queue:?} is offline{}, so the job was not submitted{} \
         (`submit --wait-for-available-agents` submits it anyway, to wait for one)",
        listed(.offline), excluded_online(.excluded)
    )]
    NoOnlineAgent {
        queue: String,
        offline: Vec<String>,
        /// Agents that are online but the job's `exclude_agents` names.
        excluded: Vec<String>,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A login is needed, or was refused, or does not allow the action.
    #[error("{0}")]
    Auth(String),
    /// A failure made of several steps, with the exit code of the step that failed.
    #[error("{message}")]
    Failed { message: String, exit: Exit },
    /// Ctrl-C while following a job.
    #[error("interrupted")]
    Interrupted,
    /// Writing to stdout failed (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

fn known_queues(known: &[String]) -> String {
    match known.len() {
        0 => String::new(),
        _ => format!(" (queues served now: {})", known.join(", ")),
    }
}

fn listed(agents: &[String]) -> String {
    match agents.len() {
        0 => String::new(),
        _ => format!(" ({})", agents.join(", ")),
    }
}

fn excluded_online(agents: &[String]) -> String {
    match agents.len() {
        0 => String::new(),
        _ => format!(
            "; online but excluded by the job's exclude_agents: {}",
            agents.join(", ")
        ),
    }
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_)
            | CliError::Config(_)
            | CliError::JobFile(_)
            | CliError::JobRefused { .. }
            | CliError::UnknownQueue { .. }
            | CliError::NoOnlineAgent { .. } => Exit::Usage,
            CliError::Auth(_) => Exit::Auth,
            CliError::Interrupted => Exit::Interrupted,
            CliError::Failed { exit, .. } => *exit,
            CliError::Client(e) => match e {
                e if e.is_auth() => Exit::Auth,
                ClientError::Refused { .. } | ClientError::NoSuchJob(_) | ClientError::Io { .. } => {
                    Exit::Usage
                }
                ClientError::Unreachable { .. }
                | ClientError::Server { .. }
                | ClientError::BadAnswer { .. }
                | ClientError::Auth(_) => Exit::Unavailable,
            },
            // Nobody is left to read what we would say.
            CliError::Output(_) => Exit::Unavailable,
        }
    }

    /// A closed stdout (`flinger poll … | head`) ends the command quietly.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(mut v: serde_json::Value) -> Option<Outcome> {
        v["job_id"] = json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        Outcome::of(&JobInfo::parse(v).unwrap())
    }

    #[test]
    fn a_complete_job_without_failure_passes_with_exit_0() {
        let o = outcome(
            json!({"state": "complete", "job_state": "complete", "failure": null, "phase_status": {"setup": 0, "test": 0}}),
        );
        assert_eq!(o, Some(Outcome::Passed));
        assert_eq!(o.unwrap().exit().code(), 0);
    }

    #[test]
    fn a_failed_test_phase_exits_1() {
        let o = outcome(
            json!({"state": "complete", "failure": {"kind": "test_failed", "reason": "test exited 1"}}),
        )
        .unwrap();
        assert_eq!(
            o,
            Outcome::TestFailed {
                reason: "test exited 1".into()
            }
        );
        assert_eq!(o.exit().code(), 1);
    }

    #[test]
    fn infrastructure_failures_exit_3_whatever_their_kind() {
        for (state, kind) in [
            ("complete", "device_failed"),
            ("complete", "recovery_failed"),
            ("failed", "global_timeout"),
            ("failed", "output_timeout"),
            ("failed", "agent_lost"),
            ("failed", "rejected"),
            ("failed", "agent_error"),
            ("failed", "some_kind_from_the_future"),
        ] {
            let o = outcome(
                json!({"state": state, "job_state": "complete", "failure": {"kind": kind, "reason": "r"}}),
            )
            .unwrap();
            assert_eq!(o.exit().code(), 3, "{state} {kind}");
        }
    }

    #[test]
    fn a_cancelled_job_exits_4() {
        let o = outcome(json!({"state": "cancelled", "job_state": "cancelled"})).unwrap();
        assert_eq!(o.exit().code(), 4);
    }

    #[test]
    fn a_running_job_has_no_outcome_yet() {
        assert_eq!(outcome(json!({"state": "waiting", "job_state": "waiting"})), None);
        assert_eq!(outcome(json!({"state": "test", "job_state": "test"})), None);
    }

    #[test]
    fn without_a_failure_record_the_failing_phase_decides() {
        let test = outcome(json!({"state": "complete", "phase_status": {"setup": 0, "test": 2}})).unwrap();
        assert_eq!(test.exit().code(), 1);
        let provision = outcome(json!({"state": "complete", "phase_status": {"provision": 1}})).unwrap();
        assert_eq!(provision.exit().code(), 3);
    }

    #[test]
    fn errors_map_to_usage_or_unavailable() {
        let refused = CliError::Client(ClientError::Refused {
            status: 400,
            message: "m".into(),
            detail: None,
        });
        assert_eq!(refused.exit().code(), 2);
        let unknown = CliError::UnknownQueue {
            queue: "q".into(),
            known: vec![],
        };
        assert_eq!(unknown.exit().code(), 2);
        let down = CliError::Client(ClientError::Unreachable {
            server: "s".into(),
            detail: "refused".into(),
        });
        assert_eq!(down.exit().code(), 5);
        let failing = CliError::Client(ClientError::Server {
            status: 500,
            message: "m".into(),
        });
        assert_eq!(failing.exit().code(), 5);
        assert_eq!(CliError::Usage("u".into()).exit().code(), 2);
    }

    #[test]
    fn authentication_failures_exit_6() {
        for status in [401, 403] {
            let e = CliError::Client(ClientError::Refused {
                status,
                message: "m".into(),
                detail: None,
            });
            assert_eq!(e.exit().code(), 6, "{status}");
        }
        assert_eq!(
            CliError::Client(ClientError::Auth("no login".into()))
                .exit()
                .code(),
            6
        );
        assert_eq!(CliError::Auth("log in".into()).exit().code(), 6);
        assert_eq!(CliError::Interrupted.exit().code(), 130);
    }

    #[test]
    fn an_unknown_queue_names_the_queues_that_are_served() {
        let e = CliError::UnknownQueue {
            queue: "nope".into(),
            known: vec!["rpi4b".into(), "x86".into()],
        };
        assert_eq!(
            e.to_string(),
            "no agent serves queue \"nope\", so the job was not submitted (queues served now: rpi4b, x86)"
        );
    }
}
