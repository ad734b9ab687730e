use crate::names::Names;
use crate::topology::declare_topology;
use backon::{ExponentialBuilder, Retryable};
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `amqp://user:pass@host:port/vhost`, or several such URLs separated by commas: the nodes
    /// of a RabbitMQ cluster, tried in turn until one answers (see [`broker_urls`]). Every URL
    /// should name the same user. A `heartbeat=10` query is added to a URL that has none, so a
    /// dead broker is noticed in seconds rather than minutes.
    pub url: String,
    pub names: Names,
    /// Shown in RabbitMQ's management UI (`flinger-agent dut-01`).
    pub connection_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("shutting down")]
    Shutdown,
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("cannot connect to the broker at {node}: {source}")]
    Connect { node: String, source: lapin::Error },
}

/// A live connection and its generation: operations that fail report the generation they used,
/// so that only the connection that actually broke is replaced.
#[derive(Clone)]
pub struct Live {
    pub connection: Arc<Connection>,
    pub generation: u64,
}

/// A connection to the broker that reconnects with backoff and redeclares the topology each
/// time. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    config: BusConfig,
    /// The broker's nodes, from `config.url`; never empty.
    urls: Vec<String>,
    /// The node to try at the next connect: the one last connected to, or the one after the
    /// last that refused. Starts at a node chosen by the process id, so that a lab's processes
    /// spread their connections (and the classic queues they declare) over the cluster.
    next_url: AtomicUsize,
    shutdown: CancellationToken,
    /// The current connection. A mutex, not a lock-free cell: concurrent callers during an
    /// outage should wait for one reconnect, not start many.
    live: tokio::sync::Mutex<Option<Live>>,
    generation: AtomicU64,
}

