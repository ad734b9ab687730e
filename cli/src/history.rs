//! The local history of submitted jobs (`flinger jobs`): each job submitted from this machine,
//! with its queue, server, submission time and last known state, in `<data dir>/jobs.json`.
//!
//! Commands that learn a job's state (`status`, `poll`, `cancel`, `jobs --status`) record it
//! here when the job is in the history. The history is a convenience: failing to read or write
//! it never fails a command (a warning says so), and concurrent writers may lose an update.

use crate::files;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The name of the history file in the data directory.
pub const FILE: &str = "jobs.json";
/// Older entries are dropped beyond this many.
const KEEP: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub job_id: String,
    pub queue: String,
    pub server: String,
    /// Unix seconds.
    pub submitted_at: i64,
    /// Testflinger's word for the last known state (`waiting`, a phase, `complete`…).
    #[serde(default)]
    pub job_state: Option<String>,
    /// Flinger's true state (`failed` included).
    #[serde(default)]
    pub state: Option<String>,
}

impl Entry {
    /// Whether the last known state is an end state (no need to ask the server again).
    pub fn has_ended(&self) -> bool {
        matches!(self.state.as_deref(), Some("complete" | "cancelled" | "failed"))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    #[serde(default)]
    jobs: Vec<Entry>,
}

#[derive(Clone, Debug)]
pub struct History {
    path: Option<PathBuf>,
}

impl History {
    pub fn new(data_dir: Option<&Path>) -> History {
        History {
            path: data_dir.map(|d| d.join(FILE)),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every job, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<Entry>> {
        match &self.path {
            Some(p) => Ok(files::read_json::<HistoryFile>(p)?.unwrap_or_default().jobs),
            None => Ok(vec![]),
        }
    }

    fn save(&self, jobs: Vec<Entry>) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let skip = jobs.len().saturating_sub(KEEP);
        let jobs = jobs.into_iter().skip(skip).collect();
        files::write_json(path, &HistoryFile { jobs })
    }

    /// Records a new submission.
    pub fn add(&self, entry: Entry) -> std::io::Result<()> {
        let mut jobs = self.list()?;
        jobs.retain(|e| e.job_id != entry.job_id);
        jobs.push(entry);
        self.save(jobs)
    }

    /// Records a job's state, if the job is in the history and the state is new.
    pub fn update(&self, job_id: &str, state: &str, job_state: &str) -> std::io::Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        let mut jobs = self.list()?;
        let Some(e) = jobs.iter_mut().find(|e| e.job_id == job_id) else {
            return Ok(());
        };
        if e.state.as_deref() == Some(state) && e.job_state.as_deref() == Some(job_state) {
            return Ok(());
        }
        e.state = Some(state.to_owned());
        e.job_state = Some(job_state.to_owned());
        self.save(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            job_id: id.into(),
            queue: "q".into(),
            server: "http://s".into(),
            submitted_at: 1,
            job_state: None,
            state: None,
        }
    }

    #[test]
    fn jobs_are_added_then_updated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(Some(dir.path()));
        h.add(entry("a")).unwrap();
        h.add(entry("b")).unwrap();
        h.update("a", "failed", "complete").unwrap();
        h.update("unknown", "complete", "complete").unwrap();
        let jobs = h.list().unwrap();
        assert_eq!(
            jobs.iter().map(|e| e.job_id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(jobs[0].has_ended());
        assert_eq!(jobs[0].job_state.as_deref(), Some("complete"));
        assert!(!jobs[1].has_ended());
    }

    #[test]
    fn without_a_data_dir_nothing_is_kept() {
        let h = History::new(None);
        h.add(entry("a")).unwrap();
        assert!(h.list().unwrap().is_empty());
    }
}
