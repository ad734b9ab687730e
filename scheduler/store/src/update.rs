//! The single way a job changes: an update applied atomically if, and only if, a precondition
//! holds on the current document.
//!
//! `Precondition::holds` and `JobUpdate::apply` are the reference semantics: the SQLite backend
//! runs them inside a write transaction; the MongoDB backend translates them into a filter and an
//! update document for one `findOneAndUpdate`. The contract suite checks both agree.

use super::model::{AttemptRecord, JobRecord, Lease, Reservation, ShippedOutput};
use broker_schema::{AgentName, Failure, IllegalTransition, JobState, Millis, Phase};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What must be true of the job for an update to apply. Every `Some` field must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Precondition {
    /// The job's state is one of these.
    pub states: Option<Vec<JobState>>,
    /// The job's current attempt number is this.
    pub attempt: Option<u32>,
    /// The lease is held by this agent.
    pub lease_agent: Option<AgentName>,
    /// The lease has expired: `lease.until < t`.
    pub lease_expired_at: Option<Millis>,
    /// The lease is still valid: `lease.until >= t`.
    pub lease_valid_at: Option<Millis>,
    /// The submission has not been seen on the broker (`enqueued_at` is unset).
    pub not_enqueued: bool,
}

impl Precondition {
    /// "Nothing changed since I read it": same state, same attempt.
    pub fn observed(job: &JobRecord) -> Precondition {
        Precondition::state(job.state).attempt(job.attempt)
    }

    pub fn in_states(states: &[JobState]) -> Self {
        Precondition {
            states: Some(states.to_vec()),
            ..Default::default()
        }
    }

    pub fn state(state: JobState) -> Self {
        Self::in_states(&[state])
    }

    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    pub fn holds(&self, job: &JobRecord) -> bool {
        if let Some(states) = &self.states
            && !states.contains(&job.state)
        {
            return false;
        }
        if let Some(a) = self.attempt
            && job.attempt != a
        {
            return false;
        }
        if let Some(agent) = &self.lease_agent
            && job.lease.as_ref().map(|l| &l.agent) != Some(agent)
        {
            return false;
        }
        if let Some(t) = self.lease_expired_at
            && job.lease.as_ref().is_none_or(|l| l.until >= t)
        {
            return false;
        }
        if let Some(t) = self.lease_valid_at
            && job.lease.as_ref().is_none_or(|l| l.until < t)
        {
            return false;
        }
        if self.not_enqueued && job.enqueued_at.is_some() {
            return false;
        }
        true
    }
}

/// A move of a job from one state to another that [`JobState::transition`] allows. It can only
/// be built by [`StateChange::new`], so no update sets a state the transition function refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    from: JobState,
    to: JobState,
}

impl StateChange {
    /// `from → to`, if that move is legal.
    pub fn new(from: JobState, to: JobState) -> Result<Self, IllegalTransition> {
        Ok(StateChange {
            from,
            to: from.transition(to)?,
        })
    }

    /// The state the job is expected to be in (its precondition should say so).
    pub fn from(self) -> JobState {
        self.from
    }

    /// The state the job moves to.
    pub fn to(self) -> JobState {
        self.to
    }
}

