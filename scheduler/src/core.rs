//! What every scheduler task shares: the store, the publisher, names, configuration, and the
//! compare-and-set loop every state change goes through.

use crate::config::SchedulerConfig;
use crate::store::{DynSchedulerStore, JobRecord, JobUpdate, Precondition, StoreResult};
use broker_schema::bus::{PublishError, PublishOptions, Publisher};
use broker_schema::messages::{Control, ControlCommand, JobEvent, JobEventKind, Submission};
use broker_schema::{AgentName, Millis, Names, topology};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};
use uuid::Uuid;

/// How long an informational event may take to publish before we stop trying.
const EVENT_PUBLISH_LIMIT: Duration = Duration::from_secs(10);

pub struct Core {
    pub store: DynSchedulerStore,
    pub publisher: Arc<Publisher>,
    pub names: Names,
    pub config: SchedulerConfig,
    /// Woken whenever this scheduler stored a batch of output, so that a run's end waiting for
    /// its last chunks goes on at once instead of polling.
    pub output_stored: tokio::sync::Notify,
}

/// A state change to announce after the caller has its answer: announcing waits for the
/// broker's confirm (a disk write), which must not delay a reply an agent is waiting for.
#[derive(Debug)]
pub struct Announcement {
    pub job: Box<JobRecord>,
    pub detail: Option<String>,
}

/// The result of [`Core::modify`].
#[derive(Debug)]
pub enum Modified {
    /// No such job.
    Missing,
    /// The closure decided there was nothing to do (the job as it was).
    Unchanged(Box<JobRecord>),
    /// The update was applied (the job as it is now).
    Changed(Box<JobRecord>),
}

impl Core {
    /// Reads the job, lets `decide` compute a change from what it sees, and applies it with a
    /// precondition; if another writer changed the job in between, reads again and retries.
    pub async fn modify<F>(&self, job_id: Uuid, mut decide: F) -> StoreResult<Modified>
    where
        F: FnMut(&JobRecord) -> Option<(Precondition, JobUpdate)>,
    {
        let mut last = None;
        for _ in 0..8 {
            let Some(job) = self.store.get_job(job_id).await? else {
                return Ok(Modified::Missing);
            };
            let Some((pre, update)) = decide(&job) else {
                return Ok(Modified::Unchanged(Box::new(job)));
            };
            if let Some(after) = self.store.update_job(job_id, &pre, &update).await? {
                return Ok(Modified::Changed(Box::new(after)));
            }
            debug!(%job_id, "lost a race on the job; reading it again");
            last = Some(job);
        }
        warn!(%job_id, "job kept changing under us; giving up this update");
        Ok(last
            .map(|j| Modified::Unchanged(Box::new(j)))
            .unwrap_or(Modified::Missing))
    }

    /// [`Core::modify`] starting from a record just read (saving a read when the caller has
    /// one); a lost race reads the job again as usual.
    pub async fn modify_from<F>(&self, job: JobRecord, mut decide: F) -> StoreResult<Modified>
    where
        F: FnMut(&JobRecord) -> Option<(Precondition, JobUpdate)>,
    {
        let job_id = job.job_id;
        let Some((pre, update)) = decide(&job) else {
            return Ok(Modified::Unchanged(Box::new(job)));
        };
        if let Some(after) = self.store.update_job(job_id, &pre, &update).await? {
            return Ok(Modified::Changed(Box::new(after)));
        }
        debug!(%job_id, "lost a race on the job; reading it again");
        self.modify(job_id, decide).await
    }

    /// Tells listeners (webhooks, dashboards, producers) that the scheduler moved a job.
    /// Informational: failure to publish is logged, never fatal.
    pub async fn announce(&self, job: &JobRecord, detail: Option<String>) {
        let event = JobEvent {
            job_id: job.job_id,
            attempt: job.attempt,
            agent: None,
            at: Millis::now(),
            kind: JobEventKind::StateChanged {
                state: job.state,
                failure: job.failure.clone(),
                detail,
            },
        };
        let key = Names::job_status_key(&job.job_id);
        if let Err(e) = self
            .publisher
            .send(
                &self.names.events_exchange(),
                &key,
                &event,
                &PublishOptions::default(),
                Some(EVENT_PUBLISH_LIMIT),
            )
            .await
        {
            warn!(job_id = %job.job_id, error = %e, "cannot announce state change");
        }
        if job.state.is_terminal() {
            // Its last event is on its way to the gateways: nothing more for its webhook.
            self.follow_webhook(job, false).await;
        }
    }

    /// Routes a job's status events to the gateways, which relay them to its
    /// `job_status_webhook` (`follow`), or stops doing so. Nothing for a job without a webhook.
    pub async fn follow_webhook(&self, job: &JobRecord, follow: bool) {
        if job.definition.webhook().is_none() {
            return;
        }
        topology::route_job_events(self.publisher.bus(), &job.job_id, follow, EVENT_PUBLISH_LIMIT).await;
    }

    /// Sends a command to one agent's control queue.
    pub async fn control(&self, agent: &AgentName, command: ControlCommand) -> Result<(), PublishError> {
        let msg = Control {
            at: Millis::now(),
            command,
        };
        let opts = PublishOptions {
            mandatory: true,
            ..Default::default()
        };
        self.publisher
            .send(
                &self.names.control_exchange(),
                agent.as_str(),
                &msg,
                &opts,
                Some(EVENT_PUBLISH_LIMIT),
            )
            .await
    }

    /// Publishes a job to its class queue (again): after a lease was reclaimed, or when the
    /// original publish may never have happened.
    pub async fn enqueue(&self, job: &JobRecord) -> Result<(), PublishError> {
        let submission = Submission {
            job_id: job.job_id,
            job: job.definition.clone(),
            submitted_at: Some(job.created_at),
            submitted_by: job.submitted_by.clone(),
        };
        let opts = PublishOptions {
            mandatory: true,
            priority: Some(Submission::amqp_priority(job.priority)),
            message_id: Some(job.job_id.to_string()),
            user_id: self.publisher.bus().user(),
            ..Default::default()
        };
        self.publisher
            .send(
                &self.names.jobs_exchange(),
                job.queue.as_str(),
                &submission,
                &opts,
                Some(Duration::from_secs(30)),
            )
            .await
    }
}
