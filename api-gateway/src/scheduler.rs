//! Asking the scheduler, the only writer of job state, to do something, by request/reply on its
//! RPC queue, bounded by the configured timeout.

use crate::state::AppState;
use broker_schema::Millis;
use broker_schema::bus::RpcError;
use broker_schema::messages::{CommandReply, RefusalCode, SchedulerReply, SchedulerRequest};

/// Which command the scheduler refused: the same refusal means another HTTP status for each
/// (see `error.rs`, where every refusal becomes a status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Cancel,
    Extend,
    SetAgentState,
    AttachmentsReady,
    /// A request that is not a person's command (the gateway sends none through [`command`]).
    Other,
}

impl Command {
    fn of(request: &SchedulerRequest) -> Command {
        match request {
            SchedulerRequest::Cancel(_) => Command::Cancel,
            SchedulerRequest::Extend(_) => Command::Extend,
            SchedulerRequest::SetAgentState(_) => Command::SetAgentState,
            SchedulerRequest::AttachmentsReady(_) => Command::AttachmentsReady,
            _ => Command::Other,
        }
    }
}

/// The scheduler's verdict on a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{reason}")]
    Refused {
        command: Command,
        code: RefusalCode,
        reason: String,
    },
    /// No answer in time: nothing is known to have changed; the client may retry.
    #[error("The scheduler did not answer: {0}")]
    Unavailable(RpcError),
    #[error("The scheduler could not serve the request: {0}")]
    Failed(String),
}

/// What the scheduler says it did.
#[derive(Debug)]
pub struct Done {
    pub detail: String,
    /// A reservation's deadline, when the command moved it.
    pub reserve_until: Option<Millis>,
}

/// Sends a command and waits for the scheduler's reply, at most the scheduler timeout (reaching
/// the broker included).
pub async fn command(state: &AppState, request: &SchedulerRequest) -> Result<Done, CommandError> {
    let limit = state.timeouts().scheduler;
    let queue = state.names().scheduler_rpc_queue();
    let reply = state
        .rpc()
        .call::<_, SchedulerReply>(&queue, request, limit)
        .await
        .map_err(CommandError::Unavailable)?;
    match reply {
        SchedulerReply::Command(CommandReply::Done {
            detail,
            reserve_until,
        }) => Ok(Done {
            detail,
            reserve_until,
        }),
        SchedulerReply::Command(CommandReply::Refused { code, reason }) => Err(CommandError::Refused {
            command: Command::of(request),
            code,
            reason,
        }),
        SchedulerReply::Error { reason } => Err(CommandError::Failed(reason)),
        other => Err(CommandError::Failed(format!("unexpected reply {other:?}"))),
    }
}
