//! `flinger`: the command-line client of a Flinger lab.
//!
//! - [`args`]: the command line; [`config`]: where settings come from (flag > env > file).
//! - [`client`]: the HTTP API, one method per endpoint; [`model`]: its answers, parsed;
//!   [`auth`]: logging in and the stored login.
//! - [`commands`]: one module per command; [`jobfile`]: reading job files; [`attachments`]:
//!   packing them; [`history`]: the local list of submitted jobs; [`files`]: private files.
//! - [`output`]: human vs JSON rendering, stdout vs stderr, colour.
//! - [`exit`]: the exit codes, for job outcomes and errors, decided in one place.
//!
//! The CLI knows nothing about the broker or the store: it only speaks HTTP to a gateway.

mod args;
mod attachments;
mod auth;
mod client;
mod commands;
mod config;
mod exit;
mod files;
mod history;
mod jobfile;
mod model;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // reqwest is built without a TLS provider of its own (no aws-lc build): give it ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = args::Cli::parse_from(args::with_testflinger_spellings(std::env::args_os().collect()));
    let ui = output::Ui::new(cli.global.json || cli.command.wants_json()).quiet(cli.command.is_quiet());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Exit::Unavailable.into();
        }
    };
    match runtime.block_on(commands::run(cli, &ui)) {
        Ok(code) => code.into(),
        Err(e) if e.is_closed_pipe() => exit::Exit::Success.into(),
        Err(e) => {
            ui.error(&e);
            e.exit().into()
        }
    }
}
