//! The command line: global options and one subcommand per action, with Testflinger's names and
//! arguments so that its users' habits and scripts carry over (differences: docs/cli.md).
//!
//! Clap reports usage errors itself, with exit code 2 (the CLI's code for a wrong request).

use crate::model::JobId;
use broker_schema::Phase;
use clap::builder::PossibleValuesParser;
use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "flinger",
    version,
    // Testflinger's argparse takes any unambiguous prefix of a long option (`--wait`).
    infer_long_args = true,
    about = "Submit jobs to a Flinger lab, follow them, reserve devices, and see how the lab is doing.",
    after_help = "Exit codes: 0 success, 1 test failed, 2 bad or refused request, 3 infrastructure failure, \
                  4 cancelled, 5 server unreachable or failing, 6 authentication needed or refused, \
                  130 interrupted. See docs/cli.md."
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
    #[arg(short = 'c', long, alias = "configfile", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// Show every HTTP request and retry on stderr
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,

    /// Client id to log in with [env: FLINGER_CLIENT_ID, then TESTFLINGER_CLIENT_ID]
    #[arg(long, alias = "client_id", global = true, value_name = "ID")]
    pub client_id: Option<String>,

    /// Secret key of the client id [env: FLINGER_SECRET_KEY, then TESTFLINGER_SECRET_KEY]
    #[arg(long, alias = "secret_key", global = true, value_name = "SECRET")]
    pub secret_key: Option<String>,
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
    /// Download the tarball of a job's artifacts
    Artifacts(ArtifactsArgs),
    /// Print a job's job file, its attempts and how it failed
    Show(ShowArgs),
    /// Cancel a job (a running job stops its phase, runs cleanup and ends cancelled)
    Cancel(JobArg),
    /// Reserve a device (submit a reserve job and print how to connect), or see or extend a
    /// reservation
    Reserve(ReserveArgs),
    /// List the jobs submitted from this machine, with their last known state
    Jobs(JobsArgs),
    /// List the queues agents serve, with their descriptions
    ListQueues,
    /// List the agents, optionally filtered
    ListAgents(ListAgentsArgs),
    /// Show one agent's state
    AgentStatus(AgentStatusArgs),
    /// Show a queue's agents, jobs and wait times
    QueueStatus(QueueStatusArgs),
    /// Log in with a client id and secret key, or without them through the server's single
    /// sign-on (a device login: open the address shown, enter the code); later commands send the
    /// access token
    Login,
    /// Forget the stored login for the server
    Logout,
    /// Show every setting and where it came from; `KEY` shows one, `KEY=VALUE` writes the file
    Config(ConfigArgs),
    /// Write or delete secrets (needs a login)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Administer agents and clients (needs an admin or manager login)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell completion script (e.g. `flinger completions bash > ~/.local/share/bash-completion/completions/flinger`)
    Completions(CompletionsArgs),
}

