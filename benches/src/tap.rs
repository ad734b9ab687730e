//! Watches the events exchange like any outside system may: a private, exclusive queue bound
//! to job status events (and, when asked, heartbeats), each stamped with the moment it arrived.
//!
//! Arrival times are the bench's monotonic clock, so they compare with the moments the bench
//! sent requests at microsecond resolution; they include the event's trip through the broker
//! (about 0.2 ms on loopback), so latencies measured with them are slight over-estimates.

use broker_schema::messages::{Heartbeat, JobEvent};
use broker_schema::{Names, decode, topology};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub enum Seen {
    Job(Instant, JobEvent),
    Heartbeat(Instant, Heartbeat),
}

pub struct Tap {
    pub rx: mpsc::UnboundedReceiver<Seen>,
    conn: Connection,
    task: JoinHandle<()>,
}

impl Tap {
    /// Starts watching; returns once the queue is bound, so nothing published after is missed.
    pub async fn start(broker_url: &str, names: &Names, heartbeats: bool) -> anyhow::Result<Tap> {
        let conn = Connection::connect(broker_url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        topology::declare_topology(&ch, names).await?;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut keys = vec![Names::ALL_JOB_STATUS];
        if heartbeats {
            keys.push(Names::ALL_HEARTBEATS);
        }
        for key in keys {
            ch.queue_bind(
                q.name().clone(),
                names.events_exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "flinger-bench-tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let at = Instant::now();
                let seen = if d.routing_key.as_str().starts_with("agent.") {
                    decode::<Heartbeat>(&d.data).ok().map(|h| Seen::Heartbeat(at, h))
                } else {
                    decode::<JobEvent>(&d.data).ok().map(|e| Seen::Job(at, e))
                };
                if let Some(s) = seen
                    && tx.send(s).is_err()
                {
                    return;
                }
            }
        });
        Ok(Tap { rx, conn, task })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.conn.close(200, "done".into()).await;
    }
}
