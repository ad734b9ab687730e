//! The `ssh` connector: a device that is already installed and reachable over SSH
//! (Testflinger's `noprovision`).
//!
//! Every phase is one run of the system OpenSSH client (`ssh`, found on `PATH`), started through
//! the [`command`](crate::command) connector's machinery: its own process group, stdout and
//! stderr merged and streamed, SIGTERM then SIGKILL on cancel. Using the operators' own client
//! means no SSH library to vet and the behaviour (keys, `~/.ssh/config`, `ProxyJump`) they know.
//!
//! - provision: checks the device answers (`uname -a` over SSH), retrying for
//!   `provision_timeout`, and writes `device-info.json`. Unreachable means the device needs a
//!   human: exit 46 (`RECOVERY_FAILED_EXIT`) takes the agent offline.
//! - test: runs the job's `test_cmds` with `/bin/sh` on the device, `DEVICE_IP` and the
//!   environment exported there.
//! - reserve: appends the job's keys to the reserving user's `authorized_keys`, each tagged
//!   `flinger-reservation=<job id>`; cleanup removes exactly the lines with that tag.
//!
//! Killing the local `ssh` does not kill the remote command: without a tty, sshd sends it no
//! SIGHUP. So the test commands run under a small remote wrapper whose watcher notices the
//! connection's sshd process has gone and kills the command's process group (see
//! [`TEST_WRAPPER`]); when the lease is lost, [`KILL_REMOTE`] kills that group at once over a
//! second connection. This module must never leave a remote command running after its phase.

use super::*;
use crate::command::{CommandConfig, CommandConnector};
use crate::duration;
use serde::Deserializer;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_PORT: u16 = 22;
/// Testflinger's default `test_username`.
pub const DEFAULT_USER: &str = "ubuntu";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A device that is not up five minutes after its previous job is not coming back by itself.
pub const DEFAULT_PROVISION_TIMEOUT: Duration = Duration::from_secs(300);
/// With ssh's default `ServerAliveCountMax` of 3, a vanished device is noticed within a minute.
pub const DEFAULT_SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Where reserve installs keys, in `sshd_config`'s `AuthorizedKeysFile` syntax.
pub const DEFAULT_AUTHORIZED_KEYS: &str = "%h/.ssh/authorized_keys";
/// What tags the `authorized_keys` lines a reservation added: followed by the job id.
pub const RESERVATION_TAG: &str = "flinger-reservation=";
/// Written into the run directory by reserve before it touches the device; cleanup acts only
/// when it is there.
pub const RESERVATION_RECORD: &str = "ssh-reservation.json";
/// How long provision waits between two reachability checks.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// ssh's exit code for its own failures (no connection, refused login, host key mismatch).
const SSH_FAILED_EXIT: i32 = 255;

/// Settings of the `ssh` connector (`connector: {type: ssh, …}` in the agent's YAML).
///
/// From Rust: `SshConfig::new("10.0.0.7")` and set what differs from the defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// The device's address or name; also its `DEVICE_IP`.
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The account the agent logs in as.
    #[serde(default = "default_user")]
    pub user: String,
    /// The private key the agent logs in with; ssh's usual identities when absent.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    #[serde(default)]
    pub known_hosts: KnownHosts,
    /// ssh's `ConnectTimeout` (whole seconds, rounded up). A bare number is seconds.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration::seconds")]
    pub connect_timeout: Duration,
    /// How long provision keeps trying to reach the device. A bare number is seconds.
    #[serde(default = "default_provision_timeout", deserialize_with = "duration::seconds")]
    pub provision_timeout: Duration,
    /// ssh's `ServerAliveInterval`: how soon a device that vanished mid-phase is noticed.
    #[serde(
        default = "default_server_alive_interval",
        deserialize_with = "duration::seconds"
    )]
    pub server_alive_interval: Duration,
    /// Extra environment for the test commands, exported on the device.
    #[serde(default, deserialize_with = "env_map")]
    pub env: BTreeMap<String, String>,
    /// The account the reserving person logs in as; `user` when absent.
    #[serde(default)]
    pub reserve_user: Option<String>,
    /// Where reserve installs keys on the device: `%h` is the reserve user's home, `%u` its name.
    #[serde(default = "default_authorized_keys")]
    pub authorized_keys: String,
    /// Time between SIGTERM and SIGKILL, for the local ssh and for the remote test commands.
    #[serde(default = "default_kill_grace", deserialize_with = "duration::seconds")]
    pub kill_grace: Duration,
    /// Extra `-o` options for ssh (`ProxyJump=bastion`). They come first, so they win over
    /// the connector's own.
    #[serde(default)]
    pub options: Vec<String>,
}

