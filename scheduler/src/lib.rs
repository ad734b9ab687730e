//! The scheduler: the only writer of job state.
//!
//! It records submissions from any producer, grants and renews leases (request/reply), reclaims
//! expired ones, enforces timeouts the agents cannot, and projects status and output events into
//! the store. Several schedulers may run at once: every write is a single-document atomic update
//! with the expected state as its precondition.
//!
//! [`store`] is shared with the gateway, which reads from it.

pub mod store;
