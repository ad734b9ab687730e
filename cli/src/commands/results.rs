//! `flinger results JOB`: the job's flat results (`<phase>_status`, `<phase>_output`, …) as JSON.

use crate::client::Client;
use crate::exit::{CliError, Exit};
use crate::model::JobId;
use crate::output::Ui;

pub async fn run(client: &Client, ui: &Ui, id: JobId) -> Result<Exit, CliError> {
    let results = client.results(id).await?;
    ui.document(&results)?;
    Ok(Exit::Success)
}
