use super::{Bus, BusError};
use crate::codec::{CONTENT_TYPE, DecodeError, Message, decode, encode};
use crate::names::Names;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no queue {0:?} to send the request to")]
    NoServer(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the broker was lost before the reply came")]
    Disconnected,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("undecodable reply: {0}")]
    Decode(#[from] DecodeError),
    #[error("shutting down")]
    Shutdown,
}

impl From<BusError> for RpcError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Shutdown => RpcError::Shutdown,
            BusError::Amqp(e) | BusError::Connect { source: e, .. } => RpcError::Broker(e),
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// One channel consuming `amq.rabbitmq.reply-to`, and the requests waiting for a reply on it.
struct Link {
    generation: u64,
    channel: Channel,
    pending: Pending,
    alive: Arc<AtomicBool>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// Request/reply over RabbitMQ's direct reply-to: no reply queue to declare or clean up, and
/// a reply can only reach the connection that asked. Requests carry a TTL equal to the caller's
/// timeout, so a request that waited too long in the queue is dropped instead of served late.
pub struct RpcClient {
    bus: Bus,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
}

impl RpcClient {
    pub fn new(bus: Bus) -> RpcClient {
        RpcClient {
            bus,
            link: tokio::sync::Mutex::new(None),
        }
    }

    async fn link(&self) -> Result<Arc<Link>, RpcError> {
        let mut guard = self.link.lock().await;
        if let Some(l) = guard.as_ref()
            && l.alive.load(Ordering::Acquire)
            && l.channel.status().connected()
        {
            return Ok(l.clone());
        }
        let (channel, generation) = self.bus.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                Names::DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let reader = {
            let pending = pending.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                while let Some(Ok(d)) = consumer.next().await {
                    let Some(corr) = d.properties.correlation_id().as_ref().map(|c| c.to_string()) else {
                        continue;
                    };
                    let waiter = pending.lock().expect("pending lock").remove(&corr);
                    match waiter {
                        Some(tx) => {
                            let _ = tx.send(d.data);
                        }
                        None => debug!(correlation_id = %corr, "late reply dropped"),
                    }
                }
                alive.store(false, Ordering::Release);
                // Dropping the senders wakes every waiter with `Disconnected`.
                pending.lock().expect("pending lock").clear();
            })
        };
        let link = Arc::new(Link {
            generation,
            channel,
            pending,
            alive,
            reader: Mutex::new(Some(reader)),
        });
        *guard = Some(link.clone());
        Ok(link)
    }

    /// Sends `req` to `queue` and waits for the reply: all of it — reaching the broker (the bus
    /// reconnects forever while it is down), publishing, the reply — within `timeout`. A caller
    /// that must act by a deadline (an agent whose lease is running out) gets its answer in time.
    pub async fn call<Req: Message, Rep: Message>(
        &self,
        queue: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let link = tokio::time::timeout_at(deadline, self.link())
            .await
            .map_err(|_| RpcError::Timeout(timeout))??;
        // The request's TTL: whatever time is left, so nobody serves it after we gave up.
        let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
        let corr = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        link.pending
            .lock()
            .expect("pending lock")
            .insert(corr.clone(), tx);
        let forget = || {
            link.pending.lock().expect("pending lock").remove(&corr);
        };
        let props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_type(Req::KIND.into())
            .with_reply_to(Names::DIRECT_REPLY_TO.into())
            .with_correlation_id(corr.as_str().into())
            .with_expiration(ShortString::from(ttl.as_millis().max(1).to_string()))
            .with_delivery_mode(1);
        let published = async {
            link.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &encode(req),
                    props,
                )
                .await?
                .await
        };
        let Ok(published) = tokio::time::timeout_at(deadline, published).await else {
            forget();
            return Err(RpcError::Timeout(timeout));
        };
        match published {
            Ok(Confirmation::Ack(Some(_))) => {
                forget();
                return Err(RpcError::NoServer(queue.to_owned()));
            }
            Ok(_) => {}
            Err(e) => {
                forget();
                link.alive.store(false, Ordering::Release);
                self.bus.broken(link.generation).await;
                return Err(RpcError::Broker(e));
            }
        }
        tokio::select! {
            r = rx => match r {
                Ok(bytes) => Ok(decode::<Rep>(&bytes)?),
                Err(_) => {
                    self.bus.broken(link.generation).await;
                    Err(RpcError::Disconnected)
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                forget();
                Err(RpcError::Timeout(timeout))
            }
            _ = self.bus.shutdown_token().cancelled() => {
                forget();
                Err(RpcError::Shutdown)
            }
        }
    }

    /// Closes the reply channel and waits for its reader task.
    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            let _ = link.channel.close(200, "bye".into()).await;
            let reader = link.reader.lock().expect("reader lock").take();
            if let Some(reader) = reader {
                let _ = reader.await;
            }
        }
    }
}
