//! What every scheduler task shares: the store, the publisher, names, configuration, the
//! compare-and-set loop every state change goes through, and the carrying out of the
//! lifecycle's effects ([`crate::lifecycle`] decides; this module does).

use crate::config::SchedulerConfig;
use crate::lifecycle::{self, Cause, Effect, Reply, Rules};
use crate::store::{DynSchedulerStore, DynStore, JobRecord, JobUpdate, Precondition, Purge, StoreResult};
use broker_schema::bus::{PublishError, PublishOptions, Publisher};
use broker_schema::messages::{Control, ControlCommand, JobEvent, JobEventKind, Submission};
use broker_schema::{AgentName, Failure, JobState, Millis, Names, topology};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};
use uuid::Uuid;

/// How long an informational event may take to publish before we stop trying.
const EVENT_PUBLISH_LIMIT: Duration = Duration::from_secs(10);

pub struct Core {
    /// The handle that can change a job: private, so that every change goes through
    /// [`Core::apply`] (the lifecycle's decision under a compare-and-set) and nothing else in
    /// the scheduler can write job state around it.
    writer: DynSchedulerStore,
    /// The same store as a [`Store`](crate::store::Store) (no `update_job`), for everything
    /// else: reads, recording submissions, output, heartbeats, documents.
    store: DynStore,
    pub publisher: Arc<Publisher>,
    pub names: Names,
    pub config: SchedulerConfig,
    /// Woken whenever this scheduler stored a batch of output, so that a run's end waiting for
    /// its last chunks goes on at once instead of polling.
    pub output_stored: tokio::sync::Notify,
}

/// Effects to carry out after the caller has its answer: announcing waits for the broker's
/// confirm (a disk write), which must not delay a reply an agent is waiting for.
#[derive(Debug)]
pub struct Deferred {
    pub job: Box<JobRecord>,
    pub effects: Vec<Effect>,
}

/// What [`Core::apply`] did about a cause.
#[derive(Debug)]
pub struct Applied {
    /// The job as it is now; `None`: no such job.
    pub job: Option<Box<JobRecord>>,
    /// The decided change was made.
    pub changed: bool,
    /// A change was decided but other writers kept changing the job first: nothing was done
    /// (no effects, no reply).
    pub raced: bool,
    /// What to carry out ([`Core::carry_out`]): empty when the change could not be made.
    pub effects: Vec<Effect>,
    pub reply: Option<Reply>,
}

/// The result of [`Core::modify`].
#[derive(Debug)]
enum Modified {
    /// No such job.
    Missing,
    /// The closure decided there was nothing to do (the job as it was).
    Unchanged(Box<JobRecord>),
    /// The update was applied (the job as it is now).
    Changed(Box<JobRecord>),
}

impl Core {
    pub fn new(
        store: DynSchedulerStore,
        publisher: Arc<Publisher>,
        names: Names,
        config: SchedulerConfig,
    ) -> Core {
        Core {
            store: store.clone(),
            writer: store,
            publisher,
            names,
            config,
            output_stored: tokio::sync::Notify::new(),
        }
    }

    /// The store for reads and for what is not a job's state; it cannot update a job.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Removes one batch of ended jobs past their retention ([`crate::retention`]).
    pub async fn purge_ended_jobs(&self, purge: &Purge) -> StoreResult<u64> {
        self.writer.purge_ended_jobs(purge).await
    }

