//! The agent's HTTP link to the gateway, used only for what does not belong on the broker:
//! downloading a job's attachments and uploading its artifacts.
//!
//! With a `client_id` and `client_secret` it logs in (`POST /v1/oauth2/token`) and sends the
//! access token, logging in again shortly before it expires. Without them, a refresh token in
//! the token file (`--token-file`, as Testflinger's agent host charm writes it) is exchanged for
//! access tokens (`POST /v1/oauth2/refresh`), the file read again each time so that a token the
//! charm renewed is used; without either it goes anonymous (the gateway then needs
//! `--allow-anonymous-agents`). Transient failures (no answer, 5xx) are retried a few times
//! with backoff.
//!
//! An agent without `server_address` moves a job's files with what the lease grant carried
//! instead ([`GatewayClient::for_job`]): the gateway's URL and a job-scoped token, renewed with
//! the lease, sent as is.

use broker_schema::job_files::JobFiles;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tracing::warn;

/// Retries of a request: three tries in a few seconds.
fn request_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(2)
        .with_jitter()
}

/// Retries of an artifact upload: a job's results are worth a longer wait (about two minutes
/// in all) before the run ends without them — while the lease is renewed meanwhile.
pub fn upload_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(6)
        .with_jitter()
}
/// Longest a transfer may take (archives can be large).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the gateway is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Base URL, without a trailing slash.
    pub url: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Testflinger's refresh-token file (`--token-file`): used without client credentials.
    pub token_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// `testflinger.example.com` → `http://testflinger.example.com` (Testflinger's agent does the
/// same), without a trailing slash.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.to_ascii_lowercase().starts_with("http") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway refused the agent's credentials ({0})")]
    Login(StatusCode),
    #[error("{what}: the gateway answered {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: {source}")]
    Http { what: String, source: reqwest::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl GatewayError {
    pub fn transient(&self) -> bool {
        match self {
            GatewayError::Http { .. } => true,
            GatewayError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

pub struct GatewayClient {
    config: GatewayConfig,
    /// The job's files token from the lease grant and its renewals, when the agent has no
    /// gateway client of its own.
    job_token: Option<watch::Receiver<Option<JobFiles>>>,
    http: reqwest::Client,
    /// The access token and when to stop using it.
    token: Mutex<Option<(String, Instant)>>,
}

impl GatewayClient {
    pub fn new(config: GatewayConfig) -> GatewayClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(TRANSFER_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds");
        GatewayClient {
            config,
            job_token: None,
            http,
            token: Mutex::new(None),
        }
    }

    /// A client for one job's files with the grant's URL and token (`files` follows renewals).
    pub fn for_job(files: watch::Receiver<Option<JobFiles>>) -> Option<GatewayClient> {
        let url = files.borrow().as_ref()?.url.clone();
        let mut client = GatewayClient::new(GatewayConfig {
            url: normalize_url(&url),
            client_id: None,
            client_secret: None,
            token_file: None,
        });
        client.job_token = Some(files);
        Some(client)
    }

    /// The gateway's base URL.
    pub fn base_url(&self) -> &str {
        &self.config.url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.url)
    }

    /// The access token to send, logging in when there is none or it is about to expire.
    async fn token(&self) -> Result<Option<String>, GatewayError> {
        if let Some(files) = &self.job_token {
            return Ok(files.borrow().as_ref().map(|f| f.token.clone()));
        }
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(Some(t.clone()));
        }
        let login = match (&self.config.client_id, &self.config.client_secret) {
            (Some(id), Some(secret)) => self
                .http
                .post(self.url("/v1/oauth2/token"))
                .basic_auth(id, Some(secret)),
            _ => match self.config.token_file.as_deref().and_then(read_refresh_token) {
                Some(refresh) => self
                    .http
                    .post(self.url("/v1/oauth2/refresh"))
                    .json(&serde_json::json!({ "refresh_token": refresh })),
                None => return Ok(None),
            },
        };
        let what = "logging in to the gateway".to_owned();
        let r = login.send().await.map_err(|source| GatewayError::Http {
            what: what.clone(),
            source,
        })?;
        if !r.status().is_success() {
            return Err(GatewayError::Login(r.status()));
        }
        let body: Value = r
            .json()
            .await
            .map_err(|source| GatewayError::Http { what, source })?;
        let token = body["access_token"].as_str().unwrap_or_default().to_owned();
        let ttl = body["expires_in"].as_u64().unwrap_or(60);
        // Renew a little early, never later than halfway for short lifetimes.
        let margin = Duration::from_secs((ttl / 2).min(30));
        *cached = Some((token.clone(), Instant::now() + Duration::from_secs(ttl) - margin));
        Ok(Some(token))
    }

    /// Sends `req` with the access token (when the agent has a client); the answer, whatever
    /// its status.
    async fn send(
        &self,
        what: &str,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GatewayError> {
        if let Some(t) = self.token().await? {
            req = req.bearer_auth(t);
        }
        req.send().await.map_err(|source| GatewayError::Http {
            what: what.to_owned(),
            source,
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or `retries` run out: transient
    /// failures (no answer, 5xx, 408, 429) are tried again with exponential backoff.
    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        retries: backon::ExponentialBuilder,
        attempt: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        use backon::Retryable;
        attempt
            .retry(retries)
            .when(GatewayError::transient)
            .notify(|e, delay| warn!(error = %e, retry_in = ?delay, "{what} failed; retrying"))
            .await
    }

    /// Downloads `path` into the file `dest`. `Ok(false)` when the gateway has nothing (204).
    pub async fn download(&self, path: &str, dest: &Path) -> Result<bool, GatewayError> {
        let what = format!("GET {path}");
        self.with_retries(&what, request_retries(), || async {
            let r = self.send(&what, self.http.get(self.url(path))).await?;
            if r.status() == StatusCode::NO_CONTENT {
                return Ok(false);
            }
            let mut r = successful(&what, r).await?;
            let io = |source| GatewayError::Io {
                what: what.clone(),
                source,
            };
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
            while let Some(chunk) = r.chunk().await.map_err(|source| GatewayError::Http {
                what: what.clone(),
                source,
            })? {
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.flush().await.map_err(io)?;
            Ok(true)
        })
        .await
    }

    /// Uploads the file `src` to `path` as the `file` field of a multipart body, streamed.
    pub async fn upload(
        &self,
        path: &str,
        src: &Path,
        filename: &str,
        retries: backon::ExponentialBuilder,
    ) -> Result<(), GatewayError> {
        let what = format!("POST {path}");
        self.with_retries(&what, retries, || async {
            let io = |source| GatewayError::Io {
                what: what.clone(),
                source,
            };
            let file = tokio::fs::File::open(src).await.map_err(io)?;
            let len = file.metadata().await.map_err(io)?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            let part = reqwest::multipart::Part::stream_with_length(body, len)
                .file_name(filename.to_owned())
                .mime_str("application/x-gzip")
                .expect("a valid MIME type");
            let form = reqwest::multipart::Form::new().part("file", part);
            let r = self
                .send(&what, self.http.post(self.url(path)).multipart(form))
                .await?;
            successful(&what, r).await.map(drop)
        })
        .await
    }
}

impl GatewayClient {
    /// POSTs a JSON body (bounded retries); `Ok` on a 2xx answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(), GatewayError> {
        let what = format!("POST {path}");
        self.with_retries(&what, request_retries(), || async {
            let r = self
                .send(&what, self.http.post(self.url(path)).json(body))
                .await?;
            successful(&what, r).await.map(drop)
        })
        .await
    }
}

/// The refresh token in Testflinger's token file: the charm's JSON (`{"refresh_token": …,
/// "obtained_at": …}`) or the bare token. `None` when the file is missing, empty or unreadable
/// (the agent then goes without).
pub fn read_refresh_token(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot read the token file");
            }
            return None;
        }
    };
    let text = text.trim();
    let token = if text.starts_with('{') {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => v["refresh_token"].as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "the token file is not JSON");
                return None;
            }
        }
    } else {
        text.to_owned()
    };
    (!token.is_empty()).then_some(token)
}

