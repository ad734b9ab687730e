//! One module per command. Each takes the API client, the UI and its own arguments, and returns
//! the exit code it ended with; errors go back to `main`, which reports them.

pub mod cancel;
pub mod poll;
pub mod results;
pub mod show;
pub mod status;
pub mod submit;

use crate::args::{Cli, Command};
use crate::client::Client;
use crate::config::{self, Flags};
use crate::exit::{CliError, Exit};
use crate::model::LogStream;
use crate::output::Ui;

pub async fn run(cli: Cli, ui: &Ui) -> Result<Exit, CliError> {
    let flags = Flags {
        server: cli.global.server,
        config: cli.global.config,
    };
    let settings = config::load(&flags, &|name| std::env::var(name).ok())?;
    let client = Client::new(settings.server.value, cli.global.debug)?;
    match cli.command {
        Command::Submit(args) => submit::run(&client, ui, args).await,
        Command::Poll(args) => poll::run(&client, ui, args, LogStream::Output).await,
        Command::PollSerial(args) => poll::run(&client, ui, args, LogStream::Serial).await,
        Command::Status(args) => status::run(&client, ui, args.job_id).await,
        Command::Results(args) => results::run(&client, ui, args.job_id).await,
        Command::Show(args) => show::run(&client, ui, args).await,
        Command::Cancel(args) => cancel::run(&client, ui, args.job_id).await,
    }
}
