//! Every decision about a job, in one place and without I/O.
//!
//! [`decide`] takes the job as stored, a [`Cause`] (something that happened, or was asked) and
//! the time, and returns a [`Decision`]: the change to make — an update with the precondition
//! under which it is still right — the [`Effect`]s to carry out once it is made, and the answer
//! owed to whoever asked. The shells that receive causes (`lease`, `commands`, `projector`,
//! `reaper`, `submissions`, `outbox`) only read the job, decide, apply the change with the
//! compare-and-set loop (deciding again when another writer got there first) and carry out the
//! effects: [`crate::core::Core::apply`] and [`crate::core::Core::carry_out`].
//!
//! Every state change is a [`StateChange`](crate::store::StateChange), which only
//! [`JobState::transition`] can make, and the precondition that goes with one names the state
//! the job moves from.
//!
//! This module never reads a clock, the store or the broker: its tests drive it through every
//! (state, cause) pair in milliseconds.
//!
//! Multi-device jobs: a child (`allocate_data.allocate` and a `parent_job_id`) is listed on its
//! parent when the scheduler records it ([`Cause::ChildSubmitted`]), reaches `allocated` when its
//! agent says it holds the device ([`Cause::ChildAllocated`]), and is released — cancelled, its
//! cleanup run — when its parent ends or is requeued ([`Effect::ReleaseChildren`], then
//! [`Cause::ParentEnded`] on each child). A child holds its device only while its parent lives.

use crate::config::SchedulerConfig;
use crate::store::{AttemptRecord, JobRecord, JobUpdate, Lease, Precondition, Reservation, ShippedOutput};
use broker_schema::messages::{
    AdminState, CommandReply, ControlCommand, DenyReason, Outcome, OutputCounts, RefusalCode,
};
use broker_schema::phase::RECOVERY_FAILED_EXIT;
use broker_schema::{AgentName, Failure, FailureKind, JobDefinition, JobState, Millis, Phase};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// The scheduler's settings that decisions depend on.
#[derive(Clone, Debug)]
pub struct Rules {
    /// How long a lease lasts from its grant or renewal.
    pub lease: Duration,
    /// Leases granted to a job before a lost one fails it instead of requeueing it.
    pub max_attempts: u32,
    /// How long past a deadline the agent should enforce the scheduler waits before ending the
    /// job itself.
    pub backstop_grace: Duration,
    /// How long cleanup may run past the global timeout or the reservation's end.
    pub cleanup_allowance: Duration,
}

impl Rules {
    pub fn of(config: &SchedulerConfig) -> Rules {
        Rules {
            lease: config.lease,
            max_attempts: config.max_attempts,
            backstop_grace: config.backstop_grace,
            cleanup_allowance: config.cleanup_allowance,
        }
    }
}

/// Why a job might change. Causes from agents carry the attempt they belong to (the fencing
/// token): one for any other attempt than the job's current one changes nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    /// The scheduler's copy of the submission arrived: the job reached the broker.
    SubmissionSeen,
    /// The outbox found the job never seen on the broker and means to publish it again.
    RepublishDue,
    /// The job's class queue held fewer messages than jobs waited for it, twice in a row: its
    /// message may have been dropped (a cluster node that held the queue was down when it was
    /// published, or lost its disk); publish it again ([`crate::lost_messages`]).
    MessageLost,
    /// The gateway stored the job's attachments.
    AttachmentsReady,
    /// An agent asks for the job's lease.
    LeaseAsked {
        agent: AgentName,
        /// What an admin set the agent to, if it is out of service.
        agent_unavailable: Option<AdminState>,
        /// The agent could fetch a job's attachments (a files credential from us, or a gateway
        /// client of its own).
        fetches_files: bool,
    },
    /// The lease holder renews its lease.
    LeaseRenewed {
        agent: AgentName,
        attempt: u32,
    },
    PhaseStarted {
        attempt: u32,
        phase: Phase,
        /// The output the run had shipped before the move (newer agents say).
        shipped: Option<OutputCounts>,
    },
    PhaseFinished {
        attempt: u32,
        phase: Phase,
        exit_code: i32,
        shipped: Option<OutputCounts>,
    },
    DeviceInfo {
        attempt: u32,
        info: serde_json::Value,
    },
    ReservationStarted {
        attempt: u32,
        reservation: Reservation,
    },
    /// Output of the run was stored; `latest` is the time of the newest chunk.
    OutputSeen {
        attempt: u32,
        latest: Millis,
    },
    /// The agent ended the run. Its phases' exit codes are recorded first
    /// ([`Cause::PhaseFinished`]), so the job as stored has them all.
    RunFinished {
        attempt: u32,
        outcome: Outcome,
        device_info: Option<serde_json::Value>,
        /// Said with the announcement (output incomplete, …).
        note: Option<String>,
        /// The streams that passed the output cap: stream → bytes not shipped.
        output_truncated: BTreeMap<String, u64>,
    },
    CancelAsked {
        reason: String,
    },
    ReservationExtended {
        until: Option<Millis>,
        by_secs: Option<u64>,
        /// The asking client's limit on the reservation's whole length.
        max_total_secs: Option<u64>,
    },
    /// The reaper found the attempt's lease expired.
    LeaseExpired {
        attempt: u32,
    },
    /// The agent said it gave the run up.
    RunAbandoned {
        attempt: u32,
        agent: AgentName,
        reason: String,
    },
    /// The reaper looks at a running attempt's deadlines (global, output, reservation).
    DeadlinesChecked {
        attempt: u32,
    },
    /// No queue takes the job any more.
    Unroutable {
        reason: String,
    },
    /// A submission of this id was refused. A known job is never overwritten by it (a producer
    /// reusing an id cannot end someone's job); an unknown one is recorded by [`rejected`].
    Rejected,
    /// (On a parent.) A multi-device child naming this job its parent was recorded.
    ChildSubmitted {
        child: Uuid,
    },
    /// (On a child.) Its agent ran the allocate phase and now holds the device for the parent.
    ChildAllocated {
        attempt: u32,
        device_info: Option<serde_json::Value>,
    },
    /// (On a child.) Its parent ended, was requeued or does not exist: the device is released.
    /// When the parent `completed`, the child served its purpose and ends `complete` after its
    /// cleanup; otherwise it is cancelled.
    ParentEnded {
        why: String,
        completed: bool,
    },
}

/// What to do about a cause.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// The update, and what must still hold of the job for it to be right.
    pub change: Option<(Precondition, JobUpdate)>,
    /// To carry out once the change is made (at once when there is none), in order.
    pub effects: Vec<Effect>,
    /// The answer owed to whoever asked.
    pub reply: Option<Reply>,
}

/// Something to do outside the store once a decision is applied. Effects concern the job as it
/// is after the change.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Tell listeners the job's state (and stop following its webhook once it ended).
    Announce { detail: Option<String> },
    /// Publish the job to its class queue again; if no queue takes it, it is [`Cause::Unroutable`].
    PublishAgain,
    /// Send a command to an agent's control queue (the next renewal repeats a lost cancel).
    Control {
        agent: AgentName,
        command: ControlCommand,
    },
    /// Release every child listed on the job as it is after the change ([`Cause::ParentEnded`]
    /// on each): the parent ended or was requeued.
    ReleaseChildren { why: String, completed: bool },
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The lease is the asker's (newly, or again after a lost reply): grant it as stored.
    Grant,
    Deny {
        reason: DenyReason,
        detail: String,
    },
    /// The lease was extended: answer with the lease and the orders as stored.
    Renewed,
    Lost {
        reason: String,
    },
    Command(CommandReply),
}

impl Decision {
    fn nothing() -> Self {
        Decision::default()
    }

    fn reply(reply: Reply) -> Self {
        Decision {
            reply: Some(reply),
            ..Default::default()
        }
    }

    fn change(pre: Precondition, update: JobUpdate) -> Self {
        Decision {
            change: Some((pre, update)),
            ..Default::default()
        }
    }

