//! `flinger submit FILE|- [--poll] [--quiet] [--wait-for-available-agents]
//! [--attachments-relative-to DIR]`.
//!
//! Reads the job file, refuses it before submitting when no agent serves its queue (as
//! Testflinger does), packs its attachments, submits it under a job id chosen here (so that a
//! retried submission cannot create a second job), uploads the attachments (the server holds
//! the job until they arrive; if the upload fails the job is cancelled), records it in the
//! local history, prints the id, and with `--poll` follows the job to its end.

use super::Ctx;
use super::poll::{self, Follow};
use crate::args::SubmitArgs;
use crate::attachments;
use crate::auth::now_secs;
use crate::client::ClientError;
use crate::exit::{CliError, Exit};
use crate::history::Entry;
use crate::jobfile::{JobFile, JobSource};
use crate::model::{JobId, LogStream};
use crate::output::{Ui, field_error_lines};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How often `--wait-for-available-agents` looks again.
const AGENT_WAIT_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx<'_>, args: SubmitArgs) -> Result<Exit, CliError> {
    let source = JobSource::from(args.file);
    let mut job = JobFile::read(&source)?;
    let queue = job.queue().map(str::to_owned);
    if let Some(queue) = &queue {
        check_queue(ctx, queue, args.wait_for_available_agents).await?;
    }
    let packed = if attachments::has_attachments(&job.doc) {
        let reference = attachments::reference_dir(args.attachments_relative_to.as_deref(), source.path())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        attachments::pack(&mut job.doc, &reference)
            .map_err(|e| CliError::Usage(format!("{}: {e}", job.origin)))?
    } else {
        None
    };
    let id = submit_doc(ctx, &mut job.doc, &job.origin).await?;
    if let Some(packed) = packed {
        if let Err(e) = ctx.client.upload_attachments(id, packed.archive.path()).await {
            // Without its attachments the job would wait forever: take it back.
            let cancelled = ctx.client.cancel(id).await.is_ok();
            let what = if cancelled {
                "submitted and cancelled"
            } else {
                "submitted, but could not be cancelled"
            };
            let message = format!("job {id} {what}: the attachments could not be uploaded: {e}");
            return Err(CliError::Failed {
                message,
                exit: CliError::Client(e).exit(),
            });
        }
        ctx.ui
            .status(&format!("Uploaded {} attachment(s) for job {id}.", packed.files));
    }
    announce(ctx.ui, id, args.poll)?;
    if !args.poll {
        return Ok(Exit::Success);
    }
    poll::follow_to_end(ctx, id, &Follow::from_start(LogStream::Output)).await
}

/// Posts a job document (giving it a `job_id` if it has none) and records it in the history.
pub async fn submit_doc(
    ctx: &Ctx<'_>,
    doc: &mut Map<String, Value>,
    origin: &str,
) -> Result<JobId, CliError> {
    if !doc.contains_key("job_id") {
        doc.insert("job_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    let id = ctx
        .client
        .submit(&Value::Object(doc.clone()))
        .await
        .map_err(|e| refused(origin, e))?;
    let entry = Entry {
        job_id: id.to_string(),
        queue: doc
            .get("job_queue")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        server: ctx.client.server().to_string(),
        submitted_at: now_secs(),
        job_state: Some("waiting".into()),
        state: Some("waiting".into()),
    };
    if let Err(e) = ctx.history.add(entry) {
        ctx.ui.warn(&format!("cannot record the job in the history: {e}"));
    }
    Ok(id)
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
pub async fn check_queue(ctx: &Ctx<'_>, queue: &str, wait: bool) -> Result<(), CliError> {
    let (client, ui) = (&ctx.client, ctx.ui);
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
        ClientError::Refused {
            message,
            detail,
            status,
        } if !matches!(status, 401 | 403) => CliError::JobRefused {
            origin: origin.to_owned(),
            message,
            fields: detail.as_ref().map(field_error_lines).unwrap_or_default(),
        },
        other => CliError::Client(other),
    }
}
