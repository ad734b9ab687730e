//! Device connectors: how a phase is carried out on a device.
//!
//! A connector is told "run phase P of this job in this directory" and streams the phase's
//! output until it exits or is cancelled. It knows nothing about AMQP, leases, the store or
//! timeouts: the agent owns all of that and simply cancels the phase when it must stop.
//!
//! - [`command`]: Testflinger's agent semantics — one shell command per phase, run via
//!   `/bin/sh` in the job's run directory, so existing `testflinger-device-connector` setups keep
//!   working.
//! - [`fake`]: a simulated device for demos, tests and load, with failure injection.
//! - [`ssh`]: a pre-installed device reached with the system `ssh` client (Testflinger's
//!   `noprovision`).
//! - [`multi`]: the parent of a multi-device job (Testflinger's `multi`): submits the children
//!   through the gateway's v1 API, waits until they are allocated, writes `job_list.json`.
//!
//! `process` holds the process-group handling the `command` connector (and any future
//! connector that runs local programs) relies on; `duration` the duration syntax of the
//! connector YAML. `docs/connectors.md` is the operator's and implementer's guide.

use async_trait::async_trait;
use broker_schema::{JobDefinition, Phase};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod command;
mod duration;
pub mod fake;
pub mod multi;
mod process;
pub mod ssh;

pub use command::{CommandConfig, CommandConnector};
pub use fake::{FakeBehaviour, FakeConfig, FakeConnector};
pub use multi::{MultiConfig, MultiConnector};
pub use ssh::{SshConfig, SshConnector};

/// Exit code by which a connector says "device recovery failed": the agent takes itself
/// offline (Testflinger's convention).
pub const RECOVERY_FAILED_EXIT: i32 = 46;

/// Set for the reserve phase: the path of a file, in `authorized_keys` format, holding the
/// public keys the agent resolved from the job's `reserve_data.ssh_keys` (`lp:`/`gh:` ids
/// already fetched). Connectors install these on the device.
pub const SSH_KEYS_FILE_ENV: &str = "FLINGER_SSH_KEYS_FILE";

/// Everything a connector needs to run one phase.
#[derive(Clone, Debug)]
pub struct PhaseContext {
    pub phase: Phase,
    pub job_id: Uuid,
    pub job: Arc<JobDefinition>,
    /// The job's run directory; holds `testflinger.json`. Created by the agent.
    pub run_dir: PathBuf,
    /// Extra environment for the phase (secrets, `DEVICE_IP`, …), on top of the connector's.
    pub env: BTreeMap<String, String>,
    /// Variables of the agent's own environment that a phase process must not inherit: the
    /// agent's credentials (a phase may export its environment to a device a person logs into).
    pub env_remove: Vec<String>,
    pub agent_name: String,
    /// Fires when the phase must die at once, without grace: the agent no longer holds (or is
    /// giving back) the job's lease, so nothing of the job may run a moment longer. The
    /// phase's `cancel` fires too; a plain cancel alone leaves the phase its grace.
    pub kill: CancellationToken,
}

/// Where a phase's output goes, as it is produced. Bounded: a connector that outruns the
/// agent's publishing is slowed down rather than buffered without limit.
#[derive(Clone, Debug)]
pub struct OutputSink {
    pub output: mpsc::Sender<Bytes>,
    pub serial: mpsc::Sender<Bytes>,
}

impl OutputSink {
    /// Sends output; a closed sink (the agent stopped listening) is ignored.
    pub async fn out(&self, data: impl Into<Bytes>) {
        let _ = self.output.send(data.into()).await;
    }

    pub async fn serial(&self, data: impl Into<Bytes>) {
        let _ = self.serial.send(data.into()).await;
    }
}

/// How a phase ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseOutcome {
    /// The phase's exit code; when it was cancelled, whatever the killed process returned
    /// (`-9` for SIGKILL, `-15` for SIGTERM).
    pub exit_code: i32,
    /// Why, when the connector knows more than the exit code.
    pub detail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The phase could not be started at all (missing program, unreadable run directory…).
    #[error("cannot run {phase}: {reason}")]
    CannotStart { phase: Phase, reason: String },
    #[error("invalid connector configuration: {0}")]
    Config(String),
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector's type name (`command`, `fake`, …), for logs and `provision_type`.
    fn kind(&self) -> &'static str;

    /// Whether the device has a step for this phase (phases without one are skipped).
    fn supports(&self, phase: Phase) -> bool;

    /// The device's address, when the connector's configuration knows it (reported with a
    /// reservation when provisioning did not write `device-info.json`).
    fn device_ip(&self) -> Option<String> {
        None
    }

    /// The account a reserving person logs into, when the connector decides it.
    fn reserve_user(&self) -> Option<String> {
        None
    }

    /// Whether phases run Testflinger device connectors, which expect what a Testflinger agent
    /// gives them: `testflinger.json` holding the job's secret *values* while the test phase
    /// runs (the agent writes them there and takes them out again), a provision that is never
    /// interrupted by a cancel (it may be flashing the device: the agent holds the cancel until
    /// provision ends), and a device a Testflinger agent asks for its release over SSH after
    /// provisioning (for its metrics).
    fn runs_testflinger_connectors(&self) -> bool {
        false
    }

    /// Runs one phase to its end, streaming its output. When `cancel` fires the connector
    /// stops the phase promptly — killing every process it started — and returns.
    async fn run_phase(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError>;
}

/// A connector's settings, as written in the agent's YAML under `connector:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectorConfig {
    Command(command::CommandConfig),
    Fake(fake::FakeConfig),
    Ssh(ssh::SshConfig),
    Multi(multi::MultiConfig),
}

impl ConnectorConfig {
    pub fn build(&self) -> Result<Arc<dyn Connector>, ConnectorError> {
        match self {
            ConnectorConfig::Command(c) => Ok(Arc::new(command::CommandConnector::new(c.clone())?)),
            ConnectorConfig::Fake(c) => Ok(Arc::new(fake::FakeConnector::new(c.clone())?)),
            ConnectorConfig::Ssh(c) => Ok(Arc::new(ssh::SshConnector::new(c.clone())?)),
            ConnectorConfig::Multi(c) => Ok(Arc::new(multi::MultiConnector::new(c.clone())?)),
        }
    }
}
