//! The gateway: Flinger's HTTP API (Testflinger v1-compatible, see `docs/api.md`).
//!
//! - [`app`]: builds the service (store, broker link, router) and runs it until shutdown.
//! - [`routes`]: one module per area of the API; handlers are thin and call the modules below.
//! - [`submit`], [`cancel`]: the two writes, each an explicit flow with its own error type.
//! - [`views`], [`logs`]: how store records are shown (Testflinger's shapes plus our fields);
//!   [`streaming`]: the large ones (results with all output) written as they are read.
//! - [`error`]: the one place where errors become HTTP statuses and bodies.
//! - [`validate`]: request bodies checked against their types' schemas (`flinger_api`).
//! - [`auth`]: who is calling (tokens, roles, anonymous use), client secrets, the first admin.
//! - [`scheduler`]: commands to the scheduler by request/reply.
//! - [`webhooks`], `events`: relaying job events to jobs' webhooks (and recording provisioning).
//! - [`limits`]: per-client request rate and requests in flight (429 with `Retry-After`).
//! - [`metrics`]: Prometheus metrics (requests, submissions, live streams) on a port of their own.
//! - [`estimate`]: the queue ETA; [`openapi`]: the OpenAPI document of the whole API.
//! - [`ui`]: the web UI (server-rendered pages at Testflinger's paths, live over SSE).
//!
//! Architecture invariant: the gateway never changes a job's state. It inserts new jobs,
//! discards a job it never accepted (the broker returned its submission), and reads; every
//! other change is asked of the scheduler (cancel) or published for it (submissions).
//! It holds no state of its own, so any number of gateways can run side by side.

pub mod app;
pub mod auth;
mod bus_keeper;
pub mod cancel;
pub mod config;
pub mod error;
pub mod estimate;
mod events;
mod extract;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod streaming;
pub mod submit;
pub mod ui;
pub mod validate;
pub mod views;
pub mod webhooks;

pub use app::{App, StartError, serve};
pub use config::Config;