    /// Reads the job, lets `decide` compute a change from what it sees, and applies it with a
    /// precondition; if another writer changed the job in between, reads again and retries.
    async fn modify<F>(&self, job_id: Uuid, mut decide: F) -> StoreResult<Modified>
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
            if let Some(after) = self.writer.update_job(job_id, &pre, &update).await? {
                crate::metrics::job_moved(&job, &after);
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
    async fn modify_from<F>(&self, job: JobRecord, mut decide: F) -> StoreResult<Modified>
    where
        F: FnMut(&JobRecord) -> Option<(Precondition, JobUpdate)>,
    {
        let job_id = job.job_id;
        let Some((pre, update)) = decide(&job) else {
            return Ok(Modified::Unchanged(Box::new(job)));
        };
        if let Some(after) = self.writer.update_job(job_id, &pre, &update).await? {
            crate::metrics::job_moved(&job, &after);
            return Ok(Modified::Changed(Box::new(after)));
        }
        debug!(%job_id, "lost a race on the job; reading it again");
        self.modify(job_id, decide).await
    }

    /// The settings the lifecycle's decisions depend on.
    pub fn rules(&self) -> Rules {
        Rules::of(&self.config)
    }

    /// Reads the job, decides what `cause` does to it ([`lifecycle::decide`]) and makes the
    /// change with the compare-and-set loop. The effects are the caller's to carry out.
    pub async fn apply(&self, job_id: Uuid, cause: &Cause, now: Millis) -> StoreResult<Applied> {
        let rules = self.rules();
        let mut decision = None;
        let outcome = self
            .modify(job_id, deciding(&rules, cause, now, &mut decision))
            .await?;
        let applied = Self::applied(outcome, decision);
        crate::metrics::cause_applied(cause, &applied);
        Ok(applied)
    }

    /// [`Core::apply`] starting from a record just read (saving a read).
    pub async fn apply_from(&self, job: JobRecord, cause: &Cause, now: Millis) -> StoreResult<Applied> {
        let rules = self.rules();
        let mut decision = None;
        let outcome = self
            .modify_from(job, deciding(&rules, cause, now, &mut decision))
            .await?;
        let applied = Self::applied(outcome, decision);
        crate::metrics::cause_applied(cause, &applied);
        Ok(applied)
    }

    fn applied(outcome: Modified, decision: Option<lifecycle::Decision>) -> Applied {
        let decision = decision.unwrap_or_default();
        match outcome {
            Modified::Missing => Applied {
                job: None,
                changed: false,
                raced: false,
                effects: Vec::new(),
                reply: None,
            },
            Modified::Changed(job) => Applied {
                job: Some(job),
                changed: true,
                raced: false,
                effects: decision.effects,
                reply: decision.reply,
            },
            Modified::Unchanged(job) if decision.change.is_some() => Applied {
                job: Some(job),
                changed: false,
                raced: true,
                effects: Vec::new(),
                reply: None,
            },
            Modified::Unchanged(job) => Applied {
                job: Some(job),
                changed: false,
                raced: false,
                effects: decision.effects,
                reply: decision.reply,
            },
        }
    }

    /// [`Core::apply`], then carries out the effects at once.
    pub async fn settle(&self, job_id: Uuid, cause: &Cause, now: Millis) -> StoreResult<Applied> {
        let mut applied = self.apply(job_id, cause, now).await?;
        self.carry_out_applied(&mut applied).await?;
        Ok(applied)
    }

    /// [`Core::apply_from`], then carries out the effects at once.
    pub async fn settle_from(&self, job: JobRecord, cause: &Cause, now: Millis) -> StoreResult<Applied> {
        let mut applied = self.apply_from(job, cause, now).await?;
        self.carry_out_applied(&mut applied).await?;
        Ok(applied)
    }

    async fn carry_out_applied(&self, applied: &mut Applied) -> StoreResult<()> {
        let effects = std::mem::take(&mut applied.effects);
        if let Some(job) = &applied.job {
            self.carry_out(job, effects).await?;
        }
        Ok(())
    }

    /// Carries out a decision's effects, in order, for the job as it is after the change.
    pub async fn carry_out(&self, job: &JobRecord, effects: Vec<Effect>) -> StoreResult<()> {
        for effect in effects {
            match effect {
                Effect::Announce { detail } => self.announce(job, detail).await,
                Effect::PublishAgain => self.publish_again(job).await?,
                Effect::Control { agent, command } => {
                    if let Err(e) = self.control(&agent, command).await {
                        // A cancel or a deadline is repeated in every renewal's reply.
                        warn!(job_id = %job.job_id, %agent, error = %e, "cannot tell the agent now; its next renewal will");
                    }
                }
                Effect::ReleaseChildren { why, completed } => {
                    self.release_children(job, why, completed).await?
                }
            }
        }
        Ok(())
    }

    /// Releases every child listed on `parent` ([`Cause::ParentEnded`]). Lost on a crash, this
    /// is done again by the reaper, which releases running children whose parent no longer
    /// runs. (Boxed: a released child may be a parent too.)
    fn release_children<'a>(
        &'a self,
        parent: &'a JobRecord,
        why: String,
        completed: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<()>> + Send + 'a>> {
        Box::pin(async move {
            for child in &parent.children {
                let cause = Cause::ParentEnded {
                    why: why.clone(),
                    completed,
                };
                let applied = self.settle(*child, &cause, Millis::now()).await?;
                if applied.changed {
                    tracing::info!(parent = %parent.job_id, %child, %why, "child released");
                }
            }
            Ok(())
        })
    }

