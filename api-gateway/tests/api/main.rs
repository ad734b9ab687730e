//! The gateway, through HTTP, against a real RabbitMQ and a real SQLite file.
//!
//! One test binary (one link) for every area; each test starts its own gateway on a free port
//! with its own store and broker namespace, so tests run in parallel without seeing each other.

mod agents;
mod auth;
mod compat;
mod health;
mod jobs;
mod limits;
mod oidc;
mod results;
mod secrets;
mod support;
