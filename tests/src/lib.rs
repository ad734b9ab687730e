//! The test lab: starts Flinger's real binaries (gateway, scheduler, agents) against the real
//! RabbitMQ and a real store, each lab in a namespace of its own so that tests run in parallel,
//! and talks to them only through their public interfaces: HTTP, AMQP and the `flinger` CLI.
//!
//! The binaries are taken from the target directory next to the test executable;
//! `scripts/test` builds them first (`cargo build --bins`).

pub mod agent_double;
pub mod broker;
pub mod browser;
pub mod cli;
pub mod invariants;
pub mod keyserver;
pub mod lab;
pub mod oidc;
pub mod private_broker;
pub mod private_mongo;
pub mod proc;
pub mod webhook;

pub use lab::{AgentSpec, Lab, LabBuilder, StoreKind};

use std::path::PathBuf;
use std::time::Duration;

/// Where the binaries under test are: `$FLINGER_BIN_DIR`, else the target directory this test
/// executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FLINGER_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (scripts/test does) first",
        path.display()
    );
    path
}

/// The broker the tests use.
pub fn broker_url() -> String {
    std::env::var("FLINGER_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A namespace no other test uses.
/// A local port nobody listens on right now (for a process the test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn unique_namespace(prefix: &str) -> String {
    format!("t-{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Installs the TLS crypto provider once (reqwest is built without a default one).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
