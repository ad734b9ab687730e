//! Signing in to the web UI through the lab's identity provider: the authorization-code flow
//! with PKCE (S256), state and nonce (`docs/web-ui.md`).
//!
//! `GET /auth/login` records the sign-on in the store (under the state's hash: the nonce and
//! the PKCE verifier, for ten minutes), puts the state in a short-lived cookie of this browser,
//! and sends the browser to the provider. `GET /auth/callback` refuses a state that is not this
//! browser's, then *takes* the record — atomically, so a replayed callback, or one reaching
//! another gateway, finds nothing —, trades the code for tokens with the verifier, verifies the
//! ID token (nonce included), and opens the session exactly as the credentials form does
//! ([`super::session::open_session`]). `POST /auth/logout` is the form's sign-out: the session's
//! record is revoked.
//!
//! Every sign-in and refusal goes to the security log; no code, token or state is logged.

use super::page::{Page, UiError};
use super::session::{self, Viewer, base_cookie, constant_time_eq, cookie_header, jar, over_tls};
use crate::auth::oidc::OidcError;
use crate::auth::security::{self, How, Peer};
use crate::auth::token;
use crate::error::ApiError;
use crate::routes::oidc::person;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use broker_schema::Millis;
use cookie::SameSite;
use flinger_store::{PendingSignOnRecord, Records, SignOnFlow};
use serde::Deserialize;
use std::time::Duration;

/// This browser's sign-on state (the provider brings it back in the callback's query).
const STATE_COOKIE: &str = "flinger_sso";
/// How long a person may take at the provider.
const SIGN_ON_TTL: Duration = Duration::from_secs(600);

/// Where the provider sends the browser back: `--public-url`'s, or this request's host.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = state.public_url() {
        return format!("{}/auth/callback", url.as_str().trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if over_tls(headers) { "https" } else { "http" };
    format!("{scheme}://{host}/auth/callback")
}

fn off() -> Response {
    UiError::NotFound("This lab has no single sign-on.".into()).into_response()
}

/// `GET /auth/login`: off to the provider.
pub async fn login(State(state): State<AppState>, viewer: Viewer, headers: HeaderMap) -> Response {
    let Some(oidc) = state.oidc() else { return off() };
    let redirect = redirect_uri(&state, &headers);
    let start = match oidc.start_browser(&redirect).await {
        Ok(s) => s,
        Err(e) => return UiError::Api(e.into()).page(Some(&viewer)).into_response(),
    };
    let now = Millis::now();
    let recorded = state
        .store()
        .insert_pending_sign_on(
            &token::refresh_token_hash(&start.state),
            &PendingSignOnRecord {
                flow: SignOnFlow::Browser {
                    nonce: start.nonce,
                    pkce_verifier: start.pkce_verifier,
                },
                expires_at: now.plus(SIGN_ON_TTL),
            },
        )
        .await;
    if let Err(e) = recorded {
        return UiError::from(e).page(Some(&viewer)).into_response();
    }
    // Lax, not Strict: the browser comes back from the provider's site.
    let mut c = base_cookie(STATE_COOKIE, start.state, over_tls(&headers));
    c.set_same_site(SameSite::Lax);
    c.set_max_age(cookie::time::Duration::seconds(SIGN_ON_TTL.as_secs() as i64));
    let mut response = Redirect::to(&start.url).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie_header(c));
    response
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// A refused sign-on: logged, and shown.
fn refused(viewer: &Viewer, peer: &Peer, who: Option<&str>, status: StatusCode, reason: &str) -> Response {
    security::refused(peer, How::OidcBrowser, who, reason);
    let error = match status {
        StatusCode::FORBIDDEN => ApiError::Forbidden(format!("Sign-in refused: {reason}.")),
        StatusCode::BAD_REQUEST => ApiError::BadRequest(format!("Sign-in refused: {reason}.")),
        _ => ApiError::Unauthorized(format!("Sign-in refused: {reason}.")),
    };
    UiError::Api(error).page(Some(viewer)).into_response()
}

/// `GET /auth/callback?code&state`: back from the provider.
pub async fn callback(
    State(state): State<AppState>,
    viewer: Viewer,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = state.oidc() else { return off() };
    if let Some(error) = &q.error {
        let reason = format!(
            "the identity provider said {}",
            error.chars().take(80).collect::<String>()
        );
        return refused(&viewer, &peer, None, StatusCode::UNAUTHORIZED, &reason);
    }
    let (Some(code), Some(st)) = (&q.code, &q.state) else {
        return refused(
            &viewer,
            &peer,
            None,
            StatusCode::BAD_REQUEST,
            "the callback has no code or state",
        );
    };
    let mine = jar(&headers).get(STATE_COOKIE).map(|c| c.value().to_owned());
    if !mine.is_some_and(|m| constant_time_eq(m.as_bytes(), st.as_bytes())) {
        return refused(
            &viewer,
            &peer,
            None,
            StatusCode::FORBIDDEN,
            "the state is not this browser's",
        );
    }
    let taken = match state
        .store()
        .take_pending_sign_on(&token::refresh_token_hash(st), Millis::now())
        .await
    {
        Ok(t) => t,
        Err(e) => return UiError::from(e).page(Some(&viewer)).into_response(),
    };
    let Some(PendingSignOnRecord {
        flow: SignOnFlow::Browser { nonce, pkce_verifier },
        ..
    }) = taken
    else {
        return refused(
            &viewer,
            &peer,
            None,
            StatusCode::BAD_REQUEST,
            "unknown, used or expired state (a replayed callback?)",
        );
    };
    let identity = match oidc
        .finish_browser(&redirect_uri(&state, &headers), code, &pkce_verifier, &nonce)
        .await
    {
        Ok(i) => i,
        Err(OidcError::Refused(reason)) => {
            return refused(&viewer, &peer, None, StatusCode::UNAUTHORIZED, &reason);
        }
        Err(e) => return UiError::Api(e.into()).page(Some(&viewer)).into_response(),
    };
    let permissions = match person(&state, &identity, &peer).await {
        Ok(p) => p,
        Err(e) => return UiError::Api(e).page(Some(&viewer)).into_response(),
    };
    security::signed_in(&peer, How::OidcBrowser, &identity.email, permissions.role);
    let opened = match session::open_session(&state, permissions, &headers).await {
        Ok(r) => r,
        Err(e) => return e.page(Some(&viewer)).into_response(),
    };
    // A page that moves on to the home page, rather than a redirect: a browser does not send
    // the (SameSite=Strict) session cookie along a redirect chain that began at the provider.
    let mut page = Page::new(&viewer, "Signed in");
    page.before = format!(
        "<meta http-equiv=\"refresh\" content=\"0; url=/\"><h1>Signed in</h1>\
         <p id=\"signed-in-as\">Signed in as {}. <a href=\"/\">Go on to the lab</a>.</p>",
        super::text::escape(&identity.email)
    );
    page.signed_in = None;
    let mut response = page.into_response();
    for c in opened.headers().get_all(header::SET_COOKIE) {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    let mut gone = base_cookie(STATE_COOKIE, String::new(), over_tls(&headers));
    gone.make_removal();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie_header(gone));
    response
}

/// `GET /auth/logout`: sign-out is a form (with its CSRF token) in every page's header; a link
/// here just goes home.
pub async fn logout_page() -> Html<&'static str> {
    Html(
        "<meta http-equiv=\"refresh\" content=\"0; url=/\"><p><a href=\"/\">Use the Sign out button.</a></p>",
    )
}
