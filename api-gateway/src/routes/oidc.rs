//! Testflinger's single sign-on for the CLI: a device login through the gateway.
//!
//! `POST /oidc/auth-init` asks the lab's identity provider for a device login and answers where
//! the person goes and the code they enter, with a `request_id`; the device code stays in the
//! store (a [`SignOnFlow::Device`] under the request id's hash), so any gateway answers the
//! polls. `POST /oidc/auth-poll/<request_id>` asks the provider once per poll: 400
//! `{"error": "authorization_pending"}` (or `slow_down` with `Retry-After`, `access_denied`,
//! `expired_token`) until the person approves, then the lab's own access and refresh tokens, as
//! `/v1/oauth2/token` gives them. The request is taken from the store before the tokens are
//! issued, atomically: a request id serves one login, whatever gateway a replay reaches.
//!
//! The person becomes (or is) the client whose id is their e-mail address: a `contributor`
//! unless an admin gave it more (`flinger admin set client-permissions`) or the role claim maps
//! higher ([`person`], which the web UI's sign-in uses too). Without `--oidc-issuer` none of
//! these routes exists and every `/oidc` path answers 404, which Testflinger's CLI reads as "no
//! single sign-on here".

use crate::auth::oidc::{DeviceOutcome, Identity};
use crate::auth::security::{self, How, Peer};
use crate::auth::{Permissions, token};
use crate::error::ApiError;
use crate::routes::auth::{issue_tokens, permissions_of};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use broker_schema::Millis;
use flinger_api::{DeviceLogin, DeviceLoginCode as Say, DeviceLoginError};
use flinger_store::{ClientRecord, DevicePoll, PendingSignOnRecord, Records, SignOnFlow};
use openidconnect::DeviceCodeErrorResponseType as Code;
use openidconnect::core::CoreErrorResponseType as Basic;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/oidc/auth-init", post(auth_init))
        .route("/oidc/auth-poll/{request_id}", post(auth_poll))
        .route("/oidc", any(crate::routes::health::oidc))
        .route("/oidc/{*rest}", any(crate::routes::health::oidc))
}

/// How long a polling CLI is asked to wait on `slow_down` (Testflinger's value).
const SLOW_DOWN_SECS: u64 = 5;

/// `POST /oidc/auth-init`: a device login started at the provider.
#[utoipa::path(
    post,
    path = "/oidc/auth-init",
    tag = "auth",
    summary = "Single sign-on for the CLI: start a device login at the lab's identity provider (404 when the lab has none)",
    responses(
        (status = 200, body = flinger_api::DeviceLogin),
        (status = 404, body = flinger_api::Error,
            description = "The lab has no single sign-on: Testflinger's CLI then goes on without it"),
        (status = 503, body = flinger_api::Error,
            description = "The identity provider did not answer, or offers no device login"),
    )
)]
pub(crate) async fn auth_init(State(state): State<AppState>) -> Result<Json<DeviceLogin>, ApiError> {
    let oidc = state
        .oidc()
        .ok_or_else(|| ApiError::NotFound("OIDC is not configured".into()))?;
    let start = oidc.start_device().await?;
    let request_id = token::new_refresh_token();
    let now = Millis::now();
    let interval = start.interval.as_secs().max(1);
    state
        .store()
        .insert_pending_sign_on(
            &token::refresh_token_hash(&request_id),
            &PendingSignOnRecord {
                flow: SignOnFlow::Device {
                    device_code: start.device_code,
                    interval_secs: interval,
                    next_poll_at: now,
                },
                expires_at: now.plus(start.expires_in),
            },
        )
        .await?;
    Ok(Json(DeviceLogin {
        request_id,
        user_code: start.user_code,
        verification_uri: start.verification_uri,
        verification_uri_complete: start.verification_uri_complete,
        expires_in: start.expires_in.as_secs(),
        interval,
    }))
}