impl Command {
    /// `--quiet`: print only the data asked for.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Command::Submit(a) if a.quiet)
    }

    /// `poll --events`: JSON on stdout, without `--json` being given.
    pub fn wants_json(&self) -> bool {
        matches!(self, Command::Poll(a) | Command::PollSerial(a) if a.events)
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

    /// The directory relative attachment paths start from [default: the job file's directory;
    /// the current directory for stdin]
    #[arg(long, value_name = "DIR")]
    pub attachments_relative_to: Option<PathBuf>,
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
        short = 'f',
        long = "start_fragment",
        visible_alias = "start-fragment",
        value_name = "N",
        default_value_t = 0
    )]
    pub start_fragment: u64,

    /// Only output written at or after this time (ISO-8601; UTC without an offset)
    #[arg(
        short = 't',
        long = "start_timestamp",
        visible_alias = "start-timestamp",
        value_name = "TIME"
    )]
    pub start_timestamp: Option<String>,

    /// Only this phase's output; stop once the phase has ended
    #[arg(short = 'p', long, value_name = "PHASE", value_parser = PossibleValuesParser::new(Phase::ALL.map(Phase::as_str)))]
    pub phase: Option<String>,

    /// Follow the job as JSON: one event per line on stdout (its state, queue position,
    /// output…, and how it ended). `--json` alone prints the log once, as Testflinger does.
    #[arg(long, conflicts_with = "oneshot")]
    pub events: bool,
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

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// The job id (a UUID)
    pub job_id: JobId,

    /// Where to save the tarball (`-` writes it to stdout)
    #[arg(long, value_name = "FILE", default_value = "artifacts.tgz")]
    pub filename: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReserveArgs {
    #[command(subcommand)]
    pub action: Option<ReserveCommand>,

    /// The queue to reserve a device of [default: asked]
    #[arg(short, long)]
    pub queue: Option<String>,

    /// The image to provision: a name the queue advertises, or a URL [default: asked, when the
    /// queue advertises images]
    #[arg(short, long, conflicts_with = "distro")]
    pub image: Option<String>,

    /// The distro to provision (`provision_data.distro`)
    #[arg(long)]
    pub distro: Option<String>,

    /// MAAS ephemeral (in-memory) deployment (`provision_data.ephemeral`; needs --distro)
    #[arg(long, requires = "distro")]
    pub ephemeral: bool,

    /// ssh keys to install: `lp:USER`, `gh:USER` or a public key; repeatable, and one flag may
    /// take several (`-k lp:a gh:b`) [default: asked]
    #[arg(short, long = "key", value_name = "KEY", num_args = 1.., action = ArgAction::Append)]
    pub keys: Vec<String>,

    /// How long to hold the device: seconds, or a form like 2h30m [default: 3600]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Print the job that would be submitted, and stop (`-d` here, as in Testflinger; before
    /// the command, `-d` is --debug)
    #[arg(short = 'd', long)]
    pub dry_run: bool,

    // The global --debug, declared again under its id but without its `-d`, so that
    // `reserve -d` can be the dry run while `flinger -d reserve` and `reserve --debug` stay
    // debug (clap then does not propagate the global one here).
    /// Show every HTTP request and retry on stderr (`-d` here is --dry-run)
    #[arg(long, id = "debug", global = true)]
    pub debug: bool,

    /// Do not ask before submitting
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReserveCommand {
    /// Where the reserved device is and until when (machine-readable with --json)
    Status(JobArg),
    /// Move a reservation's deadline: later by a duration, or to a time
    Extend(ExtendArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("deadline").required(true).args(["by", "until"])))]
pub struct ExtendArgs {
    /// The job id (a UUID)
    pub job_id: JobId,

    /// Extend by this long: seconds, or a form like 2h30m
    #[arg(long, value_name = "DURATION")]
    pub by: Option<String>,

    /// Extend until this time (ISO-8601, e.g. 2026-11-25T18:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Ask the server for the state of every job that had not ended
    #[arg(short, long)]
    pub status: bool,
}

#[derive(Debug, Default, Args)]
#[command(group(ArgGroup::new("mode").args(["single_column", "summary", "fields"])))]
pub struct ListAgentsArgs {
    /// Only agents serving this queue
    #[arg(short, long)]
    pub queue: Option<String>,

    /// Only agents in this state (repeatable): waiting, offline, maintenance, a phase name…
    #[arg(short, long)]
    pub state: Vec<String>,

    /// Only agents at this location
    #[arg(short, long)]
    pub location: Option<String>,

    /// Only agents of this provision type
    #[arg(long)]
    pub provision_type: Option<String>,

    /// One agent name per line, for scripts (Testflinger's `-1`)
    #[arg(short = '1')]
    pub single_column: bool,

    /// How many agents are online and offline, per state
    #[arg(long)]
    pub summary: bool,

    /// The table's columns, comma-separated [default: name,status,queues,location,job_id,comment]
    #[arg(long, value_delimiter = ',', value_name = "FIELD,…", value_parser = AGENT_FIELDS)]
    pub fields: Vec<String>,

    /// Only agents in these states, comma-separated: `online` (waiting or in a phase), `offline`
    /// (offline or maintenance) or a state; `^STATE` excludes (e.g. `online,^waiting`)
    #[arg(long, value_delimiter = ',', value_name = "STATES", value_parser = parse_status_filter)]
    pub filter_status: Vec<String>,

    /// Only agents whose name matches this regular expression
    #[arg(long, value_name = "REGEX")]
    pub filter_name: Option<Pattern>,

    /// Only agents with a queue that matches this regular expression
    #[arg(long, alias = "filter-queue", value_name = "REGEX")]
    pub filter_queues: Option<Pattern>,

    /// Only agents whose location matches this regular expression
    #[arg(long, value_name = "REGEX")]
    pub filter_location: Option<Pattern>,

    /// Only agents whose provision type matches this regular expression
    #[arg(long, value_name = "REGEX")]
    pub filter_provision_type: Option<Pattern>,

    /// Only agents whose comment matches this regular expression
    #[arg(long, value_name = "REGEX")]
    pub filter_comment: Option<Pattern>,
}

/// The columns `list-agents --fields` offers (Testflinger's names).
pub const AGENT_FIELDS: [&str; 7] = [
    "name",
    "status",
    "location",
    "provision_type",
    "comment",
    "job_id",
    "queues",
];