impl Bus {
    pub fn new(config: BusConfig, shutdown: CancellationToken) -> Bus {
        let urls = broker_urls(&config.url);
        let first = std::process::id() as usize % urls.len();
        Bus {
            inner: Arc::new(Inner {
                urls,
                next_url: AtomicUsize::new(first),
                config,
                shutdown,
                live: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    pub fn names(&self) -> &Names {
        &self.inner.config.names
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The RabbitMQ user this bus connects as, when its URL names one. Publishing it as the
    /// `user_id` property proves who published: RabbitMQ refuses a `user_id` other than the
    /// connection's own user.
    pub fn user(&self) -> Option<String> {
        url_user(&self.inner.urls[self.inner.next_url.load(Ordering::Relaxed) % self.inner.urls.len()])
    }

    /// How many times a connection was (re)established; the first connect counts as one.
    pub fn connections_made(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// Whether a connection is up right now (for readiness probes).
    pub async fn is_connected(&self) -> bool {
        let guard = self.inner.live.lock().await;
        guard.as_ref().is_some_and(|l| l.connection.status().connected())
    }

    /// The live connection, connecting (with backoff, until shutdown) if there is none.
    pub async fn live(&self) -> Result<Live, BusError> {
        let mut guard = self.inner.live.lock().await;
        if let Some(l) = guard.as_ref() {
            if l.connection.status().connected() {
                return Ok(l.clone());
            }
            let _ = l
                .connection
                .close(200, "replacing broken connection".into())
                .await;
        }
        *guard = None;
        let connect = || self.connect_once();
        let retry = connect
            .retry(super::backoff())
            .when(|_| !self.inner.shutdown.is_cancelled())
            .notify(|e, d| warn!(error = %e, retry_in = ?d, "cannot reach the broker"));
        let connection = tokio::select! {
            r = retry => r?,
            _ = self.inner.shutdown.cancelled() => return Err(BusError::Shutdown),
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if generation > 1 {
            info!(generation, "reconnected to the broker");
        }
        let live = Live {
            connection: Arc::new(connection),
            generation,
        };
        *guard = Some(live.clone());
        Ok(live)
    }

    /// Connects to the next node (see [`Inner::next_url`]) and declares the topology there; on
    /// failure the node after it is next.
    async fn connect_once(&self) -> Result<Connection, BusError> {
        let urls = &self.inner.urls;
        let i = self.inner.next_url.load(Ordering::Relaxed) % urls.len();
        let result = self.connect_to(&urls[i]).await;
        if let Err(source) = result {
            if source.to_string().contains("PRECONDITION_FAILED") {
                error!(
                    error = %source,
                    "the broker has a queue declared otherwise than this process declares it \
                     (quorum or classic: every process of a lab needs the same --quorum-queues; \
                     see docs/operations.md on switching)"
                );
            }
            self.inner.next_url.store((i + 1) % urls.len(), Ordering::Relaxed);
            return Err(BusError::Connect {
                node: node_of(&urls[i]),
                source,
            });
        }
        if urls.len() > 1 {
            info!(node = %node_of(&urls[i]), "connected to the broker");
        }
        result.map_err(BusError::from)
    }

    async fn connect_to(&self, url: &str) -> Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(self.inner.config.connection_name.clone().into());
        let conn = Connection::connect(&with_heartbeat(url), props).await?;
        let ch = conn.create_channel().await?;
        if let Err(e) = declare_topology(&ch, &self.inner.config.names).await {
            let _ = conn.close(200, "topology failed".into()).await;
            return Err(e);
        }
        let _ = ch.close(200, "topology declared".into()).await;
        Ok(conn)
    }

    /// Reports that an operation on connection `generation` failed; if it is still the current
    /// one and is no longer connected, it is dropped and the next caller reconnects.
    pub async fn broken(&self, generation: u64) {
        let mut guard = self.inner.live.lock().await;
        if let Some(l) = guard.as_ref()
            && l.generation == generation
            && !l.connection.status().connected()
        {
            *guard = None;
        }
    }

    /// A new channel on the live connection.
    pub async fn channel(&self) -> Result<(Channel, u64), BusError> {
        loop {
            let live = self.live().await?;
            match live.connection.create_channel().await {
                Ok(ch) => return Ok((ch, live.generation)),
                Err(e) => {
                    warn!(error = %e, "cannot open a channel");
                    self.broken(live.generation).await;
                    // A connection that is up but refuses channels would spin here.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = self.inner.shutdown.cancelled() => return Err(BusError::Shutdown),
                    }
                }
            }
        }
    }

    /// Closes the connection (callers close their channels first).
    pub async fn close(&self) {
        if let Some(l) = self.inner.live.lock().await.take() {
            let _ = l.connection.close(200, "shutting down".into()).await;
        }
    }
}

/// The URLs of a `--broker-url` value: one URL, or several separated by commas (blanks around
/// them ignored). Never empty: an empty value stands for itself, and fails to connect loudly.
pub fn broker_urls(value: &str) -> Vec<String> {
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        vec![value.to_owned()]
    } else {
        urls
    }
}

/// `host:port` of a broker URL, for logs (never the credentials).
fn node_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 })
        ),
        Err(_) => "an unparsable URL".into(),
    }
}

/// The (percent-decoded) user of an `amqp://user:pass@host/vhost` URL; `None` when it names
/// none (the client library then defaults to `guest`, or authenticates otherwise).
pub fn url_user(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let user = parsed.username();
    if user.is_empty() {
        return None;
    }
    Some(
        url::form_urlencoded::parse(format!("u={user}").as_bytes())
            .next()
            .map_or_else(|| user.to_owned(), |(_, v)| v.into_owned()),
    )
}

fn with_heartbeat(url: &str) -> String {
    if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?heartbeat=10")
    }
}

/// The same exponential policy for every reconnect in the project.
pub(super) fn default_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::{broker_urls, node_of, url_user};

    #[test]
    fn several_broker_urls_are_separated_by_commas() {
        assert_eq!(broker_urls("amqp://h/"), ["amqp://h/"]);
        assert_eq!(
            broker_urls("amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,"),
            ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5673/%2f"]
        );
        assert_eq!(broker_urls(""), [""]);
        assert_eq!(node_of("amqp://u:secret@b:5673/%2f"), "b:5673");
        assert_eq!(node_of("amqps://u:secret@b/"), "b:5671");
    }

    #[test]
    fn the_user_of_a_broker_url_is_read_and_decoded() {
        assert_eq!(
            url_user("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
            Some("guest")
        );
        assert_eq!(url_user("amqp://ci%2Dbot:pw@host/").as_deref(), Some("ci-bot"));
        assert_eq!(url_user("amqps://a%40b:pw@host:5671/lab").as_deref(), Some("a@b"));
        assert_eq!(url_user("amqp://host:5672/%2f"), None);
        assert_eq!(url_user("not a url"), None);
    }
}
