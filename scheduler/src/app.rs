//! The scheduler service: its consumers and periodic tasks, started together and stopped
//! together on shutdown.

use crate::config::SchedulerConfig;
use crate::core::Core;
use crate::delivery::{Disposition, settle};
use crate::projector::{self, FinishWaits};
use crate::store::{DynSchedulerStore, StoreError};
use crate::{lost_messages, outbox, reaper, rpc, submissions};
use broker_schema::bus::{Bus, BusConfig, BusError, Deliveries, PublishOptions, Publisher, supervise};
use broker_schema::messages::{Heartbeat, JobEvent, OutputChunk};
use broker_schema::{Message, decode};
use lapin::message::Delivery;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a requeued delivery waits before it is given back (so that a store outage does not
/// turn into a hot redelivery loop).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Most output chunks projected in one store call.
const OUTPUT_BATCH: usize = 256;
/// Deliveries of the submissions and status queues handled at once: one sequential lane per
/// hash of the delivery's key (a job's events, an agent's heartbeats stay in order), so that the
/// store's latency overlaps across jobs instead of adding up.
const LANES: usize = 16;
/// Deliveries waiting in each lane; a full lane holds the consumer back.
const LANE_DEPTH: usize = 8;

/// Everything the scheduler needs to run.
pub struct Scheduler {
    core: Arc<Core>,
    bus: Bus,
}

impl Scheduler {
    pub fn new(
        bus_config: BusConfig,
        store: DynSchedulerStore,
        config: SchedulerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let names = bus_config.names.clone();
        let bus = Bus::new(bus_config, shutdown);
        let publisher = Arc::new(Publisher::new(bus.clone(), "flinger-scheduler"));
        Scheduler {
            core: Arc::new(Core::new(store, publisher, names, config)),
            bus,
        }
    }

    /// The scheduler's broker link (for readiness probes).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs until the bus's shutdown token is cancelled, then lets every task finish its
    /// current message and closes channels before the connection.
    pub async fn run(self) {
        let shutdown = self.bus.shutdown_token().clone();
        let names = self.core.names.clone();
        let mut tasks = JoinSet::new();
        for (queue, handler) in [
            (
                names.scheduler_submissions_queue(),
                Arc::new(RecordSubmissions) as Arc<dyn DeliveryHandler>,
            ),
            (names.scheduler_status_queue(), Arc::new(ProjectStatus::default())),
        ] {
            let (core, bus) = (self.core.clone(), self.bus.clone());
            tasks.spawn(async move {
                let token = bus.shutdown_token().clone();
                supervise(&queue.clone(), &token, || {
                    consume_in_lanes(&core, &bus, &queue, handler.clone())
                })
                .await
            });
        }
        {
            let (core, bus) = (self.core.clone(), self.bus.clone());
            tasks.spawn(async move {
                supervise("output", &bus.shutdown_token().clone(), || {
                    consume_output(&core, &bus)
                })
                .await
            });
        }
        {
            let (core, bus) = (self.core.clone(), self.bus.clone());
            tasks.spawn(async move {
                supervise("rpc", &bus.shutdown_token().clone(), || serve_rpc(&core, &bus)).await
            });
        }
        {
            let core = self.core.clone();
            tasks.spawn(every(
                self.core.config.reap_every,
                shutdown.clone(),
                "reaper",
                move || {
                    let core = core.clone();
                    async move {
                        let r = reaper::reap_once(&core).await?;
                        if r != Default::default() {
                            info!(?r, "reaper pass");
                        }
                        Ok(())
                    }
                },
            ));
        }
        {
            let core = self.core.clone();
            let period = self.core.config.retention.every;
            // Recorded on the first pass (at start), or the next one if the store was down.
            let recorded = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tasks.spawn(every(period, shutdown.clone(), "retention", move || {
                let (core, recorded) = (core.clone(), recorded.clone());
                async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    if !recorded.load(Relaxed) {
                        crate::retention::record_settings(&core).await?;
                        recorded.store(true, Relaxed);
                    }
                    crate::retention::purge_once(&core).await.map(|_| ())
                }
            }));
        }
        {
            let core = self.core.clone();
            let period = (self.core.config.republish_after / 3).max(Duration::from_millis(200));
            tasks.spawn(every(period, shutdown.clone(), "outbox", move || {
                let core = core.clone();
                async move { outbox::sweep_once(&core).await.map(|_| ()) }
            }));
        }
        {
            let core = self.core.clone();
            let period = (self.core.config.republish_after / 3).max(Duration::from_millis(200));
            let suspects = Arc::new(tokio::sync::Mutex::new(lost_messages::Suspects::default()));
            tasks.spawn(every(period, shutdown.clone(), "lost messages", move || {
                let (core, suspects) = (core.clone(), suspects.clone());
                async move {
                    let mut suspects = suspects.lock().await;
                    lost_messages::check_once(&core, &mut suspects).await.map(|_| ())
                }
            }));
        }
        if let Some(period) = self.core.config.metrics_refresh {
            let (core, bus) = (self.core.clone(), self.bus.clone());
            let gauges = Arc::new(crate::metrics::Gauges::default());
            tasks.spawn(every(period, shutdown.clone(), "metrics", move || {
                let (core, gauges, connections) = (core.clone(), gauges.clone(), bus.connections_made());
                async move { crate::metrics::refresh_once(&core, &gauges, connections).await }
            }));
        }
        info!(
            store = self.core.store().backend(),
            namespace = names.namespace(),
            "scheduler running"
        );
        shutdown.cancelled().await;
        info!("scheduler stopping");
        if tokio::time::timeout(Duration::from_secs(30), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            warn!("tasks did not stop in 30 s; aborting them");
            tasks.abort_all();
        }
        self.core.publisher.close().await;
        self.bus.close().await;
        info!("scheduler stopped");
    }
}

