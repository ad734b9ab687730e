//! `flinger-scheduler`: the only writer of job state. Run one or several.

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use broker_schema::service::{BrokerArgs, LogFormat, init_tracing, shutdown_on_signals};
use clap::Parser;
use flinger_scheduler::health::Health;
use flinger_scheduler::output_cap::OutputCap;
use flinger_scheduler::retention::RetentionConfig;
use flinger_scheduler::store::sealing::{self, SecretsKey};
use flinger_scheduler::store::{DynSchedulerStore, Records, StoreConfig};
use flinger_scheduler::{Scheduler, SchedulerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "flinger-scheduler",
    version,
    about = "Flinger's scheduler: leases, timeouts, reservations, recovery"
)]
struct Args {
    /// The store: `sqlite:PATH` (embedded) or `mongodb://HOST:PORT/DB`.
    #[arg(
        long,
        env = "FLINGER_STORE",
        default_value = "sqlite:flinger.db",
        global = true
    )]
    store: String,
    /// Without a command, the scheduler runs.
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Lease length in seconds.
    #[arg(long, env = "FLINGER_LEASE_SECS", default_value_t = 30.0)]
    lease_secs: f64,
    /// How often agents renew their lease, in seconds.
    #[arg(long, env = "FLINGER_RENEW_SECS", default_value_t = 10.0)]
    renew_secs: f64,
    /// Leases a job may be granted before it fails instead of being requeued.
    #[arg(long, env = "FLINGER_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// How often the reaper looks for expired leases, in seconds.
    #[arg(long, env = "FLINGER_REAP_SECS", default_value_t = 2.0)]
    reap_secs: f64,
    /// Republish a waiting job not seen on the broker after this many seconds.
    #[arg(long, env = "FLINGER_REPUBLISH_SECS", default_value_t = 15.0)]
    republish_secs: f64,
    /// Seconds past a job's own deadline before the scheduler ends it if its agent has not.
    #[arg(long, env = "FLINGER_BACKSTOP_GRACE_SECS", default_value_t = 60.0)]
    backstop_grace_secs: f64,
    /// Seconds cleanup may run past the global timeout or the reservation's end before the
    /// backstop applies (agents bound cleanup themselves, 600 s by default).
    #[arg(long, env = "FLINGER_CLEANUP_ALLOWANCE_SECS", default_value_t = 900.0)]
    cleanup_allowance_secs: f64,
    /// A RabbitMQ user whose submissions' `submitted_by` is believed: the lab's gateways, when
    /// they connect as another user than this scheduler (which always trusts its own user).
    /// Repeat it, or give a comma-separated list.
    #[arg(
        long = "trusted-publisher",
        env = "FLINGER_TRUSTED_PUBLISHERS",
        value_delimiter = ','
    )]
    trusted_publishers: Vec<String>,
    #[arg(long, env = "FLINGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The passphrase clients' secrets are sealed with (at least 16 characters; the same on
    /// every gateway and scheduler of the lab). Without it, secrets are stored as given.
    #[arg(long, env = "FLINGER_SECRETS_KEY", hide_env_values = true, global = true)]
    secrets_key: Option<String>,
    /// Keys being rotated out: secrets sealed under them still open (comma-separated; see
    /// `rotate-secrets-key`).
    #[arg(
        long = "previous-secrets-key",
        env = "FLINGER_PREVIOUS_SECRETS_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    previous_secrets_keys: Vec<String>,
    /// The gateway's URL as agents reach it (e.g. `http://gateway:8080`, or the proxy in front
    /// of several gateways): with `--jwt-signing-key`, every lease grant carries it and a token
    /// for that job's attachments and artifacts, so agents need no API client of their own.
    #[arg(long, env = "FLINGER_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// The gateways' token signing key (the same `FLINGER_JWT_SIGNING_KEY`): job-scoped files
    /// tokens are signed with it.
    #[arg(long, env = "FLINGER_JWT_SIGNING_KEY", hide_env_values = true)]
    jwt_signing_key: Option<String>,
    /// Days ended jobs are kept, with their output, results, attachments and artifacts; 0 keeps
    /// them forever.
    #[arg(long, env = "FLINGER_RETENTION_DAYS", default_value_t = 30.0)]
    retention_days: f64,
    /// A queue's own retention, `QUEUE=DAYS` (0: forever). Repeat it, or give a comma-separated
    /// list.
    #[arg(
        long = "retention",
        env = "FLINGER_RETENTION_QUEUES",
        value_delimiter = ',',
        value_name = "QUEUE=DAYS"
    )]
    retention_queues: Vec<String>,
    /// How often ended jobs past their retention are removed, in seconds.
    #[arg(long, env = "FLINGER_RETENTION_EVERY_SECS", default_value_t = 60.0)]
    retention_every_secs: f64,
    /// The most output a job may ship per stream (output, serial), in MiB, for every queue;
    /// past it the agent drops the rest and says so. Unset: each agent's own cap (256 MiB).
    #[arg(long, env = "FLINGER_OUTPUT_CAP_MIB")]
    output_cap_mib: Option<f64>,
    /// A queue's own output cap, `QUEUE=MIB`. Repeat it, or give a comma-separated list.
    #[arg(
        long = "output-cap",
        env = "FLINGER_OUTPUT_CAP_QUEUES",
        value_delimiter = ',',
        value_name = "QUEUE=MIB"
    )]
    output_cap_queues: Vec<String>,
    /// Serve `/healthz` (alive) and `/readyz` (store and broker reachable) on this address,
    /// e.g. `127.0.0.1:8081`. None by default.
    #[arg(long, env = "FLINGER_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address: a bare port binds localhost
    /// only (`9091`), `0.0.0.0:9091` every address. None by default.
    #[arg(long, env = "FLINGER_METRICS_LISTEN", value_parser = broker_schema::service::parse_metrics_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How often the metrics' gauges (jobs by state and queue, agents by state) are computed
    /// from the store, in seconds.
    #[arg(long, env = "FLINGER_METRICS_REFRESH_SECS", default_value_t = flinger_scheduler::metrics::DEFAULT_REFRESH_SECS)]
    metrics_refresh_secs: f64,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes a consistent copy of the SQLite store to PATH while the lab runs (a new file;
    /// restore by starting the lab on it, see docs/operations.md). MongoDB: use mongodump.
    Backup {
        /// Where to write the copy (must not exist).
        path: std::path::PathBuf,
    },
    /// Seals every stored secret again under `--secrets-key`, opening each with it or one of
    /// the `--previous-secrets-key`s; then the previous keys can be dropped. Safe while the lab
    /// runs (each secret is replaced with a compare-and-set) once every gateway and scheduler
    /// has the new key and the previous ones (docs/operations.md).
    RotateSecretsKey,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.001))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    match &args.command {
        // A backup copies sealed values as they are: it needs no key.
        Some(Command::Backup { path }) => return backup(&args.store, path).await,
        Some(Command::RotateSecretsKey) => {
            let key = secrets_key(&args)?.context("rotate-secrets-key needs the new key in --secrets-key")?;
            return rotate_secrets_key(&args.store, &key).await;
        }
        None => {}
    }
    let secrets_key = secrets_key(&args)?;
    if args.renew_secs * 2.0 > args.lease_secs {
        warn!(
            lease = args.lease_secs,
            renew = args.renew_secs,
            "renewal interval should be well under half the lease"
        );
    }
    let files = match (args.gateway_url.as_deref(), args.jwt_signing_key.as_deref()) {
        (Some(url), Some(key)) if !url.trim().is_empty() && !key.is_empty() => {
            info!(
                gateway = url,
                "lease grants carry a files credential for the gateway"
            );
            Some(flinger_scheduler::files::FilesAccess::new(url, key.as_bytes()))
        }
        (Some(_), _) => {
            warn!(
                "--gateway-url without --jwt-signing-key: agents need server_address and a client of their own to move jobs' files"
            );
            None
        }
        _ => None,
    };
    let retention = RetentionConfig {
        keep: RetentionConfig::days(args.retention_days)
            .map_err(anyhow::Error::msg)
            .context("--retention-days")?,
        per_queue: args
            .retention_queues
            .iter()
            .map(|s| RetentionConfig::queue_override(s))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)
            .context("--retention")?,
        every: secs(args.retention_every_secs),
    };
    info!(?retention, "retention");
    let output_cap = OutputCap {
        lab: args
            .output_cap_mib
            .map(OutputCap::mib)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--output-cap-mib")?,
        per_queue: args
            .output_cap_queues
            .iter()
            .map(|s| OutputCap::queue_override(s))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)
            .context("--output-cap")?,
    };
    let config = SchedulerConfig {
        secrets_key,
        files,
        lease: secs(args.lease_secs),
        renew_every: secs(args.renew_secs),
        max_attempts: args.max_attempts.max(1),
        reap_every: secs(args.reap_secs),
        republish_after: secs(args.republish_secs),
        backstop_grace: secs(args.backstop_grace_secs),
        cleanup_allowance: secs(args.cleanup_allowance_secs),
        trusted_publishers: args.trusted_publishers,
        retention,
        output_cap,
        metrics_refresh: args.metrics_listen.map(|_| secs(args.metrics_refresh_secs)),
        ..SchedulerConfig::default()
    };
    if let Some(addr) = args.metrics_listen {
        flinger_scheduler::metrics::install(addr)
            .map_err(anyhow::Error::msg)
            .context("--metrics-listen")?;
    }
    let shutdown = shutdown_on_signals();
    let health = Health::default();
    if let Some(addr) = args.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--health-listen {addr}"))?;
        info!(addr = %listener.local_addr()?, "health endpoints listening");
        tokio::spawn(flinger_scheduler::health::serve(
            listener,
            health.clone(),
            shutdown.clone(),
        ));
    }
    let store_config = StoreConfig::parse(&args.store)
        .map_err(anyhow::Error::msg)
        .context("--store")?;
    let Some(mut store) = open_store(&store_config, &shutdown).await else {
        return Ok(());
    };
    if args.metrics_listen.is_some() {
        store = flinger_scheduler::metrics::Metered::wrap(store);
    }
    health.store_opened(store.clone());
    let name = format!("flinger-scheduler {}", std::process::id());
    let scheduler = Scheduler::new(args.broker.bus_config(name), store, config, shutdown);
    health.bus_created(scheduler.bus().clone());
    scheduler.run().await;
    Ok(())
}