    /// Publishes a waiting job to its class queue; if no queue takes it any more, the job fails
    /// ([`Cause::Unroutable`]). On other errors the job stays waiting and unenqueued: the outbox
    /// publishes it later. (Boxed, and `Send` said outright: carrying out the failure's effects
    /// leads back here.)
    fn publish_again<'a>(
        &'a self,
        job: &'a JobRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<()>> + Send + 'a>> {
        Box::pin(async move {
            match self.enqueue(job).await {
                Ok(()) => Ok(()),
                Err(PublishError::Unroutable { reply_text, .. }) => {
                    let reason = format!("no agent serves queue '{}' ({reply_text})", job.queue);
                    let cause = Cause::Unroutable {
                        reason: reason.clone(),
                    };
                    let applied = self.settle(job.job_id, &cause, Millis::now()).await?;
                    if applied.changed {
                        warn!(job_id = %job.job_id, %reason, "job rejected");
                    }
                    Ok(())
                }
                Err(e) => {
                    warn!(job_id = %job.job_id, error = %e, "cannot publish the job now; the outbox will retry");
                    Ok(())
                }
            }
        })
    }

    /// Tells listeners (webhooks, dashboards, producers) that the scheduler moved a job.
    /// Informational: failure to publish is logged, never fatal.
    pub async fn announce(&self, job: &JobRecord, detail: Option<String>) {
        self.announce_state(job.job_id, job.attempt, job.state, job.failure.clone(), detail)
            .await;
        if job.state.is_terminal() {
            // Its last event is on its way to the gateways: nothing more for its webhook.
            self.follow_webhook(job, false).await;
        }
    }

    /// Tells the producer of a submission refused before any job of its id was known, and
    /// anyone listening on `job.<id>.status` (there is no record to announce, and no webhook).
    pub async fn announce_rejection(&self, job_id: Uuid, failure: Failure) {
        self.announce_state(job_id, 0, JobState::Failed, Some(failure), None)
            .await;
    }

    async fn announce_state(
        &self,
        job_id: Uuid,
        attempt: u32,
        state: JobState,
        failure: Option<Failure>,
        detail: Option<String>,
    ) {
        let event = JobEvent {
            job_id,
            attempt,
            agent: None,
            at: Millis::now(),
            shipped: None,
            kind: JobEventKind::StateChanged {
                state,
                failure,
                detail,
            },
        };
        let key = Names::job_status_key(&job_id);
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
            warn!(%job_id, error = %e, "cannot announce state change");
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

/// One step of the compare-and-set loop: decides what `cause` does to the job as read, keeping
/// the last decision (the one whose change was made) in `decision`.
fn deciding<'a>(
    rules: &'a Rules,
    cause: &'a Cause,
    now: Millis,
    decision: &'a mut Option<lifecycle::Decision>,
) -> impl FnMut(&JobRecord) -> Option<(Precondition, JobUpdate)> + 'a {
    move |job| {
        let d = lifecycle::decide(rules, job, cause, now);
        let change = d.change.clone();
        *decision = Some(d);
        change
    }
}
