//! Signing in to the web UI, and what a request's session cookie says.
//!
//! "Sign in" takes a client id and secret, checked exactly as `POST /v1/oauth2/token` checks
//! them, and sets the session cookie: the client's permissions (as its access token would carry
//! them), an expiry and a CSRF token, encrypted and authenticated with a key derived from the
//! gateways' token key (`cookie`'s private jar: AES-256-GCM), so that any gateway of the lab
//! reads it and nobody can forge or read it. The cookie is `HttpOnly`, `SameSite=Strict`, and
//! `Secure` when the request came over TLS (a proxy's `X-Forwarded-Proto: https`).
//!
//! Each session is also a refresh-token record in the store (the cookie holds its hash): signing
//! out revokes it, so a copy of the cookie kept elsewhere is no session either, and an admin
//! can end a session as any refresh token (`POST /v1/oauth2/revoke` needs the token itself,
//! which nobody sees: sessions end by signing out or expiring).
//!
//! Every form that changes something carries the CSRF token (the session's, or before sign-in
//! a short-lived cookie's: double submit), and its handler refuses it without. A signed-out
//! visitor is the API's anonymous caller.

use super::page::{Page, SignedIn, UiError};
use crate::auth::security::{self, How, Peer};
use crate::auth::{Caller, Permissions, password, token};
use crate::error::ApiError;
use crate::routes::auth::permissions_of;
use crate::state::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use broker_schema::Millis;
use cookie::{Cookie, CookieJar, Key, SameSite};
use flinger_store::{Records, RefreshTokenRecord, Revoked};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use std::time::Duration;

const SESSION_COOKIE: &str = "flinger_session";
const LOGIN_CSRF_COOKIE: &str = "flinger_login";
/// How long a session lasts (a signed-in browser tab, a working day).
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The key of the session cookies.
#[derive(Clone)]
pub struct SessionKey(Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// 64 bytes from the token key, apart from the tokens' own use of it.
    pub fn derive(token_key: &[u8]) -> SessionKey {
        let mut h = Sha512::new();
        h.update(b"flinger web UI session cookie\0");
        h.update(token_key);
        SessionKey(Key::from(&h.finalize()))
    }
}

/// What the session cookie holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub permissions: Permissions,
    /// Echoed by every form of the session.
    pub csrf: String,
    /// Milliseconds since the epoch.
    pub expires: i64,
    /// The session's refresh-token record (the SHA-256 of a token nobody holds).
    pub record: String,
}

/// Who is looking: the API's caller (anonymous or a signed-in client) and the session, if any.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub caller: Caller,
    pub session: Option<Session>,
}

impl Viewer {
    pub fn signed_in(&self) -> Option<SignedIn> {
        self.session.as_ref().map(|s| SignedIn {
            client_id: s.permissions.client_id.clone(),
            role: s.permissions.role.as_str().to_owned(),
            csrf: s.csrf.clone(),
        })
    }

    /// The session's CSRF token when `presented` is it; 403 otherwise (and without a session).
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<&Session, UiError> {
        let session = self.session.as_ref().ok_or_else(|| {
            UiError::Api(ApiError::Forbidden("Sign in first: this needs a session.".into()))
        })?;
        match presented {
            Some(p) if !p.is_empty() && constant_time_eq(p.as_bytes(), session.csrf.as_bytes()) => {
                Ok(session)
            }
            _ => Err(UiError::Api(ApiError::Forbidden(
                "The form's CSRF token is missing or wrong: reload the page and try again.".into(),
            ))),
        }
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn jar(headers: &HeaderMap) -> CookieJar {
    let mut jar = CookieJar::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for c in Cookie::split_parse_encoded(value.to_owned()).flatten() {
            jar.add_original(c);
        }
    }
    jar
}

fn read_session(headers: &HeaderMap, key: &SessionKey) -> Option<Session> {
    let jar = jar(headers);
    let cookie = jar.private(&key.0).get(SESSION_COOKIE)?;
    let session: Session = serde_json::from_str(cookie.value()).ok()?;
    (session.expires > Millis::now().0).then_some(session)
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = state.auth();
        let mut caller = Caller::anonymous(auth);
        let mut session = read_session(&parts.headers, &auth.session_key);
        // Signed out (revoked) or unknown here: no session, whatever the cookie says.
        if let Some(s) = &session {
            let live = match state.store().get_refresh_token(&s.record).await {
                Ok(Some(r)) => !r.revoked && r.expires_at.is_none_or(|t| t > Millis::now()),
                _ => false,
            };
            if !live {
                session = None;
            }
        }
        if let Some(s) = &session {
            caller.permissions = Some(s.permissions.clone());
        }
        Ok(Viewer { caller, session })
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `Secure` only when the browser reached us over TLS (through a proxy that says so).
pub(super) fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub(super) fn cookie_header(c: Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&c.encoded().to_string()).expect("a cookie is a valid header value")
}

pub(super) fn base_cookie(name: &'static str, value: String, tls: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(tls)
        .build()
}

#[derive(Template)]
#[template(path = "ui/signin.html")]
struct SignInForm<'a> {
    csrf: &'a str,
    /// Offer single sign-on.
    sso: bool,
    error: Option<&'a str>,
    client_id: &'a str,
}

