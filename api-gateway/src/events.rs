//! The gateways' share of job events: the status events of jobs that have a
//! `job_status_webhook` reach one gateway (they consume one shared queue, bound per such job:
//! see `broker_schema::topology::follow_job_events`), which relays them to the webhook
//! ([`crate::webhooks`]). Agents' provisioning results are recorded by the scheduler, which sees
//! every event.
//!
//! Relaying is informational: an event that cannot be handled (malformed, or the job is
//! unknown) is acknowledged and dropped, never dead-lettered; only a store outage puts it back.

use crate::state::AppState;
use broker_schema::bus::{self, BusError, Deliveries};
use broker_schema::messages::JobEvent;
use broker_schema::{decode, topology};
use flinger_store::StoreError;
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
    state
        .bus()
        .with_channel(async |ch| {
            topology::declare_gateway_events(ch, state.names()).await?;
            let queue = state.names().gateway_events_queue();
            let tag = format!("flinger-gateway-{}", uuid::Uuid::new_v4().simple());
            let mut deliveries = Deliveries::start(ch, &queue, &tag, PREFETCH, stop).await?;
            while let Some(d) = deliveries.next().await? {
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
            Ok(())
        })
        .await
}

/// Relays one event to its job's webhook. Errors only when the store is unavailable (the event
/// is then retried).
async fn handle(state: &AppState, body: &[u8]) -> Result<(), StoreError> {
    let event = match decode::<JobEvent>(body) {
        Ok(e) => e,
        Err(e) => {
            debug!(error = %e, "not a job event; ignored");
            return Ok(());
        }
    };
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
