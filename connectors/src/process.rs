//! A child process in its own process group, with stdout and stderr merged into one pipe.
//!
//! The group is the unit a phase owns: cancelling a phase signals the whole group, so helpers
//! a phase command started in the background die with it. [`GroupGuard`] kills the group if the
//! future that owns it is dropped, so no path out of a phase leaves processes behind.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, pipe2};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// A started process group: its leader and the read end of the merged output pipe.
pub(crate) struct Spawned {
    pub child: Child,
    pub output: pipe::Receiver,
    pub group: GroupGuard,
}

/// Spawns `command` as the leader of a new process group, with stdout and stderr both writing
/// to one pipe so the reader sees them interleaved exactly as written.
pub(crate) fn spawn_grouped(mut command: Command) -> io::Result<Spawned> {
    // CLOEXEC: the child gets the write end only as fds 1 and 2 (dup2 clears the flag on those),
    // never the read end or a stray copy that would keep the pipe open.
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    let write_err = write.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    // If the agent dies (kill -9), the group leader dies with it instead of running on
    // unleased; the agent sweeps whatever else of the group is left when it starts again.
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Our copies of the write end go with `command`: from here on, end-of-file means every
    // process holding the pipe has closed it.
    drop(command);
    let output = pipe::Receiver::from_owned_fd(read)?;
    let pgid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited before its id was read"))?;
    Ok(Spawned {
        child,
        output,
        group: GroupGuard {
            pgid: Pid::from_raw(pgid as i32),
        },
    })
}

/// Owns a process group; SIGKILLs whatever is left of it when dropped.
pub(crate) struct GroupGuard {
    pgid: Pid,
}

impl GroupGuard {
    /// Sends `signal` to every process of the group. A group with no process left is fine.
    pub fn signal(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = self.pgid.as_raw(), %signal, error = %e, "cannot signal process group")
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// An exit status as Testflinger reports it: the exit code, or minus the signal number.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}