/// `r` if the gateway answered 2xx; else an error with what was asked and what it answered.
async fn successful(what: &str, r: reqwest::Response) -> Result<reqwest::Response, GatewayError> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    Err(GatewayError::Status {
        what: what.to_owned(),
        status,
        body: r.text().await.unwrap_or_default(),
    })
}

/// Tells the gateway the descriptions of the queues and the images this agent advertises
/// (Testflinger's `advertised_queues` and `advertised_images`). Runs beside job intake, never in
/// its way: a gateway that cannot be reached (not up yet, restarting) is asked again with
/// backoff, up to [`ADVERTISE_MAX_DELAY`] apart, until it has them or the agent stops.
pub async fn advertise(
    config: std::sync::Arc<crate::config::AgentConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use backon::{ExponentialBuilder, Retryable};
    let Some(gateway) = config.gateway.clone() else {
        return;
    };
    if config.advertised_queues.is_empty() && config.advertised_images.is_empty() {
        return;
    }
    let client = GatewayClient::new(gateway);
    let send = || async {
        if !config.advertised_queues.is_empty() {
            let body = serde_json::to_value(&config.advertised_queues).expect("a string map");
            client.post_json("/v1/agents/queues", &body).await?;
        }
        if !config.advertised_images.is_empty() {
            let body = serde_json::to_value(&config.advertised_images).expect("a string map");
            client.post_json("/v1/agents/images", &body).await?;
        }
        Ok::<_, GatewayError>(())
    };
    let delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(ADVERTISE_MAX_DELAY)
        .with_jitter()
        .without_max_times();
    let retried = send.retry(delays).notify(
        |e, d| warn!(error = %e, retry_in = ?d, "cannot advertise queues and images to the gateway yet"),
    );
    tokio::select! {
        r = retried => if r.is_ok() {
            tracing::info!("queues and images advertised to the gateway");
        },
        _ = shutdown.cancelled() => {}
    }
}

