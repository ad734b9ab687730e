//! The `command` connector: Testflinger's agent semantics, one shell command per phase.
//!
//! Each phase's command runs as `/bin/sh -c <command>` in the job's run directory (which holds
//! `testflinger.json`), in a process group of its own, with stdout and stderr merged into one
//! stream that reaches the agent as bytes arrive. This is what lets an existing
//! `testflinger-device-connector` setup keep working: its `provision_command` becomes
//! `provision`, and so on.
//!
//! The phase owns its process group. Cancelling sends SIGTERM to the group, then SIGKILL after
//! `kill_grace`; the context's `kill` token (the agent lost the lease) SIGKILLs it at once; when the command exits, whatever it left running in the group is killed once its
//! output is drained (or after `drain_timeout` if a background child keeps the pipe open). A
//! helper that must outlive its phase has to leave the group (`setsid`).

use super::*;
use crate::duration;
use crate::process::{self, Spawned};
use nix::sys::signal::Signal;
use serde::Deserializer;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};

/// Testflinger's default: what its agent waits between SIGTERM and SIGKILL is not configurable;
/// ten seconds lets a device connector release a device cleanly.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// How long output is still read after the command exits while a background child holds the
/// pipe open. Long enough for a well-behaved child to finish writing, short enough not to stall
/// the job.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How much is read from the pipe at once; also the largest chunk handed to the sink.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of the `command` connector (`connector: {type: command, …}` in the agent's YAML).
///
/// Build it from Rust with `CommandConfig::default()` and [`CommandConfig::set_command`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    #[serde(default, alias = "setup_command")]
    pub setup: Option<String>,
    #[serde(default, alias = "provision_command")]
    pub provision: Option<String>,
    #[serde(default, alias = "firmware_update_command")]
    pub firmware_update: Option<String>,
    #[serde(default, alias = "test_command")]
    pub test: Option<String>,
    #[serde(default, alias = "allocate_command")]
    pub allocate: Option<String>,
    #[serde(default, alias = "reserve_command")]
    pub reserve: Option<String>,
    #[serde(default, alias = "cleanup_command")]
    pub cleanup: Option<String>,
    /// Extra environment for every phase, over the agent's own and under the job's.
    #[serde(default, deserialize_with = "env_map")]
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when a phase is cancelled. A bare number is seconds.
    #[serde(default = "default_kill_grace", deserialize_with = "duration::seconds")]
    pub kill_grace: Duration,
    /// Time output is still read after the command exits, before the rest of its group is
    /// killed. A bare number is seconds.
    #[serde(default = "default_drain_timeout", deserialize_with = "duration::seconds")]
    pub drain_timeout: Duration,
}

fn default_kill_grace() -> Duration {
    DEFAULT_KILL_GRACE
}

fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            setup: None,
            provision: None,
            firmware_update: None,
            test: None,
            allocate: None,
            reserve: None,
            cleanup: None,
            env: BTreeMap::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl CommandConfig {
    fn slot(&self, phase: Phase) -> &Option<String> {
        match phase {
            Phase::Setup => &self.setup,
            Phase::Provision => &self.provision,
            Phase::FirmwareUpdate => &self.firmware_update,
            Phase::Test => &self.test,
            Phase::Allocate => &self.allocate,
            Phase::Reserve => &self.reserve,
            Phase::Cleanup => &self.cleanup,
        }
    }

    /// The phase's command; a blank one counts as none, as in Testflinger.
    pub fn command(&self, phase: Phase) -> Option<&str> {
        self.slot(phase).as_deref().filter(|c| !c.trim().is_empty())
    }

    /// Sets the phase's command (what the agent does with Testflinger's `<phase>_command`).
    pub fn set_command(&mut self, phase: Phase, command: impl Into<String>) -> &mut Self {
        let command = Some(command.into());
        match phase {
            Phase::Setup => self.setup = command,
            Phase::Provision => self.provision = command,
            Phase::FirmwareUpdate => self.firmware_update = command,
            Phase::Test => self.test = command,
            Phase::Allocate => self.allocate = command,
            Phase::Reserve => self.reserve = command,
            Phase::Cleanup => self.cleanup = command,
        }
        self
    }
}

