//! The bodies of Flinger's HTTP API, typed once.
//!
//! The gateway's handlers answer with these types, the CLI's client reads them, and the OpenAPI
//! document takes their schemas from the `ToSchema` derives, so the three cannot drift apart.
//! The shapes are Testflinger's wherever Testflinger has the endpoint (its CLI and agents read
//! them), plus Flinger's extensions marked **[ext]** in `docs/api.md`.
//!
//! Readers are lenient where a newer server may add or drop a field: strings rather than enums
//! for states and kinds (a state this version does not know is still shown), defaults for
//! fields an older server did not send.
//!
//! This crate knows nothing about HTTP servers, AMQP or the store: it is plain data, plus
//! [`eta`], the queue estimator every ETA comes from (a pure function over plain inputs).

pub mod agents;
pub mod auth;
pub mod errors;
pub mod eta;
pub mod jobs;
pub mod results;

pub use agents::{
    Agent, AgentIn, ImagesIn, ProvisionLog, ProvisionLogEntry, ProvisionLogIn, QueuesIn, Status,
};
pub use auth::{
    Client, ClientIn, DeviceLogin, DeviceLoginCode, DeviceLoginError, Owner, RefreshToken, RestrictedQueue,
    RetentionSettings, SecretIn, SecretWritten, Token, TokensRevoked,
};
pub use errors::{Error, ValidationError};
pub use jobs::{
    Action, ActionKind, Attempt, Estimate, Extend, ExtendBy, Extended, Failure, JobFile, JobInfo, JobSummary,
    Lease, QueueJob, Reservation, ReservationInfo, Shipped, StatusEvent, StatusUpdate, Submitted, WaitTimes,
};
pub use results::{LogAnswer, LogFragment, PhaseLog, Readiness, ResultPost, Results};
