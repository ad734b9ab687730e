//! The scheduler: the only writer of job state.
//!
//! It records submissions from any producer ([`submissions`]), judging who each belongs to
//! ([`provenance`]), grants and renews leases by
//! request/reply ([`lease`], [`rpc`]), carries out cancels, reservation extensions and agent
//! state changes ([`commands`]), resolves a job's secrets for its lease ([`secrets`]), projects agents' events into the store ([`projector`]),
//! reclaims expired leases and ends jobs whose agents overran a deadline ([`reaper`]),
//! republishes jobs that never reached the broker ([`outbox`]), and tells agents which of their
//! queues are restricted ([`restricted`]).
//!
//! Several schedulers may run at once: every write is a single-document atomic update whose
//! precondition carries the state it expects ([`core::Core::modify`]).
//!
//! [`store`] (the trait and both backends) is shared with the gateway, which reads from it.
//! This crate never runs a job's phases and knows nothing about HTTP.

pub mod app;
pub mod commands;
pub mod config;
pub mod core;
pub mod delivery;
pub mod health;
pub mod lease;
pub mod outbox;
pub mod projector;
pub mod provenance;
pub mod reaper;
pub mod restricted;
pub mod rpc;
pub mod secrets;
pub mod store;
pub mod submissions;

pub use app::Scheduler;
pub use config::SchedulerConfig;
