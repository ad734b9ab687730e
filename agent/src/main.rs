//! `flinger-agent`: one per device.

use anyhow::Context;
use broker_schema::service::{LogFormat, init_tracing, shutdown_on_signals};
use clap::{Parser, Subcommand};
use flinger_agent::restart::{self, Ending};
use flinger_agent::{Agent, AgentConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flinger-agent",
    version,
    about = "Flinger agent: runs jobs on one device"
)]
struct Args {
    /// The agent's configuration (Testflinger's agent YAML, plus Flinger's keys).
    #[arg(
        short,
        long,
        env = "FLINGER_AGENT_CONFIG",
        default_value = "testflinger-agent.conf"
    )]
    config: PathBuf,
    /// Serve Prometheus metrics on this port, on every address (`testflinger-agent -p`); wins
    /// over the config's `metrics_listen`.
    #[arg(
        short = 'p',
        long = "metrics_port",
        visible_alias = "metrics-port",
        value_name = "PORT"
    )]
    metrics_port: Option<u16>,
    /// The agent's refresh-token file for the gateway, as Testflinger's agent host charm writes
    /// it (`{"refresh_token": …}` or the bare token); used when the config has no
    /// `client_id`/`client_secret`. A missing file means no token.
    #[arg(
        long,
        env = "FLINGER_AGENT_TOKEN_FILE",
        default_value = "/var/lib/testflinger-agent/refresh_token",
        value_name = "FILE"
    )]
    token_file: PathBuf,
    #[arg(long, env = "FLINGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the job's `test_cmds` on this host, in the current directory: a `test_command` for
    /// devices that are the agent's own host (`test_command: flinger-agent run-test-cmds`).
    RunTestCmds {
        /// The job file (default: ./testflinger.json).
        #[arg(default_value = "testflinger.json")]
        job: PathBuf,
    },
}

// One device, one thread: an agent mostly waits on the broker and its phase, and a second
// worker thread only added hand-offs (about a tenth of its CPU per job) and memory. Blocking work
// (archives) goes to tokio's blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Command::RunTestCmds { job }) = args.command {
        run_test_cmds(&job)?;
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(args.log_format);
    // reqwest is built without a default TLS provider (key servers, the gateway over https).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = AgentConfig::load(&args.config)?.with_command_line(args.metrics_port, Some(args.token_file));
    let shutdown = shutdown_on_signals();
    match Agent::new(config).run(shutdown).await? {
        Ending::Shutdown => Ok(ExitCode::SUCCESS),
        // For the supervisor to start it again: see `flinger_agent::restart`.
        Ending::Restart => Ok(ExitCode::from(restart::EXIT_CODE)),
    }
}

/// Replaces this process with a shell running the job's test commands, so their output and exit
/// code are the phase's own.
fn run_test_cmds(job: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let text = std::fs::read_to_string(job).with_context(|| format!("cannot read {}", job.display()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", job.display()))?;
    // During the test phase the file holds the secrets' values, which are no secret paths.
    if let Some(test_data) = doc.get_mut("test_data").and_then(|t| t.as_object_mut()) {
        test_data.remove("secrets");
    }
    let def = broker_schema::JobDefinition::parse(doc).map_err(|e| anyhow::anyhow!("invalid job: {e}"))?;
    let Some(script) = def.test_cmds() else {
        println!("no test_cmds in the job; nothing to run");
        return Ok(());
    };
    let shell = if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let err = std::process::Command::new(shell).arg("-c").arg(script).exec();
    Err(anyhow::anyhow!("cannot run {shell}: {err}"))
}
