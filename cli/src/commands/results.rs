//! `flinger results JOB`: the job's flat results (`<phase>_status`, `<phase>_output`, …) as JSON,
//! with a multi-device child's `parent_job_id` and a parent's `children` (the server's).

use super::Ctx;
use crate::exit::{CliError, Exit};
use crate::model::JobId;

pub async fn run(ctx: &Ctx<'_>, id: JobId) -> Result<Exit, CliError> {
    let results = ctx.client.results(id).await?;
    ctx.ui.document(&results)?;
    Ok(Exit::Success)
}
