use super::{Bus, BusError};
use crate::codec::{CONTENT_TYPE, Message, encode};
use backon::BackoffBuilder;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use std::time::Duration;
use tracing::warn;

#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Have the broker return the message if no queue takes it.
    pub mandatory: bool,
    pub priority: Option<u8>,
    /// Non-persistent messages are lost when the broker restarts (only for replies).
    pub transient: bool,
    pub headers: Option<FieldTable>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Per-message TTL: a request nobody took in time is dropped rather than served late.
    pub expiration: Option<Duration>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    /// The publishing connection's RabbitMQ user (see [`Bus::user`]); the broker refuses any
    /// other, so consumers may trust it.
    pub user_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No queue is bound for this routing key (only with `mandatory`).
    #[error("no queue takes routing key {routing_key:?} on {exchange:?}: {reply_text}")]
    Unroutable {
        exchange: String,
        routing_key: String,
        reply_text: String,
    },
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("gave up after {0:?} without a confirm")]
    TimedOut(Duration),
    #[error("shutting down")]
    Shutdown,
}

impl From<BusError> for PublishError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Shutdown => PublishError::Shutdown,
            BusError::Amqp(e) | BusError::Connect { source: e, .. } => PublishError::Broker(e),
        }
    }
}

impl PublishError {
    /// Worth retrying on a fresh channel (as opposed to a verdict about the message).
    pub fn is_transient(&self) -> bool {
        matches!(self, PublishError::Nacked | PublishError::Broker(_))
    }
}

/// Publishes with publisher confirms on one shared channel. Many tasks may publish at once:
/// the channel is only locked to fetch it, so confirms are awaited concurrently.
pub struct Publisher {
    bus: Bus,
    channel: tokio::sync::Mutex<Option<(u64, Channel)>>,
    app_id: String,
}

impl Publisher {
    pub fn new(bus: Bus, app_id: impl Into<String>) -> Publisher {
        Publisher {
            bus,
            channel: tokio::sync::Mutex::new(None),
            app_id: app_id.into(),
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    async fn channel(&self) -> Result<(u64, Channel), PublishError> {
        let mut guard = self.channel.lock().await;
        if let Some((generation, ch)) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok((*generation, ch.clone()));
        }
        let (ch, generation) = self.bus.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *guard = Some((generation, ch.clone()));
        Ok((generation, ch))
    }

    async fn forget(&self, generation: u64) {
        let mut guard = self.channel.lock().await;
        if guard
            .as_ref()
            .is_some_and(|(g, ch)| *g == generation || !ch.status().connected())
        {
            *guard = None;
        }
        drop(guard);
        self.bus.broken(generation).await;
    }

    /// Publishes one message and waits for the broker's confirm. One attempt.
    pub async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        kind: &str,
        body: &[u8],
        opts: &PublishOptions,
    ) -> Result<(), PublishError> {
        let (generation, ch) = self.channel().await?;
        let mut props = BasicProperties::default()
            .with_content_type(opts.content_type.as_deref().unwrap_or(CONTENT_TYPE).into())
            .with_type(kind.into())
            .with_app_id(self.app_id.as_str().into())
            .with_timestamp(crate::timestamp::Millis::now().0.max(0) as u64 / 1000)
            .with_delivery_mode(if opts.transient { 1 } else { 2 });
        if let Some(p) = opts.priority {
            props = props.with_priority(p);
        }
        if let Some(h) = &opts.headers {
            props = props.with_headers(h.clone());
        }
        if let Some(c) = &opts.correlation_id {
            props = props.with_correlation_id(c.as_str().into());
        }
        if let Some(r) = &opts.reply_to {
            props = props.with_reply_to(r.as_str().into());
        }
        if let Some(e) = opts.expiration {
            props = props.with_expiration(ShortString::from(e.as_millis().max(1).to_string()));
        }
        if let Some(m) = &opts.message_id {
            props = props.with_message_id(m.as_str().into());
        }
        if let Some(u) = &opts.user_id {
            props = props.with_user_id(u.as_str().into());
        }
        let options = BasicPublishOptions {
            mandatory: opts.mandatory,
            ..Default::default()
        };
        let result = async {
            ch.basic_publish(exchange.into(), routing_key.into(), options, body, props)
                .await?
                .await
        }
        .await;
        match result {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply_text: returned.reply_text.to_string(),
            }),
            Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
            Err(e) => {
                self.forget(generation).await;
                Err(PublishError::Broker(e))
            }
        }
    }

    /// Encodes and publishes one message. One attempt.
    pub async fn publish<M: Message>(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &M,
        opts: &PublishOptions,
    ) -> Result<(), PublishError> {
        self.publish_bytes(exchange, routing_key, M::KIND, &encode(msg), opts)
            .await
    }

    /// Publishes until the broker confirms, retrying transient failures (broker restarts,
    /// nacks) with backoff. Gives up after `give_up_after` if given, and on shutdown.
    /// An unroutable message is a verdict, not a failure, and is returned at once.
    pub async fn publish_reliably(
        &self,
        exchange: &str,
        routing_key: &str,
        kind: &str,
        body: &[u8],
        opts: &PublishOptions,
        give_up_after: Option<Duration>,
    ) -> Result<(), PublishError> {
        let attempts = async {
            let mut delays = super::backoff().build();
            loop {
                match self.publish_bytes(exchange, routing_key, kind, body, opts).await {
                    Err(e) if e.is_transient() => {
                        let delay = delays.next().unwrap_or(Duration::from_secs(5));
                        warn!(error = %e, exchange, routing_key, retry_in = ?delay, "publish failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.bus.shutdown_token().cancelled() => return Err(PublishError::Shutdown),
                        }
                    }
                    other => return other,
                }
            }
        };
        // The limit covers waiting for a connection too: while the broker is down, each attempt
        // blocks in the reconnect loop rather than failing.
        match give_up_after {
            Some(limit) => tokio::time::timeout(limit, attempts)
                .await
                .unwrap_or(Err(PublishError::TimedOut(limit))),
            None => attempts.await,
        }
    }

    /// [`Self::publish_reliably`] for a typed message.
    pub async fn send<M: Message>(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &M,
        opts: &PublishOptions,
        give_up_after: Option<Duration>,
    ) -> Result<(), PublishError> {
        self.publish_reliably(exchange, routing_key, M::KIND, &encode(msg), opts, give_up_after)
            .await
    }

    /// Closes the channel (before the connection is closed, or lapin reports an error).
    pub async fn close(&self) {
        if let Some((_, ch)) = self.channel.lock().await.take() {
            let _ = ch.close(200, "bye".into()).await;
        }
    }
}
