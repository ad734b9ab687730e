//! A channel's life and a consumer's loop, written once: every broker-bound loop of the
//! scheduler, the gateway and the agent opens a channel, works on it until it fails or shutdown
//! is asked, closes it (so unacknowledged deliveries go back to the queue at once), and reports
//! the connection broken when the work failed, so the next attempt reconnects.

use super::connection::{Bus, BusError};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

impl Bus {
    /// Runs `work` on a channel of its own, then closes the channel; when `work` fails, the
    /// connection it ran on is reported broken (a no-op if it is still up).
    pub async fn with_channel<T>(
        &self,
        work: impl AsyncFnOnce(&Channel) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let (ch, generation) = self.channel().await?;
        let result = work(&ch).await;
        let _ = ch.close(200, "bye".into()).await;
        if result.is_err() {
            self.broken(generation).await;
        }
        result
    }
}

/// Starts a manually acknowledged consumer with a per-consumer prefetch.
pub async fn consume(ch: &Channel, queue: &str, tag: &str, prefetch: u16) -> lapin::Result<Consumer> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// A consumer's deliveries until `stop` is cancelled.
pub struct Deliveries {
    consumer: Consumer,
    /// Ends the stream cleanly (`Ok(None)`): the service is shutting down.
    stop: CancellationToken,
}

impl Deliveries {
    /// Starts consuming `queue` on `ch` (see [`consume`]).
    pub async fn start(
        ch: &Channel,
        queue: &str,
        tag: &str,
        prefetch: u16,
        stop: &CancellationToken,
    ) -> Result<Deliveries, BusError> {
        Ok(Deliveries {
            consumer: consume(ch, queue, tag, prefetch).await?,
            stop: stop.clone(),
        })
    }

    /// The next delivery; `None` once `stop` is cancelled; an error when the channel or the
    /// connection failed (a consumer stream that ends is a closed channel).
    pub async fn next(&mut self) -> Result<Option<Delivery>, BusError> {
        tokio::select! {
            d = self.consumer.next() => match d {
                Some(Ok(d)) => Ok(Some(d)),
                Some(Err(e)) => Err(e.into()),
                None => Err(BusError::Amqp(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "the consumer ended",
                )))),
            },
            _ = self.stop.cancelled() => Ok(None),
        }
    }

    /// A delivery that is already here, waiting at most `wait` (for batching).
    pub async fn next_within(&mut self, wait: std::time::Duration) -> Result<Option<Delivery>, BusError> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Ok(Some(Ok(d))) => Ok(Some(d)),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(None) | Err(_) => Ok(None),
        }
    }
}
