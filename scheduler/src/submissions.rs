//! Records every submission routed to a declared class, whoever published it.
//!
//! The scheduler's queue is bound to each class the moment an agent declares it, so it receives
//! a copy of every job that an agent could receive. Recording is idempotent by `job_id`; seeing
//! the copy also proves the job reached the broker (the outbox stops republishing it).

use crate::core::Core;
use crate::delivery::Disposition;
use crate::store::{Inserted, JobRecord, JobUpdate, Precondition, StoreResult};
use broker_schema::bus::PublishOptions;
use broker_schema::codec::check_content_type;
use broker_schema::messages::{JobEvent, JobEventKind};
use broker_schema::{DecodeError, Failure, FailureKind, JobState, Millis, Names, decode_submission};
use std::time::Duration;
use tracing::{info, warn};

pub async fn record(
    core: &Core,
    content_type: Option<&str>,
    body: &[u8],
    producer: Option<&str>,
) -> StoreResult<Disposition> {
    if let Err(e) = check_content_type(content_type) {
        return Ok(Disposition::Dead(e.to_string()));
    }
    let submission = match decode_submission(body) {
        Ok(s) => s,
        Err(e @ DecodeError::InvalidJob { .. }) => {
            let job_id = e.job_id().expect("invalid jobs name their id");
            if core.store.get_job(job_id).await?.is_none() {
                announce_rejection(core, job_id, &e).await;
            }
            return Ok(Disposition::Dead(e.to_string()));
        }
        Err(e) => return Ok(Disposition::Dead(e.to_string())),
    };
    let now = Millis::now();
    let record = JobRecord::new_waiting(
        submission.job_id,
        submission.job,
        submission.submitted_by,
        submission.submitted_at.unwrap_or(now),
    );
    if core.store.insert_job(&record).await? == Inserted::New {
        info!(job_id = %record.job_id, queue = %record.queue, producer = producer.unwrap_or("?"), "job recorded from the broker");
        core.announce(&record, Some("accepted".into())).await;
    }
    let pre = Precondition {
        not_enqueued: true,
        ..Precondition::state(JobState::Waiting)
    };
    let mut u = JobUpdate::at(now);
    u.enqueued_at = Some(Some(now));
    core.store.update_job(record.job_id, &pre, &u).await?;
    Ok(Disposition::Ack)
}

/// Tells the producer (and anyone listening on `job.<id>.status`) that its job was refused.
async fn announce_rejection(core: &Core, job_id: uuid::Uuid, error: &DecodeError) {
    warn!(%job_id, %error, "submission rejected");
    let event = JobEvent {
        job_id,
        attempt: 0,
        agent: None,
        at: Millis::now(),
        kind: JobEventKind::StateChanged {
            state: JobState::Failed,
            failure: Some(Failure {
                kind: FailureKind::Rejected,
                reason: error.to_string(),
            }),
            detail: None,
        },
    };
    let key = Names::job_status_key(&job_id);
    let _ = core
        .publisher
        .send(
            &core.names.events_exchange(),
            &key,
            &event,
            &PublishOptions::default(),
            Some(Duration::from_secs(10)),
        )
        .await;
}
