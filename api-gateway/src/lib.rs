//! The gateway: Flinger's HTTP API (Testflinger v1-compatible, see `docs/api.md`).
//!
//! - [`app`]: builds the service (store, broker link, router) and runs it until shutdown.
//! - [`routes`]: one module per area of the API; handlers are thin and call the modules below.
//! - [`submit`], [`cancel`]: the two writes, each an explicit flow with its own error type.
//! - [`views`], [`logs`]: how store records are shown (Testflinger's shapes plus our fields).
//! - [`error`]: the one place where errors become HTTP statuses and bodies.
//!
//! Architecture invariant: the gateway never changes a job's state. It inserts new jobs,
//! discards a job it never accepted (the broker returned its submission), and reads; every
//! other change is asked of the scheduler (cancel) or published for it (submissions).
//! It holds no state of its own, so any number of gateways can run side by side.

pub mod app;
mod bus_keeper;
pub mod cancel;
pub mod config;
pub mod error;
mod extract;
pub mod logs;
pub mod routes;
pub mod state;
pub mod submit;
pub mod views;

pub use app::{App, StartError, serve};
pub use config::Config;
