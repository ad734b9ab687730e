//! The HTTP client of Flinger's API (docs/api.md): one typed method per endpoint the CLI uses.
//!
//! Reads, and submissions (made idempotent by a client-chosen `job_id`), are retried with backoff
//! when the server cannot be reached or answers 502/503/504. Cancel, extend and admin writes are
//! not: a repeated cancel of a job that has meanwhile ended would be refused, which would
//! misreport the first one, and a repeated extension would extend twice.
//!
//! Every request carries the access token of the stored login (or of a login made with the
//! configured credentials), refreshed when it expires; see [`crate::auth`]. A request refused
//! because the token expired or is no longer valid is sent again once with a fresh one.
//! Errors say what went wrong in terms a user can act on; exit codes are decided in `exit.rs`.

use crate::auth::{Credentials, Session, SessionStore, TokenPayload};
use crate::config::ServerUrl;
use crate::model::{Agent, Answered, JobId, JobInfo, LogStream};
use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use flinger_api::{
    Action, ActionKind, AgentIn, ClientIn, DeviceLogin, DeviceLoginError, Estimate, Extend, Extended,
    LogAnswer, QueueJob, RefreshToken, Reservation, RetentionSettings, SecretIn, SecretWritten, Submitted,
    WaitTimes,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Bounds a connection attempt: a dead host should not hold a CI job for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds a whole request. Submissions are answered within the gateway's publish timeout (5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds an upload or download of an archive, which may be large.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Retries of an idempotent read: 0.25 + 0.5 + 1 + 2 s (with jitter) before giving up.
const READ_RETRIES: usize = 4;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the Flinger server at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// 5xx: the server (or something behind it) failed.
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    /// 4xx: the server refused the request; `detail` holds Testflinger's field errors
    /// (`{"json": {field: [messages]}}`) when it named fields.
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        detail: Option<Value>,
    },
    /// 204 on a job read: the server does not know the job.
    #[error("the server knows no job {0}")]
    NoSuchJob(JobId),
    /// A 2xx answer that is not what the API promises.
    #[error("unexpected answer from the server to {what}: {detail}")]
    BadAnswer { what: String, detail: String },
    /// Logging in failed, or a login is needed and there is none.
    #[error("{0}")]
    Auth(String),
    /// A local file could not be read or written (an upload's archive, a download's target).
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl ClientError {
    /// Worth trying again later: the server could not be reached, was briefly unavailable, or
    /// asked this client to slow down.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Server { status, .. } => matches!(status, 502..=504),
            // Over this client's request limits: the gateway says to wait (Retry-After).
            ClientError::Refused { status: 429, .. } => true,
            _ => false,
        }
    }

    /// 401, or 403: the caller is not logged in, its login is refused, or its role does not
    /// allow the request.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::Auth(_)
                | ClientError::Refused {
                    status: 401 | 403,
                    ..
                }
        )
    }

    fn bad_answer(what: &str, detail: impl ToString) -> ClientError {
        ClientError::BadAnswer {
            what: what.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// A JSON list of the API's `T`s, each also kept as it came.
fn answered_list<T: DeserializeOwned>(v: Value, what: &str) -> Result<Vec<Answered<T>>, ClientError> {
    let items: Vec<Value> = serde_json::from_value(v).map_err(|e| ClientError::bad_answer(what, e))?;
    items
        .into_iter()
        .map(|i| Answered::parse(i).map_err(|e| ClientError::bad_answer(what, e)))
        .collect()
}

/// A request body of the API (`flinger_api`) as JSON.
fn body_of(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).expect("the API's bodies serialize")
}

/// A successful answer: its status and body.
struct Answer {
    status: StatusCode,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self, what: &str) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::bad_answer(what, format!("not JSON ({e})")))
    }

    /// The body as one of the API's shapes (`flinger_api`).
    fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::bad_answer(what, e))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