fn sign_in_form(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    error: Option<&str>,
    client_id: &str,
) -> Response {
    let csrf = random_token();
    let mut page = Page::new(viewer, "Sign in");
    if error.is_some() {
        page.status = axum::http::StatusCode::UNAUTHORIZED;
    }
    page.before = match (SignInForm {
        csrf: &csrf,
        sso: state.oidc().is_some(),
        error,
        client_id,
    })
    .render()
    {
        Ok(html) => html,
        Err(e) => return UiError::Render(e).into_response(),
    };
    let mut c = base_cookie(LOGIN_CSRF_COOKIE, csrf, over_tls(headers));
    c.set_max_age(cookie::time::Duration::minutes(30));
    let mut response = page.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie_header(c));
    response
}

/// `GET /login`: the form.
pub async fn sign_in_page(State(state): State<AppState>, viewer: Viewer, headers: HeaderMap) -> Response {
    sign_in_form(&state, &viewer, &headers, None, "")
}

#[derive(Deserialize)]
pub struct SignInFields {
    client_id: String,
    secret: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`: checks the credentials as the token endpoint does, then sets the session.
pub async fn sign_in(
    State(state): State<AppState>,
    viewer: Viewer,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<SignInFields>,
) -> Response {
    let expected = jar(&headers).get(LOGIN_CSRF_COOKIE).map(|c| c.value().to_owned());
    if !expected
        .is_some_and(|e| !form.csrf.is_empty() && constant_time_eq(e.as_bytes(), form.csrf.as_bytes()))
    {
        return UiError::Api(ApiError::Forbidden(
            "The sign-in form's CSRF token is missing or wrong: open the form again.".into(),
        ))
        .page(Some(&viewer))
        .into_response();
    }
    let client = match state.store().get_client(form.client_id.trim()).await {
        Ok(c) => c,
        Err(e) => return UiError::from(e).page(Some(&viewer)).into_response(),
    };
    let stored_hash = client.as_ref().and_then(|c| c.secret_hash.clone());
    if !password::verify(form.secret, stored_hash).await {
        security::refused(
            &peer,
            How::UiCredentials,
            Some(&form.client_id),
            "unknown client or wrong secret",
        );
        return sign_in_form(
            &state,
            &viewer,
            &headers,
            Some("Unknown client id or wrong secret."),
            &form.client_id,
        );
    }
    let client = client.expect("verified against a stored hash");
    let permissions = match permissions_of(&state, &client).await {
        Ok(p) => p,
        Err(e) => return UiError::Api(e).page(Some(&viewer)).into_response(),
    };
    security::signed_in(&peer, How::UiCredentials, &client.client_id, permissions.role);
    match open_session(&state, permissions, &headers).await {
        Ok(mut response) => {
            let mut gone = base_cookie(LOGIN_CSRF_COOKIE, String::new(), over_tls(&headers));
            gone.make_removal();
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie_header(gone));
            response
        }
        Err(e) => e.page(Some(&viewer)).into_response(),
    }
}

/// Opens a session for `permissions` (whoever checked who it is: the sign-in form or single
/// sign-on): its refresh-token record, and the cookie, on a redirect to the home page.
pub async fn open_session(
    state: &AppState,
    permissions: Permissions,
    headers: &HeaderMap,
) -> Result<Response, UiError> {
    let now = Millis::now();
    let record = token::refresh_token_hash(&token::new_refresh_token());
    state
        .store()
        .insert_refresh_token(
            &record,
            &RefreshTokenRecord {
                client_id: permissions.client_id.clone(),
                issued_at: now,
                expires_at: Some(now.plus(SESSION_TTL)),
                revoked: false,
                claimed_role: None,
            },
        )
        .await?;
    let session = Session {
        permissions,
        csrf: random_token(),
        expires: now.plus(SESSION_TTL).0,
        record,
    };
    let mut jar = CookieJar::new();
    let mut c = base_cookie(
        SESSION_COOKIE,
        serde_json::to_string(&session).expect("a session serializes"),
        over_tls(headers),
    );
    c.set_max_age(cookie::time::Duration::seconds(SESSION_TTL.as_secs() as i64));
    jar.private_mut(&state.auth().session_key.0).add(c);
    let mut response = Redirect::to("/").into_response();
    for c in jar.delta() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie_header(c.clone()));
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfField {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /logout`: ends the session (its record is revoked, the cookie removed).
pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<CsrfField>,
) -> Response {
    let session = match viewer.check_csrf(Some(&form.csrf)) {
        Ok(s) => s,
        Err(e) => return e.page(Some(&viewer)).into_response(),
    };
    match state.store().revoke_refresh_token(&session.record).await {
        Ok(Revoked::Now | Revoked::Already | Revoked::Unknown) => {}
        Err(e) => return UiError::from(e).page(Some(&viewer)).into_response(),
    }
    let who = &session.permissions.client_id;
    security::changed(&peer, "sign_out", who, who, "web UI session ended");
    let mut gone = base_cookie(SESSION_COOKIE, String::new(), over_tls(&headers));
    gone.make_removal();
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie_header(gone));
    response
}
