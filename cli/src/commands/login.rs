//! `flinger login` and `flinger logout`: keep or forget a login for the server (see
//! [`crate::auth`]).
//!
//! With a client id and secret key, `login` trades them for tokens. Without them it signs the
//! person in through the server's single sign-on, as Testflinger's CLI does: the device login
//! of `POST /oidc/auth-init` (the person opens the address shown and enters the code), polled
//! at the server's interval until they approve; the tokens are kept as a credential login's.

use super::Ctx;
use crate::auth::{Credentials, Session, TokenPayload};
use crate::client::DevicePoll;
use crate::exit::{CliError, Exit};
use serde_json::json;
use std::time::{Duration, Instant};

const NO_WAY_IN: &str = "give the client id and secret key to log in with: --client-id and --secret-key, \
     $FLINGER_CLIENT_ID and $FLINGER_SECRET_KEY, or client_id and secret_key in the configuration file \
     (this server has no single sign-on)";

pub async fn login(ctx: &Ctx<'_>) -> Result<Exit, CliError> {
    let s = &ctx.settings;
    let session = match (&s.client_id, &s.secret_key) {
        (Some(id), Some(key)) => {
            let credentials = Credentials {
                client_id: id.value.clone(),
                secret_key: key.value.clone(),
            };
            ctx.client.login(&credentials).await?
        }
        _ => device_login(ctx).await?,
    };
    let role = TokenPayload::decode(&session.access_token)
        .and_then(|p| p.role)
        .unwrap_or_else(|| "contributor".into());
    if ctx.ui.is_json() {
        ctx.ui.document(&json!({
            "client_id": session.client_id,
            "role": role,
            "server": ctx.client.server().to_string(),
            "expires_at": session.expires_at,
        }))?;
    } else {
        // Testflinger's words.
        ctx.ui.line(&format!(
            "Successfully authenticated as user '{}'",
            session.client_id
        ))?;
        ctx.ui.hint(&format!(
            "Role: {role}. The login for {} is kept until `flinger logout`.",
            ctx.client.server()
        ));
    }
    Ok(Exit::Success)
}

pub fn logout(ctx: &Ctx<'_>) -> Result<Exit, CliError> {
    let had = ctx.client.logout()?;
    if ctx.ui.is_json() {
        ctx.ui.document(&json!({"logged_out": had}))?;
    } else if had {
        ctx.ui.line(&format!("Logged out of {}.", ctx.client.server()))?;
    } else {
        ctx.ui
            .line(&format!("Not logged in to {}.", ctx.client.server()))?;
    }
    Ok(Exit::Success)
}

/// Single sign-on: shows where to go, then polls until the person approved, refused, or the
/// login expired.
async fn device_login(ctx: &Ctx<'_>) -> Result<Session, CliError> {
    let Some(start) = ctx.client.start_device_login().await? else {
        return Err(CliError::Auth(NO_WAY_IN.into()));
    };
    // On stderr, even with --json or --quiet: the person must see it.
    ctx.ui.note(&format!(
        "To sign in, open {} and enter the code {}",
        start.verification_uri, start.user_code
    ));
    if let Some(complete) = &start.verification_uri_complete {
        ctx.ui.note(&format!("(or open {complete})"));
    }
    let deadline = Instant::now() + Duration::from_secs(start.expires_in);
    let mut interval = Duration::from_secs(start.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        match ctx.client.poll_device_login(&start.request_id).await? {
            DevicePoll::Done(session) => return Ok(session),
            DevicePoll::NotYet {
                error,
                message,
                retry_after,
            } => match error.as_str() {
                "authorization_pending" => {}
                // RFC 8628: five more seconds, or what the server asks.
                "slow_down" => {
                    interval = interval.max(Duration::from_secs(retry_after.unwrap_or(5)))
                        + Duration::from_secs(if retry_after.is_some() { 0 } else { 5 });
                }
                "access_denied" => {
                    return Err(CliError::Auth(format!(
                        "the sign-in was refused{}",
                        message.map(|m| format!(": {m}")).unwrap_or_default()
                    )));
                }
                "expired_token" => {
                    return Err(CliError::Auth(
                        "the sign-in expired before it was approved: run `flinger login` again".into(),
                    ));
                }
                other => {
                    return Err(CliError::Auth(format!(
                        "the sign-in failed ({other}){}",
                        message.map(|m| format!(": {m}")).unwrap_or_default()
                    )));
                }
            },
        }
        if Instant::now() >= deadline {
            return Err(CliError::Auth(
                "the sign-in expired before it was approved: run `flinger login` again".into(),
            ));
        }
    }
}
