//! What every handler can reach. Cheap to clone (one `Arc`).

use crate::auth::Auth;
use crate::limits::ClientLimits;
use crate::webhooks::Webhooks;
use broker_schema::Names;
use broker_schema::bus::{Bus, Publisher, RpcClient};
use flinger_store::DynStore;
use flinger_store::sealing::SecretsKey;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where every answer about state comes from, and where new jobs are made durable.
    store: DynStore,
    /// Publishes submissions with confirms on one shared channel.
    publisher: Publisher,
    /// Asks the scheduler to do what only it may do (cancel).
    rpc: RpcClient,
    /// For `/readyz`: the publisher and the RPC client share this connection.
    bus: Bus,
    timeouts: Timeouts,
    /// Token keys and the anonymous-use policy.
    auth: Auth,
    limits: Limits,
    /// Relays job events to jobs' `job_status_webhook`, in the background.
    webhooks: Webhooks,
    /// Seals clients' secrets before they are stored; `None`: stored as given.
    secrets_key: Option<Arc<SecretsKey>>,
    /// Cancelled when the gateway starts stopping: long polls answer at once.
    stopping: CancellationToken,
    /// The web UI's live events, fed from the broker (see [`crate::ui::live`]).
    live: crate::ui::live::Hub,
    /// Each client's rate and requests in flight.
    client_limits: ClientLimits,
}

/// Limits on what the gateway accepts and keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_attachment_bytes: u64,
    pub max_artifact_bytes: u64,
    /// How long a secret written without `expire_after` lives; `None`: until deleted.
    pub secret_lifetime: Option<Duration>,
    /// Each client's request rate and requests in flight.
    pub clients: crate::limits::Settings,
}

/// How long the gateway waits for its dependencies before answering without them.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A submission's broker confirm; after it the job is accepted anyway (it is stored).
    pub publish: Duration,
    /// A reply from the scheduler; after it the request is answered 503.
    pub scheduler: Duration,
    /// A readiness probe of the store or the broker.
    pub probe: Duration,
}

impl AppState {
    pub fn new(
        store: DynStore,
        bus: Bus,
        timeouts: Timeouts,
        auth: Auth,
        limits: Limits,
        webhooks: Webhooks,
        secrets_key: Option<Arc<SecretsKey>>,
    ) -> AppState {
        let publisher = Publisher::new(bus.clone(), "flinger-gateway");
        let rpc = RpcClient::new(bus.clone());
        AppState {
            inner: Arc::new(Inner {
                store,
                publisher,
                rpc,
                bus,
                timeouts,
                auth,
                limits,
                webhooks,
                secrets_key,
                stopping: CancellationToken::new(),
                live: crate::ui::live::Hub::new(),
                client_limits: ClientLimits::new(limits.clients),
            }),
        }
    }

    /// Cancelled when the gateway starts stopping (by [`crate::app::App::run`]).
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stopping
    }

    pub fn live(&self) -> &crate::ui::live::Hub {
        &self.inner.live
    }

    pub fn client_limits(&self) -> &ClientLimits {
        &self.inner.client_limits
    }

    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.inner.rpc
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn names(&self) -> &Names {
        self.inner.bus.names()
    }

    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Single sign-on, when the lab has it.
    pub fn oidc(&self) -> Option<&crate::auth::oidc::Oidc> {
        self.inner.auth.oidc.as_ref()
    }

    pub fn public_url(&self) -> Option<&url::Url> {
        self.inner.auth.public_url.as_ref()
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    pub fn secrets_key(&self) -> Option<&SecretsKey> {
        self.inner.secrets_key.as_deref()
    }

    /// Closes the channels, then the connection (lapin errors if the order is reversed).
    pub async fn close(&self) {
        self.inner.webhooks.drain().await;
        self.inner.publisher.close().await;
        self.inner.rpc.close().await;
        self.inner.bus.close().await;
    }
}
