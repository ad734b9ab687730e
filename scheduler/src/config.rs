//! The scheduler's knobs. Defaults suit a lab; tests shorten them.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often agents are told to renew (well inside `lease`).
    pub renew_every: Duration,
    /// Leases granted to a job before it fails instead of being requeued.
    pub max_attempts: u32,
    /// How often the reaper looks for expired leases and overrun deadlines.
    pub reap_every: Duration,
    /// A waiting job not seen on the broker for this long is published again (the gateway may
    /// have died between storing and publishing it, or the broker was down).
    pub republish_after: Duration,
    /// How long past a job's own deadline (global timeout, reservation end) the scheduler waits
    /// for the agent to act before it ends the job itself.
    pub backstop_grace: Duration,
    /// How long cleanup may run past the global timeout (or the reservation's end) before the
    /// backstop applies; agents bound cleanup themselves (`cleanup_timeout`, 600 s by default).
    pub cleanup_allowance: Duration,
    /// How long a run's final event waits for its output chunks to be stored before the job is
    /// finished anyway (with a note that output is incomplete).
    pub output_wait: Duration,
    /// RabbitMQ users whose submissions' `submitted_by` is believed (the lab's gateways), besides
    /// this scheduler's own user; see [`crate::provenance`].
    pub trusted_publishers: Vec<String>,
    /// Unseals clients' secrets (see [`crate::secrets`]); `None`: they were stored as given.
    pub secrets_key: Option<std::sync::Arc<crate::store::sealing::SecretsKey>>,
    /// Where agents fetch attachments and upload artifacts, and the key of the job-scoped
    /// token that lets them (see [`crate::files`]); `None`: agents need a client of their own.
    pub files: Option<crate::files::FilesAccess>,
    /// How long ended jobs are kept (see [`crate::retention`]).
    pub retention: crate::retention::RetentionConfig,
    /// The lab's cap on each job's output (see [`crate::output_cap`]).
    pub output_cap: crate::output_cap::OutputCap,
    /// How often the metrics' gauges are computed from the store; `None`: never (no metrics
    /// are served).
    pub metrics_refresh: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            max_attempts: 3,
            reap_every: Duration::from_secs(2),
            republish_after: Duration::from_secs(15),
            backstop_grace: Duration::from_secs(60),
            cleanup_allowance: Duration::from_secs(900),
            trusted_publishers: Vec::new(),
            output_wait: Duration::from_secs(30),
            secrets_key: None,
            files: None,
            retention: crate::retention::RetentionConfig::default(),
            output_cap: crate::output_cap::OutputCap::default(),
            metrics_refresh: None,
        }
    }
}
