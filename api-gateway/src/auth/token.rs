//! Access tokens (HS256 JWTs carrying Testflinger's `permissions` claim) and refresh tokens
//! (random strings, stored only as their SHA-256).

use base64::Engine;
use flinger_store::{ClientRecord, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `sub` of every access token (Testflinger's value).
pub const ACCESS_TOKEN_SUBJECT: &str = "access_token";

/// What a client may do, as Testflinger's clients read it from the token (without verifying it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub client_id: String,
    pub role: Role,
    #[serde(default)]
    pub max_priority: BTreeMap<String, u32>,
    /// The restricted queues this client owns.
    #[serde(default)]
    pub allowed_queues: Vec<String>,
    #[serde(default)]
    pub max_reservation_time: BTreeMap<String, u64>,
}

impl Permissions {
    pub fn of(client: &ClientRecord, allowed_queues: Vec<String>) -> Permissions {
        Permissions {
            client_id: client.client_id.clone(),
            role: client.role,
            max_priority: client.max_priority.clone(),
            allowed_queues,
            max_reservation_time: client.max_reservation_time.clone(),
        }
    }

    /// The highest priority this client may give a job of `queue`: its `*` or the queue's
    /// entry, whichever is higher (Testflinger's rule).
    pub fn max_priority_for(&self, queue: &str) -> u32 {
        let star = self.max_priority.get("*").copied().unwrap_or(0);
        star.max(self.max_priority.get(queue).copied().unwrap_or(0))
    }

    /// The longest reservation, in seconds, this client may ask for on `queue` beyond the
    /// unprivileged limit.
    pub fn max_reservation_for(&self, queue: &str) -> u64 {
        let star = self.max_reservation_time.get("*").copied().unwrap_or(0);
        star.max(self.max_reservation_time.get(queue).copied().unwrap_or(0))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub exp: i64,
    pub iat: i64,
    pub sub: String,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Token has expired")]
    Expired,
    #[error("Invalid Token")]
    Invalid,
}

/// Issues and verifies access tokens with the lab's signing key.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(signing_key: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        validation.leeway = 5;
        Tokens {
            encoding: EncodingKey::from_secret(signing_key),
            decoding: DecodingKey::from_secret(signing_key),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// An access token for `permissions`, valid from `now_secs` for the access TTL.
    pub fn issue(&self, permissions: &Permissions, now_secs: i64) -> String {
        let claims = Claims {
            exp: now_secs + self.access_ttl.as_secs() as i64,
            iat: now_secs,
            sub: ACCESS_TOKEN_SUBJECT.to_owned(),
            permissions: permissions.clone(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.sub == ACCESS_TOKEN_SUBJECT => Ok(data.claims),
            Ok(_) => Err(TokenError::Invalid),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

/// A fresh refresh token: 48 random bytes, URL-safe base64 (64 characters).
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Random bytes for a signing key made up at start.
pub fn random_key() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

/// What the store keeps of a refresh token: its SHA-256, hex. Tokens are 384 random bits, so a
/// fast hash is enough (nothing to brute-force).
pub fn refresh_token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms() -> Permissions {
        Permissions {
            client_id: "ci".into(),
            role: Role::Contributor,
            max_priority: BTreeMap::from([("*".into(), 5), ("rpi4b".into(), 50)]),
            allowed_queues: vec![],
            max_reservation_time: BTreeMap::new(),
        }
    }

    #[test]
    fn a_token_round_trips_and_a_tampered_one_is_invalid() {
        let t = Tokens::new(b"key", Duration::from_secs(600), Duration::from_secs(60));
        let now = 1_700_000_000_i64.max(time::OffsetDateTime::now_utc().unix_timestamp());
        let token = t.issue(&perms(), now);
        assert_eq!(t.verify(&token).unwrap().permissions, perms());
        let other = Tokens::new(b"other key", Duration::from_secs(600), Duration::from_secs(60));
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'x');
        assert_eq!(t.verify(&tampered), Err(TokenError::Invalid));
    }

    #[test]
    fn an_old_token_has_expired() {
        let t = Tokens::new(b"key", Duration::from_secs(600), Duration::from_secs(60));
        let token = t.issue(&perms(), time::OffsetDateTime::now_utc().unix_timestamp() - 3600);
        assert_eq!(t.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn priority_limits_take_the_higher_of_star_and_queue() {
        let p = perms();
        assert_eq!(p.max_priority_for("rpi4b"), 50);
        assert_eq!(p.max_priority_for("other"), 5);
    }

    #[test]
    fn refresh_tokens_are_long_random_and_hashed() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(refresh_token_hash(&a).len(), 64);
        assert_ne!(refresh_token_hash(&a), refresh_token_hash(&b));
    }
}