/// How the device's host key is checked.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownHosts {
    #[serde(default)]
    pub policy: HostKeyPolicy,
    /// The known_hosts file. Required by `strict`; with `accept-new` it defaults to one in the
    /// job's run directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Trust the key seen first, then insist on it (ssh's `StrictHostKeyChecking=accept-new`).
    #[default]
    AcceptNew,
    /// Only keys already in the file (`StrictHostKeyChecking=yes`).
    Strict,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_user() -> String {
    DEFAULT_USER.into()
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_provision_timeout() -> Duration {
    DEFAULT_PROVISION_TIMEOUT
}
fn default_server_alive_interval() -> Duration {
    DEFAULT_SERVER_ALIVE_INTERVAL
}
fn default_authorized_keys() -> String {
    DEFAULT_AUTHORIZED_KEYS.into()
}
fn default_kill_grace() -> Duration {
    crate::command::DEFAULT_KILL_GRACE
}

impl SshConfig {
    /// A device at `host` with every other setting at its default.
    pub fn new(host: impl Into<String>) -> SshConfig {
        SshConfig {
            host: host.into(),
            port: DEFAULT_PORT,
            user: default_user(),
            identity_file: None,
            known_hosts: KnownHosts::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            provision_timeout: DEFAULT_PROVISION_TIMEOUT,
            server_alive_interval: DEFAULT_SERVER_ALIVE_INTERVAL,
            env: BTreeMap::new(),
            reserve_user: None,
            authorized_keys: default_authorized_keys(),
            kill_grace: crate::command::DEFAULT_KILL_GRACE,
            options: vec![],
        }
    }

    pub fn reserve_user(&self) -> &str {
        self.reserve_user.as_deref().unwrap_or(&self.user)
    }
}

/// Environment values may be written as YAML scalars (`RETRIES: 3`); the device sees strings.
fn env_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde_json::Value;
    BTreeMap::<String, Value>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "env.{k}: expected a string, number or boolean, got {other}"
            ))),
        })
        .collect()
}

/// A device reached over SSH; see the module docs.
#[derive(Debug)]
pub struct SshConnector {
    config: SshConfig,
}

impl SshConnector {
    /// Checks the configuration and that an `ssh` client is installed, so that a bad setup
    /// fails when the agent starts rather than in the middle of a job.
    pub fn new(config: SshConfig) -> Result<Self, ConnectorError> {
        let bad = |m: String| Err(ConnectorError::Config(m));
        let h = &config.host;
        if h.is_empty() || h.starts_with('-') || h.contains(|c: char| c.is_whitespace() || c == '\0') {
            return bad(format!("host: {h:?} is not a host name or address"));
        }
        if config.port == 0 {
            return bad("port: must be 1–65535".into());
        }
        for (key, name) in [
            ("user", config.user.as_str()),
            ("reserve_user", config.reserve_user()),
        ] {
            if !is_user_name(name) {
                return bad(format!("{key}: {name:?} is not a user name"));
            }
        }
        if let Some(f) = &config.identity_file
            && !f.is_file()
        {
            return bad(format!("identity_file: {} is not a file", f.display()));
        }
        match (&config.known_hosts.policy, &config.known_hosts.file) {
            (HostKeyPolicy::Strict, None) => {
                return bad("known_hosts: the strict policy needs a `file` of trusted host keys".into());
            }
            (HostKeyPolicy::Strict, Some(f)) if !f.is_file() => {
                return bad(format!("known_hosts.file: {} is not a file", f.display()));
            }
            _ => {}
        }
        for (k, v) in &config.env {
            if !is_env_name(k) {
                return bad(format!("env: {k:?} is not a shell variable name"));
            }
            if v.contains('\0') {
                return bad(format!("env.{k}: contains a NUL byte"));
            }
        }
        if let Err(e) = authorized_keys_word(&config.authorized_keys) {
            return bad(format!("authorized_keys: {e}"));
        }
        if let Some(o) = config
            .options
            .iter()
            .find(|o| o.contains('\0') || o.trim().is_empty())
        {
            return bad(format!("options: {o:?} is not an ssh option"));
        }
        if config.connect_timeout.is_zero() {
            return bad("connect_timeout: must be more than zero".into());
        }
        if !ssh_installed() {
            return bad("the OpenSSH client `ssh` is not on PATH (install openssh-client)".into());
        }
        Ok(SshConnector { config })
    }

    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    /// `ssh reserve_user@host -p port`: what the reserving person types.
    pub fn connect_hint(&self) -> String {
        format!(
            "ssh {}@{} -p {}",
            self.config.reserve_user(),
            self.config.host,
            self.config.port
        )
    }

