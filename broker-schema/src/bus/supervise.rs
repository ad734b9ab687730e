use backon::{BackoffBuilder, ExponentialBuilder};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// The exponential backoff used for every reconnect (100 ms doubling to 5 s, with jitter).
pub fn backoff() -> ExponentialBuilder {
    super::connection::default_backoff()
}

/// Runs a broker- or store-bound loop until shutdown, restarting it with backoff whenever it
/// fails. A run that lasted a minute resets the backoff, so a flapping broker is retried
/// quickly after long healthy periods. `task` returning `Ok` means it stopped on purpose.
pub async fn supervise<F, Fut, E>(name: &str, shutdown: &CancellationToken, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut delays = backoff().build();
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = task() => r,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => {
                info!(task = name, "stopped");
                return;
            }
            Err(e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    delays = backoff().build();
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                error!(task = name, error = %e, retry_in = ?delay, "failed; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}