/// The secrets key with the keys it replaces; `None` (and a warning) without one.
fn secrets_key(args: &Args) -> anyhow::Result<Option<std::sync::Arc<SecretsKey>>> {
    let Some(passphrase) = args.secrets_key.as_deref() else {
        warn!("no secrets key (FLINGER_SECRETS_KEY): only secrets stored unsealed can be read");
        return Ok(None);
    };
    let key = SecretsKey::from_passphrase(passphrase)
        .map_err(anyhow::Error::msg)
        .context("--secrets-key")?
        .with_previous(args.previous_secrets_keys.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)
        .context("--previous-secrets-key")?;
    Ok(Some(std::sync::Arc::new(key)))
}

/// `flinger-scheduler rotate-secrets-key`: every secret sealed under the current key, then exit
/// (non-zero when a secret opens with none of the keys given: it is left as it was, and named).
async fn rotate_secrets_key(store: &str, key: &SecretsKey) -> anyhow::Result<()> {
    let config = StoreConfig::parse(store)
        .map_err(anyhow::Error::msg)
        .context("--store")?;
    let store = config.open_for_scheduler().await.context("opening the store")?;
    let (mut resealed, mut current, mut unopened) = (0, 0, vec![]);
    for (id, secret) in store.list_secrets().await? {
        match sealing::reseal(key, &id, &secret.value) {
            Ok(None) => current += 1,
            Ok(Some(value)) => {
                // Rewritten since it was listed: it was sealed by a gateway with the new key.
                if store.replace_secret_value(&id, &secret.value, &value).await? {
                    resealed += 1;
                } else {
                    current += 1;
                }
            }
            Err(e) => {
                warn!(secret = %id, error = %e, "cannot open this secret with the keys given; left as it was");
                unopened.push(id);
            }
        }
    }
    println!(
        "secrets sealed under the new key: {resealed} resealed, {current} already were, {} left as they were",
        unopened.len()
    );
    if !unopened.is_empty() {
        anyhow::bail!(
            "{} secret(s) open with none of the keys given: {}",
            unopened.len(),
            unopened.join(", ")
        );
    }
    Ok(())
}

/// `flinger-scheduler backup PATH`: one copy, then exit (non-zero, with the reason, on failure).
async fn backup(store: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let config = StoreConfig::parse(store)
        .map_err(anyhow::Error::msg)
        .context("--store")?;
    let summary = config
        .backup(path)
        .await
        .with_context(|| format!("backing up {store} to {}", path.display()))?;
    println!(
        "backed up {store} to {} ({} bytes, {} jobs)",
        summary.path.display(),
        summary.bytes,
        summary.jobs
    );
    Ok(())
}

/// Opens the store, retrying with backoff while the database is unreachable.
async fn open_store(config: &StoreConfig, shutdown: &CancellationToken) -> Option<DynSchedulerStore> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .build();
    loop {
        match config.open_for_scheduler().await {
            Ok(store) => {
                info!(backend = store.backend(), "store open");
                return Some(store);
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                warn!(error = %e, retry_in = ?delay, "cannot open the store");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
