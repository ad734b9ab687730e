//! Resolves a reservation's `ssh_keys`: inline public keys are taken as they are; `lp:<user>`
//! and `gh:<user>` are fetched from the configured key servers (Launchpad and GitHub by
//! default; tests and air-gapped labs point them elsewhere).

use std::collections::BTreeMap;
use std::time::Duration;

pub fn default_key_servers() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "lp".to_owned(),
            "https://launchpad.net/~{user}/+sshkeys".to_owned(),
        ),
        ("gh".to_owned(), "https://github.com/{user}.keys".to_owned()),
    ])
}

const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-",
    "sk-ssh-ed25519",
    "sk-ecdsa-sha2-",
];

fn is_public_key(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    matches!((parts.next(), parts.next()), (Some(kind), Some(_)) if KEY_TYPES.iter().any(|t| kind.starts_with(t)))
}

/// The public keys for `entries`, one per line, or why they could not all be resolved.
pub async fn resolve(entries: &[String], servers: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    // reqwest is built without a default TLS provider; installing one twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if is_public_key(entry) {
            keys.push(entry.to_owned());
            continue;
        }
        let Some((scheme, user)) = entry.split_once(':').filter(|(_, u)| !u.is_empty()) else {
            return Err(format!("{entry:?} is neither a public key nor an lp:/gh: id"));
        };
        let Some(template) = servers.get(scheme) else {
            return Err(format!("{entry:?}: no key server for {scheme:?}"));
        };
        if !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("{entry:?}: not a valid user name"));
        }
        let url = template.replace("{user}", user);
        let body = async { http.get(&url).send().await?.error_for_status()?.text().await }
            .await
            .map_err(|e| format!("{entry}: cannot fetch {url}: {e}"))?;
        let found: Vec<String> = body
            .lines()
            .map(str::trim)
            .filter(|l| is_public_key(l))
            .map(str::to_owned)
            .collect();
        if found.is_empty() {
            return Err(format!("{entry}: {url} lists no public keys"));
        }
        keys.extend(found);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_keys_are_taken_as_they_are_and_garbage_is_refused() {
        let keys = resolve(&["ssh-ed25519 AAAAC3Nza me@host".into()], &default_key_servers())
            .await
            .unwrap();
        assert_eq!(keys, vec!["ssh-ed25519 AAAAC3Nza me@host"]);
        assert!(
            resolve(&["not a key".into()], &default_key_servers())
                .await
                .is_err()
        );
        assert!(
            resolve(&["xx:user".into()], &default_key_servers())
                .await
                .is_err()
        );
        assert!(
            resolve(&["lp:bad/user".into()], &default_key_servers())
                .await
                .is_err()
        );
    }
}
