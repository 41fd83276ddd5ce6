//! `vetting`: the orchestrator's command line. Thin glue: every command but
//! `serve`, `demo`, `config check`, `db migrate`, `profiles check`,
//! `completions` and `man` is requests to the operator API
//! (`client`), to a server or in-process on the local database; `cli` is
//! the clap tree, `output` the tables and JSON, `watch` the live view.

mod cli;
mod client;
mod commands;
mod demo;
mod error;
mod output;
mod watch;

use clap::Parser;
use vetting_core::config::Config;

use cli::{Cli, Command, ConfigCommand, DbCommand, ProfilesCommand};
use client::Client;
use commands::{Context, local};
use error::{CliResult, Exit, Failure};

fn main() -> std::process::ExitCode {
    vetting_http::init_logging("VETTING_LOG");
    // usage errors exit 2, --help and --version 0 (clap's own codes)
    let cli = Cli::parse();
    // one descriptor per connection: the usual soft limit of 1024 is below
    // http.max_connections
    if matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        match vetting_http::raise_open_file_limit() {
            Ok(limit) => tracing::debug!(limit, "open-file limit"),
            Err(error) => tracing::warn!("cannot raise the open-file limit: {error}"),
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::from(Exit::Internal.code());
        }
    };
    let outcome = runtime.block_on(run(cli));
    // the events stream's reader may still be waiting on the network
    runtime.shutdown_background();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", output::visible(&failure.message, true));
            std::process::ExitCode::from(failure.exit.code())
        }
    }
}

fn load_config(cli: &Cli) -> CliResult<Config> {
    Config::load(cli.config.as_deref()).map_err(|error| Failure::of_error(Exit::Input, &error))
}

async fn run(cli: Cli) -> CliResult<()> {
    // the commands that are not requests to the operator API
    match &cli.command {
        Command::Serve { listen } => {
            let mut config = load_config(&cli)?;
            if let Some(listen) = listen {
                config.listen = *listen;
            }
            return local::serve(config).await;
        }
        Command::Demo {
            scratch_mib,
            stress_secs,
            timeout_secs,
        } => {
            let config = load_config(&cli)?;
            let options = demo::DemoOptions {
                scratch_mib: *scratch_mib,
                stress_secs: *stress_secs,
                timeout_secs: *timeout_secs,
            };
            return local::demo(config, options).await;
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => return local::config_check(file),
        Command::Db {
            command: DbCommand::Migrate,
        } => return local::db_migrate(load_config(&cli)?).await,
        Command::Completions { shell } => {
            local::completions(*shell);
            return Ok(());
        }
        Command::Man => return local::man(),
        Command::Profiles {
            command: ProfilesCommand::Check { file },
        } => return commands::profiles::check(cli.json, file),
        _ => {}
    }
    let client = match &cli.server {
        Some(url) => Client::http(url, std::env::var("VETTING_TOKEN").ok())?,
        None => Client::local(load_config(&cli)?).await?,
    };
    let context = Context {
        client,
        json: cli.json,
    };
    match cli.command {
        Command::Hosts { command } => commands::hosts::run(&context, command).await,
        Command::Profiles { command } => commands::profiles::run(&context, command).await,
        Command::Runs { command } => commands::runs::run(&context, command).await,
        Command::Report(args) => commands::runs::report(&context, args).await,
        Command::Tokens { command } => commands::tokens::run(&context, command).await,
        Command::Dispatch { command } => commands::dispatch::run(&context, command).await,
        Command::Serve { .. }
        | Command::Demo { .. }
        | Command::Config { .. }
        | Command::Db { .. }
        | Command::Completions { .. }
        | Command::Man => Ok(()),
    }
}