/// Changes to make. `None` leaves a field alone; `Some(None)` clears an optional field.
#[derive(Clone, Debug, PartialEq)]
pub struct JobUpdate {
    /// Always written.
    pub updated_at: Millis,
    /// The only way to change the state: a checked [`StateChange`].
    pub state: Option<StateChange>,
    pub attempt: Option<u32>,
    pub lease: Option<Option<Lease>>,
    pub enqueued_at: Option<Option<Millis>>,
    pub awaiting_attachments: Option<bool>,
    pub started_at: Option<Option<Millis>>,
    pub ended_at: Option<Option<Millis>>,
    pub failure: Option<Option<Failure>>,
    pub cancel_requested: Option<Option<String>>,
    pub released: Option<Option<String>>,
    /// Empties `phase_status` (a new attempt starts with no results) before `phase_status_set`.
    pub clear_phase_status: bool,
    /// Sets one phase's exit code.
    pub phase_status_set: Option<(Phase, i32)>,
    pub device_info: Option<Option<serde_json::Value>>,
    pub reservation: Option<Option<Reservation>>,
    pub last_output_at: Option<Millis>,
    /// Appends to `attempts` (a lease was granted).
    pub push_attempt: Option<AttemptRecord>,
    /// Closes attempt `n` (1-based): sets its `ended_at` and `outcome`.
    pub close_attempt: Option<(u32, Millis, String)>,
    /// Adds a multi-device child to `children`, unless it is there already.
    pub add_child: Option<Uuid>,
    /// Replaces `output_truncated` (stream → bytes not shipped).
    pub output_truncated: Option<BTreeMap<String, u64>>,
    /// Replaces `output_shipped`.
    pub output_shipped: Option<ShippedOutput>,
}

impl JobUpdate {
    pub fn at(now: Millis) -> Self {
        JobUpdate {
            updated_at: now,
            state: None,
            attempt: None,
            lease: None,
            enqueued_at: None,
            awaiting_attachments: None,
            started_at: None,
            ended_at: None,
            failure: None,
            cancel_requested: None,
            released: None,
            clear_phase_status: false,
            phase_status_set: None,
            device_info: None,
            reservation: None,
            last_output_at: None,
            push_attempt: None,
            close_attempt: None,
            add_child: None,
            output_truncated: None,
            output_shipped: None,
        }
    }

    /// The update moving a job `from → to`, if [`JobState::transition`] allows it.
    pub fn moving(mut self, from: JobState, to: JobState) -> Result<Self, IllegalTransition> {
        self.state = Some(StateChange::new(from, to)?);
        Ok(self)
    }

    pub fn apply(&self, job: &mut JobRecord) {
        job.updated_at = self.updated_at;
        if let Some(s) = self.state {
            job.state = s.to();
        }
        if let Some(a) = self.attempt {
            job.attempt = a;
        }
        if let Some(l) = &self.lease {
            job.lease = l.clone();
        }
        if let Some(e) = self.enqueued_at {
            job.enqueued_at = e;
        }
        if let Some(a) = self.awaiting_attachments {
            job.awaiting_attachments = a;
        }
        if let Some(s) = self.started_at {
            job.started_at = s;
        }
        if let Some(e) = self.ended_at {
            job.ended_at = e;
        }
        if let Some(f) = &self.failure {
            job.failure = f.clone();
        }
        if let Some(c) = &self.cancel_requested {
            job.cancel_requested = c.clone();
        }
        if let Some(r) = &self.released {
            job.released = r.clone();
        }
        if self.clear_phase_status {
            job.phase_status.clear();
        }
        if let Some((phase, code)) = self.phase_status_set {
            job.phase_status.insert(phase.as_str().to_owned(), code);
        }
        if let Some(d) = &self.device_info {
            job.device_info = d.clone();
        }
        if let Some(r) = &self.reservation {
            job.reservation = r.clone();
        }
        if let Some(t) = self.last_output_at {
            job.last_output_at = Some(t);
        }
        if let Some(a) = &self.push_attempt {
            job.attempts.push(a.clone());
        }
        if let Some((n, ended, outcome)) = &self.close_attempt
            && let Some(a) = job.attempts.iter_mut().find(|a| a.attempt == *n)
        {
            a.ended_at = Some(*ended);
            a.outcome = Some(outcome.clone());
        }
        if let Some(child) = self.add_child
            && !job.children.contains(&child)
        {
            job.children.push(child);
        }
        if let Some(s) = self.output_shipped {
            job.output_shipped = Some(s);
        }
        if let Some(t) = &self.output_truncated {
            job.output_truncated = t.clone();
        }
    }
}