/// A poll's 400, in RFC 8628's words.
fn not_yet(error: Say, message: Option<String>, retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        Json(DeviceLoginError {
            error: error.as_str().to_owned(),
            message,
        }),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `POST /oidc/auth-poll/<request_id>`: the lab's tokens once the person approved.
#[utoipa::path(
    post,
    path = "/oidc/auth-poll/{request_id}",
    tag = "auth",
    summary = "Single sign-on for the CLI: poll a device login; the lab's tokens once the person approved",
    responses(
        (status = 200, body = flinger_api::Token,
            description = "The person approved: the lab's tokens for the client named by their e-mail"),
        (status = 400, body = flinger_api::DeviceLoginError,
            description = "Not signed in (yet): `error` says why, RFC 8628's way",
            headers(("Retry-After" = u64, description = "With `slow_down`: seconds to wait before polling again"))),
        (status = 404, body = flinger_api::Error,
            description = "The lab has no single sign-on"),
        (status = 503, body = flinger_api::Error,
            description = "The identity provider did not answer"),
    )
)]
pub(crate) async fn auth_poll(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
    peer: Peer,
) -> Result<Response, ApiError> {
    let oidc = state
        .oidc()
        .ok_or_else(|| ApiError::NotFound("OIDC is not configured".into()))?;
    let id = token::refresh_token_hash(&request_id);
    let device_code = match state.store().claim_device_poll(&id, Millis::now()).await? {
        DevicePoll::Ask { device_code } => device_code,
        DevicePoll::TooSoon { retry_after_secs } => {
            return Ok(not_yet(Say::SlowDown, None, Some(retry_after_secs)));
        }
        DevicePoll::Expired => {
            security::refused(&peer, How::OidcDevice, None, "device login expired");
            return Ok(not_yet(
                Say::ExpiredToken,
                Some("The login expired: start again.".into()),
                None,
            ));
        }
        DevicePoll::Unknown => {
            security::refused(
                &peer,
                How::OidcDevice,
                None,
                "unknown, used or expired request_id (replay?)",
            );
            return Ok(not_yet(
                Say::InvalidGrant,
                Some("Invalid or expired request_id".into()),
                None,
            ));
        }
    };
    let identity = match oidc.poll_device(&device_code).await {
        Ok(DeviceOutcome::Approved(identity)) => identity,
        Ok(DeviceOutcome::NotYet(Code::AuthorizationPending)) => {
            return Ok(not_yet(Say::AuthorizationPending, None, None));
        }
        Ok(DeviceOutcome::NotYet(Code::SlowDown)) => {
            return Ok(not_yet(Say::SlowDown, None, Some(SLOW_DOWN_SECS)));
        }
        Ok(DeviceOutcome::NotYet(code)) => {
            // Denied, expired or refused for good: this login is over.
            state.store().take_pending_sign_on(&id, Millis::now()).await?;
            security::refused(&peer, How::OidcDevice, None, &format!("the provider said {code}"));
            let (say, message) = match provider_code(&code) {
                Some(say) => (say, None),
                None => (
                    Say::AccessDenied,
                    Some(format!("The identity provider said {code}")),
                ),
            };
            return Ok(not_yet(say, message, None));
        }
        Err(crate::auth::oidc::OidcError::Refused(reason)) => {
            state.store().take_pending_sign_on(&id, Millis::now()).await?;
            security::refused(&peer, How::OidcDevice, None, &reason);
            return Ok(not_yet(
                Say::AccessDenied,
                Some(format!("Sign-in refused: {reason}")),
                None,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Whoever takes the request issues the tokens; a replay (or a race) finds nothing.
    if state
        .store()
        .take_pending_sign_on(&id, Millis::now())
        .await?
        .is_none()
    {
        security::refused(
            &peer,
            How::OidcDevice,
            Some(&identity.email),
            "request_id already used",
        );
        return Ok(not_yet(
            Say::InvalidGrant,
            Some("Invalid or expired request_id".into()),
            None,
        ));
    }
    let permissions = person(&state, &identity, &peer).await?;
    security::signed_in(&peer, How::OidcDevice, &identity.email, permissions.role);
    let tokens = issue_tokens(&state, &permissions, identity.claimed_role).await?;
    Ok(Json(tokens).into_response())
}

/// The provider's answer to a device login's poll, in the words the API documents
/// ([`Say`]); `None` for a code of an extension the API does not know (the poll then says
/// `access_denied`).
fn provider_code(code: &Code) -> Option<Say> {
    Some(match code {
        Code::AuthorizationPending => Say::AuthorizationPending,
        Code::SlowDown => Say::SlowDown,
        Code::AccessDenied => Say::AccessDenied,
        Code::ExpiredToken => Say::ExpiredToken,
        Code::Basic(Basic::InvalidGrant) => Say::InvalidGrant,
        Code::Basic(Basic::InvalidRequest) => Say::InvalidRequest,
        Code::Basic(Basic::InvalidClient) => Say::InvalidClient,
        Code::Basic(Basic::UnauthorizedClient) => Say::UnauthorizedClient,
        Code::Basic(Basic::UnsupportedGrantType) => Say::UnsupportedGrantType,
        Code::Basic(Basic::InvalidScope) => Say::InvalidScope,
        Code::Basic(Basic::Extension(_)) => return None,
    })
}

/// The permissions of a person who signed on: their client (created as a `contributor` the
/// first time, keyed by e-mail, without a secret) with at least the role their claim maps to.
pub async fn person(state: &AppState, identity: &Identity, peer: &Peer) -> Result<Permissions, ApiError> {
    let store = state.store();
    let client = match store.get_client(&identity.email).await? {
        Some(c) => c,
        None => {
            let now = Millis::now();
            let client = ClientRecord {
                client_id: identity.email.clone(),
                secret_hash: None,
                role: flinger_store::Role::Contributor,
                max_priority: Default::default(),
                max_reservation_time: Default::default(),
                email: Some(identity.email.clone()),
                created_at: now,
                updated_at: now,
            };
            if store.put_client(&client).await? {
                security::changed(
                    peer,
                    "client_created",
                    &identity.email,
                    &identity.email,
                    "by single sign-on, as contributor",
                );
            }
            client
        }
    };
    let mut permissions = permissions_of(state, &client).await?;
    if let Some(claimed) = identity.claimed_role
        && claimed > permissions.role
    {
        security::changed(
            peer,
            "role_from_claim",
            &identity.email,
            &identity.email,
            &format!("{} for this login (client record: {})", claimed, permissions.role),
        );
        permissions.role = claimed;
    }
    Ok(permissions)
}
