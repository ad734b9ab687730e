//! Job states and the one function that says which moves between them are legal.
//!
//! Every store update that changes a job's state carries the state it expects to find as its
//! precondition, and every such update is first checked here.

use crate::phase::Phase;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for an agent.
    Waiting,
    /// An agent holds the lease but has not started a phase yet.
    Leased,
    Setup,
    Provision,
    FirmwareUpdate,
    Test,
    Allocate,
    /// Multi-device child: allocated and waiting for its parent.
    Allocated,
    Reserve,
    Cleanup,
    /// Finished; phase exit codes in the results say how the phases went.
    Complete,
    Cancelled,
    /// Ended by the system (timeout, lost agent, rejected, …); the job's `failure` says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal job state transition {from} → {to}")]
pub struct IllegalTransition {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    pub const ALL: [JobState; 13] = [
        JobState::Waiting,
        JobState::Leased,
        JobState::Setup,
        JobState::Provision,
        JobState::FirmwareUpdate,
        JobState::Test,
        JobState::Allocate,
        JobState::Allocated,
        JobState::Reserve,
        JobState::Cleanup,
        JobState::Complete,
        JobState::Cancelled,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Leased => "leased",
            JobState::Setup => "setup",
            JobState::Provision => "provision",
            JobState::FirmwareUpdate => "firmware_update",
            JobState::Test => "test",
            JobState::Allocate => "allocate",
            JobState::Allocated => "allocated",
            JobState::Reserve => "reserve",
            JobState::Cleanup => "cleanup",
            JobState::Complete => "complete",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The name Testflinger clients see in `job_state`.
    ///
    /// Testflinger's CLI polls until `complete` or `cancelled` and would poll a `failed` job
    /// forever, so a failed job shows as `complete` there (as Testflinger itself reports jobs
    /// whose phases failed); our own fields (`state`, `failure`) carry the truth. `leased` is a
    /// few milliseconds long and shows as `setup`, the state Testflinger would show next.
    pub fn testflinger_name(self) -> &'static str {
        match self {
            JobState::Failed => "complete",
            JobState::Leased => "setup",
            other => other.as_str(),
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Complete | JobState::Cancelled | JobState::Failed)
    }

    /// An agent holds the lease (leased or running a phase).
    pub fn is_active(self) -> bool {
        !self.is_terminal() && self != JobState::Waiting
    }

    pub fn from_phase(p: Phase) -> JobState {
        match p {
            Phase::Setup => JobState::Setup,
            Phase::Provision => JobState::Provision,
            Phase::FirmwareUpdate => JobState::FirmwareUpdate,
            Phase::Test => JobState::Test,
            Phase::Allocate => JobState::Allocate,
            Phase::Reserve => JobState::Reserve,
            Phase::Cleanup => JobState::Cleanup,
        }
    }

    /// Position of a running state in phase order; `None` for the others.
    fn run_rank(self) -> Option<u8> {
        Some(match self {
            JobState::Leased => 0,
            JobState::Setup => 1,
            JobState::Provision => 2,
            JobState::FirmwareUpdate => 3,
            JobState::Test => 4,
            JobState::Allocate => 5,
            JobState::Allocated => 6,
            JobState::Reserve => 7,
            JobState::Cleanup => 8,
            _ => return None,
        })
    }

    /// The single place that decides whether `self → to` is legal.
    ///
    /// - waiting → leased (lease granted), cancelled, failed
    /// - leased or a phase → a later phase (phases only move forward, so a late, reordered
    ///   event can never move a job back), waiting (lease reclaimed, job requeued), or an end
    /// - an end state → nothing
    pub fn transition(self, to: JobState) -> Result<JobState, IllegalTransition> {
        let legal = match (self, to) {
            (JobState::Waiting, JobState::Leased | JobState::Cancelled | JobState::Failed) => true,
            (from, JobState::Waiting) => from.is_active(),
            (from, to) if from.is_active() && to.is_terminal() => true,
            (from, to) => match (from.run_rank(), to.run_rank()) {
                (Some(a), Some(b)) => b > a,
                _ => false,
            },
        };
        if legal {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed or how its phases went. Infrastructure failures are told apart from test
/// failures so that CI can retry the former and report the latter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The test phase exited non-zero: the software under test failed.
    TestFailed,
    /// A device phase (setup, provision, firmware_update, allocate, reserve) exited non-zero.
    DeviceFailed,
    /// The connector reported that device recovery failed (exit 46); the agent went offline.
    RecoveryFailed,
    GlobalTimeout,
    OutputTimeout,
    /// The agent stopped renewing its lease and the attempt limit was reached.
    AgentLost,
    /// The submission could not be accepted (invalid, unroutable).
    Rejected,
    /// Anything else the agent could not do (could not start a phase, …).
    AgentError,
    /// Every phase ran, but the artifacts the job left could not be uploaded (after retries):
    /// the job's results are incomplete.
    ArtifactsLost,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::TestFailed => "test_failed",
            FailureKind::DeviceFailed => "device_failed",
            FailureKind::RecoveryFailed => "recovery_failed",
            FailureKind::GlobalTimeout => "global_timeout",
            FailureKind::OutputTimeout => "output_timeout",
            FailureKind::AgentLost => "agent_lost",
            FailureKind::Rejected => "rejected",
            FailureKind::AgentError => "agent_error",
            FailureKind::ArtifactsLost => "artifacts_lost",
        }
    }

    /// True when the lab, not the software under test, is to blame.
    pub fn is_infrastructure(self) -> bool {
        !matches!(self, FailureKind::TestFailed)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with its kind and a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn phases_only_move_forward() {
        assert!(Leased.transition(Setup).is_ok());
        assert!(Setup.transition(Test).is_ok());
        assert!(Test.transition(Cleanup).is_ok());
        assert!(Test.transition(Provision).is_err());
        assert!(Test.transition(Test).is_err());
    }

    #[test]
    fn end_states_are_final() {
        for end in [Complete, Cancelled, Failed] {
            for to in JobState::ALL {
                assert!(end.transition(to).is_err(), "{end} → {to}");
            }
        }
    }

    #[test]
    fn waiting_jobs_are_leased_cancelled_or_failed_only() {
        assert!(Waiting.transition(Leased).is_ok());
        assert!(Waiting.transition(Cancelled).is_ok());
        assert!(Waiting.transition(Test).is_err());
        assert!(Waiting.transition(Complete).is_err());
    }

    #[test]
    fn a_reclaimed_lease_sends_the_job_back_to_waiting() {
        assert!(Test.transition(Waiting).is_ok());
        assert!(Leased.transition(Waiting).is_ok());
        assert!(Complete.transition(Waiting).is_err());
    }

    #[test]
    fn failed_jobs_look_complete_to_testflinger_clients() {
        assert_eq!(Failed.testflinger_name(), "complete");
        assert_eq!(Cancelled.testflinger_name(), "cancelled");
    }
}
