//! Follows jobs through the events the [`Tap`] sees: when each started its first phase, its test
//! phase, and when the scheduler announced its end.
//!
//! Events may arrive before the bench knows a job's id (an agent can start a job before the
//! gateway's answer reaches the client), so everything seen is kept by job id.

use crate::tap::{Seen, Tap};
use broker_schema::messages::{Heartbeat, JobEventKind};
use broker_schema::{JobState, Millis, Phase};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Clone, Debug, Default)]
pub struct Times {
    /// The first `phase_started` event: arrival, and the agent's own stamp.
    pub first_phase: Option<(Instant, Millis)>,
    pub test_started: Option<Instant>,
    pub test_finished: Option<Instant>,
    /// The scheduler's announcement that the job ended, and how.
    pub ended: Option<(Instant, JobState)>,
}

pub struct Tracker {
    tap: Tap,
    pub jobs: HashMap<Uuid, Times>,
    /// Jobs that ended so far, in any state.
    pub ended: usize,
    /// Jobs that ended in another state than `complete`.
    pub not_complete: usize,
    /// The last heartbeat seen from each agent.
    pub heartbeats: HashMap<String, (Instant, Heartbeat)>,
}

impl Tracker {
    pub fn new(tap: Tap) -> Tracker {
        Tracker {
            tap,
            jobs: HashMap::new(),
            ended: 0,
            not_complete: 0,
            heartbeats: HashMap::new(),
        }
    }

    fn absorb(&mut self, seen: Seen) {
        let (at, ev) = match seen {
            Seen::Job(at, ev) => (at, ev),
            Seen::Heartbeat(at, hb) => {
                self.heartbeats.insert(hb.agent.as_str().to_owned(), (at, hb));
                return;
            }
        };
        let t = self.jobs.entry(ev.job_id).or_default();
        match ev.kind {
            JobEventKind::PhaseStarted { phase } => {
                t.first_phase.get_or_insert((at, ev.at));
                if phase == Phase::Test {
                    t.test_started.get_or_insert(at);
                }
            }
            JobEventKind::PhaseFinished {
                phase: Phase::Test, ..
            } => {
                t.test_finished.get_or_insert(at);
            }
            JobEventKind::StateChanged { state, .. }
                if ev.agent.is_none() && state.is_terminal() && t.ended.is_none() =>
            {
                t.ended = Some((at, state));
                self.ended += 1;
                if state != JobState::Complete {
                    self.not_complete += 1;
                }
            }
            _ => {}
        }
    }

    /// Takes in every event that has arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(s) = self.tap.rx.try_recv() {
            self.absorb(s);
        }
    }

    /// Waits until `done` holds, taking in events as they come; false on timeout.
    pub async fn wait_until(&mut self, timeout: Duration, mut done: impl FnMut(&Tracker) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        self.drain();
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.tap.rx.recv()).await {
                Ok(Some(s)) => self.absorb(s),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// Waits until `job` has ended; its times.
    pub async fn wait_ended(&mut self, job: Uuid, timeout: Duration) -> Option<Times> {
        let ok = self
            .wait_until(timeout, |t| t.jobs.get(&job).is_some_and(|j| j.ended.is_some()))
            .await;
        ok.then(|| self.jobs[&job].clone())
    }

    pub async fn stop(self) {
        self.tap.stop().await;
    }
}
