//! Why a job stops early, and the signal that stops it. The first reason wins.
//!
//! While a Testflinger device connector provisions, a cancel is *held*: interrupting a device in
//! the middle of flashing can leave it unusable, so provision goes on to its end (bounded by the
//! global timeout, which is never held) and the cancel takes effect the moment it ends.
//! Testflinger's agent does not look for cancels during provision; we keep them.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Someone cancelled the job: stop the phase, run cleanup, end `cancelled`.
    Cancelled(String),
    /// The job ran longer than its global timeout.
    GlobalTimeout(Duration),
    /// The test phase printed nothing for this long.
    OutputTimeout(Duration),
    /// The lease could not be renewed: stop at once, run nothing more.
    LeaseLost(String),
    /// The agent is shutting down: stop at once; the lease lapses and the job is retried.
    Shutdown,
}

impl StopReason {
    /// After these, no phase of the job may run, cleanup included (the lease is gone, or going).
    pub fn forbids_cleanup(&self) -> bool {
        matches!(self, StopReason::LeaseLost(_) | StopReason::Shutdown)
    }
}

/// A job's stop signal: `token` stops the running phase; `hard` also stops cleanup.
#[derive(Clone, Default)]
pub struct Stop {
    pub token: CancellationToken,
    pub hard: CancellationToken,
    /// Fires when a cancel arrived while cancels were held (the runner says so in the output).
    pub held: CancellationToken,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    reason: Option<StopReason>,
    /// Cancels are held (provision runs).
    holding: bool,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the job to stop. A later reason does not replace the first, except that a reason
    /// which forbids cleanup always makes the stop hard. A cancel while cancels are held is
    /// recorded (it stays the job's reason) but stops nothing until [`Stop::release_cancels`].
    pub fn request(&self, reason: StopReason) {
        let hard = reason.forbids_cleanup();
        let held = {
            let mut s = self.state.lock().expect("stop lock");
            let held = s.holding && matches!(reason, StopReason::Cancelled(_));
            if s.reason.is_none() {
                tracing::info!(?reason, held, "stopping the job");
                s.reason = Some(reason);
            }
            held
        };
        if held {
            self.held.cancel();
            return;
        }
        self.token.cancel();
        if hard {
            self.hard.cancel();
        }
    }

    /// From now on, cancels wait for [`Stop::release_cancels`].
    pub fn hold_cancels(&self) {
        self.state.lock().expect("stop lock").holding = true;
    }

    /// Cancels take effect again, a held one at once. Returns whether one was held.
    pub fn release_cancels(&self) -> bool {
        let held = {
            let mut s = self.state.lock().expect("stop lock");
            s.holding = false;
            matches!(s.reason, Some(StopReason::Cancelled(_)))
        };
        if held && !self.token.is_cancelled() {
            self.token.cancel();
            return true;
        }
        false
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.state.lock().expect("stop lock").reason.clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_cancel_stops_nothing_until_released_and_stays_the_reason() {
        let s = Stop::new();
        s.hold_cancels();
        s.request(StopReason::Cancelled("by alice".into()));
        assert!(!s.is_stopped());
        assert!(s.held.is_cancelled());
        // The global timeout is never held: it cuts provision short, but the job was cancelled.
        s.request(StopReason::GlobalTimeout(Duration::from_secs(1)));
        assert!(s.is_stopped());
        assert_eq!(s.reason(), Some(StopReason::Cancelled("by alice".into())));
    }

    #[test]
    fn releasing_applies_a_held_cancel() {
        let s = Stop::new();
        s.hold_cancels();
        s.request(StopReason::Cancelled("x".into()));
        assert!(s.release_cancels());
        assert!(s.is_stopped() && !s.hard.is_cancelled());
        // Nothing held: releasing changes nothing.
        let s = Stop::new();
        s.hold_cancels();
        assert!(!s.release_cancels());
        assert!(!s.is_stopped());
    }

    #[test]
    fn a_lost_lease_or_a_shutdown_is_never_held() {
        for reason in [StopReason::LeaseLost("gone".into()), StopReason::Shutdown] {
            let s = Stop::new();
            s.hold_cancels();
            s.request(reason);
            assert!(s.is_stopped() && s.hard.is_cancelled());
        }
    }
}
