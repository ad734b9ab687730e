//! Kills what an earlier run of this agent left behind, and removes the run directories of runs
//! it did not finish.
//!
//! Every phase runs with `FLINGER_AGENT_NAME` and `FLINGER_AGENT_STATE_DIR` in its environment.
//! If the agent was killed outright, the phase's group leader died with it (parent-death
//! signal), but its children may still run — unleased, on a device the lab may give to another
//! job. At start the agent kills every process group holding a process marked with its name and
//! its state directory: another agent of the same name on the host (another lab, another
//! namespace) has another state directory, and its phases are left alone.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use tracing::warn;

/// The environment variable naming the agent a phase runs for.
pub const AGENT_ENV: &str = "FLINGER_AGENT_NAME";
/// The environment variable holding that agent's state directory.
pub const STATE_ENV: &str = "FLINGER_AGENT_STATE_DIR";

/// Whether a process with this environment (`/proc/<pid>/environ`: NUL-separated `KEY=VALUE`)
/// runs for the agent `name` whose state directory is `state_dir`. A process marked with the
/// name alone (from an agent before state directories were marked) counts as the agent's.
fn is_ours(environ: &[u8], name: &str, state_dir: &str) -> bool {
    let value = |key: &str| {
        environ.split(|b| *b == 0).find_map(|var| {
            var.strip_prefix(key.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
    };
    value(AGENT_ENV) == Some(name.as_bytes())
        && value(STATE_ENV).is_none_or(|dir| dir == state_dir.as_bytes())
}

/// Kills the leftover process groups of agent `name` (state directory `state_dir`); returns how
/// many groups were killed.
pub fn sweep(name: &str, state_dir: &std::path::Path) -> usize {
    let state_dir = state_dir.to_string_lossy();
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
        if !is_ours(&environ, name, &state_dir) {
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

/// The file in a run's own directory (in the agent's state directory) naming its run
/// directory, written before any phase runs.
pub const RUN_DIR_FILE: &str = "run-dir";

/// Removes the run directories of runs an earlier process of this agent did not finish (it was
/// killed, or crashed), and their per-run files: a run directory may still hold the job's
/// secret values ([`crate::jobfile`]), and nothing will read it again (the job is retried as a
/// new attempt). Returns how many runs were cleared. Run directories are found through the
/// agent's own per-run files, never by looking at what is in `execution_basedir`.
pub fn remove_abandoned_runs(state_dir: &std::path::Path) -> usize {
    let jobs = state_dir.join("jobs");
    let Ok(entries) = std::fs::read_dir(&jobs) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if let Ok(run_dir) = std::fs::read_to_string(entry.path().join(RUN_DIR_FILE)) {
            match std::fs::remove_dir_all(run_dir.trim_end()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = run_dir.trim_end(), error = %e, "cannot remove an abandoned run directory")
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&jobs);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_of_this_agent_and_state_directory_are_ours() {
        let env = |vars: &[&str]| vars.join("\0").into_bytes();
        let ours = env(&[
            "PATH=/bin",
            "FLINGER_AGENT_NAME=dut-1",
            "FLINGER_AGENT_STATE_DIR=/srv/a/state",
        ]);
        assert!(is_ours(&ours, "dut-1", "/srv/a/state"));
        // The same name in another lab on this host: not ours.
        assert!(!is_ours(&ours, "dut-1", "/srv/b/state"));
        assert!(!is_ours(&ours, "dut-10", "/srv/a/state"));
        assert!(!is_ours(
            &env(&["FLINGER_AGENT_NAME=dut-10"]),
            "dut-1",
            "/srv/a/state"
        ));
        // Marked by an older agent, with the name only.
        assert!(is_ours(
            &env(&["FLINGER_AGENT_NAME=dut-1"]),
            "dut-1",
            "/srv/a/state"
        ));
        assert!(!is_ours(&env(&["PATH=/bin"]), "dut-1", "/srv/a/state"));
    }

    #[test]
    fn abandoned_run_directories_are_removed_through_the_agents_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let abandoned = run.join("job-1");
        std::fs::create_dir_all(&abandoned).unwrap();
        std::fs::write(abandoned.join("testflinger.json"), "values").unwrap();
        let other = run.join("not-ours");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::create_dir_all(state.join("jobs/job-1")).unwrap();
        std::fs::write(
            state.join("jobs/job-1").join(RUN_DIR_FILE),
            abandoned.display().to_string(),
        )
        .unwrap();
        assert_eq!(remove_abandoned_runs(&state), 1);
        assert!(!abandoned.exists() && other.exists());
        assert!(!state.join("jobs").exists());
        assert_eq!(remove_abandoned_runs(&state), 0);
    }
}
