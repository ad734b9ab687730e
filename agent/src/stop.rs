//! Why a job stops early, and the signal that stops it. The first reason wins.

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
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the job to stop. A later reason does not replace the first, except that a reason
    /// which forbids cleanup always makes the stop hard.
    pub fn request(&self, reason: StopReason) {
        let hard = reason.forbids_cleanup();
        {
            let mut r = self.reason.lock().expect("stop reason lock");
            if r.is_none() {
                tracing::info!(?reason, "stopping the job");
                *r = Some(reason);
            }
        }
        self.token.cancel();
        if hard {
            self.hard.cancel();
        }
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().expect("stop reason lock").clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}