/// The longest wait between two attempts to advertise queues and images.
pub const ADVERTISE_MAX_DELAY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_credentials_come_from_its_config_and_never_reach_the_phases() {
        let c = crate::config::AgentConfig::parse(
            "agent_id: a\njob_queues: [q]\ntest_command: x\nserver_address: gw:8000\nclient_id: ag\nclient_secret: very-secret-value\n",
        )
        .unwrap();
        let g = c.gateway.as_ref().expect("a gateway");
        assert_eq!(g.url, "http://gw:8000");
        assert_eq!(g.client_id.as_deref(), Some("ag"));
        assert!(
            !c.env.values().any(|v| v == "very-secret-value"),
            "exported to phases"
        );
        assert!(
            !format!("{g:?}").contains("very-secret-value"),
            "shown in debug output"
        );
    }

    /// A gateway that starts after the agent still gets the agent's queues and images.
    #[tokio::test]
    async fn queues_are_advertised_once_a_late_gateway_comes_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = crate::config::AgentConfig::parse(&format!(
            "agent_id: a\njob_queues: [q]\ntest_command: x\nserver_address: 127.0.0.1:{port}\n\
             advertised_queues: {{q: the q devices}}\nadvertised_images: {{q: {{noble: 'url: x'}}}}\n"
        ))
        .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(advertise(std::sync::Arc::new(config), shutdown.clone()));
        // Longer than the bounded retries of one request: only retrying on reaches the gateway.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut seen = vec![];
        let all = async {
            while seen.len() < 2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                // The whole request (headers, then a body of content-length), then the answer.
                let mut req = vec![];
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = sock.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                    assert!(n > 0, "the request ended early");
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                seen.push(text.split_whitespace().nth(1).unwrap_or("").to_owned());
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK")
                    .await
                    .unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(90), all)
            .await
            .expect("the agent advertised to the gateway once it was up");
        assert_eq!(seen, ["/v1/agents/queues", "/v1/agents/images"]);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("advertising ends once done")
            .unwrap();
        shutdown.cancel();
    }

    /// Reads one whole HTTP/1.1 request (headers, then a body of content-length or chunked).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut req = vec![];
        let mut buf = vec![0u8; 65536];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let len = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                let done = match len {
                    Some(len) => req.len() >= end + 4 + len,
                    None => !head.contains("chunked") || text.ends_with("0\r\n\r\n"),
                };
                if done {
                    return text;
                }
            }
            assert!(n > 0, "the request ended early");
        }
    }

    /// An upload the gateway cannot take for a moment (503) is tried again, with backoff,
    /// until it can; one it refuses for good (413) is not.
    #[tokio::test]
    async fn an_upload_is_retried_while_the_gateway_fails_and_not_once_it_refuses() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Two 503s, then 200; then a 413.
        let server = tokio::spawn(async move {
            let mut bodies = vec![];
            for status in [
                "503 Service Unavailable",
                "503 Service Unavailable",
                "200 OK",
                "413 Payload Too Large",
            ] {
                let (mut sock, _) = listener.accept().await.unwrap();
                let req = read_request(&mut sock).await;
                bodies.push(req.contains("the artifacts"));
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno");
                sock.write_all(answer.as_bytes()).await.unwrap();
            }
            bodies
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar.gz");
        std::fs::write(&file, b"the artifacts").unwrap();
        let client = GatewayClient::new(GatewayConfig {
            url: format!("http://127.0.0.1:{port}"),
            client_id: None,
            client_secret: None,
            token_file: None,
        });
        let quick = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_times(5);
        client
            .upload("/v1/result/x/artifact", &file, "artifact.tar.gz", quick)
            .await
            .expect("uploaded on the third try");
        let refused = client
            .upload("/v1/result/x/artifact", &file, "artifact.tar.gz", quick)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, GatewayError::Status { status, .. } if status == StatusCode::PAYLOAD_TOO_LARGE),
            "{refused}"
        );
        let bodies = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bodies, [true; 4], "every try sent the whole archive");
    }

    #[test]
    fn the_token_file_is_read_as_the_charm_writes_it_or_bare() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("refresh_token");
        assert_eq!(read_refresh_token(&f), None);
        std::fs::write(
            &f,
            r#"{"refresh_token": "rt-1", "obtained_at": "2026-01-01T00:00:00+00:00"}"#,
        )
        .unwrap();
        assert_eq!(read_refresh_token(&f).as_deref(), Some("rt-1"));
        std::fs::write(&f, "rt-2\n").unwrap();
        assert_eq!(read_refresh_token(&f).as_deref(), Some("rt-2"));
        std::fs::write(&f, "  \n").unwrap();
        assert_eq!(read_refresh_token(&f), None);
    }

    #[test]
    fn testflinger_style_addresses_get_a_scheme() {
        assert_eq!(normalize_url("tf.example.com/"), "http://tf.example.com");
        assert_eq!(normalize_url("https://gw:8080"), "https://gw:8080");
    }
}
