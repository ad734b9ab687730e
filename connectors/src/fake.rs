//! The `fake` connector: a simulated device for demos, tests and load.
//!
//! Nothing runs and nothing is touched on disk: each phase prints a short narrative of what a
//! real device would do (provision names the image it "installs", test echoes each test command,
//! reserve says how to connect), then the configured output spread over the phase's duration,
//! and exits with the configured code. A job can override any of this per phase through a `fake`
//! map in its phase data (see [`FakeBehaviour`] and `docs/connectors.md`), so tests and demos
//! inject failures, hangs and floods of output without reconfiguring agents.
//!
//! A zero-duration phase never touches the timer: a load benchmark pushes thousands of jobs a
//! second through fake devices.

use super::*;
use crate::duration;
use serde::Deserializer;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// Exit code reported for a cancelled phase: what a process killed by SIGTERM reports.
pub const CANCELLED_EXIT: i32 = -15;

/// IP address reported when neither the config nor the phase's `DEVICE_IP` names one.
const FALLBACK_DEVICE_IP: &str = "127.0.0.1";

/// Settings of the `fake` connector (`connector: {type: fake, …}` in the agent's YAML).
///
/// `FakeConfig::default()` is a device whose every phase succeeds at once.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    /// Behaviour of every phase, unless `phases` or the job says otherwise.
    #[serde(default)]
    pub default: FakeBehaviour,
    /// Behaviour of particular phases, over `default`.
    #[serde(default)]
    pub phases: BTreeMap<Phase, FakeBehaviour>,
    /// The address reserve and allocate report. Defaults to the phase's `DEVICE_IP`.
    #[serde(default)]
    pub device_ip: Option<String>,
    /// Phases the device has a step for; all of them when absent.
    #[serde(default)]
    pub supported: Option<BTreeSet<Phase>>,
    /// The simulated device's `authorized_keys`: reserve appends the job's keys to it, so a
    /// test can check a reservation installed them.
    #[serde(default)]
    pub authorized_keys: Option<std::path::PathBuf>,
}

/// How a fake phase behaves. Every field is optional so layers can be merged: the job's
/// override over the config's phase entry over the config's `default` over "instant success".
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FakeBehaviour {
    /// How long the phase takes. A bare number is milliseconds; a string has a unit (`2s`).
    #[serde(default, deserialize_with = "duration::opt_millis")]
    pub duration: Option<Duration>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Lines printed after the narrative, spread over the duration (a string is split into lines).
    #[serde(default, deserialize_with = "lines")]
    pub output: Option<Vec<String>>,
    /// After its output, the phase runs until cancelled.
    #[serde(default)]
    pub hang: Option<bool>,
    /// Instead of any other output, emit exactly this many bytes of filler lines as fast as the
    /// sink takes them (for throughput benchmarks).
    #[serde(default)]
    pub output_bytes: Option<u64>,
}

impl FakeBehaviour {
    /// Field by field, `self` where set, else `under`.
    fn over(&self, under: &FakeBehaviour) -> FakeBehaviour {
        FakeBehaviour {
            duration: self.duration.or(under.duration),
            exit_code: self.exit_code.or(under.exit_code),
            output: self.output.clone().or_else(|| under.output.clone()),
            hang: self.hang.or(under.hang),
            output_bytes: self.output_bytes.or(under.output_bytes),
        }
    }
}

fn lines<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lines {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match Lines::deserialize(d)? {
        Lines::One(s) => s.lines().map(str::to_owned).collect(),
        Lines::Many(v) => v,
    }))
}

/// Keys of a job's `fake` map that hold the overrides of setup and cleanup, which have no phase
/// data of their own.
const DATALESS_PHASES: [Phase; 2] = [Phase::Setup, Phase::Cleanup];

