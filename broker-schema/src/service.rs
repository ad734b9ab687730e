//! What every long-running Flinger binary shares: logging, shutdown on SIGTERM/SIGINT, and the
//! command-line arguments that say which broker and namespace to use.

use crate::bus::BusConfig;
use crate::names::{DEFAULT_NAMESPACE, Names};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Broker connection arguments, flattened into each binary's command line.
#[derive(Clone, Debug, clap::Args)]
pub struct BrokerArgs {
    /// AMQP URL of the broker; for a cluster, its nodes' URLs separated by commas (tried in
    /// turn until one answers, again after every connection loss).
    #[arg(
        long = "broker-url",
        env = "FLINGER_BROKER_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub url: String,
    /// Prefix of every exchange and queue name; labs sharing a broker use different ones.
    #[arg(long, env = "FLINGER_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Declare the queues that need no priority (the scheduler's, agents' control queues, dead
    /// letters) as quorum queues, replicated over a RabbitMQ cluster. Every process of a lab
    /// must agree; an existing lab switches as `docs/operations.md` says.
    #[arg(long, env = "FLINGER_QUORUM_QUEUES", value_parser = clap::builder::BoolishValueParser::new())]
    pub quorum_queues: bool,
}

impl BrokerArgs {
    pub fn bus_config(&self, connection_name: impl Into<String>) -> BusConfig {
        BusConfig {
            url: self.url.clone(),
            names: Names::new(&self.namespace).with_quorum_queues(self.quorum_queues),
            connection_name: connection_name.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Sets up `tracing`: level from `FLINGER_LOG` (or `RUST_LOG`), default `info`. lapin logs the
/// payload of every returned (unroutable) message at WARN; that is our 422 path, not a problem,
/// so its target is capped at ERROR.
pub fn init_tracing(format: LogFormat) {
    let filter = std::env::var("FLINGER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::new(format!("{filter},lapin::returned_messages=error"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

/// Parses a metrics listener's address (`--metrics-listen`): `HOST:PORT`, or a bare `PORT`,
/// which binds localhost only — exposing metrics beyond the host is said outright
/// (`0.0.0.0:9180`).
pub fn parse_metrics_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.trim().parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a port or an address such as 127.0.0.1:9180"))
}
