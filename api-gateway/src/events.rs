//! The gateways' share of job events: every `job.<id>.status` event reaches one gateway (they
//! consume one shared queue), which relays it to the job's `job_status_webhook`
//! ([`crate::webhooks`]) and records agents' provisioning results (history and pass/fail streak
//! of `GET /v1/agents/data`).
//!
//! Both effects are informational: an event that cannot be handled (malformed, or the job is
//! unknown) is acknowledged and dropped, never dead-lettered; only a store outage puts it back.
//! Recording a provision result is idempotent by job, so a redelivered event counts once.

use crate::state::AppState;
use broker_schema::bus::{self, BusError};
use broker_schema::messages::{JobEvent, JobEventKind};
use broker_schema::{Phase, decode, topology};
use flinger_scheduler::store::{ProvisionEntry, Records, StoreError};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Deliveries handled at once by one gateway.
const PREFETCH: u16 = 32;
/// Pause before an event that met a store outage is given back.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs the consumer until `stop` is cancelled, restarting it with backoff when the broker goes.
pub fn spawn(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        bus::supervise("job events", &stop.clone(), || consume(&state, &stop)).await;
    })
}

async fn consume(state: &AppState, stop: &CancellationToken) -> Result<(), BusError> {
    let (ch, generation) = state.bus().channel().await?;
    let result = async {
        topology::declare_gateway_events(&ch, state.names()).await?;
        let queue = state.names().gateway_events_queue();
        let tag = format!("flinger-gateway-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = bus::consume(&ch, &queue, &tag, PREFETCH).await?;
        loop {
            let delivery = tokio::select! {
                d = consumer.next() => d,
                _ = stop.cancelled() => return Ok(()),
            };
            let Some(delivery) = delivery else {
                return Err(BusError::Amqp(lapin::Error::from(
                    lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
                )));
            };
            let d = delivery?;
            match handle(state, &d.data).await {
                Ok(()) => {
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                Err(e) => {
                    warn!(error = %e, "store unavailable; job event requeued");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    d.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                }
            }
        }
    }
    .await;
    let _ = ch.close(200, "bye".into()).await;
    if result.is_err() {
        state.bus().broken(generation).await;
    }
    result
}

/// Relays one event and records what it says about provisioning. Errors only when the store is
/// unavailable (the event is then retried).
async fn handle(state: &AppState, body: &[u8]) -> Result<(), StoreError> {
    let event = match decode::<JobEvent>(body) {
        Ok(e) => e,
        Err(e) => {
            debug!(error = %e, "not a job event; ignored");
            return Ok(());
        }
    };
    if let (
        JobEventKind::PhaseFinished {
            phase: Phase::Provision,
            exit_code,
            detail,
        },
        Some(agent),
    ) = (&event.kind, &event.agent)
    {
        let entry = ProvisionEntry {
            job_id: event.job_id.to_string(),
            exit_code: *exit_code,
            detail: detail.clone().unwrap_or_default(),
            at: event.at,
        };
        state.store().record_provision(agent.as_str(), &entry).await?;
    }
    let events = crate::webhooks::testflinger_events(&event);
    if events.is_empty() {
        return Ok(());
    }
    let Some(job) = state.store().get_job(event.job_id).await? else {
        return Ok(());
    };
    if let Some(url) = job.definition.webhook() {
        let body = crate::webhooks::status_update(&event, job.queue.as_str(), &events);
        state.webhooks().relay(job.job_id, url.clone(), body);
    }
    Ok(())
}