    /// The known_hosts file a phase uses.
    fn known_hosts_file(&self, run_dir: &Path) -> PathBuf {
        self.config
            .known_hosts
            .file
            .clone()
            .unwrap_or_else(|| run_dir.join("known_hosts"))
    }

    /// ssh's arguments to run `remote` (a command line for the login shell) on the device.
    fn ssh_args(&self, run_dir: &Path, remote: &str) -> Vec<String> {
        let c = &self.config;
        let mut args: Vec<String> = vec!["-T".into(), "-n".into()];
        let mut opt = |o: String| {
            args.push("-o".into());
            args.push(o);
        };
        for o in &c.options {
            opt(o.clone());
        }
        let checking = match c.known_hosts.policy {
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Strict => "yes",
        };
        for o in [
            "BatchMode=yes".to_string(),
            format!("ConnectTimeout={}", whole_seconds(c.connect_timeout)),
            format!("ServerAliveInterval={}", whole_seconds(c.server_alive_interval)),
            format!("StrictHostKeyChecking={checking}"),
            format!("UserKnownHostsFile={}", ssh_path(&self.known_hosts_file(run_dir))),
            // The configured file is the only source of trust.
            "GlobalKnownHostsFile=/dev/null".into(),
            // A shared master connection would outlive our ssh: killing it would not end the
            // session, so the remote command would not be stopped.
            "ControlMaster=no".into(),
            "ControlPath=none".into(),
            // Keeps "Permanently added … to the list of known hosts" out of the job's output;
            // errors still show.
            "LogLevel=ERROR".into(),
        ] {
            opt(o);
        }
        if let Some(f) = &c.identity_file {
            opt("IdentitiesOnly=yes".into());
            args.push("-i".into());
            // A separate argument: no quotes needed, but ssh expands `%` tokens in it.
            args.push(f.display().to_string().replace('%', "%%"));
        }
        args.extend([
            "-p".into(),
            c.port.to_string(),
            "-l".into(),
            c.user.clone(),
            "--".into(),
            c.host.clone(),
            remote.into(),
        ]);
        args
    }

