//! `flinger status JOB`: the job's `job_state` on stdout (Testflinger's word, so scripts written
//! for it keep working); what that word hides (a failure, the queue position) goes to stderr.
//! With `--json`, the whole job record.

use super::Ctx;
use crate::exit::{CliError, Exit, Outcome};
use crate::model::JobId;

pub async fn run(ctx: &Ctx<'_>, id: JobId) -> Result<Exit, CliError> {
    let info = ctx.client.info(id).await?;
    ctx.remember(&info);
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&info.raw)?;
        return Ok(Exit::Success);
    }
    ui.line(&info.job_state)?;
    if let Some(position) = info.position {
        ui.status(&super::poll::describe_position(&info.queue, position));
    }
    if let Some(o @ (Outcome::TestFailed { .. } | Outcome::InfrastructureFailed { .. })) = Outcome::of(&info)
    {
        ui.outcome(id, &o);
    }
    Ok(Exit::Success)
}
