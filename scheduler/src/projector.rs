//! Projects agents' events into the store: phase moves, exit codes, device info, reservations,
//! the end of a run, output chunks and heartbeats.
//!
//! Every event carries the attempt it belongs to; events of any other attempt than the job's
//! current one are ignored (the attempt is the fencing token). Phase moves only go forward, so
//! late or reordered events cannot move a job back. The end-of-run event is self-contained
//! (exit codes, device info) and waits until every output chunk of the run is stored, so a
//! finished job never shows partial output.

use crate::core::Core;
use crate::delivery::Disposition;
use crate::lifecycle::Cause;
use crate::store::{JobRecord, OutputFragment, ProvisionEntry, Records, Reservation, StoreResult};
use broker_schema::messages::{
    AdminState, AgentState, ControlCommand, Heartbeat, JobEvent, JobEventKind, LogStream, Outcome,
    OutputChunk, OutputCounts,
};
use broker_schema::{Millis, Phase};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Remembers since when a run's end has been waiting for its output, to bound the wait.
/// Shared by the tasks that project events concurrently (each lock is held only for a lookup).
#[derive(Default)]
pub struct FinishWaits {
    since: std::sync::Mutex<HashMap<(Uuid, u32), Instant>>,
}

impl FinishWaits {
    /// When the run's end first found its output incomplete.
    fn since(&self, key: (Uuid, u32)) -> Instant {
        *self
            .since
            .lock()
            .expect("finish waits")
            .entry(key)
            .or_insert_with(Instant::now)
    }

    fn done(&self, key: (Uuid, u32)) {
        self.since.lock().expect("finish waits").remove(&key);
    }
}

/// Projects one job event. `Retry` means "not yet" (its output is still arriving).
pub async fn project_event(core: &Core, ev: &JobEvent, waits: &FinishWaits) -> StoreResult<Disposition> {
    let Some(agent) = &ev.agent else {
        return Ok(Disposition::Ack); // our own announcement
    };
    // The device's provisioning history (and pass/fail streak), whatever became of the job:
    // it says how the device did. Idempotent by job.
    if let JobEventKind::PhaseFinished {
        phase: Phase::Provision,
        exit_code,
        detail,
    } = &ev.kind
    {
        let entry = ProvisionEntry {
            job_id: ev.job_id.to_string(),
            exit_code: *exit_code,
            detail: detail.clone().unwrap_or_default(),
            at: ev.at,
        };
        core.store().record_provision(agent.as_str(), &entry).await?;
    }
    let Some(job) = core.store().get_job(ev.job_id).await? else {
        warn!(job_id = %ev.job_id, "event for an unknown job ignored");
        return Ok(Disposition::Ack);
    };
    if job.attempt != ev.attempt {
        debug!(job_id = %ev.job_id, event_attempt = ev.attempt, job_attempt = job.attempt, "stale event ignored");
        return Ok(Disposition::Ack);
    }
    let attempt = ev.attempt;
    let now = Millis::now();
    let cause = match &ev.kind {
        JobEventKind::PhaseStarted { phase } => Cause::PhaseStarted {
            attempt,
            phase: *phase,
            shipped: ev.shipped,
        },
        JobEventKind::PhaseFinished { phase, exit_code, .. } => Cause::PhaseFinished {
            attempt,
            phase: *phase,
            exit_code: *exit_code,
            shipped: ev.shipped,
        },
        JobEventKind::DeviceInfo { info } => Cause::DeviceInfo {
            attempt,
            info: info.clone(),
        },
        JobEventKind::ReservationStarted {
            until,
            device_ip,
            user,
        } => Cause::ReservationStarted {
            attempt,
            reservation: Reservation {
                started_at: ev.at,
                until: *until,
                device_ip: device_ip.clone(),
                user: user.clone(),
            },
        },
        JobEventKind::Finished {
            outcome,
            output,
            phase_status,
            device_info,
            output_truncated,
        } => {
            return finish(
                core,
                &job,
                ev,
                outcome,
                *output,
                phase_status,
                device_info.clone(),
                output_truncated,
                waits,
            )
            .await;
        }
        JobEventKind::RunAbandoned { reason } => Cause::RunAbandoned {
            attempt,
            agent: agent.clone(),
            reason: reason.clone(),
        },
        JobEventKind::Allocated { device_info } => {
            let cause = Cause::ChildAllocated {
                attempt,
                device_info: device_info.clone(),
            };
            let applied = core.settle_from(job, &cause, now).await?;
            if let Some(child) = applied.job.filter(|_| applied.changed) {
                info!(job_id = %child.job_id, %agent, "child allocated");
                release_if_orphan(core, &child, now).await?;
            }
            return Ok(Disposition::Ack);
        }
        JobEventKind::StateChanged { .. } => return Ok(Disposition::Ack),
    };
    let applied = core.settle_from(job, &cause, now).await?;
    if let (Cause::RunAbandoned { reason, .. }, Some(job)) = (&cause, &applied.job)
        && applied.changed
    {
        info!(job_id = %job.job_id, %agent, %reason, state = %job.state, "the agent gave the run up");
    }
    Ok(Disposition::Ack)
}

