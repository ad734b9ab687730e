//! Runs given up while the broker could not be told (`run_abandoned` failed to publish: the
//! broker itself is what failed). Each such message is kept as a file in
//! `<state_dir>/unreported/` and published again once the agent is connected: after every
//! reconnect, and at start for what an earlier process kept. A file goes only once the broker
//! confirmed its message, so the scheduler learns why the attempt ended even across restarts; it
//! ignores the message for an attempt it has already moved past (the attempt is the fencing
//! token).
//!
//! The operator's record stays `journal.jsonl`; this is only what is still owed to the broker.

use broker_schema::Names;
use broker_schema::bus::{PublishOptions, Publisher};
use broker_schema::messages::JobEvent;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long one publish may take before it is left for the next reconnect.
const PUBLISH_LIMIT: Duration = Duration::from_secs(10);

pub struct Unreported {
    dir: PathBuf,
    publisher: Arc<Publisher>,
    names: Names,
}

impl Unreported {
    pub fn new(state_dir: &std::path::Path, publisher: Arc<Publisher>, names: Names) -> Unreported {
        Unreported {
            dir: state_dir.join("unreported"),
            publisher,
            names,
        }
    }

    /// Keeps `event` until it can be published.
    pub async fn keep(&self, event: &JobEvent) {
        let path = self.dir.join(format!("{}-{}.json", event.job_id, event.attempt));
        let text = serde_json::to_vec(event).expect("events serialize");
        let write = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            // Written whole, then renamed: a crash never leaves half a message to replay.
            let tmp = path.with_extension("tmp");
            tokio::fs::write(&tmp, text).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        match write.await {
            Ok(()) => {
                info!(job_id = %event.job_id, path = %path.display(), "kept to be reported once the broker is back")
            }
            Err(e) => warn!(job_id = %event.job_id, error = %e, "cannot keep the unreported event"),
        }
    }

    /// Publishes every kept event; returns how many the broker confirmed.
    pub async fn tell(&self) -> usize {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return 0;
        };
        let mut told = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let event: JobEvent = match tokio::fs::read(&path)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable unreported event; dropped");
                    let _ = tokio::fs::remove_file(&path).await;
                    continue;
                }
            };
            let key = Names::job_status_key(&event.job_id);
            let exchange = self.names.events_exchange();
            let opts = PublishOptions::default();
            let publish = self.publisher.publish(&exchange, &key, &event, &opts);
            match tokio::time::timeout(PUBLISH_LIMIT, publish).await {
                Ok(Ok(())) => {
                    info!(job_id = %event.job_id, attempt = event.attempt, "reported a run given up earlier");
                    let _ = tokio::fs::remove_file(&path).await;
                    told += 1;
                }
                Ok(Err(e)) => {
                    warn!(job_id = %event.job_id, error = %e, "still cannot report a run given up earlier")
                }
                Err(_) => warn!(job_id = %event.job_id, "still cannot report a run given up earlier in time"),
            }
        }
        told
    }
}

/// Tells what is kept each time `wake` is notified (the bus connected), until `shutdown`.
pub async fn serve(unreported: Arc<Unreported>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = wake.notified() => {
                unreported.tell().await;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
