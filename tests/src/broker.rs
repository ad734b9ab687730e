//! Plain AMQP, as another system would use it: no Flinger code in the way.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

pub async fn connect() -> Connection {
    Connection::connect(&crate::broker_url(), ConnectionProperties::default())
        .await
        .expect("broker")
}

/// Publishes bytes with confirms; returns whether the broker returned the message as unroutable.
pub async fn publish(
    conn: &Connection,
    exchange: &str,
    key: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> bool {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(ct) = content_type {
        props = props.with_content_type(ct.into());
    }
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let _ = ch.close(200, "done".into()).await;
    assert!(confirm.is_ack(), "broker nacked the publish");
    confirm.take_message().is_some()
}

/// A message taken off a queue, with its string headers.
#[derive(Debug)]
pub struct Got {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Got {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Takes every message currently in `queue`.
pub async fn drain(conn: &Connection, queue: &str) -> Vec<Got> {
    let ch = conn.create_channel().await.expect("channel");
    let mut out = vec![];
    while let Ok(Some(m)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
        let headers = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .map(|h: &FieldTable| {
                h.inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        AMQPValue::LongString(s) => {
                            Some((k.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned()))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = m.delivery.acker.ack(BasicAckOptions::default()).await;
        out.push(Got {
            body: m.delivery.data.clone(),
            headers,
        });
    }
    let _ = ch.close(200, "done".into()).await;
    out
}

/// Deletes queues and exchanges (best effort).
pub async fn delete(conn: &Connection, queues: &[String], exchanges: &[String]) {
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.exchange_delete(x.as_str().into(), Default::default()).await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
}