/// The job's override for `phase`, if it has one.
///
/// `<phase>_data.fake` overrides a data-driven phase. Setup and cleanup are overridden by a
/// `setup` / `cleanup` entry inside any phase's `fake` map; the first in phase order wins.
fn job_override(job: &JobDefinition, phase: Phase) -> Result<Option<FakeBehaviour>, String> {
    let fake_map = |key: &str| job.raw().get(key).and_then(|d| d.get("fake"));
    match phase.data_key() {
        Some(key) => {
            let Some(v) = fake_map(key) else {
                return Ok(None);
            };
            let path = format!("{key}.fake");
            let Value::Object(m) = v else {
                return Err(format!("{path}: must be a mapping"));
            };
            let own: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !DATALESS_PHASES.iter().any(|p| p.as_str() == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            parse_override(Value::Object(own), &path).map(Some)
        }
        None => {
            for key in Phase::ALL.iter().filter_map(|p| p.data_key()) {
                if let Some(v) = fake_map(key).and_then(|f| f.get(phase.as_str())) {
                    return parse_override(v.clone(), &format!("{key}.fake.{phase}")).map(Some);
                }
            }
            Ok(None)
        }
    }
}

fn parse_override(v: Value, path: &str) -> Result<FakeBehaviour, String> {
    serde_json::from_value(v).map_err(|e| format!("{path}: {e}"))
}

/// A simulated device; see the module docs.
#[derive(Debug)]
pub struct FakeConnector {
    config: FakeConfig,
}

impl FakeConnector {
    pub fn new(config: FakeConfig) -> Result<Self, ConnectorError> {
        Ok(FakeConnector { config })
    }

    pub fn config(&self) -> &FakeConfig {
        &self.config
    }

    fn behaviour(&self, ctx: &PhaseContext) -> Result<FakeBehaviour, String> {
        let configured = match self.config.phases.get(&ctx.phase) {
            Some(b) => b.over(&self.config.default),
            None => self.config.default.clone(),
        };
        Ok(match job_override(&ctx.job, ctx.phase)? {
            Some(o) => o.over(&configured),
            None => configured,
        })
    }

    fn device_ip<'a>(&'a self, ctx: &'a PhaseContext) -> &'a str {
        self.config
            .device_ip
            .as_deref()
            .or_else(|| ctx.env.get("DEVICE_IP").map(String::as_str))
            .unwrap_or(FALLBACK_DEVICE_IP)
    }

    /// What the phase says it does, before the configured output.
    fn narrative(&self, ctx: &PhaseContext) -> Vec<String> {
        let agent = &ctx.agent_name;
        let job = &ctx.job;
        let data = |key: &str| job.raw().get(key).and_then(Value::as_object);
        match ctx.phase {
            Phase::Setup => vec![format!("fake device {agent}: setting up for job {}", ctx.job_id)],
            Phase::Provision => {
                let mut out = vec![format!("fake device {agent}: provisioning")];
                let pd = job.provision_data();
                for key in ["url", "distro", "image"] {
                    if let Some(v) = pd.and_then(|p| p.get(key)) {
                        out.push(format!("installing {key}: {}", scalar(v)));
                    }
                }
                if out.len() == 1 {
                    out.push("installing the default image".into());
                }
                out
            }
            Phase::FirmwareUpdate => {
                let version = data("firmware_update_data")
                    .and_then(|f| f.get("version"))
                    .map_or_else(|| "the latest version".to_string(), scalar);
                vec![format!("fake device {agent}: updating firmware to {version}")]
            }
            Phase::Test => match job.test_cmds() {
                Some(cmds) => cmds
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("$ {l}"))
                    .collect(),
                None => vec![format!("fake device {agent}: no test commands")],
            },
            Phase::Allocate => {
                vec![format!(
                    "fake device {agent}: allocated at {}",
                    self.device_ip(ctx)
                )]
            }
            Phase::Reserve => {
                let user = job
                    .test_data()
                    .and_then(|t| t.get("test_username"))
                    .and_then(Value::as_str)
                    .unwrap_or("ubuntu");
                let mut out = vec![format!("*** fake device {agent} is reserved ***")];
                let keys = job.ssh_keys();
                if !keys.is_empty() {
                    out.push(format!("importing ssh keys: {}", keys.join(", ")));
                }
                match self.install_keys(ctx) {
                    Ok(0) => {}
                    Ok(n) => out.push(format!("installed {n} ssh key(s)")),
                    Err(e) => out.push(format!("cannot install ssh keys: {e}")),
                }
                out.push(format!("connect with: ssh {user}@{}", self.device_ip(ctx)));
                out
            }
            Phase::Cleanup => vec![format!("fake device {agent}: cleaning up")],
        }
    }
}

impl FakeConnector {
    /// Appends the keys the agent resolved to the simulated device's `authorized_keys`.
    fn install_keys(&self, ctx: &PhaseContext) -> Result<usize, String> {
        let (Some(target), Some(source)) = (
            &self.config.authorized_keys,
            ctx.env.get(crate::SSH_KEYS_FILE_ENV),
        ) else {
            return Ok(0);
        };
        let keys = std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))?;
        let keys: Vec<&str> = keys.lines().filter(|l| !l.trim().is_empty()).collect();
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map_err(|e| format!("{}: {e}", target.display()))?;
        for k in &keys {
            writeln!(f, "{k}").map_err(|e| format!("{}: {e}", target.display()))?;
        }
        Ok(keys.len())
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The phase was cancelled; stop at once.
struct Cancelled;

