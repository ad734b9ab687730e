//! The agent's configuration file: Testflinger's agent config, unchanged, plus a few keys of
//! ours (broker, connector, heartbeat). Unknown keys are refused by name.

use broker_schema::{AgentName, DeviceClass};
use flinger_connectors::ConnectorConfig;
use flinger_connectors::command::CommandConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written. Field names are Testflinger's where Testflinger has one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The agent's name (Testflinger's `agent_id`).
    pub agent_id: String,
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub provision_type: Option<String>,
    pub job_queues: Vec<String>,
    /// Where per-job run directories are made.
    #[serde(default)]
    pub execution_basedir: Option<PathBuf>,
    #[serde(default)]
    pub logging_basedir: Option<PathBuf>,
    #[serde(default)]
    pub results_basedir: Option<PathBuf>,
    /// Caps on the job's own timeouts, in seconds.
    #[serde(default)]
    pub global_timeout: Option<u64>,
    #[serde(default)]
    pub output_timeout: Option<u64>,
    #[serde(default)]
    pub advertised_queues: BTreeMap<String, String>,
    #[serde(default)]
    pub advertised_images: BTreeMap<String, BTreeMap<String, String>>,
    /// Regular expressions whose matches are masked in the job's output (Testflinger's key).
    #[serde(default)]
    pub sensitive_patterns: Vec<String>,
    // Testflinger's phase commands (the `command` connector).
    #[serde(default)]
    pub setup_command: Option<String>,
    #[serde(default)]
    pub provision_command: Option<String>,
    #[serde(default)]
    pub firmware_update_command: Option<String>,
    #[serde(default)]
    pub test_command: Option<String>,
    #[serde(default)]
    pub allocate_command: Option<String>,
    #[serde(default)]
    pub reserve_command: Option<String>,
    #[serde(default)]
    pub cleanup_command: Option<String>,
    // Testflinger keys that have no meaning with a broker; accepted so configs work unchanged.
    /// Testflinger's server URL. Flinger agents take jobs from the broker, and use this only to
    /// reach the gateway for a job's attachments and artifacts.
    #[serde(default)]
    pub server_address: Option<String>,
    /// Testflinger polls the server; Flinger agents are pushed jobs.
    #[serde(default)]
    pub polling_interval: Option<u64>,
    #[serde(default)]
    pub logging_level: Option<String>,
    #[serde(default)]
    pub logging_quiet: Option<bool>,
    /// Testflinger keeps only the last `output_bytes` of a phase's output in its results;
    /// Flinger stores every chunk, so this is accepted and ignored.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// Links shown for the agent (dashboards, docs).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// Multi-device control host settings, passed through to connectors' environment.
    #[serde(default)]
    pub control_host: BTreeMap<String, String>,
    /// Serial console server; `conserver_address` is exported to phase commands.
    #[serde(default)]
    pub conserver_address: Option<String>,

    // ----- Flinger's own keys
    /// AMQP URL, or the URLs of a cluster's nodes separated by commas; `FLINGER_BROKER_URL`
    /// overrides it.
    #[serde(default)]
    pub broker_url: Option<String>,
    /// Broker namespace; `FLINGER_NAMESPACE` overrides it.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Declare the queues that need no priority as quorum queues (a RabbitMQ cluster); every
    /// process of a lab must agree. `FLINGER_QUORUM_QUEUES` overrides it.
    #[serde(default)]
    pub quorum_queues: Option<bool>,
    /// A connector other than `command`, e.g. `{type: fake, …}`.
    #[serde(default)]
    pub connector: Option<ConnectorConfig>,
    /// Seconds between heartbeats (default 10).
    #[serde(default)]
    pub heartbeat_interval: Option<f64>,
    /// Where the agent keeps its own state; never inside a run directory.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Seconds the cleanup phase may take after a cancel or timeout (default 600).
    #[serde(default)]
    pub cleanup_timeout: Option<u64>,
    /// The most output a job ships per stream (output, serial), in MiB (default 256), unless
    /// the lab's scheduler sets one in the lease grant.
    #[serde(default)]
    pub output_cap_mib: Option<f64>,
    /// Where `lp:` and `gh:` ssh key ids are fetched from: URL templates with `{user}`.
    #[serde(default)]
    pub key_servers: BTreeMap<String, String>,
    /// Address of the Prometheus `/metrics` listener (e.g. `0.0.0.0:9100`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The agent's API client (role `agent`) for the gateway; `FLINGER_AGENT_CLIENT_SECRET`
    /// may give the secret instead of the file.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Variables of the agent's own environment that never reach a phase process: the agent's
/// credentials, and those of the services that may share its host's environment. A phase may
/// export its environment to a device a person can log into.
pub const CREDENTIAL_ENV: &[&str] = &[
    "FLINGER_BROKER_URL",
    "FLINGER_AGENT_CLIENT_SECRET",
    "FLINGER_CLIENT_SECRET",
    "FLINGER_ADMIN_SECRET",
    "FLINGER_SECRETS_KEY",
    "FLINGER_SECRET_KEY",
    "FLINGER_JWT_SIGNING_KEY",
    "FLINGER_STORE",
];

/// The configuration the agent runs with, checked.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: AgentName,
    pub queues: Vec<DeviceClass>,
    pub location: Option<String>,
    pub provision_type: Option<String>,
    pub broker_url: String,
    pub namespace: String,
    pub quorum_queues: bool,
    pub connector: ConnectorConfig,
    pub execution_basedir: PathBuf,
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub global_timeout_cap: Option<Duration>,
    pub output_timeout_cap: Option<Duration>,
    pub cleanup_timeout: Duration,
    /// Bytes per stream a job ships when the lease grant sets no cap.
    pub output_cap: u64,
    /// The config's string values, exported to phase commands (Testflinger does this).
    pub env: BTreeMap<String, String>,
    pub advertised_queues: BTreeMap<String, String>,
    pub advertised_images: BTreeMap<String, BTreeMap<String, String>>,
    /// `sensitive_patterns`, compiled: their matches are masked in every output stream.
    pub sensitive_patterns: Vec<regex::bytes::Regex>,
    /// `lp` / `gh` → URL template with `{user}` (defaults: Launchpad and GitHub).
    pub key_servers: BTreeMap<String, String>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Testflinger's `identifier` (a serial number…): the label of its metrics.
    pub identifier: Option<String>,
    /// The gateway, for attachments and artifacts (`server_address`, `client_id`,
    /// `client_secret`); `None` when `server_address` is not set.
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses the YAML text; broker URL and namespace may come from the environment.
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let file: AgentFile = serde_yaml_ng::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let name = AgentName::parse(&file.agent_id).map_err(|e| format!("agent_id: {e}"))?;
        if file.job_queues.is_empty() {
            return Err("job_queues: an agent needs at least one queue".into());
        }
        let queues = file
            .job_queues
            .iter()
            .map(|q| DeviceClass::parse(q.as_str()).map_err(|e| format!("job_queues: {q:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = BTreeMap::new();
        if let serde_yaml_ng::Value::Mapping(m) = &raw {
            for (k, v) in m {
                if let (Some(k), serde_yaml_ng::Value::String(v)) = (k.as_str(), v) {
                    env.insert(k.to_owned(), v.clone());
                }
            }
        }
        // The agent's own credentials are not the job's business: phases may export their
        // environment to a device a person can log into.
        for secret in ["client_secret", "broker_url"] {
            env.remove(secret);
        }
        let connector = match &file.connector {
            Some(c) => {
                if file.has_commands() {
                    return Err("give either `connector` or `<phase>_command` keys, not both".into());
                }
                c.clone()
            }
            None if file.has_commands() => ConnectorConfig::Command(file.command_config()),
            None => {
                return Err("no connector: set `connector` or Testflinger's `<phase>_command` keys".into());
            }
        };
        let home = PathBuf::from("/var/lib/flinger/agents").join(name.as_str());
        let broker_url = std::env::var("FLINGER_BROKER_URL")
            .ok()
            .or(file.broker_url.clone())
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let namespace = std::env::var("FLINGER_NAMESPACE")
            .ok()
            .or(file.namespace.clone())
            .unwrap_or_else(|| broker_schema::names::DEFAULT_NAMESPACE.into());
        let quorum_queues = match std::env::var("FLINGER_QUORUM_QUEUES") {
            Ok(v) => broker_schema::names::parse_flag(&v)
                .ok_or_else(|| format!("FLINGER_QUORUM_QUEUES: {v:?} is not true or false"))?,
            Err(_) => file.quorum_queues.unwrap_or(false),
        };
        let execution_basedir = file.execution_basedir.clone().unwrap_or_else(|| home.join("run"));
        let state_dir = file.state_dir.clone().unwrap_or_else(|| home.join("state"));
        // Run directories are removed after each job, and a job's commands may write anywhere
        // under them: the agent's journal must not live there (symbolic links resolved).
        if resolved(&state_dir).starts_with(resolved(&execution_basedir)) {
            return Err(format!(
                "state_dir: {} is inside execution_basedir {}; give it a directory of its own",
                state_dir.display(),
                execution_basedir.display()
            ));
        }
        Ok(AgentConfig {
            queues,
            location: file.location.clone(),
            provision_type: file.provision_type.clone(),
            broker_url,
            namespace,
            quorum_queues,
            connector,
            execution_basedir,
            state_dir,
            heartbeat_interval: Duration::from_secs_f64(file.heartbeat_interval.unwrap_or(10.0).max(0.05)),
            global_timeout_cap: file.global_timeout.map(Duration::from_secs),
            output_timeout_cap: file.output_timeout.map(Duration::from_secs),
            cleanup_timeout: Duration::from_secs(file.cleanup_timeout.unwrap_or(600)),
            output_cap: match file.output_cap_mib {
                None => crate::output::DEFAULT_CAP,
                Some(m) if m.is_finite() && m > 0.0 => ((m * 1024.0 * 1024.0).round() as u64).max(1),
                Some(m) => return Err(format!("output_cap_mib: a positive number of MiB, not {m}")),
            },
            env,
            advertised_queues: file.advertised_queues.clone(),
            advertised_images: file.advertised_images.clone(),
            sensitive_patterns: file
                .sensitive_patterns
                .iter()
                .map(|p| regex::bytes::Regex::new(p).map_err(|e| format!("sensitive_patterns: {p:?}: {e}")))
                .collect::<Result<_, _>>()?,
            gateway: file
                .server_address
                .as_deref()
                .map(|url| crate::gateway::GatewayConfig {
                    url: crate::gateway::normalize_url(url),
                    client_id: file.client_id.clone(),
                    client_secret: std::env::var("FLINGER_AGENT_CLIENT_SECRET")
                        .ok()
                        .or(file.client_secret.clone()),
                    token_file: None,
                }),
            key_servers: {
                let mut k = crate::keys::default_key_servers();
                k.extend(file.key_servers.clone());
                k
            },
            metrics_listen: file.metrics_listen,
            identifier: file.identifier.clone(),
            name,
        })
    }

    /// What `testflinger-agent`'s command line adds to the file: `-p PORT` serves metrics on
    /// every address at that port (over `metrics_listen`), and `--token-file` names the
    /// agent's refresh-token file for the gateway.
    pub fn with_command_line(
        mut self,
        metrics_port: Option<u16>,
        token_file: Option<PathBuf>,
    ) -> AgentConfig {
        if let Some(port) = metrics_port {
            self.metrics_listen = Some(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
        }
        if let Some(g) = self.gateway.as_mut() {
            g.token_file = token_file;
        }
        self
    }
}

/// `p` as the directory it really names: its longest existing ancestor with symbolic links
/// resolved, then the rest (which need not exist yet) with `.` and `..` resolved as written.
fn resolved(p: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => {
                out.push(c);
                // Resolve as we go, so that `link/..` means what the kernel makes of it.
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                }
            }
        }
    }
    out
}