fn store_disposition(r: Result<Disposition, StoreError>) -> Disposition {
    r.unwrap_or_else(|e| {
        warn!(error = %e, "store error; message requeued");
        Disposition::Retry
    })
}

/// What to do with each delivery of a queue consumed in lanes.
#[async_trait::async_trait]
trait DeliveryHandler: Send + Sync {
    async fn handle(&self, core: &Core, d: &Delivery) -> Result<Disposition, StoreError>;
}

/// The scheduler's copy of every submission.
struct RecordSubmissions;

#[async_trait::async_trait]
impl DeliveryHandler for RecordSubmissions {
    async fn handle(&self, core: &Core, d: &Delivery) -> Result<Disposition, StoreError> {
        let p = &d.properties;
        let msg = submissions::Received {
            content_type: p.content_type().as_ref().map(|c| c.as_str()),
            body: &d.data,
            producer: p.app_id().as_ref().map(|a| a.as_str()),
            published_by: p.user_id().as_ref().map(|u| u.as_str()),
            routing_key: d.routing_key.as_str(),
        };
        submissions::record(core, &msg).await
    }
}

/// Job events and heartbeats.
#[derive(Default)]
struct ProjectStatus {
    waits: FinishWaits,
}

#[async_trait::async_trait]
impl DeliveryHandler for ProjectStatus {
    async fn handle(&self, core: &Core, d: &Delivery) -> Result<Disposition, StoreError> {
        if let Err(e) =
            broker_schema::codec::check_content_type(d.properties.content_type().as_ref().map(|c| c.as_str()))
        {
            return Ok(Disposition::Dead(e.to_string()));
        }
        let kind = d
            .properties
            .kind()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default();
        if kind == Heartbeat::KIND || d.routing_key.as_str().starts_with("agent.") {
            return match decode::<Heartbeat>(&d.data) {
                Ok(hb) => projected("heartbeat", hb.at, projector::project_heartbeat(core, &hb).await),
                Err(e) => Ok(Disposition::Dead(e.to_string())),
            };
        }
        match decode::<JobEvent>(&d.data) {
            // Our own announcements come back too; only agents' events are projected.
            Ok(ev) if ev.agent.is_some() => projected(
                "status",
                ev.at,
                projector::project_event(core, &ev, &self.waits).await,
            ),
            Ok(ev) => projector::project_event(core, &ev, &self.waits).await,
            Err(e) => Ok(Disposition::Dead(e.to_string())),
        }
    }
}