fn cancelled_outcome() -> PhaseOutcome {
    PhaseOutcome {
        exit_code: CANCELLED_EXIT,
        detail: Some("cancelled".into()),
    }
}

/// Sends to the sink, or gives up when the phase is cancelled (the sink may be full).
async fn send(sink: &OutputSink, cancel: &CancellationToken, data: Bytes) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        _ = sink.out(data) => Ok(()),
    }
}

async fn wait_until(deadline: Instant, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        _ = sleep_until(deadline) => Ok(()),
    }
}

/// Prints `lines` spread evenly over `duration` (the first at once), then waits out the rest.
async fn print_spread(
    sink: &OutputSink,
    cancel: &CancellationToken,
    lines: Vec<String>,
    start: Instant,
    duration: Duration,
) -> Result<(), Cancelled> {
    if duration.is_zero() {
        if lines.is_empty() {
            return Ok(());
        }
        let mut all = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            all.extend_from_slice(line.as_bytes());
            all.push(b'\n');
        }
        return send(sink, cancel, all.into()).await;
    }
    let step = duration / lines.len().max(1) as u32;
    for (i, line) in lines.into_iter().enumerate() {
        if i > 0 {
            wait_until(start + step * i as u32, cancel).await?;
        }
        send(sink, cancel, format!("{line}\n").into()).await?;
    }
    wait_until(start + duration, cancel).await
}

/// Length of one filler line, newline included.
const FILLER_LINE: usize = 64;
/// Filler is handed to the sink in chunks of this size.
const FILLER_CHUNK: usize = 1024 * FILLER_LINE;

/// A chunk of filler lines, built once and shared (sending a slice of it copies nothing).
fn filler_chunk() -> &'static Bytes {
    static CHUNK: OnceLock<Bytes> = OnceLock::new();
    CHUNK.get_or_init(|| {
        let line = format!("{:.<width$}\n", "fake output filler ", width = FILLER_LINE - 1);
        Bytes::from(line.repeat(FILLER_CHUNK / FILLER_LINE))
    })
}

/// Emits exactly `n` bytes of filler lines; the last byte is a newline.
async fn print_filler(sink: &OutputSink, cancel: &CancellationToken, mut n: u64) -> Result<(), Cancelled> {
    let chunk = filler_chunk();
    while n > 0 {
        let take = n.min(FILLER_CHUNK as u64) as usize;
        n -= take as u64;
        let piece = if n == 0 && !take.is_multiple_of(FILLER_LINE) {
            let mut last = chunk[..take].to_vec();
            last[take - 1] = b'\n';
            Bytes::from(last)
        } else {
            chunk.slice(..take)
        };
        send(sink, cancel, piece).await?;
    }
    Ok(())
}

#[async_trait]
impl Connector for FakeConnector {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn device_ip(&self) -> Option<String> {
        self.config.device_ip.clone()
    }

    fn supports(&self, phase: Phase) -> bool {
        self.config.supported.as_ref().is_none_or(|s| s.contains(&phase))
    }

    async fn run_phase(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let phase = ctx.phase;
        if !self.supports(phase) {
            return Err(ConnectorError::CannotStart {
                phase,
                reason: "the fake device has no step for this phase".into(),
            });
        }
        let b = self
            .behaviour(ctx)
            .map_err(|reason| ConnectorError::CannotStart { phase, reason })?;
        if cancel.is_cancelled() {
            return Ok(cancelled_outcome());
        }
        let start = Instant::now();
        let duration = b.duration.unwrap_or_default();
        let ran = async {
            match b.output_bytes {
                Some(n) => {
                    print_filler(sink, &cancel, n).await?;
                    if !duration.is_zero() {
                        wait_until(start + duration, &cancel).await?;
                    }
                }
                None => {
                    let mut lines = self.narrative(ctx);
                    lines.extend(b.output.iter().flatten().cloned());
                    print_spread(sink, &cancel, lines, start, duration).await?;
                }
            }
            if b.hang == Some(true) {
                cancel.cancelled().await;
                return Err(Cancelled);
            }
            Ok(())
        }
        .await;
        let exit_code = b.exit_code.unwrap_or(0);
        if ran.is_ok() && phase == Phase::Provision && exit_code == 0 {
            // What a Testflinger device connector leaves after provisioning.
            let info = serde_json::json!({"device_info": {"device_ip": self.device_ip(ctx), "agent_name": ctx.agent_name}});
            let path = ctx.run_dir.join("device-info.json");
            if let Err(e) = std::fs::write(&path, info.to_string()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write device-info.json");
            }
        }
        Ok(match ran {
            Ok(()) => PhaseOutcome {
                exit_code,
                detail: None,
            },
            Err(Cancelled) => cancelled_outcome(),
        })
    }
}
