//! The gateway's configuration: command-line flags with environment fallbacks.

use broker_schema::service::{BrokerArgs, LogFormat};
use flinger_scheduler::store::StoreConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Testflinger refuses result bodies of 16 MiB and more; we apply the same limit to every body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "flinger-gateway",
    version,
    about = "Flinger's HTTP API (Testflinger v1 compatible)"
)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FLINGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The store: `sqlite:PATH` or `mongodb://HOST/DATABASE`.
    #[arg(long, env = "FLINGER_STORE", default_value = "sqlite:flinger.db", value_parser = StoreConfig::parse)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub broker: BrokerArgs,

    #[arg(long, env = "FLINGER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// How long a submission waits for the broker's confirm before the gateway answers anyway
    /// (the job is stored; the scheduler's sweeper publishes it later).
    #[arg(long, env = "FLINGER_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// How long a request to the scheduler (cancel) waits for its reply before answering 503.
    #[arg(long, env = "FLINGER_SCHEDULER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub scheduler_timeout: Duration,

    /// Largest request body accepted; larger ones are answered 413.
    #[arg(long, env = "FLINGER_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn new(listen: SocketAddr, store: StoreConfig, broker: BrokerArgs) -> Config {
        Config {
            listen,
            store,
            broker,
            log_format: LogFormat::Text,
            publish_timeout: Duration::from_secs(5),
            scheduler_timeout: Duration::from_secs(5),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    broker_schema::job::parse_human_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration (use seconds or a form like 5s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::try_parse_from(["flinger-gateway"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            c.store,
            StoreConfig::Sqlite {
                path: "flinger.db".into()
            }
        );
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn durations_take_units() {
        let c = Config::try_parse_from(["flinger-gateway", "--scheduler-timeout", "2m"]).unwrap();
        assert_eq!(c.scheduler_timeout, Duration::from_secs(120));
        assert!(Config::try_parse_from(["flinger-gateway", "--publish-timeout", "soon"]).is_err());
    }
}