/// Records the lag of an event published at `at` once its projection is done (acknowledged).
fn projected(
    kind: &'static str,
    at: broker_schema::Millis,
    r: Result<Disposition, StoreError>,
) -> Result<Disposition, StoreError> {
    if matches!(r, Ok(Disposition::Ack)) {
        crate::metrics::event_projected(kind, at);
    }
    r
}

/// Starts a consumer of `queue` on `ch`, under a tag of its own, until shutdown.
async fn deliveries(
    bus: &Bus,
    ch: &lapin::Channel,
    queue: &str,
    prefetch: u16,
) -> Result<Deliveries, BusError> {
    let tag = format!("flinger-scheduler-{}", uuid::Uuid::new_v4().simple());
    Deliveries::start(ch, queue, &tag, prefetch, bus.shutdown_token()).await
}

/// The lane a delivery goes to: by its message id (a submission's job) or else its routing key
/// (`job.<id>.status`, `agent.<name>.heartbeat`), so one job's or agent's messages keep their order.
fn lane_of(d: &Delivery) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match d.properties.message_id() {
        Some(id) => id.as_str().hash(&mut h),
        None => d.routing_key.as_str().hash(&mut h),
    }
    h.finish() as usize % LANES
}

/// Consumes a queue in [`LANES`] concurrent lanes, each handling and settling its deliveries in
/// order. Any error on the channel ends every lane; unsettled deliveries are then redelivered.
async fn consume_in_lanes(
    core: &Arc<Core>,
    bus: &Bus,
    queue: &str,
    handler: Arc<dyn DeliveryHandler>,
) -> Result<(), BusError> {
    bus.with_channel(async |ch| {
        let mut deliveries = deliveries(bus, ch, queue, (LANES * LANE_DEPTH) as u16).await?;
        let mut lanes = JoinSet::new();
        let mut senders = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(LANE_DEPTH);
            senders.push(tx);
            let (core, handler, queue) = (core.clone(), handler.clone(), queue.to_owned());
            lanes.spawn(async move {
                while let Some(d) = rx.recv().await {
                    let disposition = store_disposition(handler.handle(&core, &d).await);
                    if disposition == Disposition::Retry {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    settle(&d, disposition, &core.publisher, &core.names, &queue).await?;
                }
                Ok::<(), lapin::Error>(())
            });
        }
        let lane_failed = |r: Result<Result<(), lapin::Error>, tokio::task::JoinError>| -> BusError {
            match r {
                Ok(Err(e)) => e.into(),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => BusError::Amqp(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "a consumer lane stopped",
                ))),
            }
        };
        let mut result = async {
            loop {
                tokio::select! {
                    d = deliveries.next() => {
                        let Some(d) = d? else { return Ok(()) };
                        let lane = lane_of(&d);
                        if senders[lane].send(d).await.is_err() {
                            // The lane ended; its error is collected below.
                            return Ok(());
                        }
                    }
                    Some(r) = lanes.join_next() => return Err(lane_failed(r)),
                }
            }
        }
        .await;
        // Let the lanes settle what they hold before the channel closes.
        drop(senders);
        while let Some(r) = lanes.join_next().await {
            if !matches!(r, Ok(Ok(()))) && result.is_ok() {
                result = Err(lane_failed(r));
            }
        }
        result
    })
    .await
}

