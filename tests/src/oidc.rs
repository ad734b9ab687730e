//! A loopback OpenID Connect provider for the single sign-on tests: the Python fixture
//! `tests/fixtures/oidc-provider/provider.py` (Authlib: authorization code + PKCE + nonce,
//! device authorization, refresh tokens), run as a process of the test's own and driven through
//! its HTTP interface, test controls included (users, device approval, defective ID tokens, key
//! rotation, the token requests it saw, how often its keys were fetched).
//!
//! The provider runs in a venv made by `scripts/oidc-provider install` (scripts/test does it);
//! `FLINGER_OIDC_PYTHON` names another python that has its requirements.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long the provider may take to start serving (a cold venv imports Flask and Authlib).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which clients the provider knows, and its device flow's timings.
#[derive(Clone, Debug, Default)]
pub struct OidcOptions {
    /// `(id, secret, redirect uri)`: authenticated with `client_secret_basic` or `_post`.
    pub clients: Vec<(String, String, String)>,
    /// `(id, redirect uri)`: no secret (`none`); the redirect uri may be empty (device flow only).
    pub public_clients: Vec<(String, String)>,
    /// `expires_in` of device codes (the provider's default: 600 s).
    pub device_code_ttl: Option<u64>,
    /// `interval` of device codes (the provider's default: 1 s). A poll sooner than half of it
    /// after the previous one is answered `slow_down`, and the interval grows by
    /// `slow_down_step`.
    pub device_interval: Option<u64>,
    /// What each `slow_down` adds to a device code's interval (the provider's default: RFC 8628's
    /// 5 s).
    pub slow_down_step: Option<u64>,
}

impl OidcOptions {
    /// A confidential client. A redirect uri on port 0 (`http://127.0.0.1:0/cb`) matches that
    /// scheme, host and path on any port: a test does not know its gateway's port in advance.
    pub fn client(mut self, id: &str, secret: &str, redirect_uri: &str) -> Self {
        self.clients.push((id.into(), secret.into(), redirect_uri.into()));
        self
    }

    /// A public client (PKCE, no secret), e.g. a CLI; `redirect_uri` may be "".
    pub fn public_client(mut self, id: &str, redirect_uri: &str) -> Self {
        self.public_clients.push((id.into(), redirect_uri.into()));
        self
    }

    pub fn device_code_ttl(mut self, secs: u64) -> Self {
        self.device_code_ttl = Some(secs);
        self
    }

    pub fn device_interval(mut self, secs: u64) -> Self {
        self.device_interval = Some(secs);
        self
    }

    pub fn slow_down_step(mut self, secs: u64) -> Self {
        self.slow_down_step = Some(secs);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["--port".to_string(), "0".to_string()];
        for (id, secret, uri) in &self.clients {
            args.extend(["--client".into(), format!("{id}:{secret}:{uri}")]);
        }
        for (id, uri) in &self.public_clients {
            args.extend(["--public-client".into(), format!("{id}:{uri}")]);
        }
        if let Some(ttl) = self.device_code_ttl {
            args.extend(["--device-code-ttl".into(), ttl.to_string()]);
        }
        if let Some(interval) = self.device_interval {
            args.extend(["--device-interval".into(), interval.to_string()]);
        }
        if let Some(step) = self.slow_down_step {
            args.extend(["--slow-down-step".into(), step.to_string()]);
        }
        args
    }
}

/// How the next ID token the provider issues (from any grant) is defective (or the next N, with
/// [`OidcProvider::misbehave_times`]); the one after is sound again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misbehave {
    /// `exp` (and `iat`) in the past.
    Expired,
    /// `aud` is another client's.
    WrongAudience,
    /// `iss` is not the issuer.
    WrongIssuer,
    /// Signed by a key that is not in the JWKS, under the `kid` of one that is.
    BadSignature,
    /// `nonce` differs from the authorization request's (and is present when it had none).
    WrongNonce,
    /// A `kid` that is not in the JWKS, even after a refetch.
    UnknownKid,
}

/// One request the token endpoint answered.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    /// From HTTP basic authentication, else the form's `client_id`.
    pub client_id: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The OAuth error code of a refused request (`authorization_pending`, `invalid_grant`, ...).
    pub error: Option<String>,
}

