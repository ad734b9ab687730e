//! Takes the next job: consumes the agent's class queues until a delivery arrives, then leases
//! it from the scheduler before acknowledging it.
//!
//! One delivery at a time (prefetch 1 across all the agent's queues); consumers are cancelled
//! as soon as a delivery arrives, so nothing else is delivered to a busy agent. No delivery
//! stays unacknowledged longer than the lease handshake: the store knows the job from then on,
//! and jobs may run far longer than RabbitMQ's consumer timeout.

use crate::stop::Stop;
use broker_schema::bus::{Bus, BusError, PublishOptions, Publisher, RpcClient, dead_letter};
use broker_schema::codec::check_content_type;
use broker_schema::messages::{
    LeaseGrant, LeaseReply, LeaseRequest, SchedulerReply, SchedulerRequest, Submission,
};
use broker_schema::topology::declare_class;
use broker_schema::{AgentName, DeviceClass, decode_submission};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

/// How long a lease request may take before the delivery is given back.
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A job this agent now holds the lease of.
pub struct TakenJob {
    pub submission: Submission,
    pub grant: LeaseGrant,
    /// When the winning lease request was sent (the lease is counted from here).
    pub asked_at: Instant,
    pub queue: DeviceClass,
}

pub struct Intake {
    pub bus: Bus,
    pub publisher: Arc<Publisher>,
    pub rpc: Arc<RpcClient>,
    pub agent: AgentName,
    /// Every queue of the agent: all are declared, whichever are served.
    pub queues: Vec<DeviceClass>,
    /// Whether the agent has a gateway client of its own (`server_address`) to move a job's
    /// files with; the scheduler leases a job with attachments to one that has not only when
    /// it hands out a files credential.
    pub fetches_files: bool,
    /// Jobs recently passed on because they may not run here, when and how often: this agent
    /// leaves them to others for a growing while instead of bouncing them back and forth.
    passed: HashMap<Uuid, (Instant, u32)>,
    /// The channel of the last take, kept for the next one while it is healthy: opening and
    /// closing a channel per job costs two round trips to the broker, one of them between the
    /// lease and the first phase.
    channel: Option<(lapin::Channel, u64)>,
    /// The connection generation our class queues were last declared on. Declaring is
    /// idempotent but costly for the broker (bindings are transactions), so it is done once per
    /// connection rather than once per job.
    declared: Option<u64>,
}

/// What happened to a delivery.
enum Taken {
    Job(Box<TakenJob>),
    /// Handled (dropped, dead-lettered or given back); look for another.
    Next,
    /// Given back because it may not run here (now): pause before consuming again.
    Pause(Duration),
}

impl Intake {
    pub fn new(
        bus: Bus,
        publisher: Arc<Publisher>,
        rpc: Arc<RpcClient>,
        agent: AgentName,
        queues: Vec<DeviceClass>,
    ) -> Self {
        Intake {
            bus,
            publisher,
            rpc,
            agent,
            queues,
            fetches_files: false,
            passed: HashMap::new(),
            channel: None,
            declared: None,
        }
    }

    /// Waits for the next job from `serving` (some or all of the agent's queues) and leases it.
    /// Returns `None` when `interrupt` fires first.
    pub async fn take(
        &mut self,
        interrupt: &Stop,
        serving: &[DeviceClass],
    ) -> Result<Option<TakenJob>, BusError> {
        loop {
            let (ch, generation) = match self.channel.take() {
                Some((ch, generation)) if ch.status().connected() => (ch, generation),
                _ => {
                    let (ch, generation) = self.bus.channel().await?;
                    if let Err(e) = self.prepare(&ch, generation).await {
                        let _ = ch.close(200, "intake stopped".into()).await;
                        self.bus.broken(generation).await;
                        return Err(e);
                    }
                    (ch, generation)
                }
            };
            let result = self.take_on(&ch, interrupt, serving).await;
            // Every consumer was cancelled and every delivery settled unless the take was
            // interrupted or failed: then the channel goes, and with it anything unsettled.
            if matches!(result, Ok(Some(Taken::Job(_) | Taken::Next))) {
                self.channel = Some((ch, generation));
            } else {
                let _ = ch.close(200, "intake stopped".into()).await;
            }
            match result {
                Ok(Some(Taken::Job(job))) => return Ok(Some(*job)),
                Ok(Some(Taken::Next)) => continue,
                Ok(Some(Taken::Pause(pause))) => {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = interrupt.token.cancelled() => return Ok(None),
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.bus.broken(generation).await;
                    return Err(e);
                }
            }
        }
    }

    /// Sets up a new channel: the prefetch, and our class queues once per connection.
    async fn prepare(&mut self, ch: &lapin::Channel, generation: u64) -> Result<(), BusError> {
        // `global`: one unacknowledged delivery across all of this channel's consumers.
        ch.basic_qos(1, BasicQosOptions { global: true }).await?;
        if self.declared != Some(generation) {
            let names = self.bus.names().clone();
            for class in &self.queues {
                declare_class(ch, &names, class).await?;
            }
            self.declared = Some(generation);
        }
        Ok(())
    }

