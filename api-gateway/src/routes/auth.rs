//! OAuth2 client credentials, Testflinger style: HTTP Basic `client_id:secret` for an access
//! token and a refresh token; refresh (the refresh token is not rotated); revoke (admins).

use crate::auth::security::{self, How, Peer};
use crate::auth::{Caller, Permissions, access, password, token};
use crate::error::ApiError;
use crate::extract::Body;
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use broker_schema::Millis;
use flinger_api::{RefreshToken, Status, Token};
use flinger_store::{ClientRecord, Records, RefreshTokenRecord, Revoked, Role};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/oauth2/token", post(issue))
        .route("/v1/oauth2/refresh", post(refresh))
        .route("/v1/oauth2/revoke", post(revoke))
}

/// The permissions a client's tokens carry, with the restricted queues it owns.
pub async fn permissions_of(state: &AppState, client: &ClientRecord) -> Result<Permissions, ApiError> {
    let owned = state
        .store()
        .list_restricted_queues()
        .await?
        .into_iter()
        .filter(|(_, r)| r.owners.contains(&client.client_id))
        .map(|(q, _)| q)
        .collect();
    Ok(Permissions::of(client, owned))
}

fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("No authorization header specified".into()))?;
    let incomplete =
        || ApiError::Unauthorized("Client id and key must be specified in authorization header".into());
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .ok_or_else(incomplete)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(incomplete)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(incomplete)?;
    if id.is_empty() || secret.is_empty() {
        return Err(incomplete());
    }
    Ok((id.to_owned(), secret.to_owned()))
}

fn now_secs() -> i64 {
    Millis::now().0 / 1000
}

/// `POST /v1/oauth2/token` with HTTP Basic credentials: `{access_token, token_type: "Bearer",
/// expires_in, refresh_token}`; 401 for missing or wrong credentials.
#[utoipa::path(
    post,
    path = "/v1/oauth2/token",
    tag = "auth",
    summary = "HTTP Basic client credentials for an access token and a refresh token",
    responses(
        (status = 200, body = flinger_api::Token),
        (status = 401, body = flinger_api::Error),
    )
)]
async fn issue(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Token>, ApiError> {
    let (client_id, secret) = basic_credentials(&headers)?;
    let client = state.store().get_client(&client_id).await?;
    let stored_hash = client.as_ref().and_then(|c| c.secret_hash.clone());
    if !password::verify(secret, stored_hash).await {
        security::refused(
            &peer,
            How::ClientCredentials,
            Some(&client_id),
            "unknown client or wrong secret",
        );
        return Err(ApiError::Unauthorized("Invalid client id or client key".into()));
    }
    let client = client.expect("verified against a stored hash");
    let permissions = permissions_of(&state, &client).await?;
    security::signed_in(&peer, How::ClientCredentials, &client.client_id, permissions.role);
    Ok(Json(issue_tokens(&state, &permissions, None).await?))
}

/// A login's tokens for `permissions`: a short-lived access token, and a refresh token kept in
/// the store (as its hash) until it expires or is revoked. `claimed_role`: the role a single
/// sign-on's claim gave, kept with the refresh token.
pub async fn issue_tokens(
    state: &AppState,
    permissions: &Permissions,
    claimed_role: Option<Role>,
) -> Result<Token, ApiError> {
    let tokens = &state.auth().tokens;
    let access_token = tokens.issue(permissions, now_secs());
    let refresh_token = token::new_refresh_token();
    let now = Millis::now();
    state
        .store()
        .insert_refresh_token(
            &token::refresh_token_hash(&refresh_token),
            &RefreshTokenRecord {
                client_id: permissions.client_id.clone(),
                issued_at: now,
                expires_at: Some(now.plus(tokens.refresh_ttl)),
                revoked: false,
                claimed_role,
            },
        )
        .await?;
    Ok(Token {
        access_token,
        token_type: "Bearer".into(),
        expires_in: tokens.access_ttl.as_secs(),
        refresh_token: Some(refresh_token),
    })
}

/// The `refresh_token` of a body (422 naming it when missing, empty or not a string).
fn refresh_token_field(body: &[u8]) -> Result<String, ApiError> {
    Ok(validate::body::<RefreshToken>(body)?.refresh_token)
}

/// `POST /v1/oauth2/refresh` `{refresh_token}`: a new access token (400 when the refresh token is
/// unknown, revoked or expired, or its client is gone).
#[utoipa::path(
    post,
    path = "/v1/oauth2/refresh",
    tag = "auth",
    summary = "A new access token for a refresh token",
    request_body = flinger_api::RefreshToken,
    responses(
        (status = 200, body = flinger_api::Token),
        (status = 400, body = flinger_api::Error),
    )
)]
async fn refresh(State(state): State<AppState>, Body(body): Body) -> Result<Json<Token>, ApiError> {
    let presented = refresh_token_field(&body)?;
    let record = state
        .store()
        .get_refresh_token(&token::refresh_token_hash(&presented))
        .await?
        .ok_or_else(|| ApiError::BadRequest("Invalid refresh token.".into()))?;
    if record.revoked {
        return Err(ApiError::BadRequest("Refresh token revoked.".into()));
    }
    if record.expires_at.is_some_and(|t| t < Millis::now()) {
        return Err(ApiError::BadRequest("Refresh token expired".into()));
    }
    let client = state
        .store()
        .get_client(&record.client_id)
        .await?
        .ok_or_else(|| ApiError::BadRequest("Invalid refresh token.".into()))?;
    let mut permissions = permissions_of(&state, &client).await?;
    if let Some(claimed) = record.claimed_role {
        permissions.role = permissions.role.max(claimed);
    }
    let tokens = &state.auth().tokens;
    Ok(Json(Token {
        access_token: tokens.issue(&permissions, now_secs()),
        token_type: "Bearer".into(),
        expires_in: tokens.access_ttl.as_secs(),
        refresh_token: None,
    }))
}

/// `POST /v1/oauth2/revoke` `{refresh_token}` (admins): `{"status": "OK"}`.
#[utoipa::path(
    post,
    path = "/v1/oauth2/revoke",
    tag = "auth",
    summary = "Revoke a refresh token",
    security(("bearer" = ["admin"])),
    request_body = flinger_api::RefreshToken,
    responses(
        (status = 200, body = flinger_api::Status),
        (status = 400, body = flinger_api::Error),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    Body(body): Body,
) -> Result<Json<Status>, ApiError> {
    caller.require(access::ADMIN)?;
    let presented = refresh_token_field(&body)?;
    match state
        .store()
        .revoke_refresh_token(&token::refresh_token_hash(&presented))
        .await?
    {
        Revoked::Now => {
            let by = caller.client_id().unwrap_or("?");
            security::changed(&peer, "refresh_token_revoked", by, "", "one refresh token");
            Ok(Json(Status::ok()))
        }
        Revoked::Already => Err(ApiError::BadRequest(
            "Refresh token has already been revoked".into(),
        )),
        Revoked::Unknown => Err(ApiError::BadRequest("Refresh token not found".into())),
    }
}
