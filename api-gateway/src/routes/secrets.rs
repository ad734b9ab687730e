//! Write-only secrets: a logged-in client stores values under paths of its own; jobs it submits
//! name them in `test_data.secrets`, and only the scheduler reads them, when it leases the job.
//! No endpoint returns a value, and values are never logged.

use crate::auth::{Caller, access};
use crate::error::ApiError;
use crate::extract::Body;
use crate::state::AppState;
use crate::validate;
use crate::views;
use axum::extract::{Path, State};
use axum::routing::put;
use axum::{Json, Router};
use broker_schema::job::is_secret_path;
use broker_schema::{Millis, ValidationErrors};
use flinger_api::{SecretIn, SecretWritten};
use flinger_store::sealing as secrets;
use flinger_store::{Records, SecretRecord, secret_id};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/secrets/{client_id}/{*path}",
        put(put_secret).delete(delete_secret),
    )
}

/// The caller must be the client the path belongs to; the path must be a valid secret path.
fn check_owner(caller: &Caller, client_id: &str, path: &str) -> Result<(), ApiError> {
    caller.require(access::SUBMITTER)?;
    let me = caller.require_client("to securely store information.")?;
    if me.client_id != client_id {
        return Err(ApiError::Forbidden(format!(
            "'{client_id}' doesn't match authenticated client id"
        )));
    }
    if !is_secret_path(path) {
        let mut errors = ValidationErrors::default();
        errors.add("path", "Not a valid secret path (letters, digits, _, -, /).");
        return Err(ApiError::invalid_fields(errors));
    }
    Ok(())
}

/// `PUT /v1/secrets/<client_id>/<path>` `{value, expire_after?, ephemeral?}` →
/// `{"expires_at": datetime or null}`. Without `expire_after` the secret lives the lab's default
/// lifetime; `expire_after: null` keeps it until deleted; an `ephemeral` (single-use) secret is
/// deleted as the first job naming it is given it, and otherwise lives the default lifetime.
#[utoipa::path(
    put,
    path = "/v1/secrets/{client_id}/{path}",
    tag = "auth",
    summary = "Write one of your secrets (write-only; path may contain /)",
    security(("bearer" = ["admin", "manager", "contributor"])),
    request_body = flinger_api::SecretIn,
    responses(
        (status = 200, body = flinger_api::SecretWritten),
    )
)]
async fn put_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((client_id, path)): Path<(String, String)>,
    Body(body): Body,
) -> Result<Json<SecretWritten>, ApiError> {
    check_owner(&caller, &client_id, &path)?;
    let SecretIn {
        value,
        expire_after,
        ephemeral,
    } = validate::body(&body)?;
    let single_use = ephemeral.unwrap_or(false);
    // What one field's schema cannot say: the two ways to expire exclude each other.
    if single_use && expire_after.flatten().is_some() {
        return Err(ApiError::invalid_field(
            "_schema",
            "Provide either 'ephemeral' or 'expire_after', not both.",
        ));
    }
    let lifetime = match expire_after {
        None => state.limits().secret_lifetime,
        Some(seconds) => seconds.map(Duration::from_secs),
    };
    let now = Millis::now();
    let expires_at = lifetime.map(|d| now.plus(d));
    let record = SecretRecord {
        value: secrets::seal(state.secrets_key(), &secret_id(&client_id, &path), &value),
        written_at: now,
        expires_at,
        single_use,
    };
    state.store().put_secret(&client_id, &path, &record).await?;
    tracing::info!(client_id, path, single_use, expires_at = ?expires_at, "secret written");
    Ok(Json(SecretWritten {
        expires_at: expires_at.map(views::time),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{client_id}/{path}",
    tag = "auth",
    summary = "Delete one of your secrets",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((client_id, path)): Path<(String, String)>,
) -> Result<&'static str, ApiError> {
    check_owner(&caller, &client_id, &path)?;
    if !state.store().delete_secret(&client_id, &path).await? {
        return Err(ApiError::NotFound(format!("No secret at '{path}'")));
    }
    tracing::info!(client_id, path, "secret deleted");
    Ok("OK")
}
