//! The outbox's second half: waiting jobs whose class queue lost their message.
//!
//! The outbox ([`crate::outbox`]) republishes jobs the broker never took. A class queue is a
//! classic queue (for its priorities), so in a RabbitMQ cluster it lives on one node: while that
//! node is down, a submission routed to it is dropped — yet the scheduler's own queue (a quorum
//! queue) takes its copy, so the job is marked enqueued and the outbox leaves it alone — and a
//! node that lost its disk lost the messages it held. So the store's waiting jobs are compared
//! with the queue: when a class's queue holds fewer ready messages than it has waiting jobs
//! (enqueued and untouched for `republish_after`), twice in a row, the jobs that waited
//! unchanged all along are published again. Twice, because a job whose delivery an agent holds
//! for its lease handshake is in neither count for a few milliseconds. Duplicates are harmless
//! (a second delivery is refused a lease); ready messages of jobs that ended meanwhile only
//! delay the check until agents drain them. While the queue is unreachable nothing is published
//! (it would be dropped again).

use crate::core::Core;
use crate::lifecycle::Cause;
use crate::store::{JobQuery, JobRecord, StoreResult};
use broker_schema::bus::BusError;
use broker_schema::{DeviceClass, JobState, Millis};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, warn};
use uuid::Uuid;

/// Most waiting jobs looked at per pass.
const LIMIT: u32 = 2000;
/// How long the broker may take to say how many messages a queue holds.
const ASK_LIMIT: Duration = Duration::from_secs(5);

/// What one scheduler saw at its last pass: per class, the jobs that were waiting without a
/// message to match, with the `updated_at` they had.
#[derive(Debug, Default)]
pub struct Suspects(BTreeMap<DeviceClass, BTreeMap<Uuid, Millis>>);

/// One pass; returns how many jobs it published again.
pub async fn check_once(core: &Core, suspects: &mut Suspects) -> StoreResult<usize> {
    let now = Millis::now();
    let settled = now.minus(core.config.republish_after);
    let waiting = core
        .store()
        .find_jobs(&JobQuery {
            states: Some(vec![JobState::Waiting]),
            limit: Some(LIMIT),
            ..Default::default()
        })
        .await?;
    let mut by_class: BTreeMap<DeviceClass, Vec<JobRecord>> = BTreeMap::new();
    for job in waiting {
        if !job.awaiting_attachments
            && job.enqueued_at.is_some_and(|t| t < settled)
            && job.updated_at < settled
        {
            by_class.entry(job.queue.clone()).or_default().push(job);
        }
    }
    let mut now_suspected = BTreeMap::new();
    let mut published = 0;
    for (class, jobs) in by_class {
        let Some(ready) = ready_messages(core, &class).await else {
            continue;
        };
        if jobs.len() as u64 <= u64::from(ready) {
            continue;
        }
        let before = suspects.0.remove(&class).unwrap_or_default();
        let (confirmed, fresh): (Vec<JobRecord>, Vec<JobRecord>) = jobs
            .into_iter()
            .partition(|j| before.get(&j.job_id) == Some(&j.updated_at));
        if confirmed.is_empty() {
            now_suspected.insert(class, fresh.iter().map(|j| (j.job_id, j.updated_at)).collect());
            continue;
        }
        warn!(
            queue = %class,
            waiting = confirmed.len() + fresh.len(),
            ready,
            "the class queue holds fewer jobs than wait for it (a broker node lost them); publishing them again"
        );
        for job in confirmed {
            // The change claims this round (bumping updated_at), so other schedulers skip it.
            if core.settle_from(job, &Cause::MessageLost, now).await?.changed {
                published += 1;
            }
        }
        if !fresh.is_empty() {
            now_suspected.insert(class, fresh.iter().map(|j| (j.job_id, j.updated_at)).collect());
        }
    }
    suspects.0 = now_suspected;
    Ok(published)
}

/// The ready messages of the class's queue; `None` when the broker cannot say (the queue's
/// node is down, or the broker is unreachable).
async fn ready_messages(core: &Core, class: &DeviceClass) -> Option<u32> {
    let name = core.names.class_queue(class);
    let ask = core.publisher.bus().with_channel(async |ch| {
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(name.as_str().into(), options, FieldTable::default())
            .await
            .map_err(BusError::from)?;
        Ok(q.message_count())
    });
    match tokio::time::timeout(ASK_LIMIT, ask).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            debug!(queue = %class, error = %e, "cannot count the class queue's messages");
            None
        }
        Err(_) => None,
    }
}
