//! Read queries over jobs and output, with their reference semantics in Rust.

use super::model::{JobRecord, OutputFragment};
use broker_schema::messages::LogStream;
use broker_schema::{DeviceClass, JobState, Millis, Phase};
use std::cmp::Ordering;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobOrder {
    /// Oldest first.
    #[default]
    CreatedAsc,
    /// Newest first.
    CreatedDesc,
    /// The order agents take waiting jobs in: priority descending, then oldest first.
    QueueOrder,
    /// By queue name, newest first within a queue (the web UI's sortable column).
    QueueNewest,
    /// By state name, newest first within a state (the web UI's sortable column).
    StateNewest,
    /// By the job file's `name` (byte order; nameless jobs first), newest first within a name.
    NameNewest,
    /// Most recently started first; jobs never started last.
    StartedNewest,
    /// Longest run first (started to ended); jobs that have not ended last.
    LongestFirst,
}

impl JobOrder {
    pub const ALL: [JobOrder; 8] = [
        JobOrder::CreatedAsc,
        JobOrder::CreatedDesc,
        JobOrder::QueueOrder,
        JobOrder::QueueNewest,
        JobOrder::StateNewest,
        JobOrder::NameNewest,
        JobOrder::StartedNewest,
        JobOrder::LongestFirst,
    ];

    /// The reference semantics of the order: how two jobs compare in it. Ties between jobs
    /// created at the same instant are broken by job id, as the backends do, so that pages
    /// are stable.
    pub fn compare(self, a: &JobRecord, b: &JobRecord) -> Ordering {
        let oldest = || (a.created_at, a.job_id).cmp(&(b.created_at, b.job_id));
        let newest = || oldest().reverse();
        // `None` after every `Some`, the larger `Some` first.
        fn desc_none_last<T: Ord>(x: Option<T>, y: Option<T>) -> Ordering {
            match (x, y) {
                (Some(x), Some(y)) => y.cmp(&x),
                (x, y) => y.is_some().cmp(&x.is_some()),
            }
        }
        match self {
            JobOrder::CreatedAsc => oldest(),
            JobOrder::CreatedDesc => newest(),
            JobOrder::QueueOrder => b.priority.cmp(&a.priority).then_with(oldest),
            JobOrder::QueueNewest => a.queue.as_str().cmp(b.queue.as_str()).then_with(newest),
            JobOrder::StateNewest => a.state.as_str().cmp(b.state.as_str()).then_with(newest),
            JobOrder::NameNewest => a.definition.name().cmp(&b.definition.name()).then_with(newest),
            JobOrder::StartedNewest => desc_none_last(a.started_at, b.started_at).then_with(newest),
            JobOrder::LongestFirst => desc_none_last(a.run_time(), b.run_time()).then_with(newest),
        }
    }
}

/// How many jobs of one queue are in one state ([`crate::Store::count_live_jobs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCount {
    pub queue: String,
    pub state: JobState,
    pub count: u64,
}

/// Which jobs. Every `Some`/non-empty field must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobQuery {
    pub queue: Option<DeviceClass>,
    pub states: Option<Vec<JobState>>,
    /// Jobs carrying these tags: all of them when `all_tags`, else any.
    pub tags: Vec<String>,
    pub all_tags: bool,
    /// Jobs holding a lease that expired before this instant (the reaper's question).
    pub lease_expired_before: Option<Millis>,
    /// Jobs never seen on the broker and last updated before this instant (the sweeper's).
    pub not_enqueued_since: Option<Millis>,
    /// Jobs that come before a job of this priority created at this instant, in queue order
    /// (the queue-position question).
    pub ahead_of: Option<(u32, Millis)>,
    pub created_after: Option<Millis>,
    /// Jobs whose name contains this text (ASCII letters in either case), or that carry it as a
    /// tag (the web UI's search box).
    pub text: Option<String>,
    /// Jobs submitted by this client (the web UI's submitter filter).
    pub submitted_by: Option<String>,
    pub order: JobOrder,
    /// Skips this many jobs, in `order`, before the limit applies (the web UI's pages).
    pub offset: Option<u32>,
    pub limit: Option<u32>,
}

impl JobQuery {
    pub fn matches(&self, j: &JobRecord) -> bool {
        if let Some(q) = &self.queue
            && &j.queue != q
        {
            return false;
        }
        if let Some(s) = &self.states
            && !s.contains(&j.state)
        {
            return false;
        }
        if !self.tags.is_empty() {
            let has = |t: &String| j.tags.contains(t);
            let ok = if self.all_tags {
                self.tags.iter().all(has)
            } else {
                self.tags.iter().any(has)
            };
            if !ok {
                return false;
            }
        }
        if let Some(t) = self.lease_expired_before
            && j.lease.as_ref().is_none_or(|l| l.until >= t)
        {
            return false;
        }
        if let Some(t) = self.not_enqueued_since
            && !(j.enqueued_at.is_none() && j.updated_at < t)
        {
            return false;
        }
        if let Some((p, c)) = self.ahead_of
            && !(j.priority > p || (j.priority == p && j.created_at < c))
        {
            return false;
        }
        if let Some(t) = self.created_after
            && j.created_at <= t
        {
            return false;
        }
        if let Some(text) = &self.text {
            let needle = text.to_ascii_lowercase();
            let named = j
                .definition
                .name()
                .is_some_and(|n| n.to_ascii_lowercase().contains(&needle));
            if !named && !j.tags.contains(text) {
                return false;
            }
        }
        if let Some(who) = &self.submitted_by
            && j.submitted_by.as_ref() != Some(who)
        {
            return false;
        }
        true
    }
}

/// A slice of one run's output stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputQuery {
    pub job_id: Uuid,
    pub attempt: u32,
    pub stream: LogStream,
    /// Fragments with `seq >= from_seq`.
    pub from_seq: u64,
    pub phase: Option<Phase>,
    /// Fragments with `at >= since`.
    pub since: Option<Millis>,
    pub limit: Option<u32>,
}

impl OutputQuery {
    pub fn all(job_id: Uuid, attempt: u32, stream: LogStream) -> Self {
        OutputQuery {
            job_id,
            attempt,
            stream,
            from_seq: 0,
            phase: None,
            since: None,
            limit: None,
        }
    }

    pub fn matches(&self, f: &OutputFragment) -> bool {
        f.job_id == self.job_id
            && f.attempt == self.attempt
            && f.stream == self.stream
            && f.seq >= self.from_seq
            && self.phase.is_none_or(|p| f.phase == p)
            && self.since.is_none_or(|t| f.at >= t)
    }
}
