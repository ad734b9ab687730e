//! Restarting the agent as Testflinger's is restarted: on SIGUSR1 (Testflinger's agent host charm
//! signals every agent this way when it upgrades the code or the configs) or an admin's
//! `restart` state, the agent finishes its current job, reports itself offline ("restarting"),
//! and exits with [`EXIT_CODE`]; its supervisor (systemd, supervisord) starts it again, and the
//! new process reads its configuration and runs the new binary. An idle agent exits at once.
//!
//! SIGTERM keeps its meaning: stop now, give the running job back for another attempt.
//!
//! This module never exits the process itself: `Agent::run` returns [`Ending::Restart`] and
//! `main` turns it into the exit code, after the agent has closed its connections.

use crate::status::Status;
use tokio_util::sync::CancellationToken;

/// The exit code of a requested restart: `EX_TEMPFAIL` ("try again"). Not 0, so that a
/// supervisor restarts it (systemd's `Restart=on-failure`, supervisord's default
/// `autorestart=unexpected` with `exitcodes=0`), and not 1, so that a restart is told from a
/// crash in the supervisor's logs. Testflinger's agent exits 1.
pub const EXIT_CODE: u8 = 75;

/// Why the agent stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM or SIGINT: stopped at once.
    Shutdown,
    /// A restart was asked for and the agent is idle: exit with [`EXIT_CODE`].
    Restart,
}

/// What SIGUSR1 says in the agent's comment, as Testflinger's agent says it.
pub const SIGNAL_REASON: &str = "Restart signal detected from supervisor process";

/// Marks the agent for restart on every SIGUSR1, until `shutdown`. The handler is installed
/// before this returns: SIGUSR1's default action would kill the agent.
pub fn on_sigusr1(status: Status, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let usr1 = signal(SignalKind::user_defined1());
    tokio::spawn(async move {
        let mut usr1 = match usr1 {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGUSR1; restarts need the admin state");
                return;
            }
        };
        loop {
            tokio::select! {
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGUSR1: restarting after the current job");
                    status.request_restart(SIGNAL_REASON.to_owned());
                }
                _ = shutdown.cancelled() => return,
            }
        }
    })
}
