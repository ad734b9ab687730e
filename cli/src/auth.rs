//! Logging in: the client credentials, the stored login, and the access token the client sends.
//!
//! `flinger login` trades a client id and secret key for an access token and a refresh token
//! (`POST /v1/oauth2/token`, HTTP Basic) and keeps them in `<data dir>/login.json` (mode 0600),
//! one login per server. Later commands send the access token (`Authorization: Bearer`),
//! refresh it (`POST /v1/oauth2/refresh`) when it has expired or is about to, and log in again
//! with the credentials, when they are configured, if the refresh token no longer works. A
//! command run with credentials but without a stored login logs in on its first request.
//!
//! The token's payload is read without verifying its signature (the server verifies it); the
//! CLI only takes the client id, role and expiry from it to say who is logged in.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// An access token this close to its expiry is refreshed before it is used.
const EXPIRY_MARGIN_SECS: i64 = 30;

/// The name of the login file in the data directory.
pub const LOGIN_FILE: &str = "login.json";

/// A client id with its secret key, from flags, environment or the configuration file.
#[derive(Clone)]
pub struct Credentials {
    pub client_id: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret_key", &"…")
            .finish()
    }
}

/// One server's login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client_id: String,
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl Session {
    /// From a token answer (`{access_token, expires_in, refresh_token?}`); a refresh answer has
    /// no refresh token, so the previous one is kept.
    pub fn from_answer(client_id: &str, answer: &Value, previous_refresh: Option<String>) -> Option<Session> {
        let access_token = answer.get("access_token")?.as_str()?.to_owned();
        let expires_at = match answer.get("expires_in").and_then(Value::as_i64) {
            Some(secs) => now_secs() + secs,
            None => TokenPayload::decode(&access_token)
                .and_then(|p| p.exp)
                .unwrap_or(0),
        };
        let refresh_token = answer
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(previous_refresh);
        Some(Session {
            client_id: client_id.to_owned(),
            access_token,
            expires_at,
            refresh_token,
        })
    }

    pub fn is_fresh(&self) -> bool {
        self.expires_at > now_secs() + EXPIRY_MARGIN_SECS
    }
}

/// What the access token says about its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenPayload {
    pub client_id: Option<String>,
    pub role: Option<String>,
    pub exp: Option<i64>,
}

impl TokenPayload {
    /// Reads a JWT's payload without verifying it; `None` for something that is not a JWT.
    pub fn decode(token: &str) -> Option<TokenPayload> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        let permissions = v.get("permissions");
        let field = |k: &str| {
            permissions
                .and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(TokenPayload {
            client_id: field("client_id").or_else(|| v.get("sub").and_then(Value::as_str).map(str::to_owned)),
            role: field("role"),
            exp: v.get("exp").and_then(Value::as_i64),
        })
    }
}

/// The login file: one session per server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LoginFile {
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
}

/// Where logins are kept. Without a data directory nothing is kept: credentials still work,
/// one login per command.
#[derive(Clone, Debug)]
pub struct SessionStore {
    path: Option<PathBuf>,
}

impl SessionStore {
    pub fn new(data_dir: Option<&Path>) -> SessionStore {
        SessionStore {
            path: data_dir.map(|d| d.join(LOGIN_FILE)),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn read(&self) -> LoginFile {
        // An unreadable login file is as good as none: the user logs in again.
        self.path
            .as_deref()
            .and_then(|p| crate::files::read_json(p).ok().flatten())
            .unwrap_or_default()
    }

    pub fn get(&self, server: &str) -> Option<Session> {
        self.read().sessions.remove(server)
    }

    pub fn put(&self, server: &str, session: &Session) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut file = self.read();
        file.sessions.insert(server.to_owned(), session.clone());
        crate::files::write_json(path, &file)
    }

    /// Forgets the server's login; whether there was one.
    pub fn remove(&self, server: &str) -> std::io::Result<bool> {
        let Some(path) = &self.path else { return Ok(false) };
        let mut file = self.read();
        let had = file.sessions.remove(server).is_some();
        if had {
            crate::files::write_json(path, &file)?;
        }
        Ok(had)
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(payload: Value) -> String {
        let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(&json!({"alg": "HS256"})), enc(&payload))
    }

    #[test]
    fn the_token_payload_names_the_client_and_its_role() {
        let t = jwt(json!({"exp": 42, "sub": "x", "permissions": {"client_id": "me", "role": "admin"}}));
        let p = TokenPayload::decode(&t).unwrap();
        assert_eq!(
            p,
            TokenPayload {
                client_id: Some("me".into()),
                role: Some("admin".into()),
                exp: Some(42)
            }
        );
        assert!(TokenPayload::decode("not-a-jwt").is_none());
    }

    #[test]
    fn sessions_expire_a_little_early_and_keep_their_refresh_token() {
        let s = Session::from_answer(
            "me",
            &json!({"access_token": "a", "expires_in": 600, "refresh_token": "r"}),
            None,
        )
        .unwrap();
        assert!(s.is_fresh());
        let refreshed = Session::from_answer(
            "me",
            &json!({"access_token": "b", "expires_in": 10}),
            s.refresh_token.clone(),
        )
        .unwrap();
        assert!(!refreshed.is_fresh(), "10 s left is within the margin");
        assert_eq!(refreshed.refresh_token.as_deref(), Some("r"));
    }

    #[test]
    fn logins_are_kept_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(Some(dir.path()));
        let s = Session::from_answer("me", &json!({"access_token": "a", "expires_in": 600}), None).unwrap();
        store.put("http://a", &s).unwrap();
        assert_eq!(store.get("http://a"), Some(s));
        assert_eq!(store.get("http://b"), None);
        assert!(store.remove("http://a").unwrap());
        assert!(!store.remove("http://a").unwrap());
        assert!(SessionStore::new(None).get("http://a").is_none());
    }
}
