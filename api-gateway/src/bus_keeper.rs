//! Keeps the gateway's broker connection up between requests, so that `/readyz` tells the
//! truth and the first submission after an outage does not pay for reconnecting.

use broker_schema::bus::{Bus, BusError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// How often the connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs until `stop` is cancelled. `Bus::live` retries with backoff on its own.
pub fn spawn(bus: Bus, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut announced = false;
        loop {
            if !bus.is_connected().await {
                tokio::select! {
                    live = bus.live() => match live {
                        Ok(_) if !announced => {
                            info!(namespace = bus.names().namespace(), "connected to the broker");
                            announced = true;
                        }
                        Ok(_) => {}
                        Err(BusError::Shutdown) => return,
                        Err(e) => debug!(error = %e, "broker connection failed"),
                    },
                    _ = stop.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}
