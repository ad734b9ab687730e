//! Builds the gateway and runs it until shutdown.
//!
//! [`App::build`] opens the store, binds the listener (port 0 picks a free one) and starts the
//! broker link; [`App::run`] serves until the shutdown token is cancelled, lets requests in
//! flight finish, then closes the broker channels and the connection, in that order.
//!
//! The broker is not needed to start: a gateway whose broker is down still accepts jobs (they
//! are stored and the scheduler's sweeper publishes them) and reports not ready on `/readyz`.

use crate::auth::Auth;
use crate::auth::bootstrap::{self, BootstrapError};
use crate::config::Config;
use crate::routes;
use crate::state::{AppState, Limits, Timeouts};
use crate::webhooks::Webhooks;
use crate::{bus_keeper, events};
use axum::ServiceExt;
use axum::extract::{DefaultBodyLimit, Request};
use broker_schema::bus::Bus;
use flinger_store::StoreError;
use flinger_store::sealing::SecretsKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up the admin: {0}")]
    Admin(#[from] BootstrapError),
    #[error("--secrets-key: {0}")]
    SecretsKey(String),
    #[error("single sign-on: {0}")]
    Oidc(String),
    #[error("{0}")]
    Webhooks(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A built gateway, bound and ready to serve.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    /// Stops the HTTP server (graceful: requests in flight finish).
    shutdown: CancellationToken,
    /// Stops the broker connection's retries. Cancelled only after the server has drained,
    /// so that a request in flight can still publish its submission.
    bus_shutdown: CancellationToken,
    max_body_bytes: usize,
}

impl App {
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<App, StartError> {
        // reqwest (webhooks) is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let secrets_key = match config.auth.secrets_key.as_deref() {
            Some(p) => Some(Arc::new(
                SecretsKey::from_passphrase(p)
                    .and_then(|k| {
                        k.with_previous(config.auth.previous_secrets_keys.iter().map(String::as_str))
                    })
                    .map_err(StartError::SecretsKey)?,
            )),
            None => {
                warn!("no secrets key (FLINGER_SECRETS_KEY): clients' secrets are stored unsealed");
                None
            }
        };
        // Testflinger's server reads its webhook token from WEBHOOK_AUTH: a lab's settings carry over.
        let webhook_auth = config
            .webhook_auth
            .clone()
            .or_else(|| std::env::var("WEBHOOK_AUTH").ok());
        let webhooks = Webhooks::new(
            config.webhook_allow.clone(),
            config.webhook_timeout,
            webhook_auth.as_deref(),
        )
        .map_err(StartError::Webhooks)?;
        let mut auth = Auth::new(&config.auth).map_err(StartError::Oidc)?;
        auth.public_url = config.public_url.clone();
        crate::metrics::install(config.metrics_listen).map_err(StartError::Metrics)?;
        let store = config.store.open().await?;
        info!(backend = store.backend(), "store opened");
        bootstrap::ensure_admin(
            &store,
            config.auth.admin_client_id.as_deref(),
            config.auth.admin_secret.as_deref(),
        )
        .await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let bus_shutdown = CancellationToken::new();
        let bus = Bus::new(
            config.broker.bus_config(format!("flinger-gateway {addr}")),
            bus_shutdown.clone(),
        );
        let timeouts = Timeouts {
            publish: config.publish_timeout,
            scheduler: config.scheduler_timeout,
            probe: Duration::from_secs(2),
        };
        Ok(App {
            listener,
            addr,
            state: AppState::new(
                store,
                bus,
                timeouts,
                auth,
                Limits {
                    max_attachment_bytes: config.max_attachment_bytes,
                    max_artifact_bytes: config.max_artifact_bytes,
                    secret_lifetime: config.auth.secret_lifetime.0,
                    clients: config.client_limits(),
                },
                webhooks,
                secrets_key,
            ),
            shutdown,
            bus_shutdown,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The address the gateway listens on (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the shutdown token is cancelled.
    pub async fn run(self) -> Result<(), StartError> {
        let App {
            listener,
            addr,
            state,
            shutdown,
            bus_shutdown,
            max_body_bytes,
        } = self;
        let keeper = bus_keeper::spawn(state.bus().clone(), shutdown.clone());
        let relay = events::spawn(state.clone(), shutdown.clone());
        let live = crate::ui::live::spawn(state.clone(), shutdown.clone());
        let router = routes::router(state.clone())
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::limits::enforce,
            ))
            .layer(axum::middleware::from_fn(crate::metrics::track))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            );
        // Outside the router: the path must be normalized before a route is chosen.
        let app = NormalizePathLayer::trim_trailing_slash().layer(router);
        info!(%addr, namespace = state.names().namespace(), "gateway listening");
        // Stopping: no new connections, requests in flight finish, and long polls answer now.
        let stopping = {
            let (shutdown, polls) = (shutdown.clone(), state.stopping().clone());
            async move {
                shutdown.cancelled().await;
                polls.cancel();
            }
        };
        // With the peer's address: anonymous callers are limited by it (crate::limits), and the
        // security log says where each sign-in came from.
        let served = axum::serve(
            listener,
            ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app),
        )
        .with_graceful_shutdown(stopping)
        .await;
        info!("HTTP server stopped; closing the broker link");
        shutdown.cancel();
        bus_shutdown.cancel();
        let _ = keeper.await;
        let _ = relay.await;
        let _ = live.await;
        state.close().await;
        served.map_err(StartError::Serve)
    }
}

/// Each request's span: its method and URI, except what must never be logged — a device
/// login's request id (whoever has it may take the login) and a sign-on callback's code and
/// state.
fn request_span(request: &Request) -> tracing::Span {
    let path = request.uri().path();
    let uri = if path.starts_with("/oidc/auth-poll/") {
        "/oidc/auth-poll/…".to_owned()
    } else if path.starts_with("/auth/") {
        path.to_owned()
    } else {
        request.uri().to_string()
    };
    tracing::info_span!("request", method = %request.method(), uri, version = ?request.version())
}

/// Builds and runs the gateway until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    App::build(config, shutdown).await?.run().await
}
