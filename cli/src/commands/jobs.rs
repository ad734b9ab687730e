//! `flinger jobs [--status]`: the jobs submitted from this machine to the server in use, oldest
//! first, with their queue, submission time and last known state; `--status` asks the server
//! for the state of every job that had not ended (and records it).

use super::Ctx;
use crate::args::JobsArgs;
use crate::client::ClientError;
use crate::exit::{CliError, Exit};
use crate::history::Entry;
use crate::model::JobId;
use crate::output::table;
use broker_schema::Millis;

pub async fn run(ctx: &Ctx<'_>, args: JobsArgs) -> Result<Exit, CliError> {
    let server = ctx.client.server().to_string();
    let mut jobs: Vec<Entry> = ctx
        .history
        .list()
        .map_err(|e| CliError::Usage(format!("cannot read the job history: {e}")))?
        .into_iter()
        .filter(|e| e.server == server)
        .collect();
    if args.status {
        for entry in jobs.iter_mut().filter(|e| !e.has_ended()) {
            let Ok(id) = entry.job_id.parse::<JobId>() else {
                continue;
            };
            match ctx.client.info(id).await {
                Ok(info) => {
                    ctx.remember(&info);
                    entry.state = Some(info.state.clone());
                    entry.job_state = Some(info.job_state.clone());
                }
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Server { .. })) => {
                    return Err(e.into());
                }
                Err(_) => {
                    entry.state = Some("unknown".into());
                    entry.job_state = Some("unknown".into());
                }
            }
        }
    }
    let ui = ctx.ui;
    if ui.is_json() {
        ui.document(&serde_json::to_value(&jobs).map_err(std::io::Error::other)?)?;
        return Ok(Exit::Success);
    }
    if jobs.is_empty() {
        ui.hint(&format!("No job submitted to {server} from here yet."));
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|e| {
            let submitted = Millis(e.submitted_at * 1000).to_rfc3339();
            vec![
                e.job_id.clone(),
                e.state.clone().unwrap_or_default(),
                submitted.get(..16).unwrap_or(&submitted).replace('T', " "),
                e.queue.clone(),
            ]
        })
        .collect();
    ui.line(&table(&["JOB ID", "STATE", "SUBMITTED (UTC)", "QUEUE"], &rows))?;
    if !args.status {
        ui.hint("States are the last ones seen from here; --status asks the server.");
    }
    Ok(Exit::Success)
}