    /// Runs `remote` on the device through a local ssh, streaming its output. The local side is
    /// the `command` connector's: own process group, merged output, SIGTERM/SIGKILL on cancel.
    async fn ssh(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
        remote: &str,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let cannot_start = |reason: String| ConnectorError::CannotStart {
            phase: ctx.phase,
            reason,
        };
        if remote.contains('\0') {
            return Err(cannot_start(
                "the command for the device contains a NUL byte".into(),
            ));
        }
        let line = std::iter::once("exec ssh".to_string())
            .chain(self.ssh_args(&ctx.run_dir, remote).iter().map(|a| sh_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut config = CommandConfig {
            kill_grace: self.config.kill_grace,
            ..CommandConfig::default()
        };
        config.set_command(ctx.phase, line);
        let runner = CommandConnector::new(config).map_err(|e| cannot_start(e.to_string()))?;
        let mut outcome = runner.run_phase(ctx, sink, cancel.clone()).await?;
        if cancel.is_cancelled() && outcome.exit_code == SSH_FAILED_EXIT {
            // ssh catches SIGTERM and exits 255; report it like any process SIGTERM ended.
            outcome.exit_code = -(nix::sys::signal::Signal::SIGTERM as i32);
        } else if outcome.exit_code == SSH_FAILED_EXIT && outcome.detail.is_none() {
            outcome.detail = Some(format!(
                "ssh exited {SSH_FAILED_EXIT}: {}@{}:{} could not be reached or refused the login",
                self.config.user, self.config.host, self.config.port
            ));
        }
        Ok(outcome)
    }

    async fn provision(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let c = &self.config;
        write_device_info(ctx, &c.host).await?;
        sink.out(format!(
            "ssh: nothing to install on a pre-installed device; checking that {}@{} port {} answers (for up to {:?})\n",
            c.user, c.host, c.port, c.provision_timeout
        ))
        .await;
        let started = Instant::now();
        let deadline = started + c.provision_timeout;
        let mut attempt = 1u32;
        loop {
            let outcome = self.ssh(ctx, sink, cancel.clone(), "uname -a").await?;
            if cancel.is_cancelled() {
                return Ok(outcome);
            }
            if outcome.exit_code == 0 {
                sink.out(format!(
                    "ssh: the device is reachable (attempt {attempt}, after {:.1?}); wrote device-info.json\n",
                    started.elapsed()
                ))
                .await;
                return Ok(outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                sink.out(format!(
                    "ssh: the device did not answer over SSH within {:?} ({attempt} attempts): it needs a human\n",
                    c.provision_timeout
                ))
                .await;
                return Ok(PhaseOutcome {
                    exit_code: RECOVERY_FAILED_EXIT,
                    detail: Some(format!(
                        "{}@{}:{} unreachable over SSH for {:?} (last ssh exit code {})",
                        c.user, c.host, c.port, c.provision_timeout, outcome.exit_code
                    )),
                });
            }
            let wait = RETRY_INTERVAL.min(deadline - now);
            sink.out(format!(
                "ssh: attempt {attempt} failed (exit code {}); retrying in {wait:.1?}\n",
                outcome.exit_code
            ))
            .await;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {
                    return Ok(PhaseOutcome {
                        exit_code: -(nix::sys::signal::Signal::SIGTERM as i32),
                        detail: Some("cancelled while waiting for the device to answer".into()),
                    });
                }
            }
            attempt += 1;
        }
    }

    async fn test(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let Some(script) = ctx.job.test_cmds().filter(|s| !s.trim().is_empty()) else {
            sink.out("ssh: the job has no test_cmds; nothing to run\n").await;
            return Ok(PhaseOutcome::default());
        };
        let mut env = BTreeMap::from([("DEVICE_IP".to_string(), self.config.host.clone())]);
        env.extend(self.config.env.clone());
        let mut skipped = vec![];
        for (k, v) in &ctx.env {
            if is_env_name(k) && !v.contains('\0') {
                env.insert(k.clone(), v.clone());
            } else {
                skipped.push(k.as_str());
            }
        }
        if !skipped.is_empty() {
            tracing::debug!(job_id = %ctx.job_id, ?skipped, "variables a shell cannot export were not sent to the device");
        }
        let exports: String = env
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
            .collect();
        let remote = format!(
            "exec /bin/sh -c {} flinger-test {} {} {}",
            sh_quote(&(exports + TEST_WRAPPER)),
            whole_seconds(self.config.kill_grace),
            sh_quote(&script),
            ctx.job_id
        );
        let outcome = self.ssh(ctx, sink, cancel, &remote).await;
        if ctx.kill.is_cancelled() {
            self.kill_remote(ctx).await;
        }
        outcome
    }

    /// The agent lost the lease: the local ssh is dead, and the device's watcher would give the
    /// test commands `kill_grace` after its SIGTERM. A second, short connection SIGKILLs their
    /// group at once. Best effort, bounded by the connect timeout.
    async fn kill_remote(&self, ctx: &PhaseContext) {
        let mut ctx = ctx.clone();
        ctx.kill = CancellationToken::new();
        // Nobody reads this: the run's output is no longer reported.
        let sink = OutputSink {
            output: mpsc::channel(1).0,
            serial: mpsc::channel(1).0,
        };
        let remote = format!(
            "exec /bin/sh -c {} flinger-kill {}",
            sh_quote(KILL_REMOTE),
            ctx.job_id
        );
        let limit = self.config.connect_timeout + Duration::from_secs(5);
        let killed = self.ssh(&ctx, &sink, CancellationToken::new(), &remote);
        match tokio::time::timeout(limit, killed).await {
            Ok(Ok(o)) if o.exit_code == 0 => {
                tracing::debug!(job_id = %ctx.job_id, "the test commands on the device were killed")
            }
            other => {
                tracing::warn!(job_id = %ctx.job_id, result = ?other.map(|r| r.map(|o| o.exit_code)), "could not kill the test commands on the device at once; its watcher stops them after kill_grace")
            }
        }
    }

    async fn reserve(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let cannot_start = |reason: String| ConnectorError::CannotStart {
            phase: ctx.phase,
            reason,
        };
        let user = self.config.reserve_user();
        let Some(keys_file) = ctx.env.get(SSH_KEYS_FILE_ENV) else {
            sink.out(format!(
                "ssh: the job gave no SSH keys; nothing to install\nssh: connect with: {}\n",
                self.connect_hint()
            ))
            .await;
            return Ok(PhaseOutcome::default());
        };
        let text = tokio::fs::read_to_string(keys_file)
            .await
            .map_err(|e| cannot_start(format!("cannot read the keys file {keys_file}: {e}")))?;
        let mut keys = vec![];
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match PublicKey::parse(line) {
                Some(k) if !keys.iter().any(|o: &PublicKey| o.blob == k.blob) => keys.push(k),
                Some(_) => {}
                None => {
                    let shown: String = line.chars().take(60).collect();
                    sink.out(format!(
                        "ssh: skipping a line that is not a public key: {shown}\n"
                    ))
                    .await;
                }
            }
        }
        if keys.is_empty() {
            sink.out(format!(
                "ssh: {keys_file} holds no public key; nothing can be installed\n"
            ))
            .await;
            return Ok(PhaseOutcome {
                exit_code: 1,
                detail: Some("the reservation has no usable SSH key".into()),
            });
        }
        let record = serde_json::json!({
            "host": self.config.host,
            "port": self.config.port,
            "reserve_user": user,
            "authorized_keys": self.config.authorized_keys,
            "tag": format!("{RESERVATION_TAG}{}", ctx.job_id),
        });
        let record_path = ctx.run_dir.join(RESERVATION_RECORD);
        tokio::fs::write(&record_path, record.to_string())
            .await
            .map_err(|e| cannot_start(format!("cannot write {}: {e}", record_path.display())))?;

        let mut script = self.keys_prelude()?;
        script.push_str(INSTALL_KEYS);
        for k in &keys {
            script.push_str(&format!(
                "add {} {} {}\n",
                sh_quote(&k.blob),
                sh_quote(&format!("{} {RESERVATION_TAG}{}", k.line, ctx.job_id)),
                sh_quote(&k.label())
            ));
        }
        script.push_str("echo \"ssh: $added key(s) added to $ak for $u\"\n");
        sink.out(format!(
            "ssh: installing {} key(s) for {user} on {}\n",
            keys.len(),
            self.config.host
        ))
        .await;
        let outcome = self
            .ssh(ctx, sink, cancel, &as_reserve_user(&script, user))
            .await?;
        if outcome.exit_code == 0 {
            sink.out(format!(
                "ssh: the device is reserved; connect with: {}\n",
                self.connect_hint()
            ))
            .await;
        }
        Ok(outcome)
    }

    async fn cleanup(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        if !ctx.run_dir.join(RESERVATION_RECORD).exists() {
            sink.out("ssh: no keys were installed for this job; nothing to clean up\n")
                .await;
            return Ok(PhaseOutcome::default());
        }
        let mut script = self.keys_prelude()?;
        script.push_str(&format!(
            "tag={}\n",
            sh_quote(&format!(" {RESERVATION_TAG}{}$", ctx.job_id))
        ));
        script.push_str(REMOVE_KEYS);
        sink.out(format!(
            "ssh: removing this job's keys for {} on {}\n",
            self.config.reserve_user(),
            self.config.host
        ))
        .await;
        self.ssh(
            ctx,
            sink,
            cancel,
            &as_reserve_user(&script, self.config.reserve_user()),
        )
        .await
    }

    /// Sets `$u`, `$home` and `$ak` (the authorized_keys path) on the device.
    fn keys_prelude(&self) -> Result<String, ConnectorError> {
        let ak = authorized_keys_word(&self.config.authorized_keys).map_err(ConnectorError::Config)?;
        Ok(format!(
            "set -eu\nu={}\n{HOME_LOOKUP}ak={ak}\ncase $ak in /*) ;; *) echo \"ssh: the authorized_keys path is not absolute: $ak\" >&2; exit 1 ;; esac\n",
            sh_quote(self.config.reserve_user())
        ))
    }
}

#[async_trait]
impl Connector for SshConnector {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn supports(&self, phase: Phase) -> bool {
        matches!(
            phase,
            Phase::Provision | Phase::Test | Phase::Reserve | Phase::Cleanup
        )
    }

