//! AMQP plumbing shared by every Flinger process: a connection that heals itself, a publisher
//! that waits for the broker's confirm, request/reply over direct reply-to, dead-lettering with
//! a reason, a channel's life and a consumer's loop written once (`session.rs`:
//! [`Bus::with_channel`], [`Deliveries`]), and a supervisor that restarts broker-bound loops
//! with backoff.
//!
//! Retries use `backon` (not `backoff`, which is unmaintained: RUSTSEC-2025-0012; lapin itself
//! depends on backon).

mod connection;
mod dead_letter;
mod publisher;
mod rpc;
mod session;
mod supervise;

pub use connection::{Bus, BusConfig, BusError, Live, url_user};
pub use dead_letter::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER, dead_letter, header_str};
pub use publisher::{PublishError, PublishOptions, Publisher};
pub use rpc::{RpcClient, RpcError};
pub use session::{Deliveries, consume};
pub use supervise::{backoff, supervise};
