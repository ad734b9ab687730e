//! The security log: every sign-in, every refusal of one, every role change and revocation, as
//! structured events under one tracing target, `security` (`docs/operations.md` shows how to
//! route them). Fields: `event`, `who` (a client id or e-mail), `from` (the peer's address),
//! `forwarded` (a proxy's `X-Forwarded-For`, as it came), `how` (which sign-in), and `what` (a
//! detail or a refusal's reason). Never a token, a code, a secret or a password.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::SocketAddr;

/// Where a request came from, as the security log tells it.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The TCP peer (a proxy, behind one).
    pub addr: Option<SocketAddr>,
    /// A proxy's `X-Forwarded-For`, unverified.
    pub forwarded: Option<String>,
}

impl Peer {
    fn addr_text(&self) -> String {
        self.addr.map(|a| a.ip().to_string()).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer {
            addr: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            forwarded: parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(200).collect()),
        })
    }
}

/// How someone signed in (or tried to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// `POST /v1/oauth2/token` with a client id and secret.
    ClientCredentials,
    /// The web UI's form with a client id and secret.
    UiCredentials,
    /// The CLI's device login through the provider.
    OidcDevice,
    /// The web UI through the provider.
    OidcBrowser,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::ClientCredentials => "client_credentials",
            How::UiCredentials => "ui_credentials",
            How::OidcDevice => "oidc_device",
            How::OidcBrowser => "oidc_browser",
        }
    }
}

/// Someone signed in with `role`.
pub fn signed_in(peer: &Peer, how: How, who: &str, role: flinger_store::Role) {
    tracing::info!(
        target: "security",
        event = "sign_in",
        who,
        from = %peer.addr_text(),
        forwarded = peer.forwarded.as_deref().unwrap_or(""),
        how = how.as_str(),
        what = %format_args!("role {role}"),
        "signed in"
    );
}

/// A sign-in (or a step of one) was refused, and why.
pub fn refused(peer: &Peer, how: How, who: Option<&str>, reason: &str) {
    tracing::warn!(
        target: "security",
        event = "sign_in_refused",
        who = who.unwrap_or(""),
        from = %peer.addr_text(),
        forwarded = peer.forwarded.as_deref().unwrap_or(""),
        how = how.as_str(),
        what = reason,
        "sign-in refused"
    );
}

/// An administrative change to someone's access: a role set, tokens revoked, a session ended.
pub fn changed(peer: &Peer, event: &'static str, by: &str, whom: &str, what: &str) {
    tracing::info!(
        target: "security",
        event,
        who = by,
        whom,
        from = %peer.addr_text(),
        forwarded = peer.forwarded.as_deref().unwrap_or(""),
        what,
        "access changed"
    );
}
