//! What becomes of a delivery, decided in one place.

use broker_schema::Names;
use broker_schema::bus::{Publisher, dead_letter};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tracing::{error, warn};

/// The fate of a delivery once its handler is done.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Its effect is durable (or it was a harmless duplicate).
    Ack,
    /// It could not be handled now (the store is down): give it back for a later try.
    Retry,
    /// It can never be handled: move it to the dead-letter exchange with this reason.
    Dead(String),
}

/// Applies a disposition. Returns an error only when the channel is unusable (the caller's
/// consumer loop then restarts and the broker redelivers whatever was not acknowledged).
pub async fn settle(
    delivery: &Delivery,
    disposition: Disposition,
    publisher: &Publisher,
    names: &Names,
    queue: &str,
) -> Result<(), lapin::Error> {
    match disposition {
        Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await.map(|_| ()),
        Disposition::Retry => delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Disposition::Dead(reason) => {
            warn!(queue, %reason, "dead-lettering a message");
            match dead_letter(publisher, names, delivery, queue, &reason).await {
                Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await.map(|_| ()),
                Err(e) => {
                    // Keep it: requeue rather than lose it.
                    error!(error = %e, "cannot dead-letter; requeueing");
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                }
            }
        }
    }
}
