//! Clients' secrets sealed at rest.
//!
//! With a secrets key (`--secrets-key`, `FLINGER_SECRETS_KEY`, the same on every gateway and
//! scheduler of a lab), the gateway stores each value as
//! `enc:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`: ChaCha20-Poly1305 under a key derived from the
//! passphrase with HKDF-SHA256, with the secret's id (client and path, [`secret_id`]) as
//! associated data, so a sealed value cannot be moved to another client or path. Without a key,
//! values are stored as given (and the services say so at start). Values stored before a key was
//! set still read. The scheduler unseals them when it resolves a job's secrets for its lease.
//!
//! Rotating the key loses no secret: the services are given the new key and, as *previous*
//! keys, the old ones ([`SecretsKey::with_previous`]); they seal with the new key and open with
//! any. `flinger-scheduler rotate-secrets-key` then seals every stored secret again under the
//! new key ([`reseal`]), after which the previous keys can be dropped (docs/operations.md).
//!
//! [`secret_id`]: crate::secret_id

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

/// The prefix of a sealed value.
const SEALED: &str = "enc:v1:";
/// The shortest passphrase taken.
pub const MIN_KEY_CHARS: usize = 16;

/// The key secrets are sealed with, and the keys it replaced (tried in turn when opening).
pub struct SecretsKey {
    current: LessSafeKey,
    previous: Vec<LessSafeKey>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the secret is sealed and no secrets key is configured")]
    NoKey,
    #[error("the secret cannot be unsealed (another key, or altered)")]
    Unsealable,
}

impl SecretsKey {
    /// Derives the key from a passphrase of at least [`MIN_KEY_CHARS`] characters.
    pub fn from_passphrase(passphrase: &str) -> Result<SecretsKey, String> {
        Ok(SecretsKey {
            current: derive(passphrase)?,
            previous: vec![],
        })
    }

    /// This key, also opening what was sealed under the keys derived from `previous` (a key
    /// being rotated out).
    pub fn with_previous<'a>(
        mut self,
        previous: impl IntoIterator<Item = &'a str>,
    ) -> Result<SecretsKey, String> {
        for p in previous {
            self.previous.push(derive(p)?);
        }
        Ok(self)
    }

    /// Seals `value` for the secret `id` (see [`secret_id`]).
    pub fn seal(&self, id: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .expect("the operating system's random numbers");
        let mut sealed = value.as_bytes().to_vec();
        self.current
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut sealed,
            )
            .expect("a secret fits ChaCha20-Poly1305's limits");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The value, and whether it was sealed under the current key.
    fn open(&self, id: &str, body: &str) -> Result<(String, bool), SealError> {
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Unsealable)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Unsealable);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        for (i, key) in std::iter::once(&self.current).chain(&self.previous).enumerate() {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unsealable)?;
            let mut rest = rest.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(id.as_bytes()), &mut rest) {
                let value = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Unsealable)?;
                return Ok((value, i == 0));
            }
        }
        Err(SealError::Unsealable)
    }
}