/// Environment values may be written as YAML scalars (`RETRIES: 3`); the process sees strings.
fn env_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        String(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::String(s) => s,
                Scalar::Int(n) => n.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Runs each phase as a shell command; see the module docs.
#[derive(Debug)]
pub struct CommandConnector {
    config: CommandConfig,
}

impl CommandConnector {
    /// Checks what the OS would refuse later (`=` or NUL in names, NUL in values or commands),
    /// so a bad config fails when the agent starts rather than in the middle of a job.
    pub fn new(config: CommandConfig) -> Result<Self, ConnectorError> {
        for (k, v) in &config.env {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(ConnectorError::Config(format!(
                    "env: invalid variable name {k:?}"
                )));
            }
            if v.contains('\0') {
                return Err(ConnectorError::Config(format!("env.{k}: contains a NUL byte")));
            }
        }
        for phase in Phase::ALL {
            if config.command(phase).is_some_and(|c| c.contains('\0')) {
                return Err(ConnectorError::Config(format!(
                    "{phase}: the command contains a NUL byte"
                )));
            }
        }
        Ok(CommandConnector { config })
    }

    pub fn config(&self) -> &CommandConfig {
        &self.config
    }

    fn shell(&self, script: &str, ctx: &PhaseContext) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).current_dir(&ctx.run_dir);
        for name in &ctx.env_remove {
            cmd.env_remove(name);
        }
        cmd.envs(&self.config.env).envs(&ctx.env);
        cmd
    }

    /// The `PATH` the shell sees, for explaining a "command not found".
    fn effective_path(&self, ctx: &PhaseContext) -> String {
        ctx.env
            .get("PATH")
            .or_else(|| self.config.env.get("PATH"))
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/bin:/bin".into())
    }
}

#[async_trait]
impl Connector for CommandConnector {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn supports(&self, phase: Phase) -> bool {
        self.config.command(phase).is_some()
    }

    fn runs_testflinger_connectors(&self) -> bool {
        true
    }

    async fn run_phase(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let phase = ctx.phase;
        let cannot_start = |reason: String| ConnectorError::CannotStart { phase, reason };
        let script = self
            .config
            .command(phase)
            .ok_or_else(|| cannot_start("the device has no command for this phase".into()))?;
        if cancel.is_cancelled() || ctx.kill.is_cancelled() {
            return Ok(PhaseOutcome {
                exit_code: -(Signal::SIGTERM as i32),
                detail: Some("cancelled before it started".into()),
            });
        }
        let spawned = process::spawn_grouped(self.shell(script, ctx))
            .map_err(|e| cannot_start(format!("/bin/sh in {}: {e}", ctx.run_dir.display())))?;
        tracing::debug!(job_id = %ctx.job_id, %phase, pgid = spawned.child.id(), "phase command started");

        let end = pump(spawned, sink, &cancel, &ctx.kill, &self.config).await;
        let exit_code = end.status.map_or(-1, process::exit_code);
        tracing::debug!(job_id = %ctx.job_id, %phase, exit_code, cancelled = end.cancelled, "phase command ended");

        if exit_code == 127
            && !end.cancelled
            && let Some(program) = missing_program(script, &ctx.run_dir, &self.effective_path(ctx))
        {
            return Err(cannot_start(format!(
                "`{program}` not found (the shell exited 127)"
            )));
        }
        Ok(PhaseOutcome {
            exit_code,
            detail: end.detail(&self.config),
        })
    }
}

/// How the command and its output ended.
struct End {
    /// `None` when the process could not be waited for (the OS lost it).
    status: Option<ExitStatus>,
    wait_error: Option<String>,
    cancelled: bool,
    /// Killed with SIGKILL at once, without grace (the lease was lost).
    killed_at_once: bool,
    /// A background child still held the output open after the command exited.
    drain_killed: bool,
    /// Output was dropped because it could not be delivered in time after a cancel.
    gave_up: bool,
}

