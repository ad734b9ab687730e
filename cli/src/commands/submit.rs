//! `flinger submit FILE|- [--poll] [--quiet] [--wait-for-available-agents]`.
//!
//! Reads the job file, refuses it before submitting when no agent serves its queue (as
//! Testflinger does), submits it under a job id chosen here (so that a retried submission cannot
//! create a second job), prints the id, and with `--poll` follows the job to its end.

use super::poll::{self, Follow};
use crate::args::SubmitArgs;
use crate::client::{Client, ClientError};
use crate::exit::{CliError, Exit};
use crate::jobfile::{JobFile, JobSource};
use crate::model::{JobId, LogStream};
use crate::output::{Ui, field_error_lines};
use serde_json::{Value, json};
use std::time::Duration;

/// How often `--wait-for-available-agents` looks again.
const AGENT_WAIT_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(client: &Client, ui: &Ui, args: SubmitArgs) -> Result<Exit, CliError> {
    let mut job = JobFile::read(&JobSource::from(args.file))?;
    if job.has_attachments() {
        return Err(CliError::Usage(format!(
            "{}: this version of flinger cannot upload attachments yet, and the job would wait for them forever",
            job.origin
        )));
    }
    if let Some(queue) = job.queue() {
        check_queue(client, ui, queue, args.wait_for_available_agents).await?;
    }
    if !job.doc.contains_key("job_id") {
        job.doc
            .insert("job_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    let id = client
        .submit(&Value::Object(job.doc.clone()))
        .await
        .map_err(|e| refused(&job.origin, e))?;
    announce(ui, id, args.poll)?;
    if !args.poll {
        return Ok(Exit::Success);
    }
    poll::follow(client, ui, id, &Follow::from_start(LogStream::Output)).await
}

fn announce(ui: &Ui, id: JobId, polling: bool) -> Result<(), CliError> {
    if ui.is_json() {
        let doc = json!({"job_id": id.to_string()});
        // Followed, it is the first event of a stream of JSON lines.
        if polling {
            ui.event(&json!({"event": "submitted", "job_id": id.to_string()}))?
        } else {
            ui.document(&doc)?
        }
    } else if ui.is_quiet() {
        ui.line(&id.to_string())?;
    } else {
        // Testflinger's words, which scripts parse.
        ui.line("Job submitted successfully!")?;
        ui.line(&format!("job_id: {id}"))?;
        if !polling {
            ui.hint(&format!("Follow it with: flinger poll {id}"));
        }
    }
    Ok(())
}

/// Refuses a queue no agent serves; warns (or waits) when every agent serving it is unavailable.
async fn check_queue(client: &Client, ui: &Ui, queue: &str, wait: bool) -> Result<(), CliError> {
    let mut said_waiting = false;
    loop {
        let Some(agents) = client.queue_agents(queue).await? else {
            let known = client
                .queues()
                .await
                .map(|q| q.into_keys().collect())
                .unwrap_or_default();
            return Err(CliError::UnknownQueue {
                queue: queue.to_owned(),
                known,
            });
        };
        if agents.iter().any(|a| a.is_available()) {
            return Ok(());
        }
        if !wait {
            let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
            ui.warn(&format!(
                "every agent serving queue {queue:?} ({}) is offline or in maintenance; the job will wait for one",
                names.join(", ")
            ));
            return Ok(());
        }
        if !said_waiting {
            ui.status(&format!("Waiting for an available agent on queue {queue:?}…"));
            said_waiting = true;
        }
        tokio::time::sleep(AGENT_WAIT_INTERVAL).await;
    }
}

/// A refused submission names the file and every field the server named.
fn refused(origin: &str, e: ClientError) -> CliError {
    match e {
        ClientError::Refused { message, detail, .. } => CliError::JobRefused {
            origin: origin.to_owned(),
            message,
            fields: detail.as_ref().map(field_error_lines).unwrap_or_default(),
        },
        other => CliError::Client(other),
    }
}