/// Agent states an agent can be online in, in the order jobs go through them.
pub const ONLINE_STATES: [&str; 8] = [
    "waiting",
    "setup",
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "reserve",
    "cleanup",
];

/// Agent states of an agent out of service.
pub const OFFLINE_STATES: [&str; 2] = ["offline", "maintenance"];

fn parse_status_filter(s: &str) -> Result<String, String> {
    let state = s.strip_prefix('^').unwrap_or(s);
    let known = ["online"]
        .iter()
        .chain(&ONLINE_STATES)
        .chain(&OFFLINE_STATES)
        .any(|k| *k == state);
    if known {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{state:?} is not online, offline or a state ({}, {})",
            ONLINE_STATES.join(", "),
            OFFLINE_STATES.join(", ")
        ))
    }
}

/// A regular expression given on the command line, searched for anywhere in the text.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl std::str::FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        regex::Regex::new(s)
            .map(Pattern)
            .map_err(|e| format!("not a regular expression: {e}"))
    }
}

impl Pattern {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

#[derive(Debug, Args)]
pub struct AgentStatusArgs {
    /// The agent's name
    pub agent_name: String,
}

#[derive(Debug, Args)]
pub struct QueueStatusArgs {
    /// The queue's name
    pub queue_name: String,

    /// List the queue's jobs one by one
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// `KEY` to show one setting, `KEY=VALUE` to write it into the configuration file
    /// (`KEY=` removes it)
    #[arg(value_name = "KEY[=VALUE]")]
    pub setting: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret value under a path of your client
    Write {
        /// The secret's path (letters, digits, _, -, /)
        path: String,
        /// The value
        value: String,
        /// Seconds until the secret expires; -1: never (default: the lab's, a year unless set)
        #[arg(long, alias = "expire_after", value_name = "SECONDS", allow_negative_numbers = true,
              value_parser = clap::value_parser!(i64).range(-1..), conflicts_with = "single_use")]
        expire_after: Option<i64>,
        /// Deleted as the first job that names it is given it
        #[arg(long, alias = "single_use")]
        single_use: bool,
    },
    /// Delete a secret
    Delete {
        /// The secret's path
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set an agent's state or a client's permissions
    #[command(subcommand)]
    Set(AdminSet),
    /// Show client permissions
    #[command(subcommand)]
    Get(AdminGet),
    /// Delete a client
    #[command(subcommand)]
    Delete(AdminDelete),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdminAgentState {
    /// Back in service (the same as `waiting`)
    Online,
    /// Back in service
    Waiting,
    /// Out of service, e.g. broken (a comment is required)
    Offline,
    /// Out of service for lab work
    Maintenance,
    /// Restart the agent after its current job (its supervisor starts it again)
    Restart,
}

impl AdminAgentState {
    /// The state the API takes.
    pub fn api_name(self) -> &'static str {
        match self {
            AdminAgentState::Online | AdminAgentState::Waiting => "waiting",
            AdminAgentState::Offline => "offline",
            AdminAgentState::Maintenance => "maintenance",
            AdminAgentState::Restart => "restart",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminSet {
    /// Take agents out of service or put them back (takes effect after their current job)
    AgentStatus(SetAgentStatusArgs),
    /// Create a client, or change its secret, role or limits
    ClientPermissions(SetClientArgs),
}

#[derive(Debug, Args)]
pub struct SetAgentStatusArgs {
    /// The state to set
    #[arg(long, value_enum)]
    pub status: AdminAgentState,

    /// The agents to set it on
    #[arg(long, required = true, num_args = 1.., value_name = "AGENT")]
    pub agents: Vec<String>,

    /// Why (required for offline)
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetClientArgs {
    /// The client to create or change
    #[arg(long, visible_alias = "client", value_name = "ID")]
    pub testflinger_client_id: Option<String>,

    /// Its secret key (required for a new client)
    #[arg(long, value_name = "SECRET")]
    pub testflinger_client_secret: Option<String>,

    /// Highest job priority per queue: JSON (`{"rpi4b": 100, "*": 10}`) or `rpi4b=100,*=10`
    #[arg(long, value_name = "LIMITS")]
    pub max_priority: Option<String>,

    /// Longest reservation per queue in seconds: JSON or `rpi4b=86400,*=21600`
    #[arg(long, value_name = "LIMITS")]
    pub max_reservation: Option<String>,

    /// Its role
    #[arg(long, value_parser = ["admin", "manager", "contributor", "agent"])]
    pub role: Option<String>,

    /// Its email address
    #[arg(long)]
    pub email: Option<String>,

    /// The whole body as JSON (Testflinger's `--json DATA`); flags given too override it
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminGet {
    /// One client's permissions, or every client's
    ClientPermissions(ClientIdArg),
    /// How long ended jobs are kept, per queue, as the scheduler applies it
    Retention,
}

#[derive(Debug, Subcommand)]
pub enum AdminDelete {
    /// Delete a client
    ClientPermissions(RequiredClientIdArg),
}

#[derive(Debug, Args)]
pub struct ClientIdArg {
    /// The client [default: every client]
    #[arg(long, visible_alias = "client", value_name = "ID")]
    pub testflinger_client_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RequiredClientIdArg {
    /// The client
    #[arg(long, visible_alias = "client", value_name = "ID")]
    pub testflinger_client_id: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Testflinger's spellings that clash with ours, rewritten before parsing: `admin set
/// client-permissions --json DATA` (Testflinger's body flag) is our `--data DATA`, since `--json`
/// is our global output flag. Only a `--json` followed by a JSON object (or written
/// `--json={...}`) after those three words is rewritten; every other argument is left as is.
pub fn with_testflinger_spellings(args: Vec<OsString>) -> Vec<OsString> {
    let words = ["admin", "set", "client-permissions"];
    let Some(start) = args
        .windows(words.len())
        .position(|w| w.iter().zip(words).all(|(a, b)| a == b))
    else {
        return args;
    };
    let is_object = |a: &OsString| a.to_str().is_some_and(|s| s.trim_start().starts_with('{'));
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter().enumerate().peekable();
    while let Some((i, arg)) = rest.next() {
        if i > start + 2 {
            if arg == "--json" && rest.peek().is_some_and(|(_, next)| is_object(next)) {
                out.push(OsString::from("--data"));
                continue;
            }
            if let Some(data) = arg.to_str().and_then(|a| a.strip_prefix("--json="))
                && data.trim_start().starts_with('{')
            {
                out.push(OsString::from(format!("--data={data}")));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const ID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let a = Cli::try_parse_from(["flinger", "--json", "status", ID]).unwrap();
        let b = Cli::try_parse_from(["flinger", "status", ID, "--json", "--server", "http://x:1"]).unwrap();
        assert!(a.global.json && b.global.json);
        assert_eq!(b.global.server.as_deref(), Some("http://x:1"));
        let c = Cli::try_parse_from(["flinger", "login", "--client_id", "me", "--secret-key", "s"]).unwrap();
        assert_eq!(c.global.client_id.as_deref(), Some("me"));
    }

    #[test]
    fn a_job_id_that_is_not_a_uuid_is_a_usage_error() {
        let err = Cli::try_parse_from(["flinger", "status", "42"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a job id"), "{err}");
    }

    #[test]
    fn testflinger_spellings_of_poll_options_work() {
        let c = Cli::try_parse_from(["flinger", "poll", "--start_fragment", "7", "-o", ID]).unwrap();
        let Command::Poll(p) = c.command else {
            panic!("not poll")
        };
        assert_eq!((p.start_fragment, p.oneshot), (7, true));
        assert!(Cli::try_parse_from(["flinger", "poll", "--start-fragment", "7", ID]).is_ok());
        assert!(Cli::try_parse_from(["flinger", "poll", "-f", "7", "-p", "test", ID]).is_ok());
        assert!(Cli::try_parse_from(["flinger", "poll", "--phase", "tset", ID]).is_err());
    }

    #[test]
    fn reserve_takes_flags_or_a_subcommand() {
        let c = Cli::try_parse_from([
            "flinger",
            "reserve",
            "-q",
            "rpi4b",
            "-k",
            "lp:a",
            "-k",
            "gh:b",
            "--dry-run",
        ])
        .unwrap();
        let Command::Reserve(r) = c.command else { panic!() };
        assert_eq!(
            (r.queue.as_deref(), r.keys.len(), r.dry_run),
            (Some("rpi4b"), 2, true)
        );
        let c = Cli::try_parse_from(["flinger", "reserve", "extend", ID, "--by", "2h"]).unwrap();
        let Command::Reserve(ReserveArgs {
            action: Some(ReserveCommand::Extend(e)),
            ..
        }) = c.command
        else {
            panic!()
        };
        assert_eq!(e.by.as_deref(), Some("2h"));
        assert!(
            Cli::try_parse_from(["flinger", "reserve", "extend", ID]).is_err(),
            "--by or --until is required"
        );
        assert!(Cli::try_parse_from(["flinger", "reserve", "status", ID, "--json"]).is_ok());
    }

    fn reserve_of(args: &[&str]) -> (bool, ReserveArgs) {
        let c = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Reserve(r) = c.command else { panic!() };
        (c.global.debug, r)
    }

    #[test]
    fn reserve_d_is_the_dry_run_and_d_before_the_command_is_debug() {
        let (debug, r) = reserve_of(&["flinger", "reserve", "-d", "-q", "x", "-k", "lp:a"]);
        assert_eq!((debug, r.dry_run), (false, true));
        let (debug, r) = reserve_of(&["flinger", "-d", "reserve", "-q", "x", "-k", "lp:a"]);
        assert_eq!((debug, r.dry_run), (true, false));
        let (debug, r) = reserve_of(&["flinger", "reserve", "--debug", "--dry-run", "-q", "x"]);
        assert_eq!((debug, r.dry_run), (true, true));
        let c = Cli::try_parse_from(["flinger", "reserve", "status", ID, "--debug"]).unwrap();
        assert!(c.global.debug);
        // Elsewhere `-d` stays debug, before or after the command.
        assert!(
            Cli::try_parse_from(["flinger", "status", ID, "-d"])
                .unwrap()
                .global
                .debug
        );
    }

    #[test]
    fn one_key_flag_may_take_several_keys() {
        let (_, r) = reserve_of(&[
            "flinger", "reserve", "-q", "x", "-k", "lp:a", "gh:b", "-k", "lp:c", "-d",
        ]);
        assert_eq!(r.keys, ["lp:a", "gh:b", "lp:c"]);
        assert!(r.dry_run);
    }

    #[test]
    fn unambiguous_prefixes_of_long_options_work_as_in_argparse() {
        let c = Cli::try_parse_from(["flinger", "submit", "--wait", "job.yaml"]).unwrap();
        let Command::Submit(s) = c.command else { panic!() };
        assert!(s.wait_for_available_agents);
        let c = Cli::try_parse_from(["flinger", "list-agents", "--filter-queue", "a|b"]).unwrap();
        let Command::ListAgents(l) = c.command else {
            panic!()
        };
        assert!(l.filter_queues.is_some());
        // An ambiguous one is refused.
        assert!(Cli::try_parse_from(["flinger", "list-agents", "--filter", "x"]).is_err());
    }

    #[test]
    fn admin_commands_parse_as_testflinger_spells_them() {
        let c = Cli::try_parse_from([
            "flinger",
            "admin",
            "set",
            "agent-status",
            "--status",
            "maintenance",
            "--agents",
            "a",
            "b",
            "--comment",
            "lab work",
        ])
        .unwrap();
        let Command::Admin(AdminCommand::Set(AdminSet::AgentStatus(s))) = c.command else {
            panic!()
        };
        assert_eq!((s.status.api_name(), s.agents.len()), ("maintenance", 2));
        assert_eq!(AdminAgentState::Online.api_name(), "waiting");
        assert!(
            Cli::try_parse_from([
                "flinger",
                "admin",
                "delete",
                "client-permissions",
                "--testflinger-client-id",
                "x"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["flinger", "admin", "get", "client-permissions"]).is_ok());
    }

    #[test]
    fn testflingers_json_body_of_client_permissions_is_our_data() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let body = r#"{"client_id": "bob", "role": "contributor"}"#;
        let rewritten = with_testflinger_spellings(os(&[
            "flinger",
            "admin",
            "set",
            "client-permissions",
            "--json",
            body,
        ]));
        assert_eq!(
            rewritten,
            os(&["flinger", "admin", "set", "client-permissions", "--data", body])
        );
        let c = Cli::try_parse_from(rewritten).unwrap();
        let Command::Admin(AdminCommand::Set(AdminSet::ClientPermissions(a))) = c.command else {
            panic!()
        };
        assert_eq!(a.data.as_deref(), Some(body));
        assert_eq!(
            with_testflinger_spellings(os(&[
                "flinger",
                "admin",
                "set",
                "client-permissions",
                &format!("--json={body}")
            ])),
            os(&[
                "flinger",
                "admin",
                "set",
                "client-permissions",
                &format!("--data={body}")
            ])
        );
        // Our global --json (output as JSON) keeps its meaning everywhere else.
        for untouched in [
            os(&[
                "flinger",
                "--json",
                "admin",
                "set",
                "client-permissions",
                "--client",
                "x",
            ]),
            os(&[
                "flinger",
                "admin",
                "set",
                "client-permissions",
                "--json",
                "--client",
                "x",
            ]),
            os(&["flinger", "status", "--json", "{}"]),
        ] {
            assert_eq!(with_testflinger_spellings(untouched.clone()), untouched);
        }
    }
}
