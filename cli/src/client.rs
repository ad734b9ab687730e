//! The HTTP client of Flinger's API (docs/api.md): one typed method per endpoint the CLI uses.
//!
//! Reads, and submissions (made idempotent by a client-chosen `job_id`), are retried with backoff
//! when the server cannot be reached or answers 502/503/504. Cancel is not: a repeated cancel of a
//! job that has meanwhile ended would be refused, which would misreport the first one.
//! Errors say what went wrong in terms a user can act on; exit codes are decided in `exit.rs`.

use crate::config::ServerUrl;
use crate::model::{AgentSummary, JobId, JobInfo, LogStream};
use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Bounds a connection attempt: a dead host should not hold a CI job for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds a whole request. Submissions are answered within the gateway's publish timeout (5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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
}

impl ClientError {
    /// Worth trying again later: the server could not be reached or was briefly unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

/// A successful answer: its status and body.
struct Answer {
    status: StatusCode,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self, what: &str) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::BadAnswer {
            what: what.to_owned(),
            detail: format!("not JSON ({e})"),
        })
    }
}

pub struct Client {
    http: reqwest::Client,
    server: ServerUrl,
    /// `--debug`: every request and its answer's status on stderr.
    debug: bool,
}

impl Client {
    pub fn new(server: ServerUrl, debug: bool) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("flinger-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                server: server.to_string(),
                detail: error_chain(&e),
            })?;
        Ok(Client { http, server, debug })
    }

    // ----- jobs

    /// `POST /v1/job` of a job file that names its `job_id`. The server treats a known
    /// `job_id` as a resubmission and does nothing else, so this is retried like a read: an
    /// answer lost on the way back cannot submit the job twice.
    pub async fn submit(&self, job: &Value) -> Result<JobId, ClientError> {
        let answer = self.with_retries(Method::POST, "/v1/job", &[], Some(job)).await?;
        let body = answer.json("the submission")?;
        body.get("job_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::BadAnswer {
                what: "the submission".into(),
                detail: format!("no job_id in {body}"),
            })
    }

    /// `GET /v1/job/<id>`: the job file as submitted, with its `job_id`.
    pub async fn job(&self, id: JobId) -> Result<Value, ClientError> {
        self.read_job_json(id, &format!("/v1/job/{id}"), &[]).await
    }

    /// `GET /v1/job/<id>/info` **[ext]**: the whole record.
    pub async fn info(&self, id: JobId) -> Result<JobInfo, ClientError> {
        let raw = self.read_job_json(id, &format!("/v1/job/{id}/info"), &[]).await?;
        JobInfo::parse(raw).map_err(|e| ClientError::BadAnswer {
            what: "the job info".into(),
            detail: e.to_string(),
        })
    }

    /// `GET /v1/result/<id>`: the flat results.
    pub async fn results(&self, id: JobId) -> Result<Value, ClientError> {
        self.read_job_json(id, &format!("/v1/result/{id}"), &[]).await
    }

    /// `GET /v1/result/<id>/log/<stream>?start_fragment=N[&phase=P]`.
    pub async fn log(
        &self,
        id: JobId,
        stream: LogStream,
        start_fragment: u64,
        phase: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut query = vec![("start_fragment", start_fragment.to_string())];
        if let Some(p) = phase {
            query.push(("phase", p.to_owned()));
        }
        self.read_job_json(id, &format!("/v1/result/{id}/log/{}", stream.as_str()), &query)
            .await
    }

    /// `POST /v1/job/<id>/action {"action": "cancel"}`. Not retried: the caller decides.
    pub async fn cancel(&self, id: JobId) -> Result<(), ClientError> {
        let body = json!({"action": "cancel"});
        self.send(Method::POST, &format!("/v1/job/{id}/action"), &[], Some(&body))
            .await
            .map(drop)
    }

    // ----- queues and agents

    /// `GET /v1/queues/<q>/agents`; `None` when no agent serves the queue (404).
    pub async fn queue_agents(&self, queue: &str) -> Result<Option<Vec<AgentSummary>>, ClientError> {
        let path = format!("/v1/queues/{}/agents", path_segment(queue));
        match self.read(&path, &[]).await {
            Ok(answer) => {
                let v = answer.json("the queue's agents")?;
                serde_json::from_value(v)
                    .map(Some)
                    .map_err(|e| ClientError::BadAnswer {
                        what: "the queue's agents".into(),
                        detail: e.to_string(),
                    })
            }
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/agents/queues`: every queue an agent serves, with its description.
    pub async fn queues(&self) -> Result<BTreeMap<String, String>, ClientError> {
        let v = self
            .read("/v1/agents/queues", &[])
            .await?
            .json("the queue list")?;
        serde_json::from_value(v).map_err(|e| ClientError::BadAnswer {
            what: "the queue list".into(),
            detail: e.to_string(),
        })
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
        self.with_retries(Method::GET, path, query, None).await
    }

    /// An idempotent request, retried with backoff while the error is transient.
    async fn with_retries(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY_DELAY)
            .with_max_times(READ_RETRIES)
            .with_jitter();
        (|| self.send(method.clone(), path, query, body))
            .retry(backoff)
            .when(ClientError::is_transient)
            .notify(|e, delay| {
                if self.debug {
                    eprintln!("flinger: {e}; retrying in {delay:.1?}");
                }
            })
            .await
    }

    /// One request; any answer that is not 2xx becomes an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let url = self.server.endpoint(path);
        let mut request = self.http.request(method.clone(), &url).query(query);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.to_string(),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
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
            return Ok(Answer { status, body });
        }
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
