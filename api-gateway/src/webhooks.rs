//! Relays job events to the job's `job_status_webhook` with an HTTP PUT, the way Testflinger's
//! server does, in the background: a slow or dead webhook never delays a job or a request.
//!
//! Each event is tried a bounded number of times ([`TRIES`], each bounded by the configured
//! timeout, with a short backoff), and retried only when the failure may pass (no answer, 5xx).
//! Relays in flight are tracked and given a few seconds to finish when the gateway stops.
//!
//! The body is Testflinger's status update: `{"job_id", "agent_id", "job_queue", "events":
//! [{"event_name", "timestamp", "detail"}]}` with Testflinger's event names
//! (`provision_start`, `test_fail`, `job_end`, `cancelled`, …).
//!
//! A webhook URL may carry credentials (userinfo, a token in the query): logs show it
//! [`redacted`], never whole.

use broker_schema::messages::{JobEvent, JobEventKind, Outcome};
use broker_schema::phase::RECOVERY_FAILED_EXIT;
use broker_schema::{FailureKind, JobState, Millis};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

/// Attempts per event.
pub const TRIES: u32 = 3;
/// Relays waiting or in flight at most; beyond that new events are dropped (and logged).
const MAX_PENDING: usize = 1024;
/// How long stopping waits for relays in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// One entry of `--webhook-allow`: a URL whose scheme, host and port a webhook must have, and
/// whose path its path must start with. Compared part by part, not as text, so that
/// `https://ci.example.com` admits neither `https://ci.example.com.evil.net/` nor
/// `https://ci.example.com@evil.net/`.
#[derive(Clone, Debug)]
struct AllowedPrefix(url::Url);

impl AllowedPrefix {
    fn parse(s: &str) -> Result<AllowedPrefix, String> {
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(AllowedPrefix(u)),
            _ => Err(format!("{s:?} is not an absolute http(s) URL")),
        }
    }

    fn admits(&self, url: &url::Url) -> bool {
        let p = &self.0;
        url.scheme() == p.scheme()
            && url.host() == p.host()
            && url.port_or_known_default() == p.port_or_known_default()
            && url.path().starts_with(p.path())
    }
}

/// `url` as logs may show it: without userinfo, query and fragment, which may hold credentials.
pub fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[derive(Clone)]
pub struct Webhooks {
    http: reqwest::Client,
    /// Where webhooks may point; empty: any http(s) URL.
    allow: Arc<Vec<AllowedPrefix>>,
    timeout: Duration,
    /// The `Authorization` header sent with every relay, if the lab set a token.
    auth: Option<HeaderValue>,
    tracker: TaskTracker,
    pending: Arc<AtomicUsize>,
}

impl Webhooks {
    /// Fails when an entry of `allow` is not an absolute http(s) URL, or `auth` cannot be a
    /// header value.
    pub fn new(allow: Vec<String>, timeout: Duration, auth: Option<&str>) -> Result<Webhooks, String> {
        // reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .expect("a plain HTTP client builds");
        let allow = allow
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| AllowedPrefix::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--webhook-allow: {e}"))?;
        let auth = auth
            .filter(|token| !token.is_empty())
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "--webhook-auth (FLINGER_WEBHOOK_AUTH, WEBHOOK_AUTH): the token must be printable ASCII".to_owned())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(Webhooks {
            http,
            allow: Arc::new(allow),
            timeout,
            auth,
            tracker: TaskTracker::new(),
            pending: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Whether the gateway may PUT to `url`.
    pub fn allows(&self, url: &url::Url) -> bool {
        matches!(url.scheme(), "http" | "https")
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.admits(url)))
    }

