//! What the agent is doing, as one value other tasks can watch (the heartbeat publishes it on
//! every change), and the one function that decides which changes are legal.

use broker_schema::messages::{AdminState, AgentState};
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub state: AgentState,
    pub job_id: Option<Uuid>,
    /// What an admin (or the agent itself, after a failed recovery) decided.
    pub admin: Option<AdminState>,
    pub comment: Option<String>,
    /// A restart is pending (SIGUSR1 or an admin's `restart`), and why: the agent exits once
    /// idle ([`crate::restart`]).
    pub restart: Option<String>,
}

impl Snapshot {
    /// The comment to show: a pending restart, else the admin's or the agent's own.
    pub fn shown_comment(&self) -> Option<String> {
        match &self.restart {
            Some(why) => Some(format!("restart pending: {why}")),
            None => self.comment.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("illegal agent state change {from} → {to}")]
pub struct IllegalChange {
    pub from: AgentState,
    pub to: AgentState,
}

/// The single place deciding agent state changes:
/// waiting ⇄ maintenance/offline (only while idle); waiting → leased → phases (forward) →
/// waiting when the job is over.
pub fn transition(from: AgentState, to: AgentState) -> Result<AgentState, IllegalChange> {
    use AgentState::*;
    let ok = match (from, to) {
        (Waiting, Leased | Maintenance | Offline) => true,
        (Maintenance | Offline, Waiting | Maintenance | Offline) => true,
        (Leased, Running(_)) => true,
        (Running(a), Running(b)) => b > a,
        (Leased | Running(_), Waiting) => true,
        _ => false,
    };
    if ok {
        Ok(to)
    } else {
        Err(IllegalChange { from, to })
    }
}

/// The agent's status, shared.
#[derive(Clone)]
pub struct Status {
    tx: watch::Sender<Snapshot>,
}

impl Status {
    pub fn new() -> Status {
        let (tx, _) = watch::channel(Snapshot {
            state: AgentState::Waiting,
            job_id: None,
            admin: None,
            comment: None,
            restart: None,
        });
        Status { tx }
    }

    pub fn get(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Moves to `to` if legal; an illegal move is a bug, logged and ignored.
    pub fn set(&self, to: AgentState, job_id: Option<Uuid>) {
        self.tx.send_if_modified(|s| match transition(s.state, to) {
            Ok(state) => {
                s.state = state;
                s.job_id = job_id;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "ignored");
                false
            }
        });
    }

    /// Records an admin decision; it shows once the agent is idle.
    pub fn set_admin(&self, admin: Option<AdminState>, comment: Option<String>) {
        self.tx.send_if_modified(|s| {
            let changed = s.admin != admin || s.comment != comment;
            s.admin = admin;
            s.comment = comment;
            if s.job_id.is_none() {
                let idle = match admin {
                    Some(AdminState::Maintenance) => AgentState::Maintenance,
                    Some(AdminState::Offline) => AgentState::Offline,
                    // A restart is an order, never a state ([`Status::request_restart`]).
                    Some(AdminState::Restart) | None => AgentState::Waiting,
                };
                if s.state != idle {
                    s.state = idle;
                    return true;
                }
            }
            changed
        });
    }
}

impl Status {
    /// Asks for a restart after the current job (the first reason is kept).
    pub fn request_restart(&self, why: String) {
        self.tx.send_if_modified(|s| {
            if s.restart.is_some() {
                return false;
            }
            s.restart = Some(why);
            true
        });
    }

    /// The agent is going: shown offline, saying why, until it is back.
    pub fn going_away(&self, comment: String) {
        self.tx.send_modify(|s| {
            s.state = AgentState::Offline;
            s.job_id = None;
            s.comment = Some(comment);
            s.restart = None;
        });
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentState::*;
    use broker_schema::Phase;

    #[test]
    fn a_job_moves_the_agent_forward_and_back_to_waiting() {
        assert!(transition(Waiting, Leased).is_ok());
        assert!(transition(Leased, Running(Phase::Setup)).is_ok());
        assert!(transition(Running(Phase::Setup), Running(Phase::Test)).is_ok());
        assert!(transition(Running(Phase::Test), Running(Phase::Setup)).is_err());
        assert!(transition(Running(Phase::Cleanup), Waiting).is_ok());
    }

    #[test]
    fn maintenance_only_from_idle() {
        assert!(transition(Waiting, Maintenance).is_ok());
        assert!(transition(Running(Phase::Test), Maintenance).is_err());
        assert!(transition(Maintenance, Leased).is_err());
    }

    #[test]
    fn admin_state_shows_once_idle() {
        let s = Status::new();
        s.set(Leased, Some(Uuid::nil()));
        s.set_admin(Some(AdminState::Maintenance), Some("cable".into()));
        assert_eq!(s.get().state, Leased);
        s.set(Waiting, None);
        s.set_admin(Some(AdminState::Maintenance), Some("cable".into()));
        assert_eq!(s.get().state, Maintenance);
    }
}
