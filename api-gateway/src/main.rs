//! `flinger-gateway`: Flinger's HTTP API.

use broker_schema::service::{init_tracing, shutdown_on_signals};
use clap::Parser;
use flinger_gateway::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_format);
    let shutdown = shutdown_on_signals();
    flinger_gateway::serve(config, shutdown).await?;
    Ok(())
}