    fn then(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    fn answer(mut self, reply: Reply) -> Self {
        self.reply = Some(reply);
        self
    }
}

/// States in which an agent holds the lease.
pub fn active_states() -> Vec<JobState> {
    JobState::ALL.into_iter().filter(|s| s.is_active()).collect()
}

/// The one decision function: what `cause` does to `job` at `now`.
pub fn decide(rules: &Rules, job: &JobRecord, cause: &Cause, now: Millis) -> Decision {
    let mut decision = decide_one(rules, job, cause, now);
    // Whatever ends a parent, sends it back to wait or cancels it releases its children first
    // (a parent being cancelled needs them no more, and a Testflinger `multi` connector still
    // waiting for them then stops waiting).
    if let Some((_, update)) = &decision.change
        && !job.children.is_empty()
    {
        let why = match update.state.map(|c| c.to()) {
            Some(JobState::Waiting) => Some(format!("parent job {} was requeued", job.job_id)),
            Some(to) if to.is_terminal() => Some(format!("parent job {} ended ({to})", job.job_id)),
            _ if matches!(update.cancel_requested, Some(Some(_))) => {
                Some(format!("parent job {} is being cancelled", job.job_id))
            }
            _ => None,
        };
        if let Some(why) = why {
            let completed = update.state.is_some_and(|c| c.to() == JobState::Complete);
            decision
                .effects
                .insert(0, Effect::ReleaseChildren { why, completed });
        }
    }
    decision
}

fn decide_one(rules: &Rules, job: &JobRecord, cause: &Cause, now: Millis) -> Decision {
    match cause {
        Cause::SubmissionSeen => submission_seen(job, now),
        Cause::RepublishDue => republish_due(job, now),
        Cause::MessageLost => message_lost(job, now),
        Cause::AttachmentsReady => attachments_ready(job, now),
        Cause::LeaseAsked {
            agent,
            agent_unavailable,
            fetches_files,
        } => lease_asked(rules, job, agent, *agent_unavailable, *fetches_files, now),
        Cause::LeaseRenewed { agent, attempt } => lease_renewed(rules, job, agent, *attempt, now),
        Cause::PhaseStarted {
            attempt,
            phase,
            shipped,
        } => phase_started(job, *attempt, *phase, *shipped, now),
        Cause::PhaseFinished {
            attempt,
            phase,
            exit_code,
            shipped,
        } => while_running(job, *attempt, now, |u| {
            u.phase_status_set = Some((*phase, *exit_code));
            u.output_shipped = more_shipped(job, *attempt, *shipped);
        }),
        Cause::DeviceInfo { attempt, info } => {
            while_running(job, *attempt, now, |u| u.device_info = Some(Some(info.clone())))
        }
        Cause::ReservationStarted { attempt, reservation } => {
            reservation_started(job, *attempt, reservation, now)
        }
        Cause::OutputSeen { attempt, latest } => output_seen(job, *attempt, *latest, now),
        Cause::RunFinished {
            attempt,
            outcome,
            device_info,
            note,
            output_truncated,
        } => run_finished(job, *attempt, outcome, device_info, note, output_truncated, now),
        Cause::CancelAsked { reason } => cancel_asked(job, reason, now),
        Cause::ReservationExtended {
            until,
            by_secs,
            max_total_secs,
        } => reservation_extended(job, *until, *by_secs, *max_total_secs, now),
        Cause::LeaseExpired { attempt } => reclaim(rules, job, *attempt, Reclaim::Expired, now),
        Cause::RunAbandoned {
            attempt,
            agent,
            reason,
        } => reclaim(rules, job, *attempt, Reclaim::Abandoned { agent, reason }, now),
        Cause::DeadlinesChecked { attempt } => deadlines_checked(rules, job, *attempt, now),
        Cause::Unroutable { reason } => unroutable(job, reason, now),
        Cause::Rejected => Decision::nothing(),
        Cause::ChildSubmitted { child } => child_submitted(job, *child, now),
        Cause::ChildAllocated { attempt, device_info } => child_allocated(job, *attempt, device_info, now),
        Cause::ParentEnded { why, completed } => parent_ended(job, why, *completed, now),
    }
}

/// The record of a submission refused before any job of its id was known: it ends `failed`
/// (kind `rejected`) without ever waiting, so its producer finds the reason in the API.
pub fn rejected(job_id: Uuid, definition: JobDefinition, reason: &str, now: Millis) -> JobRecord {
    let mut record = JobRecord::new_waiting(job_id, definition, None, now);
    record.state = JobState::Failed;
    record.ended_at = Some(now);
    record.enqueued_at = Some(now);
    record.awaiting_attachments = false;
    record.failure = Some(rejection(reason));
    record
}

/// Why a submission was refused, as its job shows it.
pub fn rejection(reason: &str) -> Failure {
    Failure {
        kind: FailureKind::Rejected,
        reason: reason.to_owned(),
    }
}

fn command_done(detail: impl Into<String>) -> Reply {
    Reply::Command(CommandReply::Done {
        detail: detail.into(),
        reserve_until: None,
    })
}

fn command_refused(code: RefusalCode, reason: impl Into<String>) -> Reply {
    Reply::Command(CommandReply::Refused {
        code,
        reason: reason.into(),
    })
}

fn deny(reason: DenyReason, detail: impl Into<String>) -> Reply {
    Reply::Deny {
        reason,
        detail: detail.into(),
    }
}

fn submission_seen(job: &JobRecord, now: Millis) -> Decision {
    if job.state != JobState::Waiting || job.enqueued_at.is_some() {
        return Decision::nothing();
    }
    let mut u = JobUpdate::at(now);
    u.enqueued_at = Some(Some(now));
    Decision::change(not_enqueued(job), u)
}

/// Claims the round (bumping `updated_at`, so other schedulers' outboxes skip the job) and
/// publishes the job.
fn republish_due(job: &JobRecord, now: Millis) -> Decision {
    if job.state != JobState::Waiting || job.enqueued_at.is_some() || job.awaiting_attachments {
        return Decision::nothing();
    }
    Decision::change(not_enqueued(job), JobUpdate::at(now)).then(Effect::PublishAgain)
}

/// A waiting job the broker took once (the outbox handles the others) whose message the class
/// queue may have lost. The change claims the round (bumping `updated_at`), so that other
/// schedulers skip the job.
fn message_lost(job: &JobRecord, now: Millis) -> Decision {
    if job.state != JobState::Waiting || job.enqueued_at.is_none() || job.awaiting_attachments {
        return Decision::nothing();
    }
    Decision::change(Precondition::observed(job), JobUpdate::at(now)).then(Effect::PublishAgain)
}

fn not_enqueued(job: &JobRecord) -> Precondition {
    Precondition {
        not_enqueued: true,
        ..Precondition::observed(job)
    }
}

fn attachments_ready(job: &JobRecord, now: Millis) -> Decision {
    if job.state != JobState::Waiting {
        return Decision::reply(command_refused(
            RefusalCode::Conflict,
            format!("the job is {} and no longer waits for attachments", job.state),
        ));
    }
    if !job.awaiting_attachments {
        // Released before; the outbox publishes it if that publish was lost.
        return Decision::reply(command_done("the attachments were already received"));
    }
    let mut u = JobUpdate::at(now);
    u.awaiting_attachments = Some(false);
    Decision::change(Precondition::observed(job), u)
        .then(Effect::PublishAgain)
        .answer(command_done("attachments received; the job is queued"))
}

/// The single move waiting → leased that makes an agent the job's only runner.
fn lease_asked(
    rules: &Rules,
    job: &JobRecord,
    agent: &AgentName,
    agent_unavailable: Option<AdminState>,
    fetches_files: bool,
    now: Millis,
) -> Decision {
    match job.state {
        JobState::Waiting => {}
        JobState::Cancelled => return Decision::reply(deny(DenyReason::Cancelled, "the job was cancelled")),
        s if s.is_terminal() => {
            return Decision::reply(deny(DenyReason::Finished, format!("the job already ended ({s})")));
        }
        _ => {
            // A retried request from the holder (its reply was lost) gets the same lease.
            let holder = job.lease.as_ref().map(|l| &l.agent);
            if holder == Some(agent) && job.state == JobState::Leased {
                return Decision::reply(Reply::Grant);
            }
            let holder = holder.map(|a| a.to_string()).unwrap_or_default();
            return Decision::reply(deny(DenyReason::AlreadyLeased, format!("leased by {holder}")));
        }
    }
    if job.awaiting_attachments {
        return Decision::reply(deny(
            DenyReason::NotReady,
            "the job's attachments have not been uploaded",
        ));
    }
    if !fetches_files && job.definition.has_attachments() {
        return Decision::reply(deny(
            DenyReason::NotReady,
            "the job has attachments and this agent cannot fetch them (it has no server_address and \
             the scheduler hands out no files credential: --gateway-url); waiting for an agent that can",
        ));
    }
    if job
        .definition
        .exclude_agents()
        .iter()
        .any(|a| a == agent.as_str())
    {
        return Decision::reply(deny(DenyReason::Excluded, "the job excludes this agent"));
    }
    if let Some(state) = agent_unavailable {
        return Decision::reply(deny(
            DenyReason::AgentUnavailable,
            format!("agent is set to {}", state.as_str()),
        ));
    }
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, JobState::Leased) else {
        return Decision::nothing();
    };
    let attempt = job.attempt + 1;
    u.attempt = Some(attempt);
    u.lease = Some(Some(Lease {
        agent: agent.clone(),
        attempt,
        until: now.plus(rules.lease),
    }));
    u.push_attempt = Some(AttemptRecord {
        attempt,
        agent: agent.clone(),
        started_at: now,
        ended_at: None,
        outcome: None,
    });
    u.started_at = Some(Some(now));
    u.ended_at = Some(None);
    u.clear_phase_status = true;
    u.device_info = Some(None);
    u.failure = Some(None);
    u.reservation = Some(None);
    Decision::change(Precondition::observed(job), u)
        .then(Effect::Announce {
            detail: Some(format!("leased by {agent}")),
        })
        .answer(Reply::Grant)
}

/// Extends a lease that is still valid and still the asker's. A late renewal is refused: the
/// agent must already have stopped, and the reaper may be reclaiming the job.
fn lease_renewed(rules: &Rules, job: &JobRecord, agent: &AgentName, attempt: u32, now: Millis) -> Decision {
    let holds = job
        .lease
        .as_ref()
        .is_some_and(|l| &l.agent == agent && l.until >= now);
    if job.state.is_active() && job.attempt == attempt && holds {
        let pre = Precondition {
            states: Some(active_states()),
            attempt: Some(attempt),
            lease_agent: Some(agent.clone()),
            lease_valid_at: Some(now),
            ..Default::default()
        };
        let mut u = JobUpdate::at(now);
        u.lease = Some(Some(Lease {
            agent: agent.clone(),
            attempt,
            until: now.plus(rules.lease),
        }));
        return Decision::change(pre, u).answer(Reply::Renewed);
    }
    let reason = if job.attempt != attempt {
        format!(
            "attempt {attempt} is stale; the job is on attempt {}",
            job.attempt
        )
    } else if job.state.is_terminal() {
        format!("the job ended ({})", job.state)
    } else if !job.state.is_active() {
        format!("the job is {}", job.state)
    } else {
        "the lease expired".to_owned()
    };
    Decision::reply(Reply::Lost { reason })
}

