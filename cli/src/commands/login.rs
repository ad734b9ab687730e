//! `flinger login` and `flinger logout`: keep or forget a login for the server (see
//! [`crate::auth`]).

use super::Ctx;
use crate::auth::{Credentials, TokenPayload};
use crate::exit::{CliError, Exit};
use serde_json::json;

pub async fn login(ctx: &Ctx<'_>) -> Result<Exit, CliError> {
    let s = &ctx.settings;
    let (Some(id), Some(key)) = (&s.client_id, &s.secret_key) else {
        return Err(CliError::Auth(
            "give the client id and secret key to log in with: --client-id and --secret-key, \
             $FLINGER_CLIENT_ID and $FLINGER_SECRET_KEY, or client_id and secret_key in the configuration file"
                .into(),
        ));
    };
    let credentials = Credentials {
        client_id: id.value.clone(),
        secret_key: key.value.clone(),
    };
    let session = ctx.client.login(&credentials).await?;
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
