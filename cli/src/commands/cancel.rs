//! `flinger cancel JOB`: asks the server to cancel the job. A waiting job is cancelled at once;
//! a running one stops its current phase, runs cleanup and then ends `cancelled`.

use crate::client::{Client, ClientError};
use crate::exit::{CliError, Exit};
use crate::model::JobId;
use crate::output::Ui;
use serde_json::json;

pub async fn run(client: &Client, ui: &Ui, id: JobId) -> Result<Exit, CliError> {
    client.cancel(id).await.map_err(|e| match e {
        ClientError::Refused { message, .. } => CliError::Usage(format!("cannot cancel job {id}: {message}")),
        ClientError::Server { status: 503, message } => CliError::Client(ClientError::Server {
            status: 503,
            message: format!("{message} (the cancel may not have happened: run the command again)"),
        }),
        other => CliError::Client(other),
    })?;
    // Only to say where the job stands now; the cancel itself is done.
    let state = client.info(id).await.ok().map(|i| i.state);
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
