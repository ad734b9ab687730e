//! Records every submission routed to a declared class, whoever published it.
//!
//! The scheduler's queue is bound to each class the moment an agent declares it, so it receives
//! a copy of every job that an agent could receive. Recording is idempotent by `job_id`; seeing
//! the copy also proves the job reached the broker (the outbox stops republishing it).
//!
//! A message that is not a usable submission is dead-lettered; when it names a job, that job is
//! recorded `failed` (kind `rejected`, with the reason) and the rejection is announced, so that
//! a producer whose publish the broker confirmed finds the verdict in the API and on the
//! events exchange.

use crate::core::Core;
use crate::delivery::Disposition;
use crate::lifecycle::{self, Cause};
use crate::provenance;
use crate::store::{Inserted, JobRecord, StoreResult};
use broker_schema::codec::check_content_type;
use broker_schema::messages::Submission;
use broker_schema::{JobDefinition, Millis, codec, decode_submission};
use tracing::{info, warn};
use uuid::Uuid;

/// A submission as it came off the broker.
pub struct Received<'a> {
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The producer's `app_id`, for logs only.
    pub producer: Option<&'a str>,
    /// The verified RabbitMQ user that published it (`user_id`), see [`crate::provenance`].
    pub published_by: Option<&'a str>,
    /// The device class it was routed by.
    pub routing_key: &'a str,
}

pub async fn record(core: &Core, msg: &Received<'_>) -> StoreResult<Disposition> {
    let decoded = check_content_type(msg.content_type).and_then(|_| decode_submission(msg.body));
    let submission = match decoded {
        Ok(s) => s,
        Err(e) => {
            // A message that names its job is answered: the job is recorded as rejected, so
            // the producer finds the reason in the API as well as in the event.
            if let Some(job_id) = e.job_id().or_else(|| codec::probe_job_id(msg.body)) {
                let definition = placeholder_definition(msg.routing_key);
                reject(core, job_id, definition, &e.to_string()).await?;
            }
            return Ok(Disposition::Dead(e.to_string()));
        }
    };
    let (job_id, queue) = (submission.job_id, submission.job.job_queue().clone());
    let stored = match provenance::submitter(core, msg.published_by, submission.submitted_by.as_deref()) {
        Ok(submitter) => {
            let (inserted, job) = insert(core, submission, submitter, "accepted").await?;
            if inserted == Inserted::New {
                info!(%job_id, %queue, producer = msg.producer.unwrap_or("?"), "job recorded from the broker");
            }
            job
        }
        Err(reason) => match core.store().get_job(job_id).await? {
            // A copy of a job we already know (an agent passing on a job it may not run
            // republishes it as itself) proves nothing new about its submitter.
            Some(job) => job,
            None => {
                reject(core, job_id, Some(submission.job), &reason).await?;
                return Ok(Disposition::Dead(reason));
            }
        },
    };
    let parent = stored
        .definition
        .is_allocated_child()
        .then(|| stored.definition.parent_job_id())
        .flatten();
    core.apply_from(stored, &Cause::SubmissionSeen, Millis::now())
        .await?;
    if let Some(parent) = parent {
        link_child(core, parent, job_id).await?;
    }
    Ok(Disposition::Ack)
}

/// Lists a multi-device child on its parent, which releases it when it ends (at once if it no
/// longer runs); a child of an unknown job is released at once.
async fn link_child(core: &Core, parent: Uuid, child: Uuid) -> StoreResult<()> {
    let now = Millis::now();
    let applied = core.settle(parent, &Cause::ChildSubmitted { child }, now).await?;
    if applied.job.is_none() {
        let why = format!("parent job {parent} does not exist");
        let cause = Cause::ParentEnded {
            why,
            completed: false,
        };
        core.settle(child, &cause, now).await?;
    }
    Ok(())
}

/// Records a submission as a waiting job of `submitter` (unless its id is taken), routes its
/// events to its webhook before anything about it is announced (a gateway may have announced it
/// already), and announces it when it is new, with `note`. A late copy of a job that ended gets
/// no route: nothing would remove it. Returns the job as stored.
pub async fn insert(
    core: &Core,
    submission: Submission,
    submitter: Option<String>,
    note: &str,
) -> StoreResult<(Inserted, JobRecord)> {
    let record = JobRecord::new_waiting(
        submission.job_id,
        submission.job,
        submitter,
        submission.submitted_at.unwrap_or_else(Millis::now),
    );
    let inserted = core.store().insert_job(&record).await?;
    if !matches!(&inserted, Inserted::Existing(job) if job.state.is_terminal()) {
        core.follow_webhook(&record, true).await;
    }
    if inserted == Inserted::New {
        core.announce(&record, Some(note.into())).await;
    }
    let stored = match &inserted {
        Inserted::New => record,
        Inserted::Existing(job) => (**job).clone(),
    };
    Ok((inserted, stored))
}

/// What a rejected message's job record shows as its definition when the message held no valid
/// one: the class it was routed to.
fn placeholder_definition(routing_key: &str) -> Option<JobDefinition> {
    JobDefinition::parse(serde_json::json!({ "job_queue": routing_key })).ok()
}

/// Records a job that will never run, `failed` with kind `rejected`, unless a job of that id is
/// already known (a producer reusing an id cannot overwrite someone's job: [`Cause::Rejected`]),
/// and tells the producer. Without a definition (not even a usable class), it is only announced.
pub async fn reject(
    core: &Core,
    job_id: Uuid,
    definition: Option<JobDefinition>,
    reason: &str,
) -> StoreResult<()> {
    warn!(%job_id, %reason, "submission rejected");
    let Some(definition) = definition else {
        if core.store().get_job(job_id).await?.is_none() {
            core.announce_rejection(job_id, lifecycle::rejection(reason))
                .await;
        }
        return Ok(());
    };
    let record = lifecycle::rejected(job_id, definition, reason, Millis::now());
    if core.store().insert_job(&record).await? == Inserted::New {
        core.announce(&record, Some("rejected".into())).await;
    }
    Ok(())
}