impl End {
    fn detail(&self, config: &CommandConfig) -> Option<String> {
        let mut parts = vec![];
        if let Some(e) = &self.wait_error {
            parts.push(format!("lost track of the command: {e}"));
        }
        if self.cancelled {
            let how = match self.status.and_then(|s| s.signal()) {
                Some(9) if self.killed_at_once => {
                    "killed with SIGKILL at once (the job's lease is gone)".to_string()
                }
                Some(9) => format!("killed with SIGKILL after {:?} of grace", config.kill_grace),
                Some(15) => "stopped by SIGTERM".to_string(),
                Some(n) => format!("ended by signal {n}"),
                None => "exited after SIGTERM".to_string(),
            };
            parts.push(format!("cancelled: {how}"));
        }
        if self.drain_killed {
            parts.push(format!(
                "background processes kept the output open {:?} after the command exited; killed them",
                config.drain_timeout
            ));
        }
        if self.gave_up {
            parts.push("the rest of the output was dropped".into());
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Waits for `deadline`, or forever when there is none.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Streams the merged output to the sink until the command has exited and the pipe is drained,
/// obeying `cancel`. One flat loop so that every wait — reading, the sink's backpressure, the
/// process, the deadlines — is cancellable and none blocks another.
async fn pump(
    spawned: Spawned,
    sink: &OutputSink,
    cancel: &CancellationToken,
    kill: &CancellationToken,
    config: &CommandConfig,
) -> End {
    let Spawned {
        mut child,
        mut output,
        group,
    } = spawned;
    let mut buf = vec![0u8; READ_CHUNK];
    // A chunk read but not yet accepted by the sink: we read no more until it is, so a slow
    // consumer slows the command down through the pipe instead of growing a buffer here.
    let mut pending: Option<Bytes> = None;
    let mut sink_open = true;
    let mut eof = false;
    let mut end = End {
        status: None,
        wait_error: None,
        cancelled: false,
        killed_at_once: false,
        drain_killed: false,
        gave_up: false,
    };
    let mut exited = false;
    // SIGKILL the group (cancel grace over).
    let mut kill_at: Option<Instant> = None;
    // Stop waiting for end-of-file on the pipe (the command exited).
    let mut drain_until: Option<Instant> = None;
    // Stop everything, dropping undelivered output: bounds how long a cancelled phase takes.
    let mut give_up_at: Option<Instant> = None;

    while !(exited && eof && pending.is_none()) {
        tokio::select! {
            r = output.read(&mut buf), if !eof && pending.is_none() => match r {
                Ok(0) => eof = true,
                Ok(n) if sink_open => pending = Some(Bytes::copy_from_slice(&buf[..n])),
                Ok(_) => {} // nobody listens any more; keep the pipe flowing
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading a phase's output failed");
                    eof = true;
                }
            },
            permit = sink.output.reserve(), if pending.is_some() => match permit {
                Ok(permit) => permit.send(pending.take().expect("guarded by the branch condition")),
                Err(_) => {
                    sink_open = false;
                    pending = None;
                }
            },
            status = child.wait(), if !exited => {
                exited = true;
                match status {
                    Ok(s) => end.status = Some(s),
                    Err(e) => end.wait_error = Some(e.to_string()),
                }
                drain_until = Some(Instant::now() + config.drain_timeout);
            }
            _ = cancel.cancelled(), if !end.cancelled => {
                end.cancelled = true;
                group.signal(Signal::SIGTERM);
                let now = Instant::now();
                kill_at = Some(now + config.kill_grace);
                give_up_at = earliest(give_up_at, now + config.kill_grace + config.drain_timeout);
            }
            _ = kill.cancelled(), if !end.killed_at_once => {
                // The lease is gone: no grace, whatever a cancel already granted.
                end.cancelled = true;
                end.killed_at_once = true;
                group.signal(Signal::SIGKILL);
                kill_at = None;
                give_up_at = earliest(give_up_at, Instant::now() + config.drain_timeout);
            }
            _ = at(kill_at) => {
                kill_at = None;
                group.signal(Signal::SIGKILL);
            }
            _ = at(drain_until), if !eof => {
                drain_until = None;
                end.drain_killed = true;
                group.signal(Signal::SIGKILL);
                // Normally the pipe closes now; a process that left the group may still hold it.
                give_up_at = earliest(give_up_at, Instant::now() + config.drain_timeout);
            }
            _ = at(give_up_at) => {
                give_up_at = None;
                end.gave_up = pending.is_some() || !eof;
                eof = true;
                pending = None;
                if !exited {
                    group.signal(Signal::SIGKILL);
                    exited = true;
                    match child.wait().await {
                        Ok(s) => end.status = Some(s),
                        Err(e) => end.wait_error = Some(e.to_string()),
                    }
                }
            }
        }
    }
    // `group` drops here: whatever the command left running in its group is killed.
    drop(group);
    end
}

/// When the shell said "not found" (exit 127), names the program if the command's first word
/// really is a program that does not exist. Returns `None` whenever that cannot be told for
/// sure (shell syntax, builtins, or the program exists and something inside it exited 127).
fn missing_program(script: &str, run_dir: &Path, path_var: &str) -> Option<String> {
    const SHELL_WORDS: &[&str] = &[
        "!", ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
        "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi", "for",
        "function", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read",
        "readonly", "return", "select", "set", "shift", "test", "then", "time", "times", "trap", "true",
        "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while", "{", "}",
    ];
    let word = script
        .trim_start()
        .split(|c: char| c.is_whitespace() || ";&|<>()".contains(c))
        .next()
        .filter(|w| !w.is_empty())?;
    if word.contains(|c: char| "$`'\"\\*?[]{}~=#".contains(c)) || SHELL_WORDS.contains(&word) {
        return None;
    }
    let exists = if word.contains('/') {
        run_dir.join(word).exists()
    } else {
        path_var
            .split(':')
            .map(|dir| {
                if dir.is_empty() {
                    run_dir.to_path_buf()
                } else {
                    run_dir.join(dir)
                }
            })
            .any(|dir| dir.join(word).is_file())
    };
    (!exists).then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_program_that_does_not_exist_is_reported_missing() {
        let dir = Path::new("/");
        let path = "/usr/bin:/bin";
        assert_eq!(
            missing_program("no-such-prog --x", dir, path),
            Some("no-such-prog".into())
        );
        assert_eq!(
            missing_program("./nope.sh; echo", dir, path),
            Some("./nope.sh".into())
        );
        assert_eq!(missing_program("sh -c 'exit 127'", dir, path), None);
        assert_eq!(missing_program("exit 127", dir, path), None);
        assert_eq!(missing_program("$CMD", dir, path), None);
        assert_eq!(missing_program("FOO=1 thing", dir, path), None);
        assert_eq!(missing_program("  ", dir, path), None);
    }
}