fn derive(passphrase: &str) -> Result<LessSafeKey, String> {
    if passphrase.chars().count() < MIN_KEY_CHARS {
        return Err(format!("a secrets key needs at least {MIN_KEY_CHARS} characters"));
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"flinger secrets").extract(passphrase.as_bytes());
    let okm = prk
        .expand(&[b"chacha20-poly1305 v1"], &CHACHA20_POLY1305)
        .map_err(|_| "cannot derive the secrets key".to_owned())?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// What a client wrote: the stored value, sealed when there is a key.
pub fn seal(key: Option<&SecretsKey>, id: &str, value: &str) -> String {
    match key {
        Some(k) => k.seal(id, value),
        None => value.to_owned(),
    }
}

/// The value a stored secret holds: unsealed, or as stored when it was never sealed.
pub fn reveal(key: Option<&SecretsKey>, id: &str, stored: &str) -> Result<String, SealError> {
    match (stored.strip_prefix(SEALED), key) {
        (None, _) => Ok(stored.to_owned()),
        (Some(_), None) => Err(SealError::NoKey),
        (Some(body), Some(k)) => k.open(id, body).map(|(value, _)| value),
    }
}

/// What rotation stores instead of `stored`: the value sealed under the current key, or `None`
/// when it already is. A value stored unsealed is sealed too.
pub fn reseal(key: &SecretsKey, id: &str, stored: &str) -> Result<Option<String>, SealError> {
    match stored.strip_prefix(SEALED) {
        None => Ok(Some(key.seal(id, stored))),
        Some(body) => match key.open(id, body)? {
            (_, true) => Ok(None),
            (value, false) => Ok(Some(key.seal(id, &value))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_id;

    fn key(p: &str) -> SecretsKey {
        SecretsKey::from_passphrase(p).unwrap()
    }

    #[test]
    fn a_sealed_secret_reads_back_only_with_its_key_and_its_id() {
        let k = key("correct horse battery staple");
        let id = secret_id("alice", "ci/token");
        let stored = seal(Some(&k), &id, "s3cr3t-Value");
        assert!(
            stored.starts_with(SEALED) && !stored.contains("s3cr3t"),
            "{stored}"
        );
        assert_eq!(reveal(Some(&k), &id, &stored).unwrap(), "s3cr3t-Value");
        // Each sealing has its own nonce.
        assert_ne!(seal(Some(&k), &id, "s3cr3t-Value"), stored);
        // Moved to another client or path, or under another key, it does not open.
        let other_id = secret_id("mallory", "ci/token");
        assert_eq!(reveal(Some(&k), &other_id, &stored), Err(SealError::Unsealable));
        let other = key("another passphrase entirely");
        assert_eq!(reveal(Some(&other), &id, &stored), Err(SealError::Unsealable));
        assert_eq!(reveal(None, &id, &stored), Err(SealError::NoKey));
        // Altered, it does not open.
        let mut altered = stored.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(reveal(Some(&k), &id, &altered), Err(SealError::Unsealable));
        assert_eq!(reveal(Some(&k), &id, "enc:v1:"), Err(SealError::Unsealable));
    }

    #[test]
    fn values_stored_before_a_key_was_set_still_read() {
        let k = key("correct horse battery staple");
        assert_eq!(reveal(Some(&k), "alice/x", "plain").unwrap(), "plain");
        assert_eq!(reveal(None, "alice/x", "plain").unwrap(), "plain");
        assert_eq!(seal(None, "alice/x", "plain"), "plain");
    }

    #[test]
    fn a_rotated_key_opens_what_its_previous_keys_sealed_and_reseals_it() {
        let old = key("the old passphrase of the lab");
        let id = secret_id("alice", "ci/token");
        let stored = seal(Some(&old), &id, "v");
        let new = key("the new passphrase of the lab")
            .with_previous(["the old passphrase of the lab"])
            .unwrap();
        assert_eq!(reveal(Some(&new), &id, &stored).unwrap(), "v");
        let resealed = reseal(&new, &id, &stored).unwrap().expect("sealed again");
        assert_eq!(reseal(&new, &id, &resealed).unwrap(), None, "already current");
        // Without the previous key, only the resealed value opens.
        let only_new = key("the new passphrase of the lab");
        assert_eq!(reveal(Some(&only_new), &id, &resealed).unwrap(), "v");
        assert_eq!(reveal(Some(&only_new), &id, &stored), Err(SealError::Unsealable));
        // Unsealed values are sealed; values no key opens are reported, not replaced.
        assert!(reseal(&new, &id, "plain").unwrap().unwrap().starts_with(SEALED));
        let stranger = seal(Some(&key("nobody's passphrase here")), &id, "v");
        assert_eq!(reseal(&new, &id, &stranger), Err(SealError::Unsealable));
    }

    #[test]
    fn a_short_passphrase_is_refused() {
        assert!(SecretsKey::from_passphrase("short").is_err());
    }
}
