//! The command line: global options and one subcommand per action, with Testflinger's names and
//! arguments so that its users' habits and scripts carry over.
//!
//! Clap reports usage errors itself, with exit code 2 (the CLI's code for a wrong request).

use crate::model::JobId;
use broker_schema::Phase;
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "flinger",
    version,
    about = "Submit jobs to a Flinger lab, follow them, and read how they went.",
    after_help = "Exit codes: 0 success, 1 test failed, 2 bad or refused request, 3 infrastructure failure, \
                  4 cancelled, 5 server unreachable or failing. See docs/cli.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Flinger server URL [env: FLINGER_SERVER, then TESTFLINGER_SERVER; then `server` in the
    /// config file; default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// Configuration file [env: FLINGER_CONFIG; default: ~/.config/flinger/config.toml]
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// Show every HTTP request and retry on stderr
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a job file (YAML or JSON; `-` reads stdin) and print its job id
    Submit(SubmitArgs),
    /// Follow a job's output until it ends; the exit code says how it went
    Poll(PollArgs),
    /// Follow a job's serial log until it ends
    PollSerial(PollArgs),
    /// Print a job's state (`job_state`; with --json the whole record)
    Status(JobArg),
    /// Print a job's results (exit code and output of each phase) as JSON
    Results(JobArg),
    /// Print a job's job file
    Show(ShowArgs),
    /// Cancel a job (a running job stops its phase, runs cleanup and ends cancelled)
    Cancel(JobArg),
}

impl Command {
    /// `--quiet`: print only the data asked for.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Command::Submit(a) if a.quiet)
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file, or `-` for stdin
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,

    /// Follow the job after submitting it; exit with its outcome
    #[arg(short, long)]
    pub poll: bool,

    /// Print only the job id (and, with --poll, the job's output)
    #[arg(short, long)]
    pub quiet: bool,

    /// Wait until an agent serving the job's queue is available before submitting
    #[arg(long)]
    pub wait_for_available_agents: bool,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    /// The job id (a UUID)
    pub job_id: JobId,

    /// Print the output there is now and exit
    #[arg(short, long)]
    pub oneshot: bool,

    /// Start from this fragment number (as Testflinger's --start_fragment)
    #[arg(
        long = "start_fragment",
        visible_alias = "start-fragment",
        value_name = "N",
        default_value_t = 0
    )]
    pub start_fragment: u64,

    /// Only this phase's output
    #[arg(long, value_name = "PHASE", value_parser = PossibleValuesParser::new(Phase::ALL.map(Phase::as_str)))]
    pub phase: Option<String>,
}

#[derive(Debug, Args)]
pub struct JobArg {
    /// The job id (a UUID)
    pub job_id: JobId,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The job id (a UUID)
    pub job_id: JobId,

    /// Print the job file as YAML instead of JSON
    #[arg(long)]
    pub yaml: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        let a = Cli::try_parse_from(["flinger", "--json", "status", id]).unwrap();
        let b = Cli::try_parse_from(["flinger", "status", id, "--json", "--server", "http://x:1"]).unwrap();
        assert!(a.global.json && b.global.json);
        assert_eq!(b.global.server.as_deref(), Some("http://x:1"));
    }

    #[test]
    fn a_job_id_that_is_not_a_uuid_is_a_usage_error() {
        let err = Cli::try_parse_from(["flinger", "status", "42"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a job id"), "{err}");
    }

    #[test]
    fn testflinger_spellings_of_poll_options_work() {
        let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        let c = Cli::try_parse_from(["flinger", "poll", "--start_fragment", "7", "-o", id]).unwrap();
        let Command::Poll(p) = c.command else {
            panic!("not poll")
        };
        assert_eq!((p.start_fragment, p.oneshot), (7, true));
        assert!(Cli::try_parse_from(["flinger", "poll", "--start-fragment", "7", id]).is_ok());
        assert!(Cli::try_parse_from(["flinger", "poll", "--phase", "tset", id]).is_err());
    }
}
