//! `flinger submit FILE|- [--poll] [--quiet] [--wait-for-available-agents]
//! [--attachments-relative-to DIR]`.
//!
//! Reads the job file, refuses it before submitting when no agent serves its queue or every
//! agent serving it is offline (as Testflinger does; see [`check_queue`]), packs its attachments, submits it under a job id chosen here (so that a
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
use crate::model::{Agent, JobId, LogStream};
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
        let excluded = excluded_agents(&job.doc);
        check_queue(ctx, queue, &excluded, args.wait_for_available_agents).await?;
    }
    let packed = if attachments::has_attachments(&job.doc) {
        let reference = attachments::reference_dir(args.attachments_relative_to.as_deref(), source.path())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        attachments::pack(&mut job.doc, &reference)
            .map_err(|e| CliError::Usage(format!("{}: {e}", job.origin)))?
    } else {
        None
    };
    // An agent declares its queues before it shows as waiting, so once `check_queue` saw one,
    // the queue takes the job.
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

/// The check `submit` and `reserve` make before submitting, with Testflinger's meaning.
///
/// - No agent serves the queue (`GET /v1/queues/<q>/agents` answers 404, 204 or `[]`): refused.
///   With `wait` (`--wait-for-available-agents`), waited for instead, checking every 2 s: the
///   broker has nowhere to put the job until an agent has declared the queue.
/// - Every agent serving it, but those the job's `exclude_agents` names, is offline: refused;
///   with `wait`, submitted anyway (with a warning): the job waits in the queue for one.
/// - Agents in maintenance count as there (they come back); with none available, a warning.
pub async fn check_queue(
    ctx: &Ctx<'_>,
    queue: &str,
    excluded: &[String],
    wait: bool,
) -> Result<(), CliError> {
    let (client, ui) = (&ctx.client, ctx.ui);
    let mut said_waiting = false;
    let agents = loop {
        let missing = match client.queue_agents(queue).await {
            Ok(Some(agents)) if !agents.is_empty() => break agents,
            Ok(_) => "no agent serves it yet".to_owned(),
            // A long wait outlives a gateway restart.
            Err(e) if wait && e.is_transient() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        if !wait {
            let known = client
                .queues()
                .await
                .map(|q| q.into_keys().collect())
                .unwrap_or_default();
            return Err(CliError::UnknownQueue {
                queue: queue.to_owned(),
                known,
            });
        }
        if !said_waiting {
            ui.status(&format!(
                "Waiting for an agent on queue {queue:?} ({missing}); checking every {} s…",
                AGENT_WAIT_INTERVAL.as_secs()
            ));
            said_waiting = true;
        }
        tokio::time::sleep(AGENT_WAIT_INTERVAL).await;
    };
    let (left_out, candidates): (Vec<_>, Vec<_>) = agents.iter().partition(|a| excluded.contains(&a.name));
    if candidates.iter().any(|a| a.is_available()) {
        return Ok(());
    }
    let names = |agents: &[&Agent]| agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    if !wait && candidates.iter().all(|a| a.state == "offline") {
        return Err(CliError::NoOnlineAgent {
            queue: queue.to_owned(),
            offline: names(&candidates),
            excluded: names(
                &left_out
                    .into_iter()
                    .filter(|a| a.state != "offline")
                    .collect::<Vec<_>>(),
            ),
        });
    }
    let listed = names(&candidates);
    ui.warn(&format!(
        "every agent serving queue {queue:?}{} is offline or in maintenance; the job will wait for one",
        match listed.is_empty() {
            true => String::new(),
            false => format!(" ({})", listed.join(", ")),
        }
    ));
    Ok(())
}

/// The agents a job file excludes (`exclude_agents`).
pub fn excluded_agents(doc: &Map<String, Value>) -> Vec<String> {
    doc.get("exclude_agents")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
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