/// Phases only move forward, so a late or reordered event cannot move a job back.
fn phase_started(
    job: &JobRecord,
    attempt: u32,
    phase: Phase,
    shipped: Option<OutputCounts>,
    now: Millis,
) -> Decision {
    if job.attempt != attempt {
        return Decision::nothing();
    }
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, JobState::from_phase(phase)) else {
        return Decision::nothing();
    };
    u.output_shipped = more_shipped(job, attempt, shipped);
    if phase == Phase::Test {
        // Silence in the test phase is measured from its start.
        u.last_output_at = Some(now);
    }
    Decision::change(Precondition::observed(job), u)
}

/// The record's `output_shipped` after a phase move of `attempt` that came after `shipped`
/// chunks: it only grows within an attempt (events may be processed out of order), and is left
/// alone when the agent did not say.
fn more_shipped(job: &JobRecord, attempt: u32, shipped: Option<OutputCounts>) -> Option<ShippedOutput> {
    let shipped = shipped?;
    let before = job
        .output_shipped
        .filter(|s| s.attempt == attempt)
        .unwrap_or_default();
    Some(ShippedOutput {
        attempt,
        output: before.output.max(shipped.output),
        serial: before.serial.max(shipped.serial),
    })
}

/// A fact about the run that only makes sense while the attempt holds the lease (whatever
/// phase it has reached meanwhile).
fn while_running(job: &JobRecord, attempt: u32, now: Millis, set: impl FnOnce(&mut JobUpdate)) -> Decision {
    if job.attempt != attempt || !job.state.is_active() {
        return Decision::nothing();
    }
    let mut u = JobUpdate::at(now);
    set(&mut u);
    Decision::change(Precondition::in_states(&active_states()).attempt(attempt), u)
}

fn reservation_started(job: &JobRecord, attempt: u32, reservation: &Reservation, now: Millis) -> Decision {
    // An extension made in the meantime wins over the agent's first deadline.
    if job.attempt != attempt || !job.state.is_active() || job.reservation.is_some() {
        return Decision::nothing();
    }
    let mut u = JobUpdate::at(now);
    u.reservation = Some(Some(reservation.clone()));
    Decision::change(Precondition::observed(job), u)
}

/// How stale `last_output_at` may get: the output deadline is seconds to hours, and one write
/// per job every few seconds keeps the store's load low.
const OUTPUT_TOUCH_EVERY: Duration = Duration::from_secs(5);

fn output_seen(job: &JobRecord, attempt: u32, latest: Millis, now: Millis) -> Decision {
    let stale = job
        .last_output_at
        .is_none_or(|t| latest.since(t) > OUTPUT_TOUCH_EVERY);
    if !stale {
        return Decision::nothing();
    }
    while_running(job, attempt, now, |u| u.last_output_at = Some(latest))
}

fn run_finished(
    job: &JobRecord,
    attempt: u32,
    outcome: &Outcome,
    device_info: &Option<serde_json::Value>,
    note: &Option<String>,
    output_truncated: &BTreeMap<String, u64>,
    now: Millis,
) -> Decision {
    if job.attempt != attempt || !job.state.is_active() {
        return Decision::nothing(); // a duplicate, or the reaper ended it first
    }
    let (state, failure) = final_state(job, outcome);
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, state) else {
        return Decision::nothing();
    };
    let text = match (&failure, state) {
        (Some(f), JobState::Failed) => format!("failed: {}", f.reason),
        (_, s) => s.as_str().to_owned(),
    };
    u.failure = Some(failure);
    u.ended_at = Some(Some(now));
    u.lease = Some(None);
    if job.device_info.is_none() && device_info.is_some() {
        u.device_info = Some(device_info.clone());
    }
    u.close_attempt = Some((attempt, now, text));
    if *output_truncated != job.output_truncated {
        u.output_truncated = Some(output_truncated.clone());
    }
    let mut decision = Decision::change(Precondition::observed(job), u);
    if let Some(lease) = &job.lease {
        // Its lease keeper has kept the lease until now, in case we were slow: it may stop.
        decision = decision.then(Effect::Control {
            agent: lease.agent.clone(),
            command: ControlCommand::RunRecorded {
                job_id: job.job_id,
                attempt,
            },
        });
    }
    decision.then(Effect::Announce { detail: note.clone() })
}

/// The end state of a run: a requested cancel wins; a complete run whose phases failed keeps
/// `complete` with the failing phase as its failure (test failure vs device failure).
fn final_state(job: &JobRecord, outcome: &Outcome) -> (JobState, Option<Failure>) {
    if job.cancel_requested.is_some() && !matches!(outcome, Outcome::Failed { .. }) {
        return (JobState::Cancelled, None);
    }
    match outcome {
        // A released child's agent stopped holding as if cancelled: it served its parent.
        Outcome::Cancelled { .. } if job.released.is_none() => (JobState::Cancelled, None),
        Outcome::Failed { failure } => (JobState::Failed, Some(failure.clone())),
        Outcome::Complete | Outcome::Cancelled { .. } => {
            let failure = first_failure(&job.phase_status).map(|(phase, code)| {
                let kind = match (phase, code) {
                    (_, RECOVERY_FAILED_EXIT) => FailureKind::RecoveryFailed,
                    (Phase::Test, _) => FailureKind::TestFailed,
                    _ => FailureKind::DeviceFailed,
                };
                Failure {
                    kind,
                    reason: format!("{phase} exited {code}"),
                }
            });
            (JobState::Complete, failure)
        }
    }
}

/// The first phase whose failure explains a finished job, if any (cleanup is not counted: a
/// failed cleanup does not make a passing test fail).
pub fn first_failure(phase_status: &BTreeMap<String, i32>) -> Option<(Phase, i32)> {
    Phase::ALL
        .into_iter()
        .filter(|p| *p != Phase::Cleanup)
        .find_map(|p| phase_status.get(p.as_str()).filter(|c| **c != 0).map(|c| (p, *c)))
}

/// A waiting job ends `cancelled` at once and never starts; a running one is marked, and its
/// agent is told to stop the phase, run cleanup and end `cancelled` (every renewal repeats it).
fn cancel_asked(job: &JobRecord, reason: &str, now: Millis) -> Decision {
    if job.state.is_terminal() {
        return Decision::reply(command_refused(
            RefusalCode::Conflict,
            format!("the job is already {}", job.state),
        ));
    }
    if job.cancel_requested.is_some() {
        return Decision::reply(command_done("a cancel was already requested"));
    }
    let mut u = JobUpdate::at(now);
    u.cancel_requested = Some(Some(reason.to_owned()));
    if job.state == JobState::Waiting {
        let Ok(mut u) = u.moving(job.state, JobState::Cancelled) else {
            return Decision::nothing();
        };
        u.ended_at = Some(Some(now));
        return Decision::change(Precondition::observed(job), u)
            .then(Effect::Announce {
                detail: Some(reason.to_owned()),
            })
            .answer(command_done("cancelled"));
    }
    let mut decision = Decision::change(Precondition::observed(job), u);
    if let Some(lease) = &job.lease {
        decision = decision.then(Effect::Control {
            agent: lease.agent.clone(),
            command: ControlCommand::Cancel {
                job_id: job.job_id,
                attempt: job.attempt,
                reason: reason.to_owned(),
            },
        });
    }
    decision.answer(command_done("cancel requested; the job stops after cleanup"))
}

/// Moves a running reservation's deadline. The scheduler owns the deadline; the agent is told
/// and obeys (and the reaper ends the reservation if it does not).
fn reservation_extended(
    job: &JobRecord,
    until: Option<Millis>,
    by_secs: Option<u64>,
    max_total_secs: Option<u64>,
    now: Millis,
) -> Decision {
    let Some(res) = job
        .reservation
        .as_ref()
        .filter(|_| job.state == JobState::Reserve)
    else {
        return Decision::reply(command_refused(
            RefusalCode::Conflict,
            format!("the job is {} and has no running reservation", job.state),
        ));
    };
    let until = match (until, by_secs) {
        (Some(t), _) => t,
        (None, Some(secs)) => res.until.plus(Duration::from_secs(secs)),
        (None, None) => {
            return Decision::reply(command_refused(
                RefusalCode::Invalid,
                "say how long to extend by, or until when",
            ));
        }
    };
    if until <= now {
        return Decision::reply(command_refused(
            RefusalCode::Invalid,
            "the new deadline is in the past",
        ));
    }
    if let Some(max) = max_total_secs
        && until.since(res.started_at) > Duration::from_secs(max)
    {
        return Decision::reply(command_refused(
            RefusalCode::Forbidden,
            format!("a reservation may last at most {max} s in total for this client"),
        ));
    }
    let mut u = JobUpdate::at(now);
    u.reservation = Some(Some(Reservation { until, ..res.clone() }));
    let mut decision = Decision::change(Precondition::observed(job), u);
    if let Some(lease) = &job.lease {
        decision = decision.then(Effect::Control {
            agent: lease.agent.clone(),
            command: ControlCommand::SetReservationDeadline {
                job_id: job.job_id,
                until,
            },
        });
    }
    decision
        .then(Effect::Announce {
            detail: Some(format!("reservation extended until {until}")),
        })
        .answer(Reply::Command(CommandReply::Done {
            detail: format!("reserved until {until}"),
            reserve_until: Some(until),
        }))
}

/// Why a lease is being taken back.
enum Reclaim<'a> {
    /// The lease expired (the agent stopped renewing).
    Expired,
    /// The agent said it gave the run up; the lease need not have expired yet.
    Abandoned { agent: &'a AgentName, reason: &'a str },
}

