//! `flinger secret write PATH VALUE` and `flinger secret delete PATH`: write-only secrets of the
//! logged-in client (`PUT`/`DELETE /v1/secrets/<client_id>/<path>`), which jobs it submits name
//! in `test_data.secrets`.

use super::Ctx;
use crate::args::SecretCommand;
use crate::exit::{CliError, Exit};
use flinger_api::SecretIn;
use serde_json::json;

pub async fn run(ctx: &Ctx<'_>, command: SecretCommand) -> Result<Exit, CliError> {
    let client_id = ctx.require_login("a secret").await?;
    let ui = ctx.ui;
    match command {
        SecretCommand::Write {
            path,
            value,
            expire_after,
            single_use,
        } => {
            let secret = SecretIn {
                value,
                // -1: never; 0 is refused by the server, naming the field.
                expire_after: expire_after.map(|s| u64::try_from(s).ok()),
                ephemeral: single_use.then_some(true),
            };
            let answer = ctx.client.write_secret(&client_id, &path, &secret).await?;
            if ui.is_json() {
                ui.document(
                    &json!({"client_id": client_id, "path": path, "expires_at": answer.and_then(|a| a.expires_at)}),
                )?;
            } else {
                ui.line(&format!("Secret '{path}' written successfully"))?;
            }
        }
        SecretCommand::Delete { path } => {
            ctx.client.delete_secret(&client_id, &path).await?;
            if ui.is_json() {
                ui.document(&json!({"client_id": client_id, "path": path, "deleted": true}))?;
            } else {
                ui.line(&format!("Secret '{path}' deleted successfully"))?;
            }
        }
    }
    Ok(Exit::Success)
}
