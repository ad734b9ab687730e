//! `flinger-gateway`: Flinger's HTTP API.

use broker_schema::service::{init_tracing, shutdown_on_signals};
use clap::Parser;
use flinger_gateway::Config;
use flinger_gateway::config::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_format);
    if let Some(Command::CreateClient { client_id, role }) = &config.command {
        return create_client(&config, client_id, role).await;
    }
    let shutdown = shutdown_on_signals();
    flinger_gateway::serve(config, shutdown).await?;
    Ok(())
}

/// `flinger-gateway create-client ID [--role R]`: the bootstrap path for the first admin.
async fn create_client(config: &Config, client_id: &str, role: &str) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use flinger_gateway::auth::{bootstrap, password};
    let role = flinger_store::Role::parse(role)
        .with_context(|| format!("unknown role {role:?}: admin, manager, contributor or agent"))?;
    if !bootstrap::valid_client_id(client_id) {
        bail!("{client_id:?} is not a valid client id (letters, digits, _ . @ -)");
    }
    let secret = match std::env::var("FLINGER_CLIENT_SECRET") {
        Ok(s) => s,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the secret from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if secret.chars().count() < password::MIN_SECRET_LEN {
        bail!(
            "the secret must be at least {} characters",
            password::MIN_SECRET_LEN
        );
    }
    let store = config.store.open().await.context("opening the store")?;
    let created = bootstrap::upsert_client(&store, client_id, role, &secret).await?;
    println!(
        "{} client {client_id:?} with role {role}",
        if created { "created" } else { "updated" }
    );
    Ok(())
}
