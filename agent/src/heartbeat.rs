//! Publishes the agent's heartbeat: every interval, and within [`COALESCE`] of every change of
//! state, so the lab's view of agents is live rather than an interval old.

use crate::config::AgentConfig;
use crate::status::{Snapshot, Status};
use broker_schema::bus::{PublishOptions, Publisher};
use broker_schema::messages::Heartbeat;
use broker_schema::{Millis, Names};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// State changes this close together go out as one heartbeat: a job whose phases are instant
/// changes the agent's state five times in a few milliseconds, and every heartbeat is a store
/// write for the scheduler.
const COALESCE: Duration = Duration::from_millis(50);

pub async fn beat(
    publisher: Arc<Publisher>,
    names: Names,
    config: Arc<AgentConfig>,
    status: Status,
    shutdown: CancellationToken,
) {
    let mut changes = status.subscribe();
    loop {
        let s = changes.borrow_and_update().clone();
        tokio::select! {
            _ = publish(&publisher, &names, &config, &s) => {}
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat_interval) => {}
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Publishes one heartbeat saying `s`; gives up after a few seconds.
pub async fn publish(publisher: &Publisher, names: &Names, config: &AgentConfig, s: &Snapshot) {
    let hb = Heartbeat {
        agent: config.name.clone(),
        state: s.state,
        job_id: s.job_id,
        queues: config.queues.clone(),
        location: config.location.clone(),
        provision_type: config.provision_type.clone(),
        comment: s.shown_comment(),
        interval_ms: config.heartbeat_interval.as_millis() as u64,
        at: Millis::now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    // Heartbeats are perishable: one attempt, no persistence; the next one follows soon.
    let opts = PublishOptions {
        transient: true,
        ..Default::default()
    };
    let key = Names::heartbeat_key(&config.name);
    let exchange = names.events_exchange();
    let publish = publisher.publish(&exchange, &key, &hb, &opts);
    match tokio::time::timeout(Duration::from_secs(5), publish).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "heartbeat not published"),
        Err(_) => debug!("heartbeat not confirmed in time"),
    }
}