    async fn take_on(
        &mut self,
        ch: &lapin::Channel,
        interrupt: &Stop,
        serving: &[DeviceClass],
    ) -> Result<Option<Taken>, BusError> {
        let names = self.bus.names().clone();
        let mut tags = Vec::new();
        let mut streams = Vec::new();
        for class in serving {
            let tag = format!("{}-{}", self.agent, Uuid::new_v4().simple());
            let consumer = ch
                .basic_consume(
                    names.class_queue(class).into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tags.push(tag);
            let queue = names.class_queue(class);
            streams.push(consumer.map(move |d| (d, queue.clone())));
        }
        let mut all = futures::stream::select_all(streams);
        let delivery = tokio::select! {
            d = all.next() => d,
            _ = interrupt.token.cancelled() => return Ok(None),
        };
        // Busy from here on: nothing more for this agent until it asks again.
        // Prefetch 1 keeps anything else from being delivered meanwhile; the consumers are
        // cancelled while the lease is asked for, and always before the delivery is settled.
        let cancel_consumers = async || {
            for tag in &tags {
                let _ = ch
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
            }
        };
        let (delivery, queue) = match delivery {
            Some((Ok(d), queue)) => (d, queue),
            Some((Err(e), _)) => return Err(e.into()),
            None => {
                cancel_consumers().await;
                return Err(BusError::Amqp(
                    lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer ended")
                        .into(),
                ));
            }
        };
        let ack = async || delivery.acker.ack(BasicAckOptions::default()).await.map(|_| ());
        let give_back = async || {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        };

        let submission =
            match check_content_type(delivery.properties.content_type().as_ref().map(|c| c.as_str()))
                .and_then(|_| decode_submission(&delivery.data))
            {
                Ok(s) => s,
                Err(e) => {
                    cancel_consumers().await;
                    let reason = e.to_string();
                    warn!(%reason, "undecodable job message; dead-lettering it");
                    if dead_letter(&self.publisher, &names, &delivery, &queue, &reason)
                        .await
                        .is_ok()
                    {
                        ack().await?;
                    } else {
                        give_back().await?;
                    }
                    return Ok(Some(Taken::Next));
                }
            };
        let job_id = submission.job_id;
        self.passed
            .retain(|_, (t, _)| t.elapsed() < Duration::from_secs(120));
        if submission
            .job
            .exclude_agents()
            .iter()
            .any(|a| a == self.agent.as_str())
        {
            // Known without asking: give it back, and leave it to others for a while.
            info!(%job_id, "job excludes this agent; leaving it to others");
            cancel_consumers().await;
            return self.pass(&delivery, &submission).await;
        }
        let req = SchedulerRequest::Lease(LeaseRequest {
            job_id,
            agent: self.agent.clone(),
            submission: submission.clone(),
            published_by: delivery.properties.user_id().as_ref().map(|u| u.to_string()),
            fetches_files: Some(self.fetches_files),
        });
        let asked_at = Instant::now();
        let rpc_queue = names.scheduler_rpc_queue();
        let ((), reply) = tokio::join!(
            cancel_consumers(),
            self.rpc
                .call::<_, SchedulerReply>(&rpc_queue, &req, LEASE_TIMEOUT)
        );
        match reply {
            Ok(SchedulerReply::Lease(LeaseReply::Granted(grant))) => {
                ack().await?;
                info!(%job_id, attempt = grant.attempt, "lease granted");
                let queue = submission.job.job_queue().clone();
                Ok(Some(Taken::Job(Box::new(TakenJob {
                    submission,
                    grant,
                    asked_at,
                    queue,
                }))))
            }
            Ok(SchedulerReply::Lease(LeaseReply::Denied(denial))) => {
                info!(%job_id, reason = ?denial.reason, detail = %denial.detail, "lease denied");
                if denial.reason.requeue() {
                    self.pass(&delivery, &submission).await
                } else {
                    ack().await?;
                    Ok(Some(Taken::Next))
                }
            }
            Ok(other) => {
                warn!(%job_id, ?other, "unexpected reply to a lease request; giving the job back");
                give_back().await?;
                Ok(Some(Taken::Pause(Duration::from_secs(1))))
            }
            Err(e) => {
                warn!(%job_id, error = %e, "no lease decision; giving the job back");
                give_back().await?;
                Ok(Some(Taken::Pause(Duration::from_secs(1))))
            }
        }
    }

    /// Passes a job this agent may not run (now) to the back of its queue, so that other agents
    /// get it and this agent is not stuck behind it; republished before the delivery is
    /// acknowledged, so it is never in neither place. Pauses longer each time the same job
    /// comes back (every agent may exclude it).
    async fn pass(
        &mut self,
        delivery: &lapin::message::Delivery,
        submission: &Submission,
    ) -> Result<Option<Taken>, BusError> {
        let entry = self
            .passed
            .entry(submission.job_id)
            .or_insert((Instant::now(), 0));
        entry.0 = Instant::now();
        entry.1 += 1;
        let pause =
            (Duration::from_millis(200) * 2u32.saturating_pow(entry.1.min(6))).min(Duration::from_secs(10));
        let names = self.bus.names();
        let opts = PublishOptions {
            mandatory: true,
            priority: Some(Submission::amqp_priority(submission.job.priority())),
            message_id: Some(submission.job_id.to_string()),
            ..Default::default()
        };
        let published = self
            .publisher
            .send(
                &names.jobs_exchange(),
                submission.job.job_queue().as_str(),
                submission,
                &opts,
                Some(Duration::from_secs(10)),
            )
            .await;
        match published {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await?,
            Err(e) => {
                warn!(job_id = %submission.job_id, error = %e, "cannot pass the job on; giving it back");
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?
            }
        };
        Ok(Some(Taken::Pause(pause)))
    }
}
