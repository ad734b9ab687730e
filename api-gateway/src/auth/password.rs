//! Client secrets, hashed with Argon2id (PHC strings) off the async runtime.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::OnceLock;

/// Shortest client secret accepted (Testflinger's rule).
pub const MIN_SECRET_LEN: usize = 15;

fn hash_now(secret: &str) -> String {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the OS random source is available");
    let salt = SaltString::encode_b64(&random).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any input")
        .to_string()
}

/// Hashes a secret for storage.
pub async fn hash(secret: String) -> String {
    tokio::task::spawn_blocking(move || hash_now(&secret))
        .await
        .expect("hashing does not panic")
}

/// Whether `secret` matches `stored`. With no stored hash (unknown client) a dummy hash is
/// checked anyway, so that the answer takes as long either way and does not tell which client
/// ids exist.
pub async fn verify(secret: String, stored: Option<String>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY.get_or_init(|| hash_now("not a real secret")).clone());
        let ok = PasswordHash::new(&hash)
            .map(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_secret_only() {
        let h = hash("correct horse battery staple".into()).await;
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery staple".into(), Some(h.clone())).await);
        assert!(!verify("wrong".into(), Some(h)).await);
        assert!(!verify("not a real secret".into(), None).await);
    }
}
