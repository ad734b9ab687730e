//! The agent: one per device.
//!
//! - [`intake`]: takes the next job from the class queues and leases it before acknowledging.
//! - [`lease`]: keeps the lease, and stops the job the moment it cannot be sure it holds it.
//! - [`runner`]: runs the phases through the connector; [`output`] streams their output;
//!   [`reporter`] publishes the run's events; [`stop`] says why a run stops early.
//! - [`jobfile`]: `testflinger.json`, with the secrets' values only while a Testflinger test
//!   phase runs.
//! - [`control`]: the agent's control queue; [`heartbeat`]; [`status`]: the agent's state;
//!   [`restart`]: SIGUSR1 and the `restart` admin state, exiting for the supervisor once idle;
//!   [`serving`]: which queues it takes jobs from (only its restricted ones, when it has any).
//! - [`metrics`]: ours and Testflinger's; [`release`]: the device's release, for their label.
//! - [`unreported`]: runs given up while the broker was unreachable, told once it is back.
//! - [`config`]: Testflinger's agent config file, plus our keys.
//! - [`gateway`]: HTTP to the gateway, only for big files: [`attachments`] (fetched and
//!   unpacked before the phases) and [`artifacts`] (packed and uploaded at the end).
//!
//! The agent never writes to the store: it reports, and the scheduler records. It runs a job's
//! phases only while it holds that job's lease.

pub mod app;
pub mod artifacts;
pub mod attachments;
pub mod config;
pub mod control;
pub mod gateway;
pub mod heartbeat;
pub mod intake;
pub mod jobfile;
pub mod keys;
pub mod lease;
pub mod leftovers;
pub mod metrics;
pub mod output;
pub mod release;
pub mod reporter;
pub mod restart;
pub mod runner;
pub mod serving;
pub mod status;
pub mod stop;
pub mod unreported;

pub use app::Agent;
pub use config::AgentConfig;
