//! Retention: ended jobs older than the lab keeps them are removed from the store, with their
//! output, serial logs, results, attachments and artifacts.
//!
//! A periodic task asks the store for small batches ([`SchedulerStore::purge_ended_jobs`]), a
//! few per period with a pause between them, so that the store's write lock (SQLite) is never
//! held for long and the hot path (leases, events) goes on. Each queue with a setting of its own
//! is purged by its own cutoff; the lab's default applies to every other queue. Several
//! schedulers may run it at once: the store deletes a job only if it still matches, and each
//! deletion is counted once. Waiting and running jobs, and reservations (a running job), are
//! never touched: only `complete`, `cancelled` and `failed` ones are. Agents' provision history
//! forgets entries older than the lab's retention. Records that carry their own expiry are
//! forgotten once it passed, whatever the retention: sign-ons nobody finished, refresh tokens
//! (and the web UI's sessions, which are refresh-token records) and secrets.
//!
//! Each scheduler records its settings in the store when it starts ([`record_settings`]): the
//! gateway, which cannot see the scheduler's configuration, shows them from there.

use crate::core::Core;
use crate::store::records::{self, Change};
use crate::store::{DocKind, ProvisionLogRecord, Purge, Records, RetentionSettingsRecord, StoreResult};
use broker_schema::Millis;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// Jobs removed per store call.
const BATCH: u32 = 100;
/// Store calls per scope and period, at most; the rest waits for the next period.
const BATCHES_PER_PASS: usize = 20;
/// Between two batches, so that other writers get the store.
const PAUSE: Duration = Duration::from_millis(20);

/// How long ended jobs are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionConfig {
    /// For every queue without a setting of its own; `None`: kept forever.
    pub keep: Option<Duration>,
    /// Queues with a setting of their own (`None`: that queue's jobs are kept forever).
    pub per_queue: BTreeMap<String, Option<Duration>>,
    /// How often the purge runs.
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Some(Duration::from_secs(30 * 24 * 3600)),
            per_queue: BTreeMap::new(),
            every: Duration::from_secs(60),
        }
    }
}

impl RetentionConfig {
    /// Parses a retention in days; 0 means forever.
    pub fn days(days: f64) -> Result<Option<Duration>, String> {
        if !days.is_finite() || days < 0.0 {
            return Err(format!(
                "retention days must be 0 (forever) or positive, not {days}"
            ));
        }
        Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
    }

    /// Parses `QUEUE=DAYS` (0: forever).
    pub fn queue_override(s: &str) -> Result<(String, Option<Duration>), String> {
        let (queue, days) = s
            .split_once('=')
            .ok_or_else(|| format!("expected QUEUE=DAYS, not {s:?}"))?;
        let days: f64 = days
            .trim()
            .parse()
            .map_err(|_| format!("{queue}: days must be a number, not {days:?}"))?;
        if queue.trim().is_empty() {
            return Err(format!("expected QUEUE=DAYS, not {s:?}"));
        }
        Ok((queue.trim().to_owned(), Self::days(days)?))
    }
}

/// Records this scheduler's settings in the store, where the gateway shows them (`GET
/// /v1/admin/retention`). The last scheduler to start wins; one that replaces different
/// settings says so, since each scheduler purges by its own.
pub async fn record_settings(core: &Core) -> StoreResult<()> {
    let config = &core.config.retention;
    let days = |d: &Option<Duration>| d.map(|d| d.as_secs_f64() / 86_400.0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mine = RetentionSettingsRecord {
        keep_days: days(&config.keep),
        per_queue: config
            .per_queue
            .iter()
            .map(|(q, d)| (q.clone(), days(d)))
            .collect(),
        purge_every_secs: config.every.as_secs_f64(),
        recorded_by: format!("flinger-scheduler pid {} on {}", std::process::id(), host.trim()),
        recorded_at: Millis::now(),
    };
    if let Some(before) = core.store().put_retention_settings(&mine).await?
        && !before.same_settings(&mine)
    {
        warn!(
            replaced = ?before,
            "retention: another scheduler ({}) recorded other settings; each scheduler purges by its own",
            before.recorded_by
        );
    }
    Ok(())
}

/// One pass: every scope, a few batches each. Returns how many jobs were removed.
pub async fn purge_once(core: &Core) -> StoreResult<u64> {
    let config = &core.config.retention;
    let now = Millis::now();
    let mut scopes = Vec::new();
    for (queue, keep) in &config.per_queue {
        if let Some(keep) = keep {
            scopes.push(Purge {
                ended_before: now.minus(*keep),
                queue: Some(queue.clone()),
                except_queues: vec![],
                limit: BATCH,
            });
        }
    }
    if let Some(keep) = config.keep {
        scopes.push(Purge {
            ended_before: now.minus(keep),
            queue: None,
            except_queues: config.per_queue.keys().cloned().collect(),
            limit: BATCH,
        });
    }
    let mut removed = 0;
    for scope in &scopes {
        for _ in 0..BATCHES_PER_PASS {
            let n = core.purge_ended_jobs(scope).await?;
            removed += n;
            if n < u64::from(scope.limit) {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    if removed > 0 {
        info!(removed, "retention: removed ended jobs past their retention");
    }
    let sign_ons = core.store().purge_expired_sign_ons(now).await?;
    if sign_ons > 0 {
        info!(
            sign_ons,
            "retention: forgot sign-ons nobody finished before they expired"
        );
    }
    let refresh_tokens = core.store().purge_expired_refresh_tokens(now).await?;
    if refresh_tokens > 0 {
        info!(
            refresh_tokens,
            "retention: forgot refresh tokens and web UI sessions that expired"
        );
    }
    let secrets = core.store().purge_expired_secrets(now).await?;
    if secrets > 0 {
        info!(secrets, "retention: forgot secrets that expired");
    }
    if let Some(keep) = config.keep {
        forget_old_provisions(core, now.minus(keep)).await?;
    }
    Ok(removed)
}

/// Agents' provision history: entries older than the lab's retention are forgotten (one
/// compare-and-set per agent that has any).
async fn forget_old_provisions(core: &Core, before: Millis) -> StoreResult<()> {
    let logs = core.store().list_provision_logs().await?;
    for (agent, log) in logs {
        if !log.entries.iter().any(|e| e.at < before) {
            continue;
        }
        records::modify(
            core.store().as_ref(),
            DocKind::ProvisionLog,
            &agent,
            |log: Option<ProvisionLogRecord>| {
                let Some(mut log) = log else { return Change::Keep };
                if log.forget_before(before) {
                    Change::Write(log)
                } else {
                    Change::Keep
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_settings_parse_days_and_queue_overrides() {
        assert_eq!(RetentionConfig::days(0.0), Ok(None), "0 keeps forever");
        assert_eq!(
            RetentionConfig::days(7.0),
            Ok(Some(Duration::from_secs(7 * 86_400)))
        );
        assert!(RetentionConfig::days(-1.0).unwrap_err().contains("-1"));
        assert_eq!(
            RetentionConfig::queue_override("rpi4b=2"),
            Ok(("rpi4b".to_owned(), Some(Duration::from_secs(2 * 86_400))))
        );
        assert_eq!(
            RetentionConfig::queue_override("keep=0"),
            Ok(("keep".to_owned(), None))
        );
        for bad in ["rpi4b", "=3", "rpi4b=soon", "rpi4b=-2"] {
            assert!(RetentionConfig::queue_override(bad).is_err(), "{bad}");
        }
    }
}
