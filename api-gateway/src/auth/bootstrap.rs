//! The first admin. There is no built-in account: an admin comes from the gateway's
//! configuration (`--admin-client-id` and `--admin-secret`, applied at every start, so that
//! changing the secret in the configuration rotates it) or from `flinger-gateway create-client`,
//! which writes a client straight into the store.

use super::password;
use broker_schema::Millis;
use flinger_store::{ClientRecord, DynStore, Records, Role, StoreResult};
use tracing::info;

/// Whether `id` can be a client id: it appears in paths and secret ids, so it is kept to
/// letters, digits and `_ . @ -`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Creates the client with `role` and `secret`, or gives an existing one that role and secret
/// (keeping its limits and email). Returns whether it was created.
pub async fn upsert_client(store: &DynStore, client_id: &str, role: Role, secret: &str) -> StoreResult<bool> {
    let hash = password::hash(secret.to_owned()).await;
    let now = Millis::now();
    let client = match store.get_client(client_id).await? {
        Some(mut c) => {
            c.role = role;
            c.secret_hash = Some(hash);
            c.updated_at = now;
            c
        }
        None => ClientRecord {
            client_id: client_id.to_owned(),
            secret_hash: Some(hash),
            role,
            max_priority: Default::default(),
            max_reservation_time: Default::default(),
            email: None,
            created_at: now,
            updated_at: now,
        },
    };
    let created = store.put_client(&client).await?;
    info!(client_id, %role, created, "client credentials set");
    Ok(created)
}

/// Why the configured admin cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--admin-client-id {0:?} is not a valid client id (letters, digits, _ . @ -)")]
    BadId(String),
    #[error("--admin-client-id needs --admin-secret (FLINGER_ADMIN_SECRET)")]
    NoSecret,
    #[error("the admin secret must be at least {} characters", password::MIN_SECRET_LEN)]
    ShortSecret,
    #[error(transparent)]
    Store(#[from] flinger_store::StoreError),
}

/// Applies the configured admin, if any.
pub async fn ensure_admin(
    store: &DynStore,
    client_id: Option<&str>,
    secret: Option<&str>,
) -> Result<(), BootstrapError> {
    let Some(id) = client_id else { return Ok(()) };
    if !valid_client_id(id) {
        return Err(BootstrapError::BadId(id.to_owned()));
    }
    let secret = secret.filter(|s| !s.is_empty()).ok_or(BootstrapError::NoSecret)?;
    if secret.chars().count() < password::MIN_SECRET_LEN {
        return Err(BootstrapError::ShortSecret);
    }
    upsert_client(store, id, Role::Admin, secret).await?;
    Ok(())
}
