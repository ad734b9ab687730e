//! AMQP plumbing shared by every Flinger process: a connection that heals itself, a publisher
//! that waits for the broker's confirm, request/reply over direct reply-to, dead-lettering with
//! a reason, and a supervisor that restarts broker-bound loops with backoff.
//!
//! Retries use `backon` (not `backoff`, which is unmaintained: RUSTSEC-2025-0012; lapin itself
//! depends on backon).

mod connection;
mod dead_letter;
mod publisher;
mod rpc;
mod supervise;

pub use connection::{Bus, BusConfig, BusError, Live, url_user};
pub use dead_letter::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER, dead_letter, header_str};
pub use publisher::{PublishError, PublishOptions, Publisher};
pub use rpc::{RpcClient, RpcError};
pub use supervise::{backoff, supervise};

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

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
