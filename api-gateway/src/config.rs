//! The gateway's configuration: command-line flags with environment fallbacks.

use broker_schema::service::{BrokerArgs, LogFormat};
use flinger_store::StoreConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Testflinger refuses result bodies of 16 MiB and more; we apply the same limit to every body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Per-client defaults (see `crate::limits`): far above what an agent, a CLI or a page does,
/// low enough that one runaway client cannot take the gateway's every core.
pub const DEFAULT_RATE_LIMIT: u32 = 200;
pub const DEFAULT_RATE_BURST: u32 = 1000;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Default size limit of an attachments archive and of an artifacts archive.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1024 * 1024 * 1024;

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

    /// Serve Prometheus metrics (`GET /metrics`) on this address, apart from the API: a bare
    /// port binds localhost only (`9090`), `0.0.0.0:9090` every address. None by default.
    #[arg(long, env = "FLINGER_METRICS_LISTEN", value_parser = broker_schema::service::parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,

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

    /// Largest attachments archive accepted (413 beyond it).
    #[arg(long, env = "FLINGER_MAX_ATTACHMENT_BYTES", default_value_t = DEFAULT_MAX_BLOB_BYTES)]
    pub max_attachment_bytes: u64,

    /// Largest artifacts archive accepted (413 beyond it).
    #[arg(long, env = "FLINGER_MAX_ARTIFACT_BYTES", default_value_t = DEFAULT_MAX_BLOB_BYTES)]
    pub max_artifact_bytes: u64,

    /// Requests per second each client may keep up (a client: a token's client id, else the
    /// caller's IP address); past it and its burst, 429 with `Retry-After`. 0: no limit.
    #[arg(long, env = "FLINGER_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// Requests a client may send at once above its rate.
    #[arg(long, env = "FLINGER_RATE_BURST", default_value_t = DEFAULT_RATE_BURST)]
    pub rate_burst: u32,

    /// Requests each client may have in flight (a streamed answer counts until it is sent);
    /// more are answered 429. 0: no limit.
    #[arg(long, env = "FLINGER_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// The gateway's URL as browsers reach it (e.g. `https://lab.example.com`): the single
    /// sign-on redirect URI is `<URL>/auth/callback`. Without it, the request's `Host` (and a
    /// proxy's `X-Forwarded-Proto`) make the URL; the provider refuses one it was not given.
    #[arg(long, env = "FLINGER_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Where jobs' `job_status_webhook` may point: URL prefixes, comma-separated (e.g.
    /// `https://ci.example.com/hooks/`). Empty: any http(s) URL.
    #[arg(long, env = "FLINGER_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<String>,

    /// A bearer token sent with every webhook relay (`Authorization: Bearer TOKEN`), as
    /// Testflinger's `WEBHOOK_AUTH`, which is read too when this is not set. Never logged.
    #[arg(long, env = "FLINGER_WEBHOOK_AUTH", hide_env_values = true)]
    pub webhook_auth: Option<String>,

    /// How long one webhook PUT may take before it is retried.
    #[arg(long, env = "FLINGER_WEBHOOK_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Authentication and access control.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthArgs {
    /// The HS256 key access tokens are signed with; every gateway of a lab needs the same one.
    /// Without it each gateway makes up its own at start (tokens then only work on that gateway
    /// until it restarts).
    #[arg(long, env = "FLINGER_JWT_SIGNING_KEY", hide_env_values = true)]
    pub jwt_signing_key: Option<String>,

    /// Requests without a token act as a `contributor` (submit, read, cancel anonymous jobs).
    /// `false`: every guarded endpoint needs a token.
    #[arg(long, env = "FLINGER_ALLOW_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,

    /// Requests without a token may also use the agent endpoints (post results, output,
    /// artifacts; read attachments), as with a Testflinger server without authentication.
    #[arg(long, env = "FLINGER_ALLOW_ANONYMOUS_AGENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_anonymous_agents: bool,

    /// How long an access token is valid.
    #[arg(long, env = "FLINGER_ACCESS_TOKEN_TTL", default_value = "10m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// How long a refresh token is valid.
    #[arg(long, env = "FLINGER_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// The first admin: created (or its secret reset) at start. Needs `--admin-secret`.
    #[arg(long, env = "FLINGER_ADMIN_CLIENT_ID")]
    pub admin_client_id: Option<String>,

    /// The first admin's secret (at least 15 characters).
    #[arg(long, env = "FLINGER_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,

    /// The passphrase clients' secrets are sealed with at rest (at least 16 characters; the same
    /// on every gateway and scheduler of the lab). Without it, secrets are stored as given.
    #[arg(long, env = "FLINGER_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Keys being rotated out: secrets sealed under them still open (comma-separated). See
    /// `flinger-scheduler rotate-secrets-key`.
    #[arg(
        long = "previous-secrets-key",
        env = "FLINGER_PREVIOUS_SECRETS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub previous_secrets_keys: Vec<String>,

    /// How long a secret lives when its writer gives no `expire_after` (Testflinger keeps
    /// secrets a year); `never` keeps them until deleted.
    #[arg(long, env = "FLINGER_SECRET_LIFETIME", default_value = "365d", value_parser = parse_lifetime)]
    pub secret_lifetime: Lifetime,

    #[command(flatten)]
    pub oidc: OidcArgs,
}

