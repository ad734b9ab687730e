//! `flinger cancel JOB`: asks the server to cancel the job. A waiting job is cancelled at once;
//! a running one stops its current phase, runs cleanup and then ends `cancelled`.

use super::Ctx;
use crate::client::ClientError;
use crate::exit::{CliError, Exit};
use crate::model::JobId;
use serde_json::json;

pub async fn run(ctx: &Ctx<'_>, id: JobId) -> Result<Exit, CliError> {
    ctx.client.cancel(id).await.map_err(|e| match e {
        e if e.is_auth() => CliError::Client(e),
        ClientError::Refused { message, .. } => CliError::Usage(format!("cannot cancel job {id}: {message}")),
        ClientError::Server { status: 503, message } => CliError::Client(ClientError::Server {
            status: 503,
            message: format!("{message} (the cancel may not have happened: run the command again)"),
        }),
        other => CliError::Client(other),
    })?;
    // Only to say where the job stands now; the cancel itself is done.
    let info = ctx.client.info(id).await.ok();
    if let Some(i) = &info {
        ctx.remember(i);
    }
    let state = info.map(|i| i.state);
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&json!({"job_id": id.to_string(), "cancel": "accepted", "state": state}))?;
    } else if state.as_deref() == Some("cancelled") {
        ui.line(&format!("Job {id} cancelled."))?;
    } else {
        ui.line(&format!(
            "Job {id} is being cancelled: its current phase stops, cleanup runs, then it ends cancelled."
        ))?;
    }
    Ok(Exit::Success)
}