    /// Relays `body` to `url` in the background.
    pub fn relay(&self, job_id: Uuid, url: url::Url, body: Value) {
        if !self.allows(&url) {
            warn!(%job_id, url = %redacted(&url), "webhook not in the allowed list; not relayed");
            return;
        }
        if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            warn!(%job_id, "too many webhook relays pending; event dropped");
            return;
        }
        let (http, pending, timeout) = (self.http.clone(), self.pending.clone(), self.timeout);
        let auth = self.auth.clone();
        self.tracker.spawn(async move {
            match put_with_retries(&http, &url, &body, timeout, auth.as_ref()).await {
                Ok(status) => debug!(%job_id, %status, "webhook relayed"),
                Err(e) => warn!(%job_id, url = %redacted(&url), error = %e, "webhook relay failed"),
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Lets relays in flight finish, for a few seconds.
    pub async fn drain(&self) {
        self.tracker.close();
        if tokio::time::timeout(DRAIN, self.tracker.wait()).await.is_err() {
            warn!("webhook relays still in flight at shutdown; abandoned");
        }
    }
}

async fn put_with_retries(
    http: &reqwest::Client,
    url: &url::Url,
    body: &Value,
    timeout: Duration,
    auth: Option<&HeaderValue>,
) -> Result<reqwest::StatusCode, String> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let mut request = http.put(url.clone()).timeout(timeout).json(body);
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        match request.send().await {
            Ok(r) if r.status().is_server_error() => last = format!("answered {}", r.status()),
            Ok(r) if r.status().is_success() => return Ok(r.status()),
            // The webhook refused the event: trying again would not change its mind.
            Ok(r) => return Err(format!("answered {}", r.status())),
            // Without the URL: reqwest's message would show its credentials.
            Err(e) => last = e.without_url().to_string(),
        }
        if attempt < TRIES {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
    Err(format!("{last} (after {TRIES} tries)"))
}

/// A job event in Testflinger's vocabulary: `(event_name, detail)` pairs (none for events
/// Testflinger has no name for).
pub fn testflinger_events(event: &JobEvent) -> Vec<(String, String)> {
    match &event.kind {
        JobEventKind::PhaseStarted { phase } => vec![(format!("{phase}_start"), String::new())],
        JobEventKind::PhaseFinished {
            phase,
            exit_code,
            detail,
        } => {
            let detail = detail.clone().unwrap_or_default();
            let mut v = vec![(
                format!("{phase}_{}", if *exit_code == 0 { "success" } else { "fail" }),
                detail.clone(),
            )];
            if *exit_code == RECOVERY_FAILED_EXIT {
                v.push(("recovery_fail".into(), detail));
            }
            v
        }
        JobEventKind::Finished { outcome, .. } => match outcome {
            Outcome::Complete => vec![("job_end".into(), "normal_exit".into())],
            Outcome::Cancelled { reason } => vec![("cancelled".into(), reason.clone())],
            Outcome::Failed { failure } => {
                let name = match failure.kind {
                    FailureKind::GlobalTimeout => "global_timeout",
                    FailureKind::OutputTimeout => "output_timeout",
                    FailureKind::RecoveryFailed => "recovery_fail",
                    _ => "job_end",
                };
                vec![(name.into(), failure.reason.clone())]
            }
        },
        JobEventKind::StateChanged {
            state,
            failure,
            detail,
        } => {
            let detail = detail
                .clone()
                .or_else(|| failure.as_ref().map(|f| f.reason.clone()))
                .unwrap_or_default();
            match state {
                JobState::Leased => vec![("job_start".into(), detail)],
                JobState::Cancelled => vec![("cancelled".into(), detail)],
                JobState::Failed => vec![("job_end".into(), detail)],
                _ => vec![],
            }
        }
        // Device info, reservation details, …: Testflinger has no event for them.
        _ => vec![],
    }
}

/// The status update Testflinger PUTs for `events` of a job of `queue`.
pub fn status_update(event: &JobEvent, queue: &str, events: &[(String, String)]) -> Value {
    let at = if event.at.0 > 0 { event.at } else { Millis::now() };
    json!({
        "job_id": event.job_id,
        "agent_id": event.agent.as_ref().map(|a| a.to_string()).unwrap_or_default(),
        "job_queue": queue,
        "events": events
            .iter()
            .map(|(name, detail)| json!({"event_name": name, "timestamp": at.to_rfc3339(), "detail": detail}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_schema::Phase;

    fn ev(kind: JobEventKind) -> JobEvent {
        JobEvent {
            job_id: Uuid::nil(),
            attempt: 1,
            agent: None,
            at: Millis(0),
            shipped: None,
            kind,
        }
    }

    #[test]
    fn phase_events_have_testflinger_names() {
        assert_eq!(
            testflinger_events(&ev(JobEventKind::PhaseStarted {
                phase: Phase::Provision
            }))[0]
                .0,
            "provision_start"
        );
        let failed = testflinger_events(&ev(JobEventKind::PhaseFinished {
            phase: Phase::Provision,
            exit_code: 46,
            detail: None,
        }));
        assert_eq!(
            failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["provision_fail", "recovery_fail"]
        );
    }

    #[test]
    fn allowed_prefixes_restrict_where_webhooks_go() {
        let w = Webhooks::new(
            vec![
                "https://ci.example.com/hooks/".into(),
                "http://obs.example.com".into(),
            ],
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let allows = |u: &str| w.allows(&u.parse().unwrap());
        assert!(allows("https://ci.example.com/hooks/1"));
        assert!(allows("https://user:pw@ci.example.com:443/hooks/1?token=x"));
        assert!(allows("http://obs.example.com/anything"));
        assert!(!allows("https://evil.example.com/"));
        assert!(!allows("https://ci.example.com/other"));
        assert!(!allows("http://ci.example.com/hooks/1"), "another scheme");
        assert!(!allows("https://ci.example.com:8443/hooks/1"), "another port");
        assert!(
            !allows("http://obs.example.com.evil.net/"),
            "a host that starts alike"
        );
        assert!(
            !allows("http://obs.example.com@evil.net/"),
            "userinfo that looks like the host"
        );
        let any = Webhooks::new(vec![], Duration::from_secs(1), None).unwrap();
        assert!(any.allows(&"http://10.0.0.1:9000/x".parse().unwrap()));
        assert!(!any.allows(&"file:///etc/passwd".parse().unwrap()));
        assert!(Webhooks::new(vec!["ci.example.com".into()], Duration::from_secs(1), None).is_err());
        assert!(
            Webhooks::new(vec![], Duration::from_secs(1), Some("line\nbreak")).is_err(),
            "a token that cannot be a header is refused at start"
        );
    }

    #[test]
    fn logged_urls_lose_their_credentials() {
        let u = "https://bot:hunter2@ci.example.com/hooks/1?token=sekrit#frag"
            .parse()
            .unwrap();
        assert_eq!(redacted(&u), "https://ci.example.com/hooks/1");
    }
}