/// Single sign-on with an OpenID Connect provider (`docs/operations.md`). Off unless
/// `--oidc-issuer` is set; when on, anonymous use is off.
#[derive(Clone, Debug, clap::Args)]
pub struct OidcArgs {
    /// The provider's issuer URL (discovery reads `<issuer>/.well-known/openid-configuration`).
    #[arg(long, env = "FLINGER_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The client id the lab is registered with at the provider.
    #[arg(long, env = "FLINGER_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// The client's secret; none for a public client. Prefer the environment or
    /// `--oidc-client-secret-file` to the command line. Never logged.
    #[arg(long, env = "FLINGER_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<Hidden>,

    /// A file whose first line is the client's secret.
    #[arg(long, env = "FLINGER_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// An ID token claim whose values give a role (e.g. `groups`), with `--oidc-role-map`.
    #[arg(long, env = "FLINGER_OIDC_ROLE_CLAIM")]
    pub oidc_role_claim: Option<String>,

    /// `VALUE=ROLE` pairs, comma-separated (e.g. `lab-admins=admin,lab-ops=manager`): a person
    /// whose role claim holds VALUE acts with at least ROLE.
    #[arg(long, env = "FLINGER_OIDC_ROLE_MAP", value_delimiter = ',')]
    pub oidc_role_map: Vec<String>,

    /// Scopes asked besides `openid email profile` (comma-separated, e.g. `groups`).
    #[arg(long = "oidc-scope", env = "FLINGER_OIDC_SCOPES", value_delimiter = ',')]
    pub oidc_scopes: Vec<String>,

    /// The least time between two fetches of the provider's signing keys (JWKS) caused by an ID
    /// token naming a key the gateway does not hold. A rotation is picked up at once when the
    /// last such fetch is older; a flood of forged tokens costs the provider one fetch per
    /// interval.
    #[arg(
        long,
        env = "FLINGER_OIDC_JWKS_REFETCH_INTERVAL",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub oidc_jwks_refetch_interval: Duration,
}

impl Default for OidcArgs {
    fn default() -> Self {
        OidcArgs {
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_client_secret_file: None,
            oidc_role_claim: None,
            oidc_role_map: vec![],
            oidc_scopes: vec![],
            oidc_jwks_refetch_interval: Duration::from_secs(30),
        }
    }
}

/// A secret given on the command line or in the environment: shown as `…` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("…")
    }
}

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Hidden(s.to_owned()))
    }
}

