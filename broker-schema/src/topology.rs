//! The one place that declares exchanges, queues and bindings. Every declaration is idempotent,
//! so every binary calls [`declare_topology`] at start and after every reconnect.
//!
//! Changing a queue's arguments here makes redeclaration fail with PRECONDITION_FAILED on an
//! existing broker: such a change needs a migration note in `docs/operations.md`.
//!
//! Queue kinds: the class queues are classic, for their priorities (RabbitMQ 3.10's quorum
//! queues have none); the gateways' events queue is classic (webhook relays are informational).
//! The others — the scheduler's four queues, the agents' control queues and the dead letters —
//! are classic by default and quorum queues with [`Names::with_quorum_queues`], for a cluster.

use crate::bus::Bus;
use crate::ids::{AgentName, DeviceClass};
use crate::messages::submission::PRIORITY_LEVELS;
use crate::names::Names;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;
use tracing::warn;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Queue arguments that send rejected or expired messages to the dead-letter exchange.
fn dead_lettered(names: &Names) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(names.dead_exchange())),
    );
    args
}

/// `args` for a queue that needs no priority: with `x-queue-type: quorum` when the lab uses
/// quorum queues.
fn replicated(names: &Names, mut args: FieldTable) -> FieldTable {
    if names.quorum_queues() {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

async fn queue(ch: &Channel, name: String, args: FieldTable) -> lapin::Result<()> {
    ch.queue_declare(name.into(), durable_queue(), args)
        .await
        .map(|_| ())
}

async fn bind(ch: &Channel, queue: String, exchange: String, key: &str) -> lapin::Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

async fn unbind(ch: &Channel, queue: String, exchange: String, key: &str) -> lapin::Result<()> {
    ch.queue_unbind(queue.into(), exchange.into(), key.into(), FieldTable::default())
        .await
}

/// Declares everything that does not depend on a device class or an agent: exchanges, the
/// dead-letter queue, the scheduler's queues and the gateways' queue.
pub async fn declare_topology(ch: &Channel, names: &Names) -> lapin::Result<()> {
    let x = |name: String, kind: ExchangeKind| async move {
        ch.exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
            .await
    };
    x(names.jobs_exchange(), ExchangeKind::Topic).await?;
    x(names.events_exchange(), ExchangeKind::Topic).await?;
    x(names.control_exchange(), ExchangeKind::Direct).await?;
    x(names.dead_exchange(), ExchangeKind::Fanout).await?;

    queue(ch, names.dead_queue(), replicated(names, FieldTable::default())).await?;
    bind(ch, names.dead_queue(), names.dead_exchange(), "").await?;

    // Bound per class by `declare_class`, so that a class nobody serves stays unroutable.
    queue(
        ch,
        names.scheduler_submissions_queue(),
        replicated(names, dead_lettered(names)),
    )
    .await?;

    queue(
        ch,
        names.scheduler_status_queue(),
        replicated(names, dead_lettered(names)),
    )
    .await?;
    bind(
        ch,
        names.scheduler_status_queue(),
        names.events_exchange(),
        Names::ALL_JOB_STATUS,
    )
    .await?;
    bind(
        ch,
        names.scheduler_status_queue(),
        names.events_exchange(),
        Names::ALL_HEARTBEATS,
    )
    .await?;

    queue(
        ch,
        names.scheduler_output_queue(),
        replicated(names, dead_lettered(names)),
    )
    .await?;
    bind(
        ch,
        names.scheduler_output_queue(),
        names.events_exchange(),
        Names::ALL_JOB_OUTPUT,
    )
    .await?;

    queue(
        ch,
        names.scheduler_rpc_queue(),
        replicated(names, dead_lettered(names)),
    )
    .await?;
    declare_gateway_events(ch, names).await
}

/// Declares a device class: its priority queue, and the scheduler's binding for it. Agents call
/// this for each queue they serve; until one has, submissions to the class are unroutable and
/// the producer is told so.
pub async fn declare_class(ch: &Channel, names: &Names, class: &DeviceClass) -> lapin::Result<()> {
    let mut args = dead_lettered(names);
    args.insert(
        "x-max-priority".into(),
        AMQPValue::LongInt(i32::from(PRIORITY_LEVELS - 1)),
    );
    queue(ch, names.class_queue(class), args).await?;
    bind(
        ch,
        names.class_queue(class),
        names.jobs_exchange(),
        class.as_str(),
    )
    .await?;
    bind(
        ch,
        names.scheduler_submissions_queue(),
        names.jobs_exchange(),
        class.as_str(),
    )
    .await?;
    Ok(())
}

/// Declares an agent's control queue.
pub async fn declare_agent(ch: &Channel, names: &Names, agent: &AgentName) -> lapin::Result<()> {
    queue(
        ch,
        names.agent_control_queue(agent),
        replicated(names, dead_lettered(names)),
    )
    .await?;
    bind(
        ch,
        names.agent_control_queue(agent),
        names.control_exchange(),
        agent.as_str(),
    )
    .await
}

/// How long a status event waits in the gateways' queue before it is dropped (webhooks are
/// informational: a relay an hour late is worse than none), and how many may wait at most, so
/// that a lab without a running gateway does not pile events up without bound.
const GATEWAY_EVENTS_TTL_MS: i32 = 3_600_000;
const GATEWAY_EVENTS_MAX: i32 = 100_000;

/// Declares the gateways' shared queue of job status events. It is bound per job, and only for
/// jobs that have a `job_status_webhook` ([`follow_job_events`]): the gateways need no other
/// job's events, and copying every event of every job to them was a fifth of a job's broker
/// traffic. The wildcard binding of earlier versions is removed here.
pub async fn declare_gateway_events(ch: &Channel, names: &Names) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(GATEWAY_EVENTS_TTL_MS));
    args.insert("x-max-length".into(), AMQPValue::LongInt(GATEWAY_EVENTS_MAX));
    queue(ch, names.gateway_events_queue(), args).await?;
    unbind(
        ch,
        names.gateway_events_queue(),
        names.events_exchange(),
        Names::ALL_JOB_STATUS,
    )
    .await
}

