//! The language every Flinger process speaks on the broker.
//!
//! - [`messages`]: every message type; [`codec`]: their versioned MessagePack encoding.
//! - [`names`]: the only place exchange, queue and routing-key names are spelled;
//!   [`topology`]: the idempotent declarations every binary runs at start.
//! - [`job`], [`phase`], [`state`]: the job file, the phase rules and the job state machine,
//!   shared by the gateway (validation), the scheduler (transitions) and the agent (phases).
//! - [`mask`]: masking secret values out of output (agent and gateway).
//! - [`job_files`]: the job-scoped credential a lease grant carries to move a job's files
//!   (issued and verified with feature `job-files`).
//! - `bus` (feature `bus`): AMQP plumbing (reconnecting connection, confirmed publisher, direct
//!   reply-to), and `topology`'s declarations; `service` (feature `service`): what every
//!   long-running binary does at start. Without these features the crate links no AMQP client:
//!   the CLI and the connectors use only the vocabulary.
//!
//! This crate knows nothing about stores, HTTP or devices.

#[cfg(feature = "bus")]
pub mod bus;
pub mod codec;
pub mod ids;
pub mod job;
pub mod job_files;
pub mod mask;
pub mod messages;
pub mod names;
pub mod phase;
#[cfg(feature = "service")]
pub mod service;
pub mod state;
pub mod timestamp;
#[cfg(feature = "bus")]
pub mod topology;

pub use codec::{CONTENT_TYPE, DecodeError, Message, SCHEMA_VERSION, decode, decode_submission, encode};
pub use ids::{AgentName, DeviceClass, NameError};
pub use job::{JobDefinition, ValidationErrors};
pub use names::Names;
pub use phase::{Phase, Plan};
pub use state::{Failure, FailureKind, IllegalTransition, JobState};
pub use timestamp::Millis;