impl std::ops::Deref for Hidden {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// How long something lives: a duration, or `never` ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime(pub Option<Duration>);

fn parse_lifetime(s: &str) -> Result<Lifetime, String> {
    match s {
        "never" => Ok(Lifetime(None)),
        _ => parse_duration(s).map(|d| Lifetime(Some(d))),
    }
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            jwt_signing_key: None,
            allow_anonymous: true,
            allow_anonymous_agents: false,
            access_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            admin_client_id: None,
            admin_secret: None,
            secrets_key: None,
            previous_secrets_keys: vec![],
            secret_lifetime: Lifetime(Some(Duration::from_secs(365 * 86_400))),
            oidc: OidcArgs::default(),
        }
    }
}

/// One-off administration commands (instead of serving).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Creates an API client, or replaces its role and secret, directly in the store (the
    /// bootstrap path for the first admin). The secret is read from `FLINGER_CLIENT_SECRET`, or
    /// from the first line of standard input.
    CreateClient {
        /// The client's id.
        client_id: String,
        /// `admin`, `manager`, `contributor` or `agent`.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn new(listen: SocketAddr, store: StoreConfig, broker: BrokerArgs) -> Config {
        Config {
            listen,
            store,
            broker,
            log_format: LogFormat::Text,
            metrics_listen: None,
            publish_timeout: Duration::from_secs(5),
            scheduler_timeout: Duration::from_secs(5),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_attachment_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_artifact_bytes: DEFAULT_MAX_BLOB_BYTES,
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_burst: DEFAULT_RATE_BURST,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            auth: AuthArgs::default(),
            public_url: None,
            webhook_allow: vec![],
            webhook_auth: None,
            webhook_timeout: Duration::from_secs(3),
            command: None,
        }
    }
}

impl Config {
    /// The per-client limits, with 0 meaning none.
    pub fn client_limits(&self) -> crate::limits::Settings {
        use std::num::NonZeroU32;
        crate::limits::Settings {
            rate: NonZeroU32::new(self.rate_limit)
                .map(|r| (r, NonZeroU32::new(self.rate_burst).unwrap_or(r))),
            in_flight: (self.max_in_flight > 0).then_some(self.max_in_flight),
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
        assert!(c.auth.allow_anonymous);
        assert!(!c.auth.allow_anonymous_agents);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.auth.access_token_ttl, Duration::from_secs(600));
        let d = AuthArgs::default();
        assert_eq!(
            (d.allow_anonymous, d.access_token_ttl, d.refresh_token_ttl),
            (
                c.auth.allow_anonymous,
                c.auth.access_token_ttl,
                c.auth.refresh_token_ttl
            )
        );
        assert_eq!(c.auth.oidc.oidc_jwks_refetch_interval, Duration::from_secs(30));
        assert_eq!(
            d.oidc.oidc_jwks_refetch_interval,
            c.auth.oidc.oidc_jwks_refetch_interval
        );
    }

    #[test]
    fn a_bare_metrics_port_binds_localhost_only() {
        let listen = |v: &str| Config::try_parse_from(["flinger-gateway", "--metrics-listen", v]);
        assert_eq!(
            listen("9180").unwrap().metrics_listen,
            Some("127.0.0.1:9180".parse().unwrap())
        );
        assert_eq!(
            listen("0.0.0.0:9180").unwrap().metrics_listen,
            Some("0.0.0.0:9180".parse().unwrap())
        );
        assert!(listen("everywhere").is_err());
    }

    #[test]
    fn anonymous_use_can_be_switched_off() {
        let c = Config::try_parse_from(["flinger-gateway", "--allow-anonymous", "false"]).unwrap();
        assert!(!c.auth.allow_anonymous);
    }

    #[test]
    fn durations_take_units() {
        let c = Config::try_parse_from(["flinger-gateway", "--scheduler-timeout", "2m"]).unwrap();
        assert_eq!(c.scheduler_timeout, Duration::from_secs(120));
        assert!(Config::try_parse_from(["flinger-gateway", "--publish-timeout", "soon"]).is_err());
    }
}
