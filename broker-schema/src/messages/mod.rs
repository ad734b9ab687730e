//! Every message that travels on the broker. One module per conversation.

mod control;
mod events;
mod heartbeat;
mod rpc;
pub(crate) mod submission;

pub use control::{AdminState, Control, ControlCommand};
pub use events::{JobEvent, JobEventKind, LogStream, Outcome, OutputChunk, OutputCounts};
pub use heartbeat::{AgentState, Heartbeat};
pub use rpc::{
    AttachmentsReadyRequest, CancelRequest, CommandReply, DenyReason, ExtendRequest, LeaseDenial, LeaseGrant,
    LeaseReply, LeaseRequest, RefusalCode, RenewReply, RenewRequest, RestrictedQueuesRequest, SchedulerReply,
    SchedulerRequest, SetAgentStateRequest,
};
pub use submission::{PRIORITY_LEVELS, Submission};
