//! The scheduler: the only writer of job state.
//!
//! Every decision about a job is a pure function in [`lifecycle`] (the job as stored, a cause,
//! the time → the change and its effects); the modules below receive causes and carry out
//! decisions.
//!
//! It records submissions from any producer ([`submissions`]), judging who each belongs to
//! ([`provenance`]), grants and renews leases by
//! request/reply ([`lease`], [`rpc`]), carries out cancels, reservation extensions and agent
//! state changes ([`commands`]), resolves a job's secrets for its lease ([`secrets`]) and hands out the credential to move its
//! files ([`files`]), projects agents' events into the store ([`projector`]),
//! reclaims expired leases and ends jobs whose agents overran a deadline ([`reaper`]),
//! republishes jobs that never reached the broker ([`outbox`]), and tells agents which of their
//! queues are restricted ([`restricted`]). [`metrics`] observes it all for Prometheus.
//!
//! Several schedulers may run at once: every write is a single-document atomic update whose
//! precondition carries the state it expects ([`core::Core::apply`]).
//!
//! The store is its own crate (`flinger-store`, re-exported here as [`store`]); the scheduler
//! alone opens it with the right to change jobs ([`store::SchedulerStore`]).
//! This crate never runs a job's phases and knows nothing about HTTP.

pub mod app;
pub mod commands;
pub mod config;
pub mod core;
pub mod delivery;
pub mod files;
pub mod health;
pub mod lease;
pub mod lifecycle;
pub mod lost_messages;
pub mod metrics;
pub mod outbox;
pub mod output_cap;
pub mod projector;
pub mod provenance;
pub mod reaper;
pub mod restricted;
pub mod retention;
pub mod rpc;
pub mod secrets;
pub mod submissions;

/// The store, in its own crate (the gateway links it without the scheduler).
pub use flinger_store as store;

pub use app::Scheduler;
pub use config::SchedulerConfig;
