//! The gateway's live events for its open pages.
//!
//! Each gateway declares a queue of its own (`broker_schema::topology::declare_gateway_ui`:
//! exclusive, deleted with its connection) bound to every job status event and heartbeat, and
//! to the output of the jobs whose pages are open on it ([`Hub::follow`] binds `job.<id>.output`
//! while at least one such page is open). Every event goes out on one in-process broadcast;
//! each open page's stream ([`super::stream`]) keeps what concerns it.
//!
//! Events are hints, the store is the truth: a page renders from the store when an event says
//! something changed, and output chunks, which carry their number, are shown as they come with
//! any gap filled from the store. After a reconnect (events may have been missed) [`Live::Resync`]
//! makes every page read the store again.

use crate::state::AppState;
use broker_schema::bus::{self, BusError, Deliveries};
use broker_schema::messages::{AgentState, Heartbeat, JobEvent, OutputChunk};
use broker_schema::{AgentName, decode, topology};
use lapin::options::BasicAckOptions;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use uuid::Uuid;

/// Events kept for slow pages; one that falls further behind reads the store again.
const BROADCAST_CAPACITY: usize = 4096;
/// Deliveries in flight on the gateway's queue.
const PREFETCH: u16 = 256;
/// How long a page waits for its job's output to be bound before reading the store anyway.
const FOLLOW_WAIT: Duration = Duration::from_secs(2);

/// What happened, as far as open pages care.
#[derive(Clone, Debug)]
pub enum Live {
    /// A status event of a job (state, phase, reservation…).
    Job(Uuid),
    /// A numbered output chunk of a job whose page is open here.
    Output(Arc<OutputChunk>),
    /// An agent's state, job or comment changed (heartbeats that change nothing are not sent).
    Agent(AgentName),
    /// Events may have been missed (the broker link came back): read the store again.
    Resync,
}

enum Command {
    Follow(Uuid, oneshot::Sender<()>),
    Unfollow(Uuid),
}

/// The broadcast, and which jobs' output the gateway's queue is bound to.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    tx: broadcast::Sender<Live>,
    /// Open pages per followed job.
    follows: Mutex<HashMap<Uuid, usize>>,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by the consumer task (kept across its restarts).
    command_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Command>>,
    /// Tells this gateway's queue apart from the others'.
    id: String,
    /// Whether the queue is consumed now (pages fall back to reading the store when not).
    connected: std::sync::atomic::AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (commands, command_rx) = mpsc::unbounded_channel();
        Hub {
            inner: Arc::new(HubInner {
                tx,
                follows: Mutex::new(HashMap::new()),
                commands,
                command_rx: tokio::sync::Mutex::new(command_rx),
                id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
                connected: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.inner.tx.subscribe()
    }

    /// Whether events flow now.
    pub fn connected(&self) -> bool {
        self.inner.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Routes `job_id`'s output to this gateway while the returned guard lives. Returns once
    /// the binding is in place (or after [`FOLLOW_WAIT`] when the broker does not answer), so
    /// that a page that reads the store after this misses no chunk.
    pub async fn follow(&self, job_id: Uuid) -> Following {
        let first = {
            let mut follows = self.inner.follows.lock().expect("follows lock");
            let n = follows.entry(job_id).or_insert(0);
            *n += 1;
            *n == 1
        };
        let guard = Following {
            hub: self.clone(),
            job_id,
        };
        let (done, bound) = oneshot::channel();
        if first {
            let _ = self.inner.commands.send(Command::Follow(job_id, done));
            let _ = tokio::time::timeout(FOLLOW_WAIT, bound).await;
        }
        guard
    }

    fn send(&self, event: Live) {
        let _ = self.inner.tx.send(event);
    }
}

/// Keeps a job's output routed here; dropping it lets the binding go with the last page.
pub struct Following {
    hub: Hub,
    job_id: Uuid,
}

impl Drop for Following {
    fn drop(&mut self) {
        let last = {
            let mut follows = self.hub.inner.follows.lock().expect("follows lock");
            match follows.get_mut(&self.job_id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    follows.remove(&self.job_id);
                    true
                }
            }
        };
        if last {
            let _ = self.hub.inner.commands.send(Command::Unfollow(self.job_id));
        }
    }
}

/// Consumes the gateway's UI queue until `stop`, reconnecting with backoff.
pub fn spawn(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        bus::supervise("web UI events", &stop.clone(), || consume(&state, &stop)).await;
        state
            .live()
            .inner
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
    })
}

async fn consume(state: &AppState, stop: &CancellationToken) -> Result<(), BusError> {
    let hub = state.live().clone();
    let mut commands = hub.inner.command_rx.lock().await;
    let names = state.names().clone();
    let result = state
        .bus()
        .with_channel(async |ch| {
            let queue = topology::declare_gateway_ui(ch, &names, &hub.inner.id).await?;
            let followed: Vec<Uuid> = hub
                .inner
                .follows
                .lock()
                .expect("follows lock")
                .keys()
                .copied()
                .collect();
            for job_id in &followed {
                topology::follow_job_output(ch, &names, &queue, job_id).await?;
            }
            let tag = format!("flinger-gateway-ui-{}", hub.inner.id);
            let mut deliveries = Deliveries::start(ch, &queue, &tag, PREFETCH, stop).await?;
            hub.inner.connected.store(true, std::sync::atomic::Ordering::Relaxed);
            // Whatever happened while no event could arrive is in the store.
            hub.send(Live::Resync);
            let mut agents: HashMap<AgentName, (AgentState, Option<Uuid>, Option<String>)> = HashMap::new();
            loop {
                tokio::select! {
                    d = deliveries.next() => {
                        let Some(d) = d? else { return Ok(()) };
                        d.acker.ack(BasicAckOptions::default()).await?;
                        if let Some(event) = interpret(d.routing_key.as_str(), &d.data, &mut agents) {
                            hub.send(event);
                        }
                    }
                    Some(command) = commands.recv() => match command {
                        Command::Follow(job_id, done) => {
                            topology::follow_job_output(ch, &names, &queue, &job_id).await?;
                            let _ = done.send(());
                        }
                        Command::Unfollow(job_id) => {
                            // A page may have opened again since.
                            let wanted = hub.inner.follows.lock().expect("follows lock").contains_key(&job_id);
                            if !wanted {
                                topology::unfollow_job_output(ch, &names, &queue, &job_id).await?;
                            }
                        }
                    },
                }
            }
        })
        .await;
    hub.inner
        .connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
    result
}

/// The event a delivery means to pages, if any.
fn interpret(
    key: &str,
    body: &[u8],
    agents: &mut HashMap<AgentName, (AgentState, Option<Uuid>, Option<String>)>,
) -> Option<Live> {
    if key.ends_with(".output") {
        return match decode::<OutputChunk>(body) {
            Ok(c) => Some(Live::Output(Arc::new(c))),
            Err(e) => {
                debug!(error = %e, "not an output chunk; ignored");
                None
            }
        };
    }
    if key.ends_with(".heartbeat") {
        let hb = decode::<Heartbeat>(body).ok()?;
        let now = (hb.state, hb.job_id, hb.comment.clone());
        if agents.get(&hb.agent) == Some(&now) {
            return None;
        }
        agents.insert(hb.agent.clone(), now);
        return Some(Live::Agent(hb.agent));
    }
    match decode::<JobEvent>(body) {
        Ok(e) => Some(Live::Job(e.job_id)),
        Err(e) => {
            debug!(error = %e, "not a job event; ignored");
            None
        }
    }
}