/// Consumes output chunks in batches: one store call per batch.
async fn consume_output(core: &Core, bus: &Bus) -> Result<(), BusError> {
    let queue = core.names.scheduler_output_queue();
    bus.with_channel(async |ch| {
        let mut deliveries = deliveries(bus, ch, &queue, OUTPUT_BATCH as u16 * 2).await?;
        while let Some(first) = deliveries.next().await? {
            let mut batch = vec![first];
            // Take whatever else is already here, without waiting for more.
            while batch.len() < OUTPUT_BATCH {
                match deliveries.next_within(Duration::from_millis(1)).await? {
                    Some(d) => batch.push(d),
                    None => break,
                }
            }
            let mut chunks = Vec::with_capacity(batch.len());
            let mut good = Vec::with_capacity(batch.len());
            for d in batch {
                match decode::<OutputChunk>(&d.data) {
                    Ok(c) => {
                        chunks.push(c);
                        good.push(d);
                    }
                    Err(e) => {
                        settle(
                            &d,
                            Disposition::Dead(e.to_string()),
                            &core.publisher,
                            &core.names,
                            &queue,
                        )
                        .await?
                    }
                }
            }
            let disposition = store_disposition(
                projector::project_output(core, &chunks)
                    .await
                    .map(|_| Disposition::Ack),
            );
            core.output_stored.notify_waiters();
            if disposition == Disposition::Ack {
                for c in &chunks {
                    crate::metrics::event_projected("output", c.at);
                }
            }
            if disposition == Disposition::Retry {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            for d in &good {
                let again = if disposition == Disposition::Retry {
                    Disposition::Retry
                } else {
                    Disposition::Ack
                };
                settle(d, again, &core.publisher, &core.names, &queue).await?;
            }
        }
        Ok(())
    })
    .await
}

/// Serves scheduler requests concurrently (up to the prefetch), replying to each.
async fn serve_rpc(core: &Arc<Core>, bus: &Bus) -> Result<(), BusError> {
    let queue = core.names.scheduler_rpc_queue();
    bus.with_channel(async |ch| {
        let mut deliveries = deliveries(bus, ch, &queue, 32).await?;
        let mut inflight = JoinSet::new();
        let result = async {
            while let Some(d) = deliveries.next().await? {
                while inflight.try_join_next().is_some() {}
                let core = core.clone();
                let queue = queue.clone();
                inflight.spawn(async move {
                    let (reply, disposition, deferred) = rpc::handle(&core, &d.data).await;
                    if disposition == Disposition::Retry {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    if let (Some(reply), Some(to)) = (reply, d.properties.reply_to().as_ref()) {
                        let opts = PublishOptions {
                            correlation_id: d.properties.correlation_id().as_ref().map(|c| c.to_string()),
                            transient: true,
                            ..Default::default()
                        };
                        // One attempt: a caller that does not hear back retries, and every
                        // request is idempotent.
                        if let Err(e) = core.publisher.publish("", to.as_str(), &reply, &opts).await {
                            debug!(error = %e, "reply not delivered");
                        }
                    }
                    if let Some(later) = deferred
                        && let Err(e) = core.carry_out(&later.job, later.effects).await
                    {
                        warn!(error = %e, "cannot carry out what follows a reply");
                    }
                    if let Err(e) = settle(&d, disposition, &core.publisher, &core.names, &queue).await {
                        debug!(error = %e, "cannot settle a request; it will be redelivered");
                    }
                });
            }
            Ok(())
        }
        .await;
        // Requests in flight finish (and settle) before the channel closes.
        while inflight.join_next().await.is_some() {}
        result
    })
    .await
}

/// Runs `tick` every `period` until shutdown; failures are logged and retried next period.
async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, name: &'static str, tick: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = tick().await {
            warn!(task = name, error = %e, "periodic task failed; retrying next period");
        }
    }
}