/// Takes a job back from its agent: requeue it for another attempt, or end it (cancelled if a
/// cancel was pending, failed after the last attempt). The precondition re-checks what was seen
/// (same attempt, lease still expired or still the agent's), so several schedulers may reap at
/// once and a renewal racing the reaper either wins or is told it lost the lease.
fn reclaim(rules: &Rules, job: &JobRecord, attempt: u32, how: Reclaim<'_>, now: Millis) -> Decision {
    if job.attempt != attempt || !job.state.is_active() {
        return Decision::nothing();
    }
    let holder = job
        .lease
        .as_ref()
        .map(|l| l.agent.to_string())
        .unwrap_or_default();
    let mut pre = Precondition::observed(job);
    let why = match how {
        Reclaim::Expired => {
            if job.lease.as_ref().is_none_or(|l| l.until >= now) {
                return Decision::nothing();
            }
            pre.lease_expired_at = Some(now);
            format!("lease expired: agent {holder} stopped renewing")
        }
        Reclaim::Abandoned { agent, reason } => {
            if job.lease.as_ref().map(|l| &l.agent) != Some(agent) {
                return Decision::nothing();
            }
            pre.lease_agent = Some(agent.clone());
            format!("agent {holder} gave the run up: {reason}")
        }
    };
    // An allocated child is not run again: its parent already works with that device.
    let allocated_child = job.definition.is_allocated_child()
        && (job.state == JobState::Allocated || job.phase_status.get("allocate") == Some(&0));
    let (to, announced) = if job.cancel_requested.is_some() {
        (JobState::Cancelled, Some(why.clone()))
    } else if job.attempt >= rules.max_attempts || allocated_child {
        (JobState::Failed, None)
    } else {
        (JobState::Waiting, Some(format!("requeued: {why}")))
    };
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, to) else {
        return Decision::nothing();
    };
    u.lease = Some(None);
    u.close_attempt = Some((attempt, now, why.clone()));
    match to {
        JobState::Waiting => {
            u.enqueued_at = Some(None);
            u.reservation = Some(None);
        }
        JobState::Failed => {
            u.ended_at = Some(Some(now));
            let reason = if allocated_child {
                format!("{why} (an allocated child is not run again: its parent holds its device's info)")
            } else {
                format!("{why} (attempt {attempt} of {})", rules.max_attempts)
            };
            u.failure = Some(Some(Failure {
                kind: FailureKind::AgentLost,
                reason,
            }));
        }
        _ => u.ended_at = Some(Some(now)),
    }
    let decision = Decision::change(pre, u).then(Effect::Announce { detail: announced });
    if to == JobState::Waiting {
        decision.then(Effect::PublishAgain)
    } else {
        decision
    }
}

/// Ends a job whose agent still renews its lease but ignores a deadline. The agent is told, and
/// learns it again at its next renewal (the lease is gone).
fn deadlines_checked(rules: &Rules, job: &JobRecord, attempt: u32, now: Millis) -> Decision {
    if job.attempt != attempt || !job.state.is_active() {
        return Decision::nothing();
    }
    let Some(failure) = overrun(rules, job, now) else {
        return Decision::nothing();
    };
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, JobState::Failed) else {
        return Decision::nothing();
    };
    u.ended_at = Some(Some(now));
    u.lease = Some(None);
    u.close_attempt = Some((attempt, now, format!("failed: {}", failure.reason)));
    let reason = failure.reason.clone();
    u.failure = Some(Some(failure));
    let mut decision = Decision::change(Precondition::observed(job), u);
    if let Some(lease) = &job.lease {
        decision = decision.then(Effect::Control {
            agent: lease.agent.clone(),
            command: ControlCommand::Cancel {
                job_id: job.job_id,
                attempt,
                reason,
            },
        });
    }
    decision.then(Effect::Announce { detail: None })
}

/// A deadline the agent should have enforced and has overrun by more than the grace period.
fn overrun(rules: &Rules, job: &JobRecord, now: Millis) -> Option<Failure> {
    let grace = rules.backstop_grace;
    let def = &job.definition;
    if let Some(started) = job.started_at
        && let Some(deadline) = global_deadline(rules, job, started)
        && now > deadline.plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::GlobalTimeout,
            reason: format!(
                "global timeout of {} s exceeded (ended by the scheduler)",
                def.global_timeout().as_secs()
            ),
        });
    }
    if job.state == JobState::Test
        && let Some(last) = job.last_output_at.or(job.started_at)
        && now > last.plus(def.output_timeout()).plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::OutputTimeout,
            reason: format!(
                "no output for {} s in the test phase (ended by the scheduler)",
                def.output_timeout().as_secs()
            ),
        });
    }
    if job.state == JobState::Reserve
        && let Some(res) = &job.reservation
        && now > res.until.plus(grace)
    {
        return Some(Failure {
            kind: FailureKind::AgentError,
            reason: format!(
                "the agent did not end the reservation at its deadline {}",
                res.until
            ),
        });
    }
    None
}

/// When the global timeout ends the job, as the agent applies it: it does not cut a
/// reservation short (the reservation's own deadline does, checked separately), and cleanup,
/// which always runs, gets its allowance after the later of the global timeout and the
/// reservation's end. `None`: no global deadline applies now.
fn global_deadline(rules: &Rules, job: &JobRecord, started: Millis) -> Option<Millis> {
    let global = started.plus(job.definition.global_timeout());
    match job.state {
        // An allocated child lives as long as its parent, whose own deadlines bound it.
        JobState::Reserve | JobState::Allocated => None,
        // Nor the cleanup after it, which may start long past the child's global timeout: the
        // agent's cleanup limit bounds it.
        JobState::Cleanup if job.definition.is_allocated_child() => None,
        JobState::Cleanup => {
            let reserved_until = job.reservation.as_ref().map(|r| r.until);
            let base = reserved_until.map_or(global, |until| until.max(global));
            Some(base.plus(rules.cleanup_allowance))
        }
        _ => Some(global),
    }
}

/// Lists a child on its parent (once). A parent that no longer runs (ended, or waiting again)
/// releases it at once: a child holds a device only for a live parent.
fn child_submitted(job: &JobRecord, child: Uuid, now: Millis) -> Decision {
    if job.children.contains(&child) {
        return Decision::nothing();
    }
    let mut u = JobUpdate::at(now);
    u.add_child = Some(child);
    // Any state: the link is recorded even on an ended parent, for the API.
    let decision = Decision::change(Precondition::default(), u);
    if job.state.is_active() {
        return decision;
    }
    let why = match job.state {
        JobState::Waiting => format!("parent job {} is not running", job.job_id),
        s => format!("parent job {} ended ({s})", job.job_id),
    };
    decision.then(Effect::ReleaseChildren {
        why,
        completed: false,
    })
}

/// The child's agent holds the device for the parent: `allocated`, with the device's info for
/// the parent's test phase. Only from a state before `allocated` (phases move forward).
fn child_allocated(
    job: &JobRecord,
    attempt: u32,
    device_info: &Option<serde_json::Value>,
    now: Millis,
) -> Decision {
    if job.attempt != attempt || !job.state.is_active() {
        return Decision::nothing();
    }
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, JobState::Allocated) else {
        return Decision::nothing();
    };
    if let Some(info) = device_info {
        u.device_info = Some(Some(info.clone()));
    }
    Decision::change(Precondition::observed(job), u)
}

/// A child whose parent is gone is released: its agent is told to stop holding (as a cancel
/// is told, and every renewal repeats it), runs cleanup and ends — `complete` when the parent
/// completed (the child served its purpose), `cancelled` otherwise (a waiting child at once).
/// The parent's fate is the reason. No one waits for an answer.
fn parent_ended(job: &JobRecord, why: &str, completed: bool, now: Millis) -> Decision {
    if job.state.is_terminal() || job.cancel_requested.is_some() || job.released.is_some() {
        return Decision::nothing();
    }
    let reason = format!("released: {why}");
    if !completed || !job.state.is_active() {
        return Decision {
            reply: None,
            ..cancel_asked(job, &reason, now)
        };
    }
    let mut u = JobUpdate::at(now);
    u.released = Some(Some(reason.clone()));
    let mut decision = Decision::change(Precondition::observed(job), u);
    if let Some(lease) = &job.lease {
        decision = decision.then(Effect::Control {
            agent: lease.agent.clone(),
            command: ControlCommand::Cancel {
                job_id: job.job_id,
                attempt: job.attempt,
                reason,
            },
        });
    }
    decision
}

/// Fails a waiting job that can never be dispatched.
fn unroutable(job: &JobRecord, reason: &str, now: Millis) -> Decision {
    let Ok(mut u) = JobUpdate::at(now).moving(job.state, JobState::Failed) else {
        return Decision::nothing();
    };
    if job.state != JobState::Waiting {
        return Decision::nothing();
    }
    u.ended_at = Some(Some(now));
    u.failure = Some(Some(rejection(reason)));
    Decision::change(Precondition::observed(job), u).then(Effect::Announce { detail: None })
}

