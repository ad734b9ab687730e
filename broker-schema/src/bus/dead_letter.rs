use super::{PublishError, PublishOptions, Publisher};
use crate::names::Names;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// Header holding why a message was dead-lettered.
pub const DEAD_REASON_HEADER: &str = "x-flinger-reason";
/// Header holding the queue the message was taken from.
pub const DEAD_QUEUE_HEADER: &str = "x-flinger-queue";

/// Copies a delivery to the dead-letter exchange with the reason and origin in its headers and
/// waits for the broker's confirm. The caller acknowledges the original afterwards, so the
/// message is never in neither place.
pub async fn dead_letter(
    publisher: &Publisher,
    names: &Names,
    delivery: &Delivery,
    queue: &str,
    reason: &str,
) -> Result<(), PublishError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v.to_owned()));
    headers.insert(DEAD_REASON_HEADER.into(), s(reason));
    headers.insert(DEAD_QUEUE_HEADER.into(), s(queue));
    headers.insert(
        "x-flinger-original-exchange".into(),
        s(delivery.exchange.as_str()),
    );
    headers.insert(
        "x-flinger-original-routing-key".into(),
        s(delivery.routing_key.as_str()),
    );
    let opts = PublishOptions {
        headers: Some(headers),
        // As it came; a message that had none is not labelled MessagePack (the default) now.
        content_type: Some(
            delivery
                .properties
                .content_type()
                .as_ref()
                .map_or_else(|| "application/octet-stream".to_owned(), |c| c.to_string()),
        ),
        ..Default::default()
    };
    let kind = delivery
        .properties
        .kind()
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_default();
    publisher
        .publish_reliably(&names.dead_exchange(), queue, &kind, &delivery.data, &opts, None)
        .await
}

/// A string header of a message, if present.
pub fn header_str(headers: &Option<FieldTable>, key: &str) -> Option<String> {
    let table = headers.as_ref()?;
    table
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, v)| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
}
