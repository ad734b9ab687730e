//! One module per command (or group of commands). Each takes the [`Ctx`] and its own arguments,
//! and returns the exit code it ended with; errors go back to `main`, which reports them.

pub mod admin;
pub mod agents;
pub mod artifacts;
pub mod cancel;
pub mod jobs;
pub mod login;
pub mod poll;
pub mod reserve;
pub mod results;
pub mod secret;
pub mod settings;
pub mod show;
pub mod status;
pub mod submit;

use crate::args::{Cli, Command};
use crate::auth::{Credentials, SessionStore};
use crate::client::Client;
use crate::config::{self, Flags, Settings};
use crate::exit::{CliError, Exit};
use crate::history::History;
use crate::model::{JobInfo, LogStream};
use crate::output::Ui;
use clap::CommandFactory;

/// What every command works with.
pub struct Ctx<'a> {
    pub client: Client,
    pub ui: &'a Ui,
    pub settings: Settings,
    pub history: History,
}

impl Ctx<'_> {
    /// Records a job's state in the local history (if the job is there); never fails.
    pub fn remember(&self, info: &JobInfo) {
        if let Some(id) = info.raw.get("job_id").and_then(|v| v.as_str())
            && let Err(e) = self.history.update(id, &info.state, &info.job_state)
        {
            self.ui.warn(&format!("cannot update the job history: {e}"));
        }
    }

    /// A command that needs a login: the client id it acts as. Logs in with the configured
    /// credentials if there is no login yet.
    pub async fn require_login(&self, why: &str) -> Result<String, CliError> {
        if self.client.access_token().await?.is_none() {
            return Err(CliError::Auth(format!(
                "{why} needs a login: run `flinger login --client-id ID --secret-key KEY`, or give \
                 --client-id and --secret-key (or $FLINGER_CLIENT_ID and $FLINGER_SECRET_KEY)"
            )));
        }
        Ok(self
            .client
            .session()
            .map(|s| s.client_id)
            .expect("a token comes with a login"))
    }
}

pub async fn run(cli: Cli, ui: &Ui) -> Result<Exit, CliError> {
    if let Command::Completions(args) = &cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(args.shell, &mut cmd, "flinger", &mut std::io::stdout());
        return Ok(Exit::Success);
    }
    let flags = Flags {
        server: cli.global.server,
        config: cli.global.config,
        client_id: cli.global.client_id,
        secret_key: cli.global.secret_key,
    };
    let settings = config::load(&flags, &|name| std::env::var(name).ok())?;
    let credentials = match (&settings.client_id, &settings.secret_key) {
        (Some(id), Some(key)) => Some(Credentials {
            client_id: id.value.clone(),
            secret_key: key.value.clone(),
        }),
        _ => None,
    };
    let data_dir = settings.data_dir.as_ref().map(|d| d.value.as_path());
    let client = Client::new(
        settings.server.value.clone(),
        cli.global.debug,
        credentials,
        SessionStore::new(data_dir),
    )?;
    let history = History::new(data_dir);
    let ctx = Ctx {
        client,
        ui,
        settings,
        history,
    };
    match cli.command {
        Command::Submit(args) => submit::run(&ctx, args).await,
        Command::Poll(args) => poll::run(&ctx, args, LogStream::Output).await,
        Command::PollSerial(args) => poll::run(&ctx, args, LogStream::Serial).await,
        Command::Status(args) => status::run(&ctx, args.job_id).await,
        Command::Results(args) => results::run(&ctx, args.job_id).await,
        Command::Artifacts(args) => artifacts::run(&ctx, args).await,
        Command::Show(args) => show::run(&ctx, args).await,
        Command::Cancel(args) => cancel::run(&ctx, args.job_id).await,
        Command::Reserve(args) => reserve::run(&ctx, args).await,
        Command::Jobs(args) => jobs::run(&ctx, args).await,
        Command::ListQueues => agents::list_queues(&ctx).await,
        Command::ListAgents(args) => agents::list_agents(&ctx, args).await,
        Command::AgentStatus(args) => agents::agent_status(&ctx, args).await,
        Command::QueueStatus(args) => agents::queue_status(&ctx, args).await,
        Command::Login => login::login(&ctx).await,
        Command::Logout => login::logout(&ctx),
        Command::Config(args) => settings::run(&ctx, args),
        Command::Secret(args) => secret::run(&ctx, args).await,
        Command::Admin(args) => admin::run(&ctx, args).await,
        Command::Completions(_) => unreachable!("handled above"),
    }
}