/// Releases a child whose parent does not run (any more): it ended, waits again, or does not
/// exist. The parent releases its children when it ends; this catches a child that reached a
/// state the parent's release did not see, and the reaper calls it for every running child.
pub async fn release_if_orphan(core: &Core, child: &JobRecord, now: Millis) -> StoreResult<()> {
    let Some(parent_id) = child
        .definition
        .is_allocated_child()
        .then(|| child.definition.parent_job_id())
        .flatten()
    else {
        return Ok(());
    };
    let (why, completed) = match core.store().get_job(parent_id).await? {
        None => (format!("parent job {parent_id} does not exist"), false),
        Some(p) if p.state.is_active() => return Ok(()),
        Some(p) if p.state == broker_schema::JobState::Waiting => {
            (format!("parent job {parent_id} was requeued"), false)
        }
        Some(p) => (
            format!("parent job {parent_id} ended ({})", p.state),
            p.state == broker_schema::JobState::Complete,
        ),
    };
    let cause = Cause::ParentEnded {
        why: why.clone(),
        completed,
    };
    let applied = core.settle(child.job_id, &cause, now).await?;
    if applied.changed {
        info!(job_id = %child.job_id, parent = %parent_id, %why, "orphaned child released");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    core: &Core,
    job: &JobRecord,
    ev: &JobEvent,
    outcome: &Outcome,
    expected: OutputCounts,
    phase_status: &BTreeMap<Phase, i32>,
    device_info: Option<serde_json::Value>,
    output_truncated: &BTreeMap<LogStream, u64>,
    waits: &FinishWaits,
) -> StoreResult<Disposition> {
    if !job.state.is_active() {
        return Ok(Disposition::Ack); // a duplicate, or the reaper ended it first
    }
    let key = (ev.job_id, ev.attempt);
    let (stored_output, stored_serial) = settle_output(core, ev, expected).await?;
    let mut note = None;
    if stored_output < expected.output || stored_serial < expected.serial {
        if waits.since(key).elapsed() < core.config.output_wait {
            return Ok(Disposition::Retry);
        }
        warn!(job_id = %ev.job_id, stored_output, expected = expected.output, "finishing without all output");
        note = Some(format!(
            "output incomplete: {stored_output} of {} chunks stored",
            expected.output
        ));
    }
    waits.done(key);

    let now = Millis::now();
    // Exit codes whose events were processed out of order (by another scheduler) first.
    for (phase, code) in phase_status {
        if job.phase_status.get(phase.as_str()) != Some(code) {
            let cause = Cause::PhaseFinished {
                attempt: ev.attempt,
                phase: *phase,
                exit_code: *code,
                shipped: None,
            };
            core.apply_from(job.clone(), &cause, now).await?;
        }
    }
    let cause = Cause::RunFinished {
        attempt: ev.attempt,
        outcome: outcome.clone(),
        device_info,
        note,
        output_truncated: output_truncated
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), *n))
            .collect(),
    };
    let applied = core.settle(ev.job_id, &cause, now).await?;
    if let Some(job) = applied.job.filter(|_| applied.changed) {
        let failure = job.failure.as_ref().map(|f| f.reason.as_str()).unwrap_or("");
        info!(job_id = %job.job_id, state = %job.state, %failure, "job finished");
    }
    Ok(Disposition::Ack)
}

/// How long a run's end waits in place for its last output chunks. The agent sends it only
/// after the broker confirmed every chunk, so they are normally stored a few milliseconds
/// later by the output consumer; giving the event back instead would cost a redelivery pause.
const OUTPUT_SETTLE: Duration = Duration::from_millis(250);
/// How often the wait looks again when no batch of this scheduler's wakes it (another
/// scheduler may be storing the chunks).
const OUTPUT_SETTLE_POLL: Duration = Duration::from_millis(5);

