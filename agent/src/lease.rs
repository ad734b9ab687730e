//! Keeps a job's lease: renews it well before it expires, and stops the job — hard — the moment
//! it can no longer be sure it holds it. Counting is done on the agent's own monotonic clock from
//! when each request was *sent*, so a slow reply or a skewed clock can only make the agent stop
//! early, never run unleased. After the run, the lease is kept until the scheduler says it
//! recorded the run's end (a control message, [`Unrecorded`]), and no longer.

use crate::stop::{Stop, StopReason};
use broker_schema::bus::RpcClient;
use broker_schema::job_files::JobFiles;
use broker_schema::messages::{RenewReply, RenewRequest, SchedulerReply, SchedulerRequest};
use broker_schema::{AgentName, Millis, Names};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Retry pace when a renewal attempt fails.
const RETRY: Duration = Duration::from_secs(1);
/// After the run's last event, keep the lease alive at most this long while the scheduler
/// records the end (it answers "ended" as soon as it has).
const FINISH_LIMIT: Duration = Duration::from_secs(300);

pub struct LeaseSpec {
    pub job_id: Uuid,
    pub attempt: u32,
    pub agent: AgentName,
    pub lease: Duration,
    pub renew_every: Duration,
    /// When the lease request that won this lease was sent.
    pub asked_at: Instant,
    /// Fires when the scheduler has recorded the end of the run.
    pub recorded: Recorded,
}

/// Runs whose end the scheduler has yet to record, shared by the lease keepers (which stop when
/// it has) and the control consumer (which hears it).
#[derive(Clone, Default)]
pub struct Unrecorded(Arc<Mutex<HashMap<(Uuid, u32), CancellationToken>>>);

impl Unrecorded {
    /// Starts waiting for the scheduler to record the end of `attempt` of `job_id`.
    pub fn watch(&self, job_id: Uuid, attempt: u32) -> Recorded {
        let token = CancellationToken::new();
        self.0
            .lock()
            .expect("unrecorded runs")
            .insert((job_id, attempt), token.clone());
        Recorded {
            runs: self.clone(),
            key: (job_id, attempt),
            token,
        }
    }

    /// The scheduler recorded the end of this run. False: no keeper waits for it (any more).
    pub fn recorded(&self, job_id: Uuid, attempt: u32) -> bool {
        let token = self.0.lock().expect("unrecorded runs").remove(&(job_id, attempt));
        token.map(|t| t.cancel()).is_some()
    }
}

/// One run's wait for the scheduler to record its end; forgotten when dropped.
pub struct Recorded {
    runs: Unrecorded,
    key: (Uuid, u32),
    token: CancellationToken,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.runs.0.lock().expect("unrecorded runs").remove(&self.key);
    }
}

/// A running lease keeper.
pub struct LeaseKeeper {
    finished: CancellationToken,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Starts renewing. Renewal replies also carry what the agent must obey even if a control
    /// message was lost: a cancel (→ `stop`) and the reservation deadline (→ `deadline`); and
    /// the job's fresh files token (→ `files`).
    pub fn start(
        rpc: Arc<RpcClient>,
        names: Names,
        spec: LeaseSpec,
        stop: Stop,
        deadline: watch::Sender<Option<Millis>>,
        files: watch::Sender<Option<JobFiles>>,
    ) -> LeaseKeeper {
        let finished = CancellationToken::new();
        let task = tokio::spawn(keep(rpc, names, spec, stop, deadline, files, finished.clone()));
        LeaseKeeper { finished, task }
    }

    /// The run is over and its last event confirmed: keep the lease until the scheduler has
    /// recorded the end (it says so on the control queue, or in a refused renewal), then stop.
    /// Returns the task to join.
    pub fn finish(self) -> JoinHandle<()> {
        self.finished.cancel();
        self.task
    }
}

async fn keep(
    rpc: Arc<RpcClient>,
    names: Names,
    spec: LeaseSpec,
    stop: Stop,
    deadline: watch::Sender<Option<Millis>>,
    files: watch::Sender<Option<JobFiles>>,
    finished: CancellationToken,
) {
    // Stop this long before the lease would expire: a phase needs a moment to die.
    let margin = (spec.lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut valid_until = spec.asked_at + spec.lease;
    let mut next = spec.asked_at + spec.renew_every;
    let mut finishing_since: Option<Instant> = None;
    let queue = names.scheduler_rpc_queue();
    let req = SchedulerRequest::Renew(RenewRequest {
        job_id: spec.job_id,
        attempt: spec.attempt,
        agent: spec.agent.clone(),
    });
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(valid_until - margin)) => {}
            _ = finished.cancelled(), if finishing_since.is_none() => {
                finishing_since = Some(Instant::now());
                continue;
            }
            _ = stop.hard.cancelled() => return,
            _ = spec.recorded.token.cancelled() => {
                info!(job_id = %spec.job_id, "the scheduler recorded the end of the run; lease let go");
                return;
            }
        }
        if finishing_since.is_some_and(|t| t.elapsed() > FINISH_LIMIT) {
            warn!(job_id = %spec.job_id, "the scheduler has not recorded the end of the run; letting the lease go");
            return;
        }
        let now = Instant::now();
        if now + margin >= valid_until {
            if finishing_since.is_none() {
                stop.request(StopReason::LeaseLost(
                    "could not renew the lease before it expired".into(),
                ));
            }
            return;
        }
        let wait = (valid_until - margin - now).min(Duration::from_secs(5));
        // Bounded as a whole, reaching the broker included: a renewal never outlives the lease.
        match rpc.call::<_, SchedulerReply>(&queue, &req, wait).await {
            Ok(SchedulerReply::Renew(RenewReply::Renewed {
                cancel,
                reserve_until,
                files: fresh,
                ..
            })) => {
                if fresh.is_some() {
                    files.send_replace(fresh);
                }
                crate::metrics::lease_renewal("renewed");
                valid_until = now + spec.lease;
                next = now + spec.renew_every;
                debug!(job_id = %spec.job_id, "lease renewed");
                if let Some(reason) = cancel
                    && finishing_since.is_none()
                {
                    stop.request(StopReason::Cancelled(reason));
                }
                if reserve_until.is_some() {
                    deadline.send_if_modified(|d| {
                        let changed = *d != reserve_until;
                        *d = reserve_until;
                        changed
                    });
                }
            }
            Ok(SchedulerReply::Renew(RenewReply::Lost { reason })) => {
                if finishing_since.is_none() {
                    crate::metrics::lease_renewal("lost");
                    stop.request(StopReason::LeaseLost(reason));
                }
                return;
            }
            Ok(other) => {
                warn!(?other, "unexpected reply to a renewal");
                next = Instant::now() + RETRY;
            }
            Err(e) => {
                crate::metrics::lease_renewal("error");
                warn!(job_id = %spec.job_id, error = %e, "lease renewal failed; retrying");
                next = Instant::now() + RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_end_reaches_the_keeper_of_that_run_only() {
        let runs = Unrecorded::default();
        let job = Uuid::new_v4();
        let first = runs.watch(job, 1);
        let second = runs.watch(job, 2);
        assert!(runs.recorded(job, 1));
        assert!(first.token.is_cancelled());
        assert!(!second.token.is_cancelled(), "another attempt's keeper goes on");
        assert!(!runs.recorded(job, 1), "told once");
    }

    #[test]
    fn a_keeper_that_ended_is_forgotten() {
        let runs = Unrecorded::default();
        let job = Uuid::new_v4();
        drop(runs.watch(job, 1));
        assert!(!runs.recorded(job, 1));
        assert!(runs.0.lock().unwrap().is_empty());
    }
}
