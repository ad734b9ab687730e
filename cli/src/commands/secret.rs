//! `flinger secret write PATH VALUE` and `flinger secret delete PATH`: write-only secrets of the
//! logged-in client (`PUT`/`DELETE /v1/secrets/<client_id>/<path>`), which jobs it submits name
//! in `test_data.secrets`.

use super::Ctx;
use crate::args::SecretCommand;
use crate::exit::{CliError, Exit};
use serde_json::json;

pub async fn run(ctx: &Ctx<'_>, command: SecretCommand) -> Result<Exit, CliError> {
    let client_id = ctx.require_login("a secret").await?;
    let ui = ctx.ui;
    match command {
        SecretCommand::Write { path, value } => {
            let answer = ctx.client.write_secret(&client_id, &path, &value).await?;
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
