//! Which of its queues the agent takes jobs from: all of them, or — when some are restricted
//! (have owners) — only those, as Testflinger's agent decides (a device lent to a team serves
//! that team alone; its other queues wait for other agents).
//!
//! The agent asks the scheduler (the store knows restricted queues) when it starts and every
//! [`refresh_every`] after; until the first answer it takes no job (a lease needs the scheduler
//! anyway). A scheduler that does not know the question (older than the agent) is taken to mean
//! "nothing restricted". The agent still declares all its queues, so that every one of them
//! stays routable.

use broker_schema::bus::RpcClient;
use broker_schema::messages::{RestrictedQueuesRequest, SchedulerReply, SchedulerRequest};
use broker_schema::{AgentName, DeviceClass, Names};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The queues to consume; `None` until known.
pub type Serving = watch::Receiver<Option<Vec<DeviceClass>>>;

/// How often restrictions are asked for again: three heartbeats (30 s by default), so that a
/// queue restricted by an admin stops being served here within that long.
pub fn refresh_every(heartbeat: Duration) -> Duration {
    (heartbeat * 3).max(Duration::from_millis(500))
}

/// The queues to take jobs from, given those of `queues` that are restricted.
pub fn serving(queues: &[DeviceClass], restricted: &[DeviceClass]) -> Vec<DeviceClass> {
    let mine: Vec<DeviceClass> = queues
        .iter()
        .filter(|q| restricted.contains(q))
        .cloned()
        .collect();
    if mine.is_empty() { queues.to_vec() } else { mine }
}

/// Keeps `tx` up to date until `shutdown`.
pub async fn follow(
    rpc: Arc<RpcClient>,
    names: Names,
    agent: AgentName,
    queues: Vec<DeviceClass>,
    every: Duration,
    tx: watch::Sender<Option<Vec<DeviceClass>>>,
    shutdown: CancellationToken,
) {
    let request = SchedulerRequest::RestrictedQueues(RestrictedQueuesRequest {
        agent,
        queues: queues.clone(),
    });
    let mut retry = Duration::from_millis(200);
    loop {
        let reply = rpc
            .call::<_, SchedulerReply>(&names.scheduler_rpc_queue(), &request, Duration::from_secs(5))
            .await;
        let known = match reply {
            Ok(SchedulerReply::RestrictedQueues { restricted }) => Some(serving(&queues, &restricted)),
            Ok(other) => {
                warn!(reply = ?other, "the scheduler does not say which queues are restricted; serving them all");
                Some(queues.clone())
            }
            Err(e) => {
                warn!(error = %e, "cannot ask which queues are restricted; asking again");
                None
            }
        };
        let wait = match known {
            Some(serve) => {
                tx.send_if_modified(|now| {
                    if now.as_ref() == Some(&serve) {
                        return false;
                    }
                    info!(queues = ?serve.iter().map(|q| q.as_str()).collect::<Vec<_>>(), "taking jobs from");
                    *now = Some(serve);
                    true
                });
                retry = Duration::from_millis(200);
                every
            }
            None => {
                retry = (retry * 2).min(Duration::from_secs(10));
                retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_queues_are_served_alone() {
        let q = |s: &str| DeviceClass::parse(s).unwrap();
        let mine = [q("open"), q("team-a"), q("team-b")];
        assert_eq!(serving(&mine, &[]), mine.to_vec());
        assert_eq!(serving(&mine, &[q("team-a")]), vec![q("team-a")]);
        assert_eq!(
            serving(&mine, &[q("team-b"), q("team-a"), q("elsewhere")]),
            vec![q("team-a"), q("team-b")]
        );
        // Restrictions on queues this agent does not serve change nothing here.
        assert_eq!(serving(&mine, &[q("elsewhere")]), mine.to_vec());
    }
}