    fn device_ip(&self) -> Option<String> {
        Some(self.config.host.clone())
    }

    fn reserve_user(&self) -> Option<String> {
        Some(self.config.reserve_user().to_owned())
    }

    async fn run_phase(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        match ctx.phase {
            Phase::Provision => self.provision(ctx, sink, cancel).await,
            Phase::Test => self.test(ctx, sink, cancel).await,
            Phase::Reserve => self.reserve(ctx, sink, cancel).await,
            Phase::Cleanup => self.cleanup(ctx, sink, cancel).await,
            phase => Err(ConnectorError::CannotStart {
                phase,
                reason: "the ssh connector has no step for this phase".into(),
            }),
        }
    }
}

/// Runs the test commands on the device so that they die with the connection.
///
/// Without a tty sshd sends the remote command no SIGHUP when the connection drops, so a killed
/// local ssh would leave the test running. sshd starts the command in a session (and process
/// group) of its own, and its parent is the connection's sshd process; a watcher in that group
/// polls the parent every second and, once it is gone, SIGTERMs the group, then SIGKILLs it
/// `$1` seconds later. The watcher's output goes to /dev/null so it never holds the session open.
///
/// The test commands (`$2`) run in a child `/bin/sh` with stderr merged into stdout on the
/// device, so both keep their order. When they exit, whatever they left in the group gets
/// SIGTERM: a background process holding the output would otherwise keep the session open.
/// Their exit code is the wrapper's, hence ssh's.
///
/// The group's id (the wrapper leads it: sshd made it a session leader) is written to
/// `$HOME/.flinger-test-$3.pgid` ($3 is the job id) for [`KILL_REMOTE`], which SIGKILLs the group
/// at once when the agent loses the lease, rather than after the grace.
pub const TEST_WRAPPER: &str = r#"parent=$PPID
pgfile="${HOME:-/tmp}/.flinger-test-$3.pgid"
echo "$$" >"$pgfile" 2>/dev/null
(
  trap '' HUP INT TERM
  while kill -0 "$parent" 2>/dev/null; do sleep 1; done
  kill -TERM 0 2>/dev/null
  sleep "$1"
  rm -f "$pgfile"
  kill -KILL 0 2>/dev/null
) </dev/null >/dev/null 2>&1 &
watcher=$!
/bin/sh -c "$2" 2>&1
rc=$?
kill -KILL "$watcher" 2>/dev/null
rm -f "$pgfile"
trap '' TERM
kill -TERM 0 2>/dev/null
exit "$rc"
"#;

/// SIGKILLs the process group [`TEST_WRAPPER`] recorded for job `$1`, if it is still there.
pub const KILL_REMOTE: &str = r#"pgfile="${HOME:-/tmp}/.flinger-test-$1.pgid"
if [ -f "$pgfile" ]; then
  pgid=$(cat "$pgfile")
  rm -f "$pgfile"
  # No `--`: dash's kill refuses it; a negative number right after the signal is a group.
  case $pgid in ''|*[!0-9]*) ;; *) kill -KILL "-$pgid" 2>/dev/null ;; esac