impl AgentFile {
    fn has_commands(&self) -> bool {
        [
            &self.setup_command,
            &self.provision_command,
            &self.firmware_update_command,
            &self.test_command,
            &self.allocate_command,
            &self.reserve_command,
            &self.cleanup_command,
        ]
        .iter()
        .any(|c| c.is_some())
    }

    fn command_config(&self) -> CommandConfig {
        CommandConfig {
            setup: self.setup_command.clone(),
            provision: self.provision_command.clone(),
            firmware_update: self.firmware_update_command.clone(),
            test: self.test_command.clone(),
            allocate: self.allocate_command.clone(),
            reserve: self.reserve_command.clone(),
            cleanup: self.cleanup_command.clone(),
            ..CommandConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_testflinger_config_is_read_unchanged() {
        let c = AgentConfig::parse(
            "agent_id: dut-01\nlocation: lab\njob_queues: [rpi4b]\nexecution_basedir: /tmp/x\nprovision_command: echo p\ntest_command: echo t\nserver_address: http://tf\nglobal_timeout: 600\nbroker_url: amqp://u:secret@h/\n",
        )
        .unwrap();
        assert_eq!(c.name.as_str(), "dut-01");
        assert_eq!(c.queues[0].as_str(), "rpi4b");
        assert_eq!(c.global_timeout_cap, Some(Duration::from_secs(600)));
        assert_eq!(c.env.get("location").map(String::as_str), Some("lab"));
        assert!(
            !c.env.contains_key("broker_url"),
            "credentials must not reach phases"
        );
        match &c.connector {
            ConnectorConfig::Command(cc) => {
                assert_eq!(cc.provision.as_deref(), Some("echo p"));
                assert_eq!(cc.setup, None);
            }
            other => panic!("expected the command connector, got {other:?}"),
        }
    }

    #[test]
    fn a_state_dir_inside_the_run_directories_is_refused() {
        let base = "agent_id: d1\njob_queues: [q]\ntest_command: t\nexecution_basedir: /srv/run\n";
        for inside in ["/srv/run", "/srv/run/state", "/srv/x/../run/./state"] {
            let e = AgentConfig::parse(&format!("{base}state_dir: {inside}\n")).unwrap_err();
            assert!(e.starts_with("state_dir:"), "{inside}: {e}");
        }
        for outside in ["/srv/state", "/srv/runner", "/srv/run/../state"] {
            let c = AgentConfig::parse(&format!("{base}state_dir: {outside}\n")).unwrap();
            assert_eq!(c.state_dir, PathBuf::from(outside));
        }
    }

    #[test]
    fn a_state_dir_reaching_into_the_run_directories_through_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("inside")).unwrap();
        let into_run = dir.path().join("state-link");
        std::os::unix::fs::symlink(run.join("inside"), &into_run).unwrap();
        let run_link = dir.path().join("run-link");
        std::os::unix::fs::symlink(&run, &run_link).unwrap();
        let config = |base: &Path, state: &Path| {
            AgentConfig::parse(&format!(
                "agent_id: d1\njob_queues: [q]\ntest_command: t\nexecution_basedir: {}\nstate_dir: {}\n",
                base.display(),
                state.display()
            ))
        };
        for (base, state) in [
            (&run, into_run.clone()),
            (&run, into_run.join("state")),
            (&run_link, run.join("state")),
            (&run, run_link.join("x/../state")),
        ] {
            let e = config(base, &state).unwrap_err();
            assert!(
                e.starts_with("state_dir:"),
                "{} in {}: {e}",
                state.display(),
                base.display()
            );
        }
        config(&run_link, &dir.path().join("state")).unwrap();
    }

