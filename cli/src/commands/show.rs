//! `flinger show JOB [--yaml]`: the job file as submitted (with its `job_id`).

use crate::args::ShowArgs;
use crate::client::Client;
use crate::exit::{CliError, Exit};
use crate::output::Ui;

pub async fn run(client: &Client, ui: &Ui, args: ShowArgs) -> Result<Exit, CliError> {
    if args.yaml && ui.is_json() {
        return Err(CliError::Usage(
            "--yaml and --json cannot be used together".into(),
        ));
    }
    let job = client.job(args.job_id).await?;
    if args.yaml {
        let text = serde_yaml_ng::to_string(&job).map_err(std::io::Error::other)?;
        ui.raw(&text)?;
    } else {
        ui.document(&job)?;
    }
    Ok(Exit::Success)
}