/// Routes one job's status events to the gateways (which relay them to its webhook), from now
/// on. Idempotent.
pub async fn follow_job_events(ch: &Channel, names: &Names, job_id: &uuid::Uuid) -> lapin::Result<()> {
    bind(
        ch,
        names.gateway_events_queue(),
        names.events_exchange(),
        &Names::job_status_key(job_id),
    )
    .await
}

/// [`follow_job_events`] (`follow`) or [`unfollow_job_events`] on a channel of its own, all of it
/// within `limit` (the bus reconnects forever while the broker is down). A failure is only
/// logged: the job's webhook misses events, or a route outlives the job.
pub async fn route_job_events(bus: &Bus, job_id: &uuid::Uuid, follow: bool, limit: Duration) {
    let change = bus.with_channel(async |ch| {
        if follow {
            follow_job_events(ch, bus.names(), job_id).await?;
        } else {
            unfollow_job_events(ch, bus.names(), job_id).await?;
        }
        Ok(())
    });
    match tokio::time::timeout(limit, change).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(%job_id, follow, error = %e, "cannot route the job's events to its webhook"),
        Err(_) => {
            warn!(%job_id, follow, "cannot route the job's events to its webhook: the broker did not answer")
        }
    }
}

/// Stops routing one job's status events to the gateways (events already routed stay queued).
/// Idempotent.
pub async fn unfollow_job_events(ch: &Channel, names: &Names, job_id: &uuid::Uuid) -> lapin::Result<()> {
    unbind(
        ch,
        names.gateway_events_queue(),
        names.events_exchange(),
        &Names::job_status_key(job_id),
    )
    .await
}

/// Most events a gateway's web UI queue holds: a page that falls this far behind reads the
/// store again (the UI's events are hints; the store is the truth).
const GATEWAY_UI_MAX: i32 = 10_000;

/// Declares one gateway's web UI queue ([`Names::gateway_ui_queue`]): exclusive to the
/// declaring connection and deleted with it (nothing in it matters once the gateway is gone),
/// bound to every job status event and heartbeat. Output is bound per job while a page shows
/// it ([`follow_job_output`]). Returns the queue's name.
pub async fn declare_gateway_ui(ch: &Channel, names: &Names, id: &str) -> lapin::Result<String> {
    let name = names.gateway_ui_queue(id);
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(GATEWAY_UI_MAX));
    ch.queue_declare(
        name.clone().into(),
        QueueDeclareOptions {
            durable: false,
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    for key in [Names::ALL_JOB_STATUS, Names::ALL_HEARTBEATS] {
        bind(ch, name.clone(), names.events_exchange(), key).await?;
    }
    Ok(name)
}

/// Routes one job's output chunks to a gateway's web UI queue (`queue`), from now on.
pub async fn follow_job_output(
    ch: &Channel,
    names: &Names,
    queue: &str,
    job_id: &uuid::Uuid,
) -> lapin::Result<()> {
    bind(
        ch,
        queue.to_owned(),
        names.events_exchange(),
        &Names::job_output_key(job_id),
    )
    .await
}

/// Stops routing one job's output to a gateway's web UI queue.
pub async fn unfollow_job_output(
    ch: &Channel,
    names: &Names,
    queue: &str,
    job_id: &uuid::Uuid,
) -> lapin::Result<()> {
    unbind(
        ch,
        queue.to_owned(),
        names.events_exchange(),
        &Names::job_output_key(job_id),
    )
    .await
}