/// The running provider; the process is killed when this is dropped.
pub struct OidcProvider {
    issuer: String,
    http: reqwest::Client,
    /// The provider's stderr (Werkzeug's request log and any traceback).
    pub log: PathBuf,
    _child: Child,
    /// Held open: the provider exits when it closes, so a test killed outright leaves none behind.
    _stdin: ChildStdin,
    /// Held open: the provider's stdout must not become a broken pipe.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider on a free loopback port and waits until it serves.
    pub async fn start(opts: OidcOptions) -> OidcProvider {
        let python = provider_python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc-provider/provider.py");
        let dir = tempfile::Builder::new()
            .prefix("oidc-provider-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("provider.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(opts.args())
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {}: {e}", python.display(), script.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line)).await;
        let issuer = match read {
            Ok(Ok(n)) if n > 0 => line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line from the OIDC provider: {line:?}"))
                .to_string(),
            _ => panic!(
                "the OIDC provider did not say `listening on` within {START_TIMEOUT:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        crate::init_tls();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        OidcProvider {
            issuer,
            http,
            log,
            _child: child,
            _stdin: stdin,
            _stdout: stdout,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the `iss` of its ID tokens and the base
    /// of every endpoint.
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// `issuer() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Adds or replaces a user. Unknown emails that sign in are created with no groups.
    pub async fn add_user(&self, email: &str, name: &str, groups: &[&str]) {
        self.control(
            "/test/users",
            json!({"email": email, "name": name, "groups": groups}),
        )
        .await;
    }

    /// Approves a pending device code as `email` would on the verification page.
    pub async fn approve_device(&self, user_code: &str, email: &str) {
        self.control(
            "/test/device/approve",
            json!({"user_code": user_code, "email": email}),
        )
        .await;
    }

    /// Denies a pending device code: the client's next poll gets `access_denied`.
    pub async fn deny_device(&self, user_code: &str) {
        self.control("/test/device/deny", json!({"user_code": user_code}))
            .await;
    }

    /// Makes the next ID token defective in the given way.
    pub async fn misbehave(&self, kind: Misbehave) {
        self.misbehave_times(kind, 1).await;
    }

    /// Makes the next `times` ID tokens defective in the given way.
    pub async fn misbehave_times(&self, kind: Misbehave, times: u32) {
        self.control("/test/misbehave", json!({"next_id_token": kind, "times": times}))
            .await;
    }

    /// How many times its JWKS (`/jwks`) was fetched so far, discovery's fetch included.
    pub async fn jwks_fetches(&self) -> u64 {
        let resp = self
            .http
            .get(self.url("/test/jwks-fetches"))
            .send()
            .await
            .expect("GET /test/jwks-fetches");
        assert!(
            resp.status().is_success(),
            "GET /test/jwks-fetches: {}",
            resp.status()
        );
        let body: Value = resp.json().await.expect("a JSON count");
        body["count"].as_u64().expect("count")
    }

    /// Signs with a new key under a new `kid`; the JWKS then lists only the new key. Returns the
    /// new `kid`.
    pub async fn rotate_keys(&self) -> String {
        let answer = self.control("/test/rotate-keys", json!({})).await;
        answer["kid"].as_str().expect("kid").to_string()
    }

    /// Every request the token endpoint answered so far, oldest first.
    pub async fn token_log(&self) -> Vec<TokenRequest> {
        let resp = self
            .http
            .get(self.url("/test/log"))
            .send()
            .await
            .expect("GET /test/log");
        assert!(resp.status().is_success(), "GET /test/log: {}", resp.status());
        resp.json().await.expect("token log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path} {body}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// `$FLINGER_OIDC_PYTHON`, else the venv `scripts/oidc-provider install` made.
fn provider_python() -> PathBuf {
    if let Ok(python) = std::env::var("FLINGER_OIDC_PYTHON") {
        return python.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/oidc-provider");
    let out = std::process::Command::new(&script)
        .arg("python")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "the OIDC provider's venv is missing: run `scripts/oidc-provider install` (scripts/test \
         does) or set FLINGER_OIDC_PYTHON ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
