//! The raw broker's rate on the same machine, for an honest ratio: messages the size of a
//! submission, published persistent and `mandatory` with confirms (up to `in_flight` awaiting
//! their confirm at once) to a topic exchange, routed to durable classic priority queues
//! like Flinger's class queues, and consumed with prefetch 1 and a manual ack by `consumers`
//! consumers over the queues, each on a connection of its own (as agents are).

use broker_schema::messages::Submission;
use broker_schema::{JobDefinition, encode};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The encoded size of the submission a benchmark job makes.
pub fn submission_size(queue: &str) -> usize {
    let job = JobDefinition::parse(crate::setup::quick_job(queue)).expect("valid job");
    encode(&Submission {
        job_id: uuid::Uuid::new_v4(),
        job,
        submitted_at: Some(broker_schema::Millis::now()),
        submitted_by: None,
    })
    .len()
}

pub struct RawRate {
    pub messages: usize,
    pub size: usize,
    pub per_sec: f64,
}

pub async fn measure(
    url: &str,
    consumers: usize,
    queues: usize,
    messages: usize,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<RawRate> {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let exchange = format!("flinger-bench-raw-{id}");
    let queue_names: Vec<String> = (0..queues)
        .map(|i| format!("flinger-bench-raw-{id}-{i}"))
        .collect();
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::LongInt(9));
    for q in &queue_names {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args.clone(),
        )
        .await?;
        ch.queue_bind(
            q.as_str().into(),
            exchange.as_str().into(),
            q.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }

    let acked = Arc::new(AtomicUsize::new(0));
    let all_acked = Arc::new(Notify::new());
    let mut consumer_conns = Vec::with_capacity(consumers);
    for i in 0..consumers {
        let c = Connection::connect(url, ConnectionProperties::default()).await?;
        let cch = c.create_channel().await?;
        cch.basic_qos(1, BasicQosOptions::default()).await?;
        let mut consumer = cch
            .basic_consume(
                queue_names[i % queues].as_str().into(),
                format!("raw-{i}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (acked, all_acked) = (acked.clone(), all_acked.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
                if acked.fetch_add(1, Ordering::Relaxed) + 1 == messages {
                    all_acked.notify_one();
                }
            }
        });
        consumer_conns.push(c);
    }

    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; size];
    let start = Instant::now();
    let done = all_acked.notified();
    tokio::pin!(done);
    let mut pending = FuturesUnordered::new();
    for i in 0..messages {
        while pending.len() >= in_flight {
            pending.next().await.expect("pending")?;
        }
        let confirm = pch
            .basic_publish(
                exchange.as_str().into(),
                queue_names[i % queues].as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(c) = pending.next().await {
        c?;
    }
    tokio::time::timeout(Duration::from_secs(120), done).await?;
    let elapsed = start.elapsed();

    for q in &queue_names {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = ch.close(200, "done".into()).await;
    let _ = pch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    for c in consumer_conns {
        let _ = c.close(200, "done".into()).await;
    }
    Ok(RawRate {
        messages,
        size,
        per_sec: messages as f64 / elapsed.as_secs_f64(),
    })
}