    #[test]
    fn sensitive_patterns_are_compiled_and_a_bad_one_is_refused_by_name() {
        let base = "agent_id: a\njob_queues: [q]\ntest_command: x\n";
        let c = AgentConfig::parse(&format!(
            "{base}sensitive_patterns: ['tok-[0-9]+', 'pass=\\S+']\n"
        ))
        .unwrap();
        assert_eq!(c.sensitive_patterns.len(), 2);
        assert!(c.sensitive_patterns[0].is_match(b"a tok-123"));
        let e = AgentConfig::parse(&format!("{base}sensitive_patterns: ['(']\n")).unwrap_err();
        assert!(e.starts_with("sensitive_patterns:"), "{e}");
    }

    #[test]
    fn every_key_of_testflinger_agent_configs_is_accepted() {
        let yaml = r#"
agent_id: dut-07
identifier: "12345"
location: lab 2, rack 4
polling_interval: 10
server_address: https://testflinger.example
execution_basedir: /tmp/tf/run
logging_basedir: /tmp/tf/logs
results_basedir: /tmp/tf/results
logging_level: DEBUG
logging_quiet: false
job_queues: [dell-xps, dell-xps-13]
setup_command: tf-setup
provision_command: testflinger-device-connector maas2 provision -c /etc/dev.yaml testflinger.json
firmware_update_command: testflinger-device-connector maas2 firmware_update -c /etc/dev.yaml testflinger.json
test_command: testflinger-device-connector maas2 runtest -c /etc/dev.yaml testflinger.json
allocate_command: testflinger-device-connector maas2 allocate -c /etc/dev.yaml testflinger.json
reserve_command: testflinger-device-connector maas2 reserve -c /etc/dev.yaml testflinger.json
cleanup_command: testflinger-device-connector maas2 cleanup -c /etc/dev.yaml testflinger.json
provision_type: maas2
global_timeout: 43200
output_timeout: 8000
advertised_queues:
  dell-xps: Dell XPS laptops
advertised_images:
  dell-xps:
    noble: "url: http://images/noble.img"
links:
  dashboard: https://example/dut-07
control_host:
  host: 10.0.0.9
output_bytes: 10485760
conserver_address: 10.0.0.10
sensitive_patterns:
  - "password=\\S+"
"#;
        let c = AgentConfig::parse(yaml).unwrap();
        assert_eq!(c.queues.len(), 2);
        assert_eq!(c.output_timeout_cap, Some(Duration::from_secs(8000)));
        assert_eq!(
            c.env.get("conserver_address").map(String::as_str),
            Some("10.0.0.10")
        );
        assert_eq!(
            c.advertised_queues.get("dell-xps").map(String::as_str),
            Some("Dell XPS laptops")
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err =
            AgentConfig::parse("agent_id: a\njob_queues: [q]\ntest_command: x\nbogus_key: 1\n").unwrap_err();
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn testflinger_agents_command_line_adds_the_metrics_port_and_the_token_file() {
        let base = "agent_id: a\njob_queues: [q]\ntest_command: x\nmetrics_listen: 127.0.0.1:9\n";
        let c = AgentConfig::parse(&format!("{base}server_address: gw:8000\n"))
            .unwrap()
            .with_command_line(Some(8001), Some(PathBuf::from("/var/lib/t")));
        assert_eq!(c.metrics_listen, Some("0.0.0.0:8001".parse().unwrap()));
        assert_eq!(
            c.gateway.unwrap().token_file.as_deref(),
            Some(Path::new("/var/lib/t"))
        );
        // Without -p the config's listener stays; without a gateway there is nothing to log in to.
        let c = AgentConfig::parse(base)
            .unwrap()
            .with_command_line(None, Some(PathBuf::from("/t")));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9".parse().unwrap()));
        assert!(c.gateway.is_none());
    }

    #[test]
    fn a_fake_connector_can_be_configured() {
        let c = AgentConfig::parse("agent_id: a\njob_queues: [q]\nconnector:\n  type: fake\n").unwrap();
        assert!(matches!(c.connector, ConnectorConfig::Fake(_)));
    }

    #[test]
    fn an_agent_needs_a_connector_and_a_queue() {
        assert!(AgentConfig::parse("agent_id: a\njob_queues: [q]\n").is_err());
        assert!(AgentConfig::parse("agent_id: a\njob_queues: []\ntest_command: x\n").is_err());
    }
}