/// The rules, as tables: every cause against a job in every state, then the details.
#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;
    use serde_json::json;

    const T0: Millis = Millis(1_800_000_000_000);

    fn at(secs: u64) -> Millis {
        T0.plus(Duration::from_secs(secs))
    }

    fn rules() -> Rules {
        Rules {
            lease: Duration::from_secs(30),
            max_attempts: 3,
            backstop_grace: Duration::from_secs(60),
            cleanup_allowance: Duration::from_secs(900),
        }
    }

    fn agent(name: &str) -> AgentName {
        AgentName::parse(name).expect("agent name")
    }

    fn definition(doc: serde_json::Value) -> JobDefinition {
        let mut doc = doc;
        doc["job_queue"] = json!("rpi4b");
        JobDefinition::parse(doc).expect("job definition")
    }

    /// A typical job in `state`: a waiting one never ran; a running one is on attempt 1 leased
    /// by dut-1 until T0 + 30 s (a reserving one reserved until T0 + 1 h); an ended one ran once.
    fn job_in(state: JobState) -> JobRecord {
        let mut job = JobRecord::new_waiting(Uuid::from_u128(7), definition(json!({})), None, T0);
        job.state = state;
        if state == Waiting {
            return job;
        }
        job.attempt = 1;
        job.started_at = Some(T0);
        job.attempts.push(AttemptRecord {
            attempt: 1,
            agent: agent("dut-1"),
            started_at: T0,
            ended_at: None,
            outcome: None,
        });
        if state.is_active() {
            job.lease = Some(Lease {
                agent: agent("dut-1"),
                attempt: 1,
                until: at(30),
            });
        } else {
            job.ended_at = Some(at(20));
            job.attempts[0].ended_at = Some(at(20));
        }
        if state == Reserve {
            job.reservation = Some(Reservation {
                started_at: T0,
                until: at(3600),
                device_ip: None,
                user: None,
            });
        }
        job
    }

    /// What a decision did, as the tables say it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Does {
        /// Nothing: no change, no reply.
        No,
        /// A change that keeps the state.
        Upd,
        /// A change that moves the job to this state.
        To(JobState),
        /// Only an answer (a refusal, a denial, "already done").
        Ans,
    }
    use Does::*;

    fn does(d: &Decision) -> Does {
        match &d.change {
            Some((_, u)) => u.state.map_or(Upd, |c| To(c.to())),
            None if d.reply.is_some() => Ans,
            None => No,
        }
    }

    const STATES: [JobState; 13] = JobState::ALL;

    /// Every cause, with the time it happens at, and what it does to a job in each state.
    #[rustfmt::skip]
    fn causes() -> Vec<(&'static str, Cause, Millis, [Does; 13])> {
        let running = |d: Does| [No, d, d, d, d, d, d, d, d, d, No, No, No];
        let res = Reservation {
            started_at: at(5),
            until: at(600),
            device_ip: None,
            user: None,
        };
        vec![
            // states:             W     Lsd    Setup  Prov   FW     Test   Alloc  Alloc'd Resv  Clean  Compl  Canc   Fail
            ("submission seen", Cause::SubmissionSeen, at(1),
                [Upd, No, No, No, No, No, No, No, No, No, No, No, No]),
            ("republish due", Cause::RepublishDue, at(1),
                [Upd, No, No, No, No, No, No, No, No, No, No, No, No]),
            // (A waiting job here was never enqueued: the outbox's business, not this cause's.)
            ("message lost", Cause::MessageLost, at(1),
                [No, No, No, No, No, No, No, No, No, No, No, No, No]),
            ("attachments ready", Cause::AttachmentsReady, at(1),
                [Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans]),
            ("lease asked", Cause::LeaseAsked { agent: agent("dut-2"), agent_unavailable: None, fetches_files: true }, at(1),
                [To(Leased), Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans]),
            ("lease renewed", Cause::LeaseRenewed { agent: agent("dut-1"), attempt: 1 }, at(10),
                [Ans, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Ans, Ans, Ans]),
            ("phase started (test)", Cause::PhaseStarted { attempt: 1, phase: Phase::Test, shipped: None }, at(1),
                [No, To(Test), To(Test), To(Test), To(Test), No, No, No, No, No, No, No, No]),
            ("phase finished", Cause::PhaseFinished { attempt: 1, phase: Phase::Test, exit_code: 1, shipped: None }, at(1),
                running(Upd)),
            ("device info", Cause::DeviceInfo { attempt: 1, info: json!({"ip": "10.0.0.1"}) }, at(1),
                running(Upd)),
            ("reservation started", Cause::ReservationStarted { attempt: 1, reservation: res }, at(5),
                [No, Upd, Upd, Upd, Upd, Upd, Upd, Upd, No, Upd, No, No, No]),
            ("output seen", Cause::OutputSeen { attempt: 1, latest: at(3) }, at(4),
                running(Upd)),
            ("run finished", Cause::RunFinished { attempt: 1, outcome: Outcome::Complete, device_info: None, note: None, output_truncated: BTreeMap::new() }, at(9),
                running(To(Complete))),
            ("cancel asked", Cause::CancelAsked { reason: "cancelled by alice".into() }, at(1),
                [To(Cancelled), Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Ans, Ans, Ans]),
            ("reservation extended", Cause::ReservationExtended { until: None, by_secs: Some(60), max_total_secs: None }, at(1),
                [Ans, Ans, Ans, Ans, Ans, Ans, Ans, Ans, Upd, Ans, Ans, Ans, Ans]),
            ("lease expired", Cause::LeaseExpired { attempt: 1 }, at(31),
                running(To(Waiting))),
            ("run abandoned", Cause::RunAbandoned { attempt: 1, agent: agent("dut-1"), reason: "shutting down".into() }, at(1),
                running(To(Waiting))),
            // An allocated child has no deadline of its own: its parent's bound it.
            ("deadlines checked (10 days on)", Cause::DeadlinesChecked { attempt: 1 }, at(10 * 86_400),
                [No, To(Failed), To(Failed), To(Failed), To(Failed), To(Failed), To(Failed), No, To(Failed), To(Failed), No, No, No]),
            ("unroutable", Cause::Unroutable { reason: "no agent serves queue 'rpi4b'".into() }, at(1),
                [To(Failed), No, No, No, No, No, No, No, No, No, No, No, No]),
            ("rejected", Cause::Rejected, at(1),
                [No, No, No, No, No, No, No, No, No, No, No, No, No]),
            // The link is recorded whatever the parent's state (a parent that no longer runs
            // releases the child at once, see below).
            ("child submitted", Cause::ChildSubmitted { child: Uuid::from_u128(8) }, at(1),
                [Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd]),
            ("child allocated", Cause::ChildAllocated { attempt: 1, device_info: Some(json!({"device_ip": "10.0.0.2"})) }, at(1),
                [No, To(Allocated), To(Allocated), To(Allocated), To(Allocated), To(Allocated), To(Allocated), No, No, No, No, No, No]),
            ("parent ended", Cause::ParentEnded { why: "parent job x ended (failed)".into(), completed: false }, at(1),
                [To(Cancelled), Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, No, No, No]),
            ("parent completed", Cause::ParentEnded { why: "parent job x ended (complete)".into(), completed: true }, at(1),
                [To(Cancelled), Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, Upd, No, No, No]),
        ]
    }

    #[test]
    fn every_cause_against_every_state() {
        let mut wrong = Vec::new();
        for (name, cause, now, row) in causes() {
            for (state, want) in STATES.into_iter().zip(row) {
                let job = job_in(state);
                let d = decide(&rules(), &job, &cause, now);
                let got = does(&d);
                if got != want {
                    wrong.push(format!(
                        "{name} on a {state} job: wanted {want:?}, got {got:?} ({d:?})"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Whatever the cause: a change holds on the job it was decided from, a state change is a
    /// legal move from the state the job is in and its precondition pins that state, and the
    /// update makes the job what the decision says.
    #[test]
    fn every_change_is_a_checked_transition_from_the_state_it_saw() {
        for (name, cause, now, _) in causes() {
            for state in STATES {
                let job = job_in(state);
                let d = decide(&rules(), &job, &cause, now);
                let Some((pre, update)) = &d.change else {
                    assert!(
                        d.effects.is_empty(),
                        "{name} on {state}: effects without a change"
                    );
                    continue;
                };
                assert!(
                    pre.holds(&job),
                    "{name} on {state}: {pre:?} does not hold on what it saw"
                );
                let mut after = job.clone();
                update.apply(&mut after);
                assert_eq!(after.updated_at, now, "{name} on {state}");
                if let Some(change) = update.state {
                    assert_eq!(change.from(), state, "{name} on {state}");
                    assert!(state.transition(change.to()).is_ok(), "{name} on {state}");
                    assert_eq!(
                        pre.states.as_deref(),
                        Some(&[state][..]),
                        "{name} on {state}: from-state not pinned"
                    );
                    assert_eq!(after.state, change.to());
                    if change.to().is_terminal() {
                        assert_eq!(
                            after.ended_at,
                            Some(now),
                            "{name} on {state}: ended without a time"
                        );
                        assert_eq!(after.lease, None, "{name} on {state}: ended with a lease");
                    }
                }
            }
        }
    }

    /// Causes from an agent carry its attempt: one of another attempt changes nothing.
    #[test]
    fn causes_of_a_stale_attempt_change_nothing() {
        let stale = [
            Cause::LeaseRenewed {
                agent: agent("dut-1"),
                attempt: 0,
            },
            Cause::PhaseStarted {
                attempt: 0,
                phase: Phase::Test,
                shipped: None,
            },
            Cause::PhaseFinished {
                attempt: 0,
                phase: Phase::Test,
                exit_code: 1,
                shipped: None,
            },
            Cause::DeviceInfo {
                attempt: 0,
                info: json!({}),
            },
            Cause::OutputSeen {
                attempt: 0,
                latest: at(3),
            },
            Cause::RunFinished {
                attempt: 0,
                outcome: Outcome::Complete,
                device_info: None,
                note: None,
                output_truncated: BTreeMap::new(),
            },
            Cause::LeaseExpired { attempt: 0 },
            Cause::RunAbandoned {
                attempt: 0,
                agent: agent("dut-1"),
                reason: "gone".into(),
            },
            Cause::DeadlinesChecked { attempt: 0 },
            Cause::ChildAllocated {
                attempt: 0,
                device_info: None,
            },
        ];
        for state in STATES.into_iter().filter(|s| s.is_active()) {
            for cause in &stale {
                let d = decide(&rules(), &job_in(state), cause, at(10 * 86_400));
                assert_eq!(d.change, None, "{cause:?} on {state}");
                assert!(d.effects.is_empty(), "{cause:?} on {state}");
            }
        }
    }

    fn reply_of(d: &Decision) -> &Reply {
        d.reply.as_ref().expect("a reply")
    }

    fn denial(d: &Decision) -> (DenyReason, &str) {
        match reply_of(d) {
            Reply::Deny { reason, detail } => (*reason, detail.as_str()),
            other => panic!("not a denial: {other:?}"),
        }
    }

    fn refusal(d: &Decision) -> (RefusalCode, &str) {
        match reply_of(d) {
            Reply::Command(CommandReply::Refused { code, reason }) => (*code, reason.as_str()),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    fn applied(job: &JobRecord, d: &Decision) -> JobRecord {
        let mut after = job.clone();
        d.change.as_ref().expect("a change").1.apply(&mut after);
        after
    }

    #[test]
    fn a_lease_goes_to_the_asker_as_the_next_attempt_and_is_announced() {
        let mut job = job_in(Waiting);
        job.attempt = 1;
        job.phase_status.insert("test".into(), 1);
        let d = decide(
            &rules(),
            &job,
            &Cause::LeaseAsked {
                agent: agent("dut-2"),
                agent_unavailable: None,
                fetches_files: true,
            },
            at(1),
        );
        let after = applied(&job, &d);
        assert_eq!(after.state, Leased);
        assert_eq!(after.attempt, 2);
        assert_eq!(
            after.lease,
            Some(Lease {
                agent: agent("dut-2"),
                attempt: 2,
                until: at(31)
            })
        );
        assert!(
            after.phase_status.is_empty(),
            "a new attempt starts with no results"
        );
        assert_eq!(after.attempts.last().map(|a| a.attempt), Some(2));
        assert_eq!(d.reply, Some(Reply::Grant));
        assert_eq!(
            d.effects,
            [Effect::Announce {
                detail: Some("leased by dut-2".into())
            }]
        );
    }

    #[test]
    fn a_lease_is_refused_for_every_reason_the_job_or_agent_gives() {
        let ask = |a: &str, unavailable| Cause::LeaseAsked {
            agent: agent(a),
            agent_unavailable: unavailable,
            fetches_files: true,
        };
        let mut awaiting = job_in(Waiting);
        awaiting.awaiting_attachments = true;
        let d = decide(&rules(), &awaiting, &ask("dut-2", None), at(1));
        assert_eq!(denial(&d).0, DenyReason::NotReady);

        // Attachments uploaded, but the agent could not fetch them.
        let mut with_files = job_in(Waiting);
        with_files.definition = definition(json!({"test_data": {"attachments": [{"agent": "x"}]}}));
        let cannot_fetch = Cause::LeaseAsked {
            agent: agent("dut-2"),
            agent_unavailable: None,
            fetches_files: false,
        };
        let d = decide(&rules(), &with_files, &cannot_fetch, at(1));
        assert_eq!(denial(&d).0, DenyReason::NotReady);

        let mut excluding = job_in(Waiting);
        excluding.definition = definition(json!({"exclude_agents": ["dut-2"]}));
        assert_eq!(
            denial(&decide(&rules(), &excluding, &ask("dut-2", None), at(1))).0,
            DenyReason::Excluded
        );
        assert_eq!(
            does(&decide(&rules(), &excluding, &ask("dut-3", None), at(1))),
            To(Leased)
        );

        let d = decide(
            &rules(),
            &job_in(Waiting),
            &ask("dut-2", Some(AdminState::Maintenance)),
            at(1),
        );
        assert_eq!(
            denial(&d),
            (DenyReason::AgentUnavailable, "agent is set to maintenance")
        );

        let d = decide(&rules(), &job_in(Test), &ask("dut-2", None), at(1));
        assert_eq!(denial(&d), (DenyReason::AlreadyLeased, "leased by dut-1"));
        assert_eq!(
            denial(&decide(&rules(), &job_in(Cancelled), &ask("dut-2", None), at(1))).0,
            DenyReason::Cancelled
        );
        let d = decide(&rules(), &job_in(Complete), &ask("dut-2", None), at(1));
        assert_eq!(
            denial(&d),
            (DenyReason::Finished, "the job already ended (complete)")
        );
    }

    #[test]
    fn the_holder_asking_again_gets_its_lease_again_until_it_starts_a_phase() {
        let ask = Cause::LeaseAsked {
            agent: agent("dut-1"),
            agent_unavailable: None,
            fetches_files: true,
        };
        let d = decide(&rules(), &job_in(Leased), &ask, at(1));
        assert_eq!((d.change, d.reply), (None, Some(Reply::Grant)));
        assert_eq!(
            denial(&decide(&rules(), &job_in(Setup), &ask, at(1))).0,
            DenyReason::AlreadyLeased
        );
    }

    #[test]
    fn a_renewal_extends_a_valid_lease_and_says_why_it_cannot() {
        let renew = |a: &str, attempt| Cause::LeaseRenewed {
            agent: agent(a),
            attempt,
        };
        let d = decide(&rules(), &job_in(Test), &renew("dut-1", 1), at(10));
        assert_eq!(applied(&job_in(Test), &d).lease.map(|l| l.until), Some(at(40)));
        assert_eq!(d.reply, Some(Reply::Renewed));

        let lost = |job: &JobRecord, cause: &Cause, now| match decide(&rules(), job, cause, now).reply {
            Some(Reply::Lost { reason }) => reason,
            other => panic!("not lost: {other:?}"),
        };
        assert_eq!(
            lost(&job_in(Test), &renew("dut-1", 1), at(31)),
            "the lease expired"
        );
        assert_eq!(
            lost(&job_in(Test), &renew("dut-2", 1), at(10)),
            "the lease expired"
        );
        assert_eq!(
            lost(&job_in(Test), &renew("dut-1", 2), at(10)),
            "attempt 2 is stale; the job is on attempt 1"
        );
        assert_eq!(
            lost(&job_in(Complete), &renew("dut-1", 1), at(10)),
            "the job ended (complete)"
        );
        let mut requeued = job_in(Waiting);
        requeued.attempt = 1;
        assert_eq!(lost(&requeued, &renew("dut-1", 1), at(10)), "the job is waiting");
    }

    #[test]
    fn phases_only_move_forward() {
        let start = |phase| Cause::PhaseStarted {
            attempt: 1,
            phase,
            shipped: None,
        };
        assert_eq!(
            does(&decide(&rules(), &job_in(Leased), &start(Phase::Setup), at(1))),
            To(Setup)
        );
        assert_eq!(
            does(&decide(&rules(), &job_in(Test), &start(Phase::Provision), at(1))),
            No
        );
        assert_eq!(
            does(&decide(&rules(), &job_in(Test), &start(Phase::Cleanup), at(1))),
            To(Cleanup)
        );
        // Silence in the test phase counts from its start.
        let d = decide(&rules(), &job_in(Provision), &start(Phase::Test), at(7));
        assert_eq!(applied(&job_in(Provision), &d).last_output_at, Some(at(7)));
    }

    #[test]
    fn output_time_is_written_at_most_every_few_seconds() {
        let mut job = job_in(Test);
        job.last_output_at = Some(at(10));
        let seen = |s| Cause::OutputSeen {
            attempt: 1,
            latest: at(s),
        };
        assert_eq!(does(&decide(&rules(), &job, &seen(14), at(14))), No);
        assert_eq!(does(&decide(&rules(), &job, &seen(16), at(16))), Upd);
    }

    #[test]
    fn a_first_reservation_deadline_does_not_undo_an_extension() {
        let res = Reservation {
            started_at: at(5),
            until: at(600),
            device_ip: None,
            user: None,
        };
        let started = Cause::ReservationStarted {
            attempt: 1,
            reservation: res.clone(),
        };
        let after = applied(
            &job_in(Allocate),
            &decide(&rules(), &job_in(Allocate), &started, at(5)),
        );
        assert_eq!(after.reservation, Some(res));
        assert_eq!(does(&decide(&rules(), &job_in(Reserve), &started, at(5))), No);
    }

    fn finished(job: &JobRecord, outcome: Outcome) -> (JobRecord, Decision) {
        let cause = Cause::RunFinished {
            attempt: 1,
            outcome,
            device_info: Some(json!({"ip": "10.0.0.9"})),
            note: Some("output incomplete".into()),
            output_truncated: BTreeMap::from([("output".to_owned(), 7)]),
        };
        let d = decide(&rules(), job, &cause, at(9));
        (applied(job, &d), d)
    }

    #[test]
    fn a_finished_run_ends_the_job_and_its_attempt() {
        let (after, d) = finished(&job_in(Cleanup), Outcome::Complete);
        assert_eq!((after.state, after.failure), (Complete, None));
        assert_eq!(after.device_info, Some(json!({"ip": "10.0.0.9"})));
        assert_eq!(after.output_truncated, BTreeMap::from([("output".to_owned(), 7)]));
        assert_eq!(after.attempts[0].outcome.as_deref(), Some("complete"));
        assert_eq!(after.attempts[0].ended_at, Some(at(9)));
        let recorded = ControlCommand::RunRecorded {
            job_id: after.job_id,
            attempt: 1,
        };
        assert_eq!(
            d.effects,
            [
                Effect::Control {
                    agent: agent("dut-1"),
                    command: recorded
                },
                Effect::Announce {
                    detail: Some("output incomplete".into())
                },
            ],
            "the lease keeper is told it may stop, then listeners hear the end"
        );
    }

    #[test]
    fn a_complete_run_whose_phase_failed_says_which_kind_of_failure() {
        let kind = |phase: &str, code| {
            let mut job = job_in(Cleanup);
            job.phase_status.insert(phase.into(), code);
            job.phase_status.insert("cleanup".into(), 3);
            let (after, _) = finished(&job, Outcome::Complete);
            assert_eq!(after.state, Complete);
            after.failure.map(|f| (f.kind, f.reason))
        };
        assert_eq!(
            kind("test", 1),
            Some((FailureKind::TestFailed, "test exited 1".into()))
        );
        assert_eq!(
            kind("provision", 2),
            Some((FailureKind::DeviceFailed, "provision exited 2".into()))
        );
        assert_eq!(
            kind("provision", RECOVERY_FAILED_EXIT).map(|f| f.0),
            Some(FailureKind::RecoveryFailed)
        );
        assert_eq!(kind("test", 0), None, "a failed cleanup does not fail the job");
    }

    #[test]
    fn a_requested_cancel_wins_over_a_complete_run_but_not_over_a_failure() {
        let mut job = job_in(Test);
        job.cancel_requested = Some("cancelled by alice".into());
        assert_eq!(finished(&job, Outcome::Complete).0.state, Cancelled);
        let failure = Failure {
            kind: FailureKind::AgentError,
            reason: "cannot start".into(),
        };
        let (after, _) = finished(
            &job,
            Outcome::Failed {
                failure: failure.clone(),
            },
        );
        assert_eq!((after.state, after.failure), (Failed, Some(failure.clone())));
        assert_eq!(after.attempts[0].outcome.as_deref(), Some("failed: cannot start"));
        let cancelled = Outcome::Cancelled {
            reason: "stop".into(),
        };
        assert_eq!(finished(&job_in(Test), cancelled).0.state, Cancelled);
    }

    #[test]
    fn a_cancel_ends_a_waiting_job_and_tells_a_running_ones_agent() {
        let cancel = Cause::CancelAsked {
            reason: "cancelled by alice".into(),
        };
        let d = decide(&rules(), &job_in(Waiting), &cancel, at(1));
        assert_eq!(applied(&job_in(Waiting), &d).ended_at, Some(at(1)));
        assert_eq!(
            d.effects,
            [Effect::Announce {
                detail: Some("cancelled by alice".into())
            }]
        );

        let d = decide(&rules(), &job_in(Test), &cancel, at(1));
        let after = applied(&job_in(Test), &d);
        assert_eq!(
            (after.state, after.cancel_requested.as_deref()),
            (Test, Some("cancelled by alice"))
        );
        let order = ControlCommand::Cancel {
            job_id: after.job_id,
            attempt: 1,
            reason: "cancelled by alice".into(),
        };
        assert_eq!(
            d.effects,
            [Effect::Control {
                agent: agent("dut-1"),
                command: order
            }]
        );

        let mut asked = job_in(Test);
        asked.cancel_requested = Some("cancelled by bob".into());
        let d = decide(&rules(), &asked, &cancel, at(1));
        assert_eq!(
            (d.change, d.reply),
            (None, Some(command_done("a cancel was already requested")))
        );
        assert_eq!(
            refusal(&decide(&rules(), &job_in(Failed), &cancel, at(1))).0,
            RefusalCode::Conflict
        );
    }

    #[test]
    fn a_reservation_is_extended_within_the_clients_limit_and_the_agent_is_told() {
        let extend = |until, by_secs, max_total_secs| Cause::ReservationExtended {
            until,
            by_secs,
            max_total_secs,
        };
        let job = job_in(Reserve);
        let d = decide(&rules(), &job, &extend(None, Some(60), None), at(1));
        assert_eq!(applied(&job, &d).reservation.map(|r| r.until), Some(at(3660)));
        let order = ControlCommand::SetReservationDeadline {
            job_id: job.job_id,
            until: at(3660),
        };
        assert_eq!(
            d.effects,
            [
                Effect::Control {
                    agent: agent("dut-1"),
                    command: order
                },
                Effect::Announce {
                    detail: Some(format!("reservation extended until {}", at(3660)))
                },
            ]
        );
        assert_eq!(
            refusal(&decide(&rules(), &job, &extend(None, None, None), at(1))).0,
            RefusalCode::Invalid
        );
        let d = decide(&rules(), &job, &extend(Some(at(1)), None, None), at(2));
        assert_eq!(
            refusal(&d),
            (RefusalCode::Invalid, "the new deadline is in the past")
        );
        let d = decide(&rules(), &job, &extend(Some(at(7200)), None, Some(3600)), at(2));
        assert_eq!(refusal(&d).0, RefusalCode::Forbidden);
        assert_eq!(
            does(&decide(
                &rules(),
                &job,
                &extend(Some(at(3599)), None, Some(3600)),
                at(2)
            )),
            Upd
        );
    }

    #[test]
    fn a_lost_lease_requeues_until_the_last_attempt_then_fails() {
        let expired = Cause::LeaseExpired { attempt: 1 };
        let d = decide(&rules(), &job_in(Test), &expired, at(31));
        let after = applied(&job_in(Test), &d);
        assert_eq!(
            (after.state, after.lease.clone(), after.enqueued_at),
            (Waiting, None, None)
        );
        assert_eq!(
            after.attempts[0].outcome.as_deref(),
            Some("lease expired: agent dut-1 stopped renewing")
        );
        let requeued = "requeued: lease expired: agent dut-1 stopped renewing";
        assert_eq!(
            d.effects,
            [
                Effect::Announce {
                    detail: Some(requeued.into())
                },
                Effect::PublishAgain
            ]
        );
        assert_eq!(
            does(&decide(&rules(), &job_in(Test), &expired, at(30))),
            No,
            "still valid at its deadline"
        );

        let mut last = job_in(Test);
        last.attempt = 3;
        last.lease.as_mut().unwrap().attempt = 3;
        let d = decide(&rules(), &last, &Cause::LeaseExpired { attempt: 3 }, at(31));
        let failure = applied(&last, &d).failure.expect("a failure");
        assert_eq!(failure.kind, FailureKind::AgentLost);
        assert!(failure.reason.ends_with("(attempt 3 of 3)"), "{}", failure.reason);
        assert_eq!(d.effects, [Effect::Announce { detail: None }]);

        let mut cancelling = job_in(Test);
        cancelling.cancel_requested = Some("cancelled by alice".into());
        assert_eq!(
            does(&decide(&rules(), &cancelling, &expired, at(31))),
            To(Cancelled)
        );
    }

    #[test]
    fn only_the_holder_gives_a_run_up() {
        let abandon = |a: &str| Cause::RunAbandoned {
            attempt: 1,
            agent: agent(a),
            reason: "shutting down".into(),
        };
        let d = decide(&rules(), &job_in(Setup), &abandon("dut-1"), at(1));
        let (pre, _) = d.change.as_ref().expect("a change");
        assert_eq!(pre.lease_agent, Some(agent("dut-1")));
        assert_eq!(
            applied(&job_in(Setup), &d).attempts[0].outcome.as_deref(),
            Some("agent dut-1 gave the run up: shutting down")
        );
        assert_eq!(
            does(&decide(&rules(), &job_in(Setup), &abandon("dut-2"), at(1))),
            No
        );
    }

    fn overrun_by(job: &JobRecord, now: Millis) -> Option<FailureKind> {
        let d = decide(&rules(), job, &Cause::DeadlinesChecked { attempt: 1 }, now);
        d.change
            .map(|(_, u)| u.failure.flatten().expect("a failure").kind)
    }

    #[test]
    fn the_scheduler_ends_runs_that_overran_a_deadline_by_more_than_the_grace() {
        // Global timeout 4 h, grace 60 s.
        let global = 4 * 3600;
        let mut job = job_in(Setup);
        assert_eq!(overrun_by(&job, at(global + 60)), None);
        assert_eq!(
            overrun_by(&job, at(global + 61)),
            Some(FailureKind::GlobalTimeout)
        );
        // Output timeout 15 min in the test phase, from the last output.
        job.state = Test;
        job.last_output_at = Some(at(100));
        assert_eq!(overrun_by(&job, at(100 + 900 + 60)), None);
        assert_eq!(
            overrun_by(&job, at(100 + 900 + 61)),
            Some(FailureKind::OutputTimeout)
        );
        // The agent is told to stop.
        let d = decide(&rules(), &job, &Cause::DeadlinesChecked { attempt: 1 }, at(2000));
        assert!(matches!(
            &d.effects[0],
            Effect::Control {
                command: ControlCommand::Cancel { .. },
                ..
            }
        ));
    }

    #[test]
    fn a_reservation_is_ended_by_its_own_deadline_not_the_global_one() {
        let mut job = job_in(Reserve);
        job.reservation.as_mut().unwrap().until = at(10 * 3600);
        assert_eq!(
            overrun_by(&job, at(5 * 3600)),
            None,
            "the global timeout does not cut it short"
        );
        assert_eq!(
            overrun_by(&job, at(10 * 3600 + 61)),
            Some(FailureKind::AgentError)
        );
        // Cleanup gets its allowance after the reservation's end.
        job.state = Cleanup;
        assert_eq!(overrun_by(&job, at(10 * 3600 + 900 + 60)), None);
        assert_eq!(
            overrun_by(&job, at(10 * 3600 + 900 + 61)),
            Some(FailureKind::GlobalTimeout)
        );
    }

    #[test]
    fn a_lost_message_publishes_an_enqueued_waiting_job_again() {
        let mut job = job_in(Waiting);
        job.enqueued_at = Some(T0);
        let d = decide(&rules(), &job, &Cause::MessageLost, at(1));
        assert_eq!(does(&d), Upd);
        assert_eq!(d.effects, [Effect::PublishAgain]);
        assert_eq!(applied(&job, &d).updated_at, at(1), "claims the round");
        job.awaiting_attachments = true;
        assert_eq!(does(&decide(&rules(), &job, &Cause::MessageLost, at(1))), No);
    }

    #[test]
    fn attachments_release_a_waiting_job_once() {
        let mut job = job_in(Waiting);
        job.awaiting_attachments = true;
        let d = decide(&rules(), &job, &Cause::AttachmentsReady, at(1));
        assert!(!applied(&job, &d).awaiting_attachments);
        assert_eq!(d.effects, [Effect::PublishAgain]);
        assert_eq!(
            does(&decide(&rules(), &job, &Cause::RepublishDue, at(1))),
            No,
            "not before its attachments"
        );
    }

    #[test]
    fn a_refused_submission_is_recorded_failed_and_never_overwrites_a_job() {
        let record = rejected(Uuid::from_u128(9), definition(json!({})), "bad", at(1));
        assert_eq!(record.state, Failed);
        assert_eq!(record.failure, Some(rejection("bad")));
        assert!(record.enqueued_at.is_some(), "nothing to publish again");
        for state in STATES {
            assert_eq!(
                decide(&rules(), &job_in(state), &Cause::Rejected, at(1)),
                Decision::default()
            );
        }
    }

    fn child_of(parent: Uuid, state: JobState) -> JobRecord {
        let mut job = job_in(state);
        job.definition = definition(json!({
            "parent_job_id": parent.to_string(),
            "allocate_data": {"allocate": true},
        }));
        job
    }

    #[test]
    fn a_parent_that_ends_or_is_requeued_releases_its_children_first() {
        let child = Uuid::from_u128(8);
        let with_children = |state| {
            let mut job = job_in(state);
            job.children.push(child);
            job
        };
        let parent = with_children(Cleanup);
        let (_, d) = finished(&parent, Outcome::Complete);
        assert_eq!(
            d.effects[0],
            Effect::ReleaseChildren {
                why: format!("parent job {} ended (complete)", parent.job_id),
                completed: true,
            }
        );
        let d = decide(
            &rules(),
            &with_children(Test),
            &Cause::LeaseExpired { attempt: 1 },
            at(31),
        );
        assert_eq!(
            d.effects,
            [
                Effect::ReleaseChildren {
                    why: format!("parent job {} was requeued", parent.job_id),
                    completed: false,
                },
                Effect::Announce {
                    detail: Some("requeued: lease expired: agent dut-1 stopped renewing".into())
                },
                Effect::PublishAgain,
            ],
            "released before the job is published again"
        );
        let cancel = Cause::CancelAsked {
            reason: "cancelled by alice".into(),
        };
        let d = decide(&rules(), &with_children(Waiting), &cancel, at(1));
        assert!(matches!(d.effects[0], Effect::ReleaseChildren { .. }));
        // A cancel releases them before the parent's cleanup; other changes keep them.
        let d = decide(&rules(), &with_children(Test), &cancel, at(1));
        assert_eq!(
            d.effects[0],
            Effect::ReleaseChildren {
                why: format!("parent job {} is being cancelled", parent.job_id),
                completed: false,
            }
        );
        let start = Cause::PhaseStarted {
            attempt: 1,
            phase: Phase::Cleanup,
            shipped: None,
        };
        assert!(
            decide(&rules(), &with_children(Test), &start, at(1))
                .effects
                .is_empty()
        );
    }

    #[test]
    fn a_child_is_listed_once_and_a_parent_that_no_longer_runs_releases_it_at_once() {
        let child = Uuid::from_u128(8);
        let submitted = Cause::ChildSubmitted { child };
        let running = job_in(Provision);
        let d = decide(&rules(), &running, &submitted, at(1));
        let after = applied(&running, &d);
        assert_eq!(after.children, [child]);
        assert!(d.effects.is_empty());
        assert_eq!(decide(&rules(), &after, &submitted, at(2)), Decision::default());

        let ended = job_in(Cancelled);
        let d = decide(&rules(), &ended, &submitted, at(1));
        assert_eq!(applied(&ended, &d).children, [child], "linked, for the API");
        assert_eq!(
            d.effects,
            [Effect::ReleaseChildren {
                why: format!("parent job {} ended (cancelled)", ended.job_id),
                completed: false,
            }]
        );
        let d = decide(&rules(), &job_in(Waiting), &submitted, at(1));
        assert!(matches!(d.effects[..], [Effect::ReleaseChildren { .. }]));
    }

    #[test]
    fn an_allocated_child_holds_its_device_info_and_no_global_deadline() {
        let parent = Uuid::from_u128(9);
        let info = json!({"device_ip": "10.0.0.2"});
        let job = child_of(parent, Allocate);
        let d = decide(
            &rules(),
            &job,
            &Cause::ChildAllocated {
                attempt: 1,
                device_info: Some(info.clone()),
            },
            at(3),
        );
        let after = applied(&job, &d);
        assert_eq!((after.state, after.device_info), (Allocated, Some(info)));
        // The parent's lifetime bounds it, not its own global timeout (4 h)…
        assert_eq!(overrun_by(&child_of(parent, Allocated), at(10 * 86_400)), None);
        assert_eq!(overrun_by(&child_of(parent, Cleanup), at(10 * 86_400)), None);
        // …which still bounds the phases before.
        assert_eq!(
            overrun_by(&child_of(parent, Allocate), at(10 * 86_400)),
            Some(FailureKind::GlobalTimeout)
        );
    }

    #[test]
    fn an_allocated_child_whose_agent_is_lost_fails_instead_of_running_again() {
        let parent = Uuid::from_u128(9);
        let expired = Cause::LeaseExpired { attempt: 1 };
        let held = child_of(parent, Allocated);
        let after = applied(&held, &decide(&rules(), &held, &expired, at(31)));
        let failure = after.failure.expect("a failure");
        assert_eq!((after.state, failure.kind), (Failed, FailureKind::AgentLost));
        assert!(failure.reason.contains("not run again"), "{}", failure.reason);
        // Before its allocation, a child is requeued like any job (the parent still waits).
        let early = child_of(parent, Provision);
        assert_eq!(does(&decide(&rules(), &early, &expired, at(31))), To(Waiting));
    }

    #[test]
    fn a_child_whose_parent_is_gone_is_released_as_a_cancel_with_the_reason() {
        let parent = Uuid::from_u128(9);
        let gone = Cause::ParentEnded {
            why: format!("parent job {parent} ended (failed)"),
            completed: false,
        };
        let reason = format!("released: parent job {parent} ended (failed)");
        let held = child_of(parent, Allocated);
        let d = decide(&rules(), &held, &gone, at(1));
        assert_eq!(d.reply, None, "no one asked");
        assert_eq!(applied(&held, &d).cancel_requested, Some(reason.clone()));
        assert_eq!(
            d.effects,
            [Effect::Control {
                agent: agent("dut-1"),
                command: ControlCommand::Cancel {
                    job_id: held.job_id,
                    attempt: 1,
                    reason: reason.clone()
                }
            }]
        );
        let waiting = child_of(parent, Waiting);
        let d = decide(&rules(), &waiting, &gone, at(1));
        assert_eq!(applied(&waiting, &d).state, Cancelled);
        assert_eq!(d.effects, [Effect::Announce { detail: Some(reason) }]);

        let mut releasing = child_of(parent, Cleanup);
        releasing.cancel_requested = Some("cancelled by alice".into());
        assert_eq!(decide(&rules(), &releasing, &gone, at(1)), Decision::default());
    }

    #[test]
    fn a_child_whose_parent_completed_is_released_and_ends_complete() {
        let parent = Uuid::from_u128(9);
        let done = Cause::ParentEnded {
            why: format!("parent job {parent} ended (complete)"),
            completed: true,
        };
        let reason = format!("released: parent job {parent} ended (complete)");
        let held = child_of(parent, Allocated);
        let d = decide(&rules(), &held, &done, at(1));
        let after = applied(&held, &d);
        assert_eq!(
            (after.released.as_deref(), after.cancel_requested.as_deref()),
            (Some(reason.as_str()), None)
        );
        assert_eq!(
            d.effects,
            [Effect::Control {
                agent: agent("dut-1"),
                command: ControlCommand::Cancel {
                    job_id: held.job_id,
                    attempt: 1,
                    reason: reason.clone()
                }
            }],
            "its agent stops holding as for a cancel"
        );
        assert_eq!(
            decide(&rules(), &after, &done, at(2)),
            Decision::default(),
            "once"
        );
        // Its agent ends the run as stopped: the child served its parent.
        let mut cleaned = after.clone();
        cleaned.state = Cleanup;
        cleaned.phase_status.insert("allocate".into(), 0);
        let (ended, _) = finished(&cleaned, Outcome::Cancelled { reason });
        assert_eq!((ended.state, ended.failure), (Complete, None));
        // A child still waiting never served: cancelled.
        let waiting = child_of(parent, Waiting);
        assert_eq!(
            applied(&waiting, &decide(&rules(), &waiting, &done, at(1))).state,
            Cancelled
        );
    }
}
