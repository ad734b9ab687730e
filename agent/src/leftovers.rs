//! Kills what an earlier run of this agent left behind.
//!
//! Every phase runs with `FLINGER_AGENT_NAME` in its environment. If the agent was killed
//! outright, the phase's group leader died with it (parent-death signal), but its children may
//! still run — unleased, on a device the lab may give to another job. At start the agent kills
//! every process group holding a process marked with its name.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use tracing::warn;

/// The environment variable naming the agent a phase runs for.
pub const AGENT_ENV: &str = "FLINGER_AGENT_NAME";

/// Kills the leftover process groups of agent `name`; returns how many groups were killed.
pub fn sweep(name: &str) -> usize {
    let marker = format!("{AGENT_ENV}={name}");
    let me = std::process::id();
    let mut groups = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
            continue;
        }
        if let Ok(pgid) = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32))) {
            groups.insert(pgid);
        }
    }
    for pgid in &groups {
        warn!(
            pgid = pgid.as_raw(),
            "killing a process group left by an earlier run of this agent"
        );
        let _ = killpg(*pgid, Signal::SIGKILL);
    }
    groups.len()
}
