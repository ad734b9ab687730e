//! The names of every exchange, queue and routing key. No other crate spells them.
//!
//! All names share a namespace prefix (default `flinger`) so that several labs, or many
//! tests running in parallel, can share one broker without seeing each other.

use crate::ids::{AgentName, DeviceClass};
use uuid::Uuid;

/// The default namespace of a lab.
pub const DEFAULT_NAMESPACE: &str = "flinger";

/// Names of exchanges, queues and routing keys in one namespace, and the one choice about
/// their kind that a deployment makes: whether the queues that need no priority are quorum
/// queues (see `topology.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    ns: String,
    quorum: bool,
}

/// `true`/`false` as environment variables spell them (`1`, `yes`, `on`…); `None` otherwise.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::new(DEFAULT_NAMESPACE)
    }
}

impl Names {
    /// `namespace` is used verbatim as a prefix; keep it to `[A-Za-z0-9_-]`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Names {
            ns: namespace.into(),
            quorum: false,
        }
    }

    /// Declares the queues that need no priority (the scheduler's, the agents' control queues,
    /// dead letters) as quorum queues, replicated over a RabbitMQ cluster. Every process of a
    /// lab must agree: RabbitMQ refuses to redeclare a queue as another type.
    pub fn with_quorum_queues(mut self, quorum: bool) -> Self {
        self.quorum = quorum;
        self
    }

    pub fn quorum_queues(&self) -> bool {
        self.quorum
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Topic exchange that takes submissions; routing key = device class.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    /// Topic exchange for status, output and heartbeat events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.ns)
    }

    /// Direct exchange for control commands; routing key = agent name.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.ns)
    }

    /// Fanout exchange (and its queue) for messages no consumer could take.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// Per-class job queue that agents consume.
    pub fn class_queue(&self, class: &DeviceClass) -> String {
        format!("{}.jobs.{}", self.ns, class.as_str())
    }

    /// The scheduler's copy of every submission to a declared class.
    pub fn scheduler_submissions_queue(&self) -> String {
        format!("{}.scheduler.submissions", self.ns)
    }

    /// Status events and heartbeats, projected into the store by the scheduler.
    pub fn scheduler_status_queue(&self) -> String {
        format!("{}.scheduler.status", self.ns)
    }

    /// Output chunks, projected into the store by the scheduler (kept apart from status so a
    /// chatty job cannot delay lease-relevant events).
    pub fn scheduler_output_queue(&self) -> String {
        format!("{}.scheduler.output", self.ns)
    }

    /// Requests to the scheduler (leases, renewals, commands), answered by direct reply-to.
    pub fn scheduler_rpc_queue(&self) -> String {
        format!("{}.scheduler.rpc", self.ns)
    }

    /// Job status events for the gateways: they relay them to jobs' `job_status_webhook` and
    /// record agents' provisioning results. Shared by every gateway (competing consumers).
    pub fn gateway_events_queue(&self) -> String {
        format!("{}.gateway.events", self.ns)
    }

    /// One gateway's own queue of the events its web UI shows live (status events, heartbeats,
    /// and the output of the jobs whose pages are open there); `id` tells the gateways apart.
    pub fn gateway_ui_queue(&self, id: &str) -> String {
        format!("{}.gateway.ui.{id}", self.ns)
    }

    /// Per-agent control queue.
    pub fn agent_control_queue(&self, agent: &AgentName) -> String {
        format!("{}.agent.{}.control", self.ns, agent.as_str())
    }

    pub fn job_status_key(job_id: &Uuid) -> String {
        format!("job.{job_id}.status")
    }

    pub fn job_output_key(job_id: &Uuid) -> String {
        format!("job.{job_id}.output")
    }

    pub fn heartbeat_key(agent: &AgentName) -> String {
        format!("agent.{}.heartbeat", agent.as_str())
    }

    pub const ALL_JOB_STATUS: &'static str = "job.*.status";
    pub const ALL_JOB_OUTPUT: &'static str = "job.*.output";
    pub const ALL_HEARTBEATS: &'static str = "agent.*.heartbeat";

    /// The pseudo-queue RabbitMQ offers for direct reply-to.
    pub const DIRECT_REPLY_TO: &'static str = "amq.rabbitmq.reply-to";
}