/// Counts the run's stored output chunks, waiting up to [`OUTPUT_SETTLE`] for `expected`.
async fn settle_output(core: &Core, ev: &JobEvent, expected: OutputCounts) -> StoreResult<(u64, u64)> {
    let until = tokio::time::Instant::now() + OUTPUT_SETTLE;
    loop {
        // Registered before counting, so a batch stored meanwhile still wakes us.
        let stored = core.output_stored.notified();
        tokio::pin!(stored);
        stored.as_mut().enable();
        let output = core
            .store()
            .count_output(ev.job_id, ev.attempt, LogStream::Output)
            .await?;
        let serial = core
            .store()
            .count_output(ev.job_id, ev.attempt, LogStream::Serial)
            .await?;
        let complete = output >= expected.output && serial >= expected.serial;
        if complete || tokio::time::Instant::now() >= until {
            return Ok((output, serial));
        }
        tokio::select! {
            _ = stored => {}
            _ = tokio::time::sleep(OUTPUT_SETTLE_POLL) => {}
        }
    }
}

/// Records a heartbeat. The store holds what admins decided about the agent (it survives agent
/// restarts); if an idle agent reports otherwise — it restarted, or missed the message — it is
/// told again.
pub async fn project_heartbeat(core: &Core, hb: &Heartbeat) -> StoreResult<Disposition> {
    let record = core.store().record_heartbeat(hb).await?;
    let reported = match hb.state {
        AgentState::Maintenance => Some(AdminState::Maintenance),
        AgentState::Offline => Some(AdminState::Offline),
        AgentState::Waiting => None,
        _ => return Ok(Disposition::Ack), // busy: the decision applies after its job
    };
    if reported != record.admin_state {
        info!(agent = %hb.agent, wanted = ?record.admin_state, ?reported, "reminding the agent of its admin state");
        let cmd = ControlCommand::SetAdminState {
            state: record.admin_state,
            comment: record.admin_comment.clone().unwrap_or_default(),
        };
        if let Err(e) = core.control(&hb.agent, cmd).await {
            warn!(agent = %hb.agent, error = %e, "cannot remind the agent");
        }
    }
    Ok(Disposition::Ack)
}

/// Stores a batch of output chunks, dropping those of stale attempts (an earlier attempt, or
/// produced after the attempt was closed), and keeps each running
/// job's `last_output_at` roughly current (at most one write per job every few seconds).
pub async fn project_output(core: &Core, chunks: &[OutputChunk]) -> StoreResult<()> {
    let mut by_job: BTreeMap<Uuid, Vec<&OutputChunk>> = BTreeMap::new();
    for c in chunks {
        by_job.entry(c.job_id).or_default().push(c);
    }
    let mut fragments = Vec::with_capacity(chunks.len());
    let mut touch = Vec::new();
    for (job_id, chunks) in by_job {
        let Some(job) = core.store().get_job(job_id).await? else {
            debug!(%job_id, "output for an unknown job ignored");
            continue;
        };
        // Fencing: only the current attempt's output, and none produced after the scheduler
        // took its lease back (a backstop or a lost lease closed the attempt while the agent
        // still ran).
        let closed_at = job
            .attempts
            .iter()
            .find(|a| a.attempt == job.attempt)
            .and_then(|a| a.ended_at);
        let current: Vec<_> = chunks
            .into_iter()
            .filter(|c| c.attempt == job.attempt && closed_at.is_none_or(|end| c.at <= end))
            .collect();
        let Some(latest) = current.iter().map(|c| c.at).max() else {
            continue;
        };
        fragments.extend(current.iter().map(|c| OutputFragment {
            job_id,
            attempt: c.attempt,
            stream: c.stream,
            seq: c.seq,
            phase: c.phase,
            at: c.at,
            data: c.data.to_vec(),
        }));
        touch.push((job, latest));
    }
    core.store().append_output(&fragments).await?;
    // Keeps last_output_at roughly current ([`Cause::OutputSeen`]).
    for (job, latest) in touch {
        let cause = Cause::OutputSeen {
            attempt: job.attempt,
            latest,
        };
        core.apply_from(job, &cause, Millis::now()).await?;
    }
    Ok(())
}