fi
exit 0
"#;

/// `$home` of user `$u`: getent first, `~user` where there is no getent (`$u` was checked to be
/// a plain user name, so the eval cannot inject anything).
const HOME_LOOKUP: &str = r#"home=$(getent passwd "$u" 2>/dev/null | cut -d: -f6)
[ -n "$home" ] || home=$(eval "echo ~$u")
case $home in /*) ;; *) echo "ssh: no user $u on the device" >&2; exit 1 ;; esac
"#;

/// Defines `add BLOB LINE LABEL`: appends LINE to `$ak` unless a line there has BLOB already.
/// A directory or file it creates gets mode 700 / 600 and belongs to `$u`.
const INSTALL_KEYS: &str = r#"dir=$(dirname "$ak")
own() { if [ "$(id -u)" -eq 0 ]; then chown "$u:$(id -g "$u")" "$1"; fi; }
if [ ! -d "$dir" ]; then mkdir -p "$dir"; chmod 700 "$dir"; own "$dir"; echo "ssh: created $dir"; fi
if [ ! -e "$ak" ]; then : >"$ak"; chmod 600 "$ak"; own "$ak"; fi
if [ -s "$ak" ] && [ -n "$(tail -c 1 "$ak")" ]; then echo >>"$ak"; fi
added=0
add() {
  if grep -qF -- "$1" "$ak"; then
    echo "ssh: already authorized: $3"
  else
    printf '%s\n' "$2" >>"$ak"
    added=$((added + 1))
    echo "ssh: authorized: $3"
  fi
}
"#;

/// Removes the lines matching `$tag` from `$ak`, rewriting the file in place (same inode, owner
/// and mode).
const REMOVE_KEYS: &str = r#"if [ ! -f "$ak" ]; then echo "ssh: no $ak; nothing to remove"; exit 0; fi
n=$(grep -c -e "$tag" "$ak" || true)
if [ "$n" -eq 0 ]; then echo "ssh: no key of this job in $ak"; exit 0; fi
tmp=$(mktemp "${TMPDIR:-/tmp}/flinger-keys.XXXXXX")
set +e
grep -v -e "$tag" "$ak" >"$tmp"
rc=$?
set -e
if [ "$rc" -gt 1 ]; then rm -f "$tmp"; echo "ssh: cannot read $ak" >&2; exit 1; fi
cat "$tmp" >"$ak"
rm -f "$tmp"
echo "ssh: removed $n key(s) of this job from $ak"
"#;

/// The remote command line that runs `script` with `/bin/sh` as root or as `user` (through
/// `sudo -n` when the agent logs in as someone else), whatever the login shell.
fn as_reserve_user(script: &str, user: &str) -> String {
    const ELEVATE: &str = r#"if [ "$(id -u)" -eq 0 ] || [ "$(id -un)" = "$2" ]; then exec /bin/sh -c "$1"; fi
exec sudo -n /bin/sh -c "$1""#;
    format!(
        "exec /bin/sh -c {} flinger-keys {} {}",
        sh_quote(ELEVATE),
        sh_quote(script),
        sh_quote(user)
    )
}

/// One line of an `authorized_keys` file: `[options] type blob [comment]`.
#[derive(Debug)]
struct PublicKey {
    line: String,
    key_type: String,
    blob: String,
    comment: String,
}

impl PublicKey {
    fn parse(line: &str) -> Option<PublicKey> {
        let line = line.trim();
        if line.contains(['\n', '\r', '\0']) {
            return None;
        }
        let is_type = |t: &str| t.starts_with("ssh-") || t.starts_with("ecdsa-sha2-") || t.starts_with("sk-");
        let first = line.split_whitespace().next()?;
        // Without a key type first, the line starts with options, which may quote spaces.
        let rest = if is_type(first) {
            line
        } else {
            let mut quoted = false;
            let mut escaped = false;
            let end = line.char_indices().find_map(|(i, c)| {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quoted = !quoted,
                    c if c.is_whitespace() && !quoted => return Some(i),
                    _ => {}
                }
                None
            })?;
            line[end..].trim_start()
        };
        let mut parts = rest.splitn(3, char::is_whitespace);
        let key_type = parts.next().filter(|t| is_type(t))?;
        let blob = parts
            .next()
            .filter(|b| b.len() >= 16 && b.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)))?;
        Some(PublicKey {
            line: line.to_string(),
            key_type: key_type.to_string(),
            blob: blob.to_string(),
            comment: parts.next().unwrap_or("").trim().to_string(),
        })
    }

    /// How the key is named in the output: type and comment, or the blob's end.
    fn label(&self) -> String {
        let who = if self.comment.is_empty() {
            format!("…{}", &self.blob[self.blob.len().saturating_sub(12)..])
        } else {
            self.comment.clone()
        };
        format!("{} {who}", self.key_type)
    }
}

/// The shell word for the authorized_keys template: `%h` → `"$home"`, `%u` → `"$u"`, `%%` → `%`.
fn authorized_keys_word(template: &str) -> Result<String, String> {
    if !(template.starts_with("%h") || template.starts_with('/')) {
        return Err(format!("{template:?} must start with / or %h"));
    }
    if template.contains(['\0', '\n']) {
        return Err("contains a NUL byte or a newline".into());
    }
    let mut word = String::new();
    let mut literal = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let var = match chars.next() {
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some('h') => "\"$home\"",
            Some('u') => "\"$u\"",
            other => {
                return Err(format!(
                    "unknown token %{} (use %h, %u or %%)",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        };
        if !literal.is_empty() {
            word.push_str(&sh_quote(&literal));
            literal.clear();
        }
        word.push_str(var);
    }
    if !literal.is_empty() {
        word.push_str(&sh_quote(&literal));
    }
    Ok(word)
}

async fn write_device_info(ctx: &PhaseContext, host: &str) -> Result<(), ConnectorError> {
    let info = serde_json::json!({
        "device_info": {"device_ip": host, "agent_name": ctx.agent_name}
    });
    let path = ctx.run_dir.join("device-info.json");
    tokio::fs::write(
        &path,
        serde_json::to_vec_pretty(&info).expect("JSON values serialize"),
    )
    .await
    .map_err(|e| ConnectorError::CannotStart {
        phase: ctx.phase,
        reason: format!("cannot write {}: {e}", path.display()),
    })
}

/// `s` as one POSIX shell word, whatever it holds (spaces, quotes, `$`, newlines).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A path as the value of an `-o` option: `%` is ssh's token character, spaces need quotes.
fn ssh_path(p: &Path) -> String {
    let s = p.display().to_string().replace('%', "%%");
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn ssh_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ssh").is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_with_or_without_options() {
        let k = PublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice@laptop").unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.blob, "AAAAC3NzaC1lZDI1NTE5AAAAIExample");
        assert_eq!(k.label(), "ssh-ed25519 alice@laptop");
        let k = PublicKey::parse(
            r#"from="10.0.0.0/8",command="echo ssh-rsa x" ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTI="#,
        )
        .unwrap();
        assert_eq!(k.key_type, "ecdsa-sha2-nistp256");
        assert_eq!(k.blob, "AAAAE2VjZHNhLXNoYTI=");
        assert!(PublicKey::parse("not a key").is_none());
        assert!(PublicKey::parse("ssh-ed25519 short").is_none());
    }

    #[test]
    fn the_authorized_keys_template_becomes_one_shell_word() {
        assert_eq!(
            authorized_keys_word("%h/.ssh/authorized_keys").unwrap(),
            r#""$home"'/.ssh/authorized_keys'"#
        );
        assert_eq!(
            authorized_keys_word("/etc/ssh/keys/%u 100%%").unwrap(),
            r#"'/etc/ssh/keys/'"$u"' 100%'"#
        );
        assert!(authorized_keys_word("keys/%u").is_err());
        assert!(authorized_keys_word("/k/%x").is_err());
    }

    #[test]
    fn quoting_survives_every_character() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert!(is_env_name("_A1") && !is_env_name("1A") && !is_env_name("a-b"));
    }
}