/// What a request sends.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Empty,
    Json(&'a Value),
    /// A multipart form with the file in its `file` field, as Testflinger's CLI uploads.
    File(&'a Path),
}

/// The login as this command knows it.
#[derive(Clone, Debug)]
enum Login {
    /// The store has not been looked at yet.
    Unknown,
    /// Anonymous, unless credentials are configured.
    None,
    Some(Session),
}

pub struct Client {
    http: reqwest::Client,
    server: ServerUrl,
    /// `--debug`: every request and its answer's status on stderr.
    debug: bool,
    /// Configured client id and secret key: used to log in when there is no usable login.
    credentials: Option<Credentials>,
    sessions: SessionStore,
    login: Mutex<Login>,
}

impl Client {
    pub fn new(
        server: ServerUrl,
        debug: bool,
        credentials: Option<Credentials>,
        sessions: SessionStore,
    ) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("flinger-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                server: server.to_string(),
                detail: error_chain(&e),
            })?;
        Ok(Client {
            http,
            server,
            debug,
            credentials,
            sessions,
            login: Mutex::new(Login::Unknown),
        })
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    // ----- jobs

    /// `POST /v1/job` of a job file that names its `job_id`. The server treats a known
    /// `job_id` as a resubmission and does nothing else, so this is retried like a read: an
    /// answer lost on the way back cannot submit the job twice.
    pub async fn submit(&self, job: &Value) -> Result<JobId, ClientError> {
        let answer = self
            .with_retries(Method::POST, "/v1/job", &[], Payload::Json(job))
            .await?;
        let body: Submitted = answer.parse("the submission")?;
        Ok(body.job_id.into())
    }

    /// `POST /v1/job/<id>/attachments`: the attachments archive, as a multipart `file`. Retried
    /// like a read: the server answers `OK` to an upload repeated after a success.
    pub async fn upload_attachments(&self, id: JobId, archive: &Path) -> Result<(), ClientError> {
        self.with_retries(
            Method::POST,
            &format!("/v1/job/{id}/attachments"),
            &[],
            Payload::File(archive),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/job/<id>`: the job file as submitted, with its `job_id`.
    pub async fn job(&self, id: JobId) -> Result<Value, ClientError> {
        self.read_job_json(id, &format!("/v1/job/{id}"), &[]).await
    }

    /// `GET /v1/job/<id>/info` **[ext]**: the whole record.
    pub async fn info(&self, id: JobId) -> Result<JobInfo, ClientError> {
        let raw = self.read_job_json(id, &format!("/v1/job/{id}/info"), &[]).await?;
        JobInfo::parse(raw).map_err(|e| ClientError::bad_answer("the job info", e))
    }

    /// `GET /v1/job/<id>/estimate` **[ext]**: a waiting job's position and ETA. `None` when the
    /// server gives none (the job is not waiting, or the server has no such endpoint).
    pub async fn estimate(&self, id: JobId) -> Option<Estimate> {
        let answer = self
            .send(
                Method::GET,
                &format!("/v1/job/{id}/estimate"),
                &[],
                Payload::Empty,
            )
            .await;
        answer
            .ok()
            .filter(|a| a.status == StatusCode::OK)?
            .parse("the estimate")
            .ok()
    }

    /// `GET /v1/result/<id>`: the flat results.
    pub async fn results(&self, id: JobId) -> Result<Value, ClientError> {
        self.read_job_json(id, &format!("/v1/result/{id}"), &[]).await
    }

    /// `GET /v1/result/<id>/log/<stream>?start_fragment=N[&start_timestamp=T][&phase=P][&wait=S]`.
    /// With `wait`, the server holds the answer until there is output, the job ended, or the
    /// time is up (a long poll).
    pub async fn log(
        &self,
        id: JobId,
        stream: LogStream,
        query: &LogQuery,
    ) -> Result<LogAnswer, ClientError> {
        let mut q = vec![("start_fragment", query.start_fragment.to_string())];
        if let Some(t) = &query.start_timestamp {
            q.push(("start_timestamp", t.clone()));
        }
        if let Some(p) = &query.phase {
            q.push(("phase", p.clone()));
        }
        if let Some(w) = query.wait {
            q.push(("wait", format!("{:.1}", w.as_secs_f64())));
        }
        let answer = self
            .read_job_json(id, &format!("/v1/result/{id}/log/{}", stream.as_str()), &q)
            .await?;
        serde_json::from_value(answer).map_err(|e| ClientError::bad_answer("the log read", e))
    }

    /// `GET /v1/result/<id>/artifact` into `dest` (`None`: stdout). Whether there was one
    /// (the server answers 204 when the job left no artifacts).
    pub async fn download_artifact(&self, id: JobId, dest: Option<&Path>) -> Result<bool, ClientError> {
        let path = format!("/v1/result/{id}/artifact");
        let attempt = || async {
            let response = self.exchange(&Method::GET, &path, &[], Payload::Empty).await?;
            if response.status() == StatusCode::NO_CONTENT {
                return Ok(false);
            }
            self.save_body(response, dest).await?;
            Ok(true)
        };
        attempt
            .retry(retry_policy())
            .when(ClientError::is_transient)
            .notify(|e, delay| self.note_retry(e, delay))
            .await
    }

    /// Streams a response body into `dest` (a file written whole, then renamed) or stdout.
    async fn save_body(
        &self,
        mut response: reqwest::Response,
        dest: Option<&Path>,
    ) -> Result<(), ClientError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| ClientError::Io { what, source }
        };
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.to_string(),
            detail: error_chain(&e),
        };
        match dest {
            None => {
                let mut out = std::io::stdout().lock();
                while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                    out.write_all(&chunk).map_err(io("cannot write to stdout"))?;
                }
                out.flush().map_err(io("cannot write to stdout"))
            }
            Some(path) => {
                let what = format!("cannot write {}", path.display());
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(&what))?;
                while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                    tmp.write_all(&chunk).map_err(io(&what))?;
                }
                tmp.persist(path).map_err(|e| ClientError::Io {
                    what,
                    source: e.error,
                })?;
                Ok(())
            }
        }
    }

    /// `POST /v1/job/<id>/action {"action": "cancel"}`. Not retried: the caller decides.
    pub async fn cancel(&self, id: JobId) -> Result<(), ClientError> {
        let body = body_of(&Action {
            action: ActionKind::Cancel,
        });
        self.send(
            Method::POST,
            &format!("/v1/job/{id}/action"),
            &[],
            Payload::Json(&body),
        )
        .await
        .map(drop)
    }

    // ----- reservations [ext]

    /// `GET /v1/job/<id>/reservation`: `None` while the job holds no reservation (404).
    pub async fn reservation(&self, id: JobId) -> Result<Option<Reservation>, ClientError> {
        match self
            .read_job_json(id, &format!("/v1/job/{id}/reservation"), &[])
            .await
        {
            Ok(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ClientError::bad_answer("the reservation", e)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/job/<id>/reservation/extend` with `{"by": …}` or `{"until": …}`. Not retried:
    /// a repeated `by` would extend twice.
    pub async fn extend(&self, id: JobId, body: &Extend) -> Result<Extended, ClientError> {
        self.send(
            Method::POST,
            &format!("/v1/job/{id}/reservation/extend"),
            &[],
            Payload::Json(&body_of(body)),
        )
        .await?
        .parse("the extension")
    }

    // ----- queues and agents

    /// `GET /v1/queues/<q>/agents`; `None` when no agent serves the queue (404, or 204 for a
    /// queue that is known but served by nobody now).
    pub async fn queue_agents(&self, queue: &str) -> Result<Option<Vec<Agent>>, ClientError> {
        let path = format!("/v1/queues/{}/agents", path_segment(queue));
        match self.read(&path, &[]).await {
            Ok(answer) if answer.status == StatusCode::NO_CONTENT => Ok(None),
            Ok(answer) => answer.parse("the queue's agents").map(Some),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The same, each agent also as it came (every field), for `queue-status`.
    pub async fn queue_agents_answered(
        &self,
        queue: &str,
    ) -> Result<Option<Vec<Answered<Agent>>>, ClientError> {
        let path = format!("/v1/queues/{}/agents", path_segment(queue));
        match self.read(&path, &[]).await {
            Ok(answer) if answer.status == StatusCode::NO_CONTENT => Ok(Some(vec![])),
            Ok(answer) => answered_list(answer.json("the queue's agents")?, "the queue's agents").map(Some),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/queues/<q>/jobs`: `[{job_id, created_at, job_state, job_queue}]` (204: none).
    pub async fn queue_jobs(&self, queue: &str) -> Result<Vec<QueueJob>, ClientError> {
        let path = format!("/v1/queues/{}/jobs", path_segment(queue));
        let answer = self.read(&path, &[]).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(vec![]);
        }
        answer.parse("the queue's jobs")
    }

    /// `GET /v1/queues/wait_times?queue=q`: `{queue: {"5": s, …}}`; `None` when the server has
    /// no such endpoint.
    pub async fn wait_times(&self, queue: &str) -> Result<Option<WaitTimes>, ClientError> {
        match self
            .read("/v1/queues/wait_times", &[("queue", queue.to_owned())])
            .await
        {
            Ok(a) if a.status == StatusCode::NO_CONTENT => Ok(None),
            Ok(a) => a.parse("the wait times").map(Some),
            Err(ClientError::Refused {
                status: 404 | 405, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/agents/queues`: every queue an agent serves, with its description.
    pub async fn queues(&self) -> Result<BTreeMap<String, String>, ClientError> {
        let v = self
            .read("/v1/agents/queues", &[])
            .await?
            .json("the queue list")?;
        serde_json::from_value(v).map_err(|e| ClientError::bad_answer("the queue list", e))
    }

    /// `GET /v1/agents/images/<queue>`: `{image: provision_data}`.
    pub async fn images(&self, queue: &str) -> Result<BTreeMap<String, Value>, ClientError> {
        let path = format!("/v1/agents/images/{}", path_segment(queue));
        let answer = self.read(&path, &[]).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(BTreeMap::new());
        }
        serde_json::from_value(answer.json("the image list")?)
            .map_err(|e| ClientError::bad_answer("the image list", e))
    }

    /// `GET /v1/agents/data`: every agent.
    pub async fn agents(&self) -> Result<Vec<Answered<Agent>>, ClientError> {
        let answer = self.read("/v1/agents/data", &[]).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(vec![]);
        }
        answered_list(answer.json("the agent list")?, "the agent list")
    }

    /// `GET /v1/agents/data/<name>`; `None` for an unknown agent (404).
    pub async fn agent(&self, name: &str) -> Result<Option<Answered<Agent>>, ClientError> {
        let path = format!("/v1/agents/data/{}", path_segment(name));
        match self.read(&path, &[]).await {
            Ok(a) => Answered::parse(a.json("the agent")?)
                .map(Some)
                .map_err(|e| ClientError::bad_answer("the agent", e)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/agents/data/<name>` `{state, comment}` (admins and managers).
    pub async fn set_agent_state(&self, name: &str, state: &str, comment: &str) -> Result<(), ClientError> {
        let path = format!("/v1/agents/data/{}", path_segment(name));
        let body = body_of(&AgentIn {
            state: Some(state.to_owned()),
            comment: Some(comment.to_owned()),
            ..AgentIn::default()
        });
        self.send(Method::POST, &path, &[], Payload::Json(&body))
            .await
            .map(drop)
    }

    // ----- clients and secrets

    /// `GET /v1/client-permissions[/<id>]`.
    pub async fn client_permissions(&self, id: Option<&str>) -> Result<Value, ClientError> {
        let path = match id {
            Some(id) => format!("/v1/client-permissions/{}", path_segment(id)),
            None => "/v1/client-permissions".to_owned(),
        };
        self.read(&path, &[]).await?.json("the client permissions")
    }

    /// `GET /v1/retention` [ext]: how long ended jobs are kept.
    pub async fn retention(&self) -> Result<RetentionSettings, ClientError> {
        self.read("/v1/retention", &[])
            .await?
            .parse("the retention settings")
    }

    /// `PUT /v1/client-permissions/<id>`: creates or updates the client; the server's message.
    pub async fn put_client_permissions(&self, id: &str, body: &ClientIn) -> Result<String, ClientError> {
        let path = format!("/v1/client-permissions/{}", path_segment(id));
        Ok(self
            .send(Method::PUT, &path, &[], Payload::Json(&body_of(body)))
            .await?
            .text())
    }

    /// `DELETE /v1/client-permissions/<id>`.
    pub async fn delete_client_permissions(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/client-permissions/{}", path_segment(id));
        self.send(Method::DELETE, &path, &[], Payload::Empty)
            .await
            .map(drop)
    }

    /// `PUT /v1/secrets/<client_id>/<path>` `{value}`: the server's answer (`{expires_at}`).
    pub async fn write_secret(
        &self,
        client_id: &str,
        path: &str,
        secret: &SecretIn,
    ) -> Result<Option<SecretWritten>, ClientError> {
        let url = format!("/v1/secrets/{}/{}", path_segment(client_id), secret_path(path));
        let body = body_of(secret);
        let answer = self.send(Method::PUT, &url, &[], Payload::Json(&body)).await?;
        // Testflinger answers plain text; Flinger says when the secret expires.
        Ok(answer.parse("the secret write").ok())
    }

    /// `DELETE /v1/secrets/<client_id>/<path>`.
    pub async fn delete_secret(&self, client_id: &str, path: &str) -> Result<(), ClientError> {
        let url = format!("/v1/secrets/{}/{}", path_segment(client_id), secret_path(path));
        self.send(Method::DELETE, &url, &[], Payload::Empty)
            .await
            .map(drop)
    }

    // ----- logging in

    /// `POST /v1/oauth2/token` with the credentials as HTTP Basic; stores the login.
    pub async fn login(&self, credentials: &Credentials) -> Result<Session, ClientError> {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.client_id, credentials.secret_key));
        let url = self.server.endpoint("/v1/oauth2/token");
        let request = self
            .http
            .post(&url)
            .header("authorization", format!("Basic {basic}"));
        let answer = self.finish(&Method::POST, &url, &[], request).await;
        let answer = match answer {
            Ok(response) => self.buffer(response).await?,
            Err(ClientError::Refused {
                status: 401 | 403,
                message,
                ..
            }) => {
                return Err(ClientError::Auth(format!(
                    "the server refused the credentials of client {:?}: {message}",
                    credentials.client_id
                )));
            }
            Err(e) => return Err(e),
        };
        let session = Session::from_answer(&credentials.client_id, &answer.json("the login")?, None)
            .ok_or_else(|| ClientError::bad_answer("the login", "no access_token"))?;
        self.keep(session.clone());
        Ok(session)
    }

    /// `POST /oidc/auth-init`: a device login through the server's single sign-on; `None` when
    /// the server has none (404, as Testflinger's CLI reads it).
    pub async fn start_device_login(&self) -> Result<Option<DeviceLogin>, ClientError> {
        let url = self.server.endpoint("/oidc/auth-init");
        match self.finish(&Method::POST, &url, &[], self.http.post(&url)).await {
            Ok(response) => Ok(Some(self.buffer(response).await?.parse("the sign-on")?)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /oidc/auth-poll/<request_id>`: the login once the person approved (then stored),
    /// or what the server said instead (`authorization_pending`, `slow_down`…).
    pub async fn poll_device_login(&self, request_id: &str) -> Result<DevicePoll, ClientError> {
        let url = self
            .server
            .endpoint(&format!("/oidc/auth-poll/{}", path_segment(request_id)));
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.to_string(),
            detail: error_chain(&e),
        };
        let response = self.http.post(&url).send().await.map_err(unreachable)?;
        let status = response.status();
        if self.debug {
            eprintln!("flinger: POST {url} → {status}");
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            let answer: Value = serde_json::from_slice(&body)
                .map_err(|e| ClientError::bad_answer("the sign-on", format!("not JSON ({e})")))?;
            let access = answer.get("access_token").and_then(Value::as_str).unwrap_or("");
            let client_id = TokenPayload::decode(access)
                .and_then(|p| p.client_id)
                .ok_or_else(|| ClientError::bad_answer("the sign-on", "no client id in the access token"))?;
            let session = Session::from_answer(&client_id, &answer, None)
                .ok_or_else(|| ClientError::bad_answer("the sign-on", "no access_token"))?;
            self.keep(session.clone());
            return Ok(DevicePoll::Done(session));
        }
        if status == StatusCode::BAD_REQUEST
            && let Ok(e) = serde_json::from_slice::<DeviceLoginError>(&body)
        {
            return Ok(DevicePoll::NotYet {
                error: e.error,
                message: e.message,
                retry_after,
            });
        }
        let (message, detail) = error_body(status, &body);
        Err(if status.is_server_error() {
            ClientError::Server {
                status: status.as_u16(),
                message,
            }
        } else {
            ClientError::Refused {
                status: status.as_u16(),
                message,
                detail,
            }
        })
    }

    /// `POST /v1/oauth2/refresh`: a new access token for the login's refresh token.
    async fn refresh(&self, session: &Session, refresh_token: &str) -> Result<Session, ClientError> {
        let url = self.server.endpoint("/v1/oauth2/refresh");
        let body = body_of(&RefreshToken {
            refresh_token: refresh_token.to_owned(),
        });
        let request = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        let response = self.finish(&Method::POST, &url, &[], request).await?;
        let answer = self.buffer(response).await?;
        let refreshed = Session::from_answer(
            &session.client_id,
            &answer.json("the refresh")?,
            Some(refresh_token.to_owned()),
        )
        .ok_or_else(|| ClientError::bad_answer("the refresh", "no access_token"))?;
        self.keep(refreshed.clone());
        Ok(refreshed)
    }

    /// Forgets this server's login, here and in the store; whether one was stored.
    pub fn logout(&self) -> Result<bool, ClientError> {
        *self.login.lock().expect("login lock") = Login::None;
        self.sessions
            .remove(self.server.as_str())
            .map_err(|source| ClientError::Io {
                what: "cannot update the login file".into(),
                source,
            })
    }

    /// The login in use, if any (looked up in the store the first time).
    pub fn session(&self) -> Option<Session> {
        let mut login = self.login.lock().expect("login lock");
        if matches!(*login, Login::Unknown) {
            let stored = self.sessions.get(self.server.as_str()).filter(|s| {
                // Credentials given for another client win over a stored login.
                self.credentials
                    .as_ref()
                    .is_none_or(|c| c.client_id == s.client_id)
            });
            *login = stored.map_or(Login::None, Login::Some);
        }
        match &*login {
            Login::Some(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Remembers a login, here and (best effort) in the store.
    fn keep(&self, session: Session) {
        if let Err(e) = self.sessions.put(self.server.as_str(), &session) {
            eprintln!("flinger: warning: cannot store the login: {e}");
        }
        *self.login.lock().expect("login lock") = Login::Some(session);
    }

    /// The access token to send: the login's, refreshed or renewed when it has expired; `None`
    /// for an anonymous request.
    pub async fn access_token(&self) -> Result<Option<String>, ClientError> {
        let session = self.session();
        if let Some(s) = &session
            && s.is_fresh()
        {
            return Ok(Some(s.access_token.clone()));
        }
        if let Some(s) = &session
            && let Some(refresh) = s.refresh_token.clone()
        {
            match self.refresh(s, &refresh).await {
                Ok(new) => return Ok(Some(new.access_token)),
                Err(e) if e.is_transient() => return Err(e),
                // Refused (expired, revoked, unknown): log in again below, or say so.
                Err(_) => {
                    let _ = self.logout();
                }
            }
        }
        if let Some(c) = &self.credentials {
            return self.login(c).await.map(|s| Some(s.access_token));
        }
        match session {
            Some(s) => Err(ClientError::Auth(format!(
                "the login of client {:?} has expired: run `flinger login` again",
                s.client_id
            ))),
            None => Ok(None),
        }
    }

    /// Marks the access token as spent, so that the next request refreshes it.
    fn expire_access_token(&self) {
        let mut login = self.login.lock().expect("login lock");
        if let Login::Some(s) = &mut *login {
            s.expires_at = 0;
        }
    }

    // ----- plumbing

    /// A job read: 204 means the job is unknown.
    async fn read_job_json(
        &self,
        id: JobId,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let answer = self.read(path, query).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Err(ClientError::NoSuchJob(id));
        }
        answer.json(path)
    }

    /// A GET, retried with backoff while the error is transient.
    async fn read(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, ClientError> {
        self.with_retries(Method::GET, path, query, Payload::Empty).await
    }

    /// An idempotent request, retried with backoff while the error is transient.
    async fn with_retries(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<Answer, ClientError> {
        (|| self.send(method.clone(), path, query, body))
            .retry(retry_policy())
            .when(ClientError::is_transient)
            .notify(|e, delay| self.note_retry(e, delay))
            .await
    }

    fn note_retry(&self, e: &ClientError, delay: Duration) {
        if self.debug {
            eprintln!("flinger: {e}; retrying in {delay:.1?}");
        }
    }

    /// One request, its body read; any answer that is not 2xx becomes an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<Answer, ClientError> {
        let response = self.exchange(&method, path, query, body).await?;
        self.buffer(response).await
    }

    async fn buffer(&self, response: reqwest::Response) -> Result<Answer, ClientError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ClientError::Unreachable {
            server: self.server.to_string(),
            detail: error_chain(&e),
        })?;
        Ok(Answer { status, body })
    }

    /// One request with the login's token; sent again once with a fresh token when the server
    /// says the token expired or is not valid (e.g. the gateway restarted with another key).
    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<reqwest::Response, ClientError> {
        let token = self.access_token().await?;
        let first = self.send_once(method, path, query, body, token.as_deref()).await;
        match first {
            Err(ClientError::Refused {
                status, ref message, ..
            }) if token.is_some()
                && (status == 401 || (status == 403 && message.contains("Invalid Token"))) =>
            {
                self.expire_access_token();
                let fresh = self.access_token().await?;
                if fresh.is_none() || fresh == token {
                    return first;
                }
                self.send_once(method, path, query, body, fresh.as_deref()).await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
        token: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.server.endpoint(path);
        let mut request = self.http.request(method.clone(), &url).query(query);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request = match body {
            Payload::Empty => request,
            Payload::Json(v) => request
                .header("content-type", "application/json")
                .body(v.to_string()),
            Payload::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| ClientError::Io {
                        what: format!("cannot read {}", path.display()),
                        source,
                    })?;
                let len = file.metadata().await.map(|m| m.len()).ok();
                let part = match len {
                    Some(n) => reqwest::multipart::Part::stream_with_length(file, n),
                    None => reqwest::multipart::Part::stream(file),
                }
                .file_name("attachments.tar.gz")
                .mime_str("application/gzip")
                .expect("a valid mime type");
                request
                    .multipart(reqwest::multipart::Form::new().part("file", part))
                    .timeout(TRANSFER_TIMEOUT)
            }
        };
        if path.ends_with("/artifact") {
            request = request.timeout(TRANSFER_TIMEOUT);
        }
        self.finish(method, &url, query, request).await
    }

    /// Sends a built request; an answer that is not 2xx becomes an error.
    async fn finish(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, String)],
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.to_string(),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if self.debug {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            eprintln!("flinger: {method} {url}{q} → {status}");
        }
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.map_err(unreachable)?;
        let (message, detail) = error_body(status, &body);
        if status.is_server_error() {
            Err(ClientError::Server {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(ClientError::Refused {
                status: status.as_u16(),
                message,
                detail,
            })
        }
    }
}

/// One poll of a device login.
#[derive(Debug)]
pub enum DevicePoll {
    /// Approved: the login, stored.
    Done(Session),
    /// Not (yet): RFC 8628's error code, the server's words, and how long to wait if it said.
    NotYet {
        error: String,
        message: Option<String>,
        retry_after: Option<u64>,
    },
}

/// What part of a log to read.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub start_fragment: u64,
    pub start_timestamp: Option<String>,
    pub phase: Option<String>,
    /// Long poll: how long the server may hold the answer while there is no new output.
    pub wait: Option<Duration>,
}

fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY_DELAY)
        .with_max_times(READ_RETRIES)
        .with_jitter()
}

/// The message (and Testflinger's `detail`) of an error answer; plain text answers are used as is.
fn error_body(status: StatusCode, body: &[u8]) -> (String, Option<Value>) {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => {
            let message = v.get("message").and_then(Value::as_str).map(str::to_owned);
            let detail = v.get("detail").filter(|d| !d.is_null()).cloned();
            (message.unwrap_or_else(|| fallback_message(status, &text)), detail)
        }
        Err(_) => (fallback_message(status, &text), None),
    }
}

fn fallback_message(status: StatusCode, text: &str) -> String {
    let text = text.trim();
    match (text.is_empty(), status.canonical_reason()) {
        (false, _) => text.chars().take(500).collect(),
        (true, Some(reason)) => reason.to_owned(),
        (true, None) => format!("HTTP {}", status.as_u16()),
    }
}

/// reqwest's errors say "error sending request for url (…)"; their sources say why
/// ("tcp connect error: Connection refused"). The why is what a user needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper-util's wrapper ("client error (Connect)") repeats what its source says.
        if !text.starts_with("client error (") && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// A secret path keeps its slashes; each segment is escaped.
fn secret_path(path: &str) -> String {
    path.split('/').map(path_segment).collect::<Vec<_>>().join("/")
}

/// Percent-encodes a value for use as one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_the_message_and_the_field_details() {
        let body = br#"{"message": "Validation error", "detail": {"json": {"job_queue": ["Missing data for required field."]}}}"#;
        let (message, detail) = error_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(message, "Validation error");
        assert_eq!(
            detail.unwrap()["json"]["job_queue"][0],
            "Missing data for required field."
        );
    }

    #[test]
    fn plain_text_and_empty_error_answers_still_say_something() {
        assert_eq!(
            error_body(StatusCode::BAD_REQUEST, b"job already ended").0,
            "job already ended"
        );
        assert_eq!(
            error_body(StatusCode::SERVICE_UNAVAILABLE, b"").0,
            "Service Unavailable"
        );
    }

    #[test]
    fn only_unreachable_and_gateway_errors_are_transient() {
        assert!(
            ClientError::Unreachable {
                server: "s".into(),
                detail: "d".into()
            }
            .is_transient()
        );
        assert!(
            ClientError::Server {
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !ClientError::Server {
                status: 500,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !ClientError::Refused {
                status: 404,
                message: String::new(),
                detail: None
            }
            .is_transient()
        );
    }

    #[test]
    fn queue_names_are_escaped_in_paths() {
        assert_eq!(path_segment("rpi4b"), "rpi4b");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
