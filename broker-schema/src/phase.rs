//! Phase order and Testflinger's rules for which phases run. The only home of these rules.
//!
//! Order: setup → provision → firmware_update → test → allocate → reserve, then cleanup always.
//! A phase runs when the device has a step for it and, for the data-driven phases, the job carries
//! that phase's data without `skip: true`; `attachments` alone do not count as data (Testflinger
//! strips them before deciding). A non-zero exit stops the later phases, except that a
//! failing `test` still lets `allocate` and `reserve` run; cleanup always runs.

use crate::job::JobDefinition;

/// The exit code by which a device connector says "device recovery failed" (Testflinger's
/// convention): the job's device phase failed and the agent takes itself offline.
pub const RECOVERY_FAILED_EXIT: i32 = 46;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    Provision,
    FirmwareUpdate,
    Test,
    Allocate,
    Reserve,
    Cleanup,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 7] = [
        Phase::Setup,
        Phase::Provision,
        Phase::FirmwareUpdate,
        Phase::Test,
        Phase::Allocate,
        Phase::Reserve,
        Phase::Cleanup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Provision => "provision",
            Phase::FirmwareUpdate => "firmware_update",
            Phase::Test => "test",
            Phase::Allocate => "allocate",
            Phase::Reserve => "reserve",
            Phase::Cleanup => "cleanup",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The job-file key whose presence makes this phase run, if the phase is data-driven.
    pub fn data_key(self) -> Option<&'static str> {
        match self {
            Phase::Setup | Phase::Cleanup => None,
            Phase::Provision => Some("provision_data"),
            Phase::FirmwareUpdate => Some("firmware_update_data"),
            Phase::Test => Some("test_data"),
            Phase::Allocate => Some("allocate_data"),
            Phase::Reserve => Some("reserve_data"),
        }
    }

    /// Whether the job asks for this phase (setup and cleanup are always asked for). A phase's
    /// data holding only `attachments` does not ask for it: Testflinger removes the attachments
    /// once unpacked, and a phase left with no data does not run.
    pub fn wanted_by(self, job: &JobDefinition) -> bool {
        match self.data_key() {
            None => true,
            Some(key) => match job.raw().get(key) {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Object(m)) => {
                    m.keys().any(|k| k != "attachments")
                        && m.get("skip") != Some(&serde_json::Value::Bool(true))
                }
                Some(_) => true,
            },
        }
    }

    /// Whether later phases still run after this phase exited non-zero.
    ///
    /// Only a failing `test` lets `allocate` and `reserve` go ahead (a person may want the machine
    /// to look at the failure). Cleanup is never stopped: see [`Plan`].
    pub fn failure_stops_later_phases(self) -> bool {
        !matches!(self, Phase::Test | Phase::Cleanup)
    }

    /// Testflinger's device-connector stage name for this phase (`test` is `runtest`).
    pub fn connector_stage(self) -> &'static str {
        match self {
            Phase::Test => "runtest",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides, phase after phase, what runs next. Pure: the agent feeds it exit codes.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Phases the job wants and the device supports, in order, cleanup excluded.
    main: Vec<Phase>,
    next: usize,
    stopped: bool,
    cleanup: bool,
}

impl Plan {
    /// `supported` says whether the device (connector) has a step for a phase.
    pub fn new(job: &JobDefinition, supported: impl Fn(Phase) -> bool) -> Plan {
        let main = Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::Cleanup && p.wanted_by(job) && supported(*p))
            .collect();
        Plan {
            main,
            next: 0,
            stopped: false,
            cleanup: supported(Phase::Cleanup),
        }
    }

    /// The next main phase to run, or `None` when only cleanup is left.
    pub fn next_phase(&mut self) -> Option<Phase> {
        if self.stopped || self.next >= self.main.len() {
            return None;
        }
        let p = self.main[self.next];
        self.next += 1;
        Some(p)
    }

    /// Records a phase's exit code; a failure may stop the rest.
    pub fn record(&mut self, phase: Phase, exit_code: i32) {
        if exit_code != 0 && phase.failure_stops_later_phases() {
            self.stopped = true;
        }
    }

    /// Stops the main phases (cancel, timeout); cleanup still runs.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Phases that were never started because the plan stopped.
    pub fn skipped(&self) -> &[Phase] {
        if self.stopped {
            &self.main[self.next..]
        } else {
            &[]
        }
    }

    pub fn runs_cleanup(&self) -> bool {
        self.cleanup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(v: serde_json::Value) -> JobDefinition {
        JobDefinition::parse(v).unwrap()
    }

    fn run(plan: &mut Plan, codes: &[(Phase, i32)]) -> Vec<Phase> {
        let mut ran = vec![];
        while let Some(p) = plan.next_phase() {
            ran.push(p);
            let code = codes.iter().find(|(q, _)| *q == p).map(|(_, c)| *c).unwrap_or(0);
            plan.record(p, code);
        }
        ran
    }

    #[test]
    fn phases_without_data_or_with_skip_do_not_run() {
        let j = job(
            json!({"job_queue": "q", "provision_data": {"skip": true}, "test_data": {"test_cmds": "true"}}),
        );
        let mut plan = Plan::new(&j, |_| true);
        assert_eq!(run(&mut plan, &[]), vec![Phase::Setup, Phase::Test]);
        assert!(plan.runs_cleanup());
    }

    #[test]
    fn provision_failure_stops_later_phases_but_not_cleanup() {
        let j = job(
            json!({"job_queue": "q", "provision_data": {"url": "x"}, "test_data": {"test_cmds": "true"}, "reserve_data": {"ssh_keys": ["lp:me"]}}),
        );
        let mut plan = Plan::new(&j, |_| true);
        assert_eq!(
            run(&mut plan, &[(Phase::Provision, 1)]),
            vec![Phase::Setup, Phase::Provision]
        );
        assert_eq!(plan.skipped(), &[Phase::Test, Phase::Reserve]);
        assert!(plan.runs_cleanup());
    }

    #[test]
    fn test_failure_still_lets_reserve_run() {
        let j = job(
            json!({"job_queue": "q", "test_data": {"test_cmds": "false"}, "reserve_data": {"ssh_keys": ["lp:me"]}}),
        );
        let mut plan = Plan::new(&j, |_| true);
        assert_eq!(
            run(&mut plan, &[(Phase::Test, 1)]),
            vec![Phase::Setup, Phase::Test, Phase::Reserve]
        );
    }

    #[test]
    fn a_phase_whose_data_is_only_attachments_does_not_run() {
        let j = job(json!({
            "job_queue": "q",
            "provision_data": {"attachments": [{"local": "img.bin"}]},
            "firmware_update_data": {"attachments": [{"local": "fw.bin"}], "version": "1.2"},
            "test_data": {"attachments": [{"local": "t.sh"}], "test_cmds": "sh attachments/test/t.sh"},
        }));
        let mut plan = Plan::new(&j, |_| true);
        assert_eq!(
            run(&mut plan, &[]),
            vec![Phase::Setup, Phase::FirmwareUpdate, Phase::Test]
        );
    }

    #[test]
    fn unsupported_phases_are_skipped() {
        let j = job(
            json!({"job_queue": "q", "provision_data": {"url": "x"}, "test_data": {"test_cmds": "true"}}),
        );
        let mut plan = Plan::new(&j, |p| p == Phase::Test);
        assert_eq!(run(&mut plan, &[]), vec![Phase::Test]);
        assert!(!plan.runs_cleanup());
    }
}
