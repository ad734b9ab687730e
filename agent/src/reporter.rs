//! Publishes one run's events. Events are retried through broker outages until confirmed, but
//! only while the run may still report: once its lease is lost, they would be stale anyway.

use broker_schema::bus::{PublishOptions, Publisher};
use broker_schema::messages::{JobEvent, JobEventKind, OutputChunk, OutputCounts};
use broker_schema::{AgentName, Millis, Names};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

#[derive(Clone)]
pub struct Reporter {
    pub publisher: Arc<Publisher>,
    pub names: Names,
    pub job_id: Uuid,
    pub attempt: u32,
    pub agent: AgentName,
    /// Cancelled when the run may no longer report (lease lost, shutdown).
    pub silenced: CancellationToken,
}

impl Reporter {
    /// Publishes an event; returns whether the broker confirmed it.
    pub async fn event(&self, kind: JobEventKind) -> bool {
        self.event_after(kind, None).await
    }

    /// Publishes an event that comes after `shipped` output chunks (a phase move: readers show
    /// those chunks before it); returns whether the broker confirmed it.
    pub async fn event_after(&self, kind: JobEventKind, shipped: Option<OutputCounts>) -> bool {
        let ev = JobEvent {
            job_id: self.job_id,
            attempt: self.attempt,
            agent: Some(self.agent.clone()),
            at: Millis::now(),
            shipped,
            kind,
        };
        let key = Names::job_status_key(&self.job_id);
        let exchange = self.names.events_exchange();
        let opts = PublishOptions::default();
        tokio::select! {
            r = self.publisher.send(&exchange, &key, &ev, &opts, None) => match r {
                Ok(()) => true,
                Err(e) => {
                    warn!(job_id = %self.job_id, error = %e, "cannot publish job event");
                    false
                }
            },
            _ = self.silenced.cancelled() => false,
        }
    }

    /// Publishes an output chunk; returns whether the broker confirmed it.
    pub async fn chunk(&self, chunk: &OutputChunk) -> bool {
        let key = Names::job_output_key(&self.job_id);
        let exchange = self.names.events_exchange();
        let opts = PublishOptions::default();
        tokio::select! {
            r = self.publisher.send(&exchange, &key, chunk, &opts, None) => r.is_ok(),
            _ = self.silenced.cancelled() => false,
        }
    }
}
