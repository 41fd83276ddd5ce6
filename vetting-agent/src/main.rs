//! The `vetting-agent` binary: parses the command line and hands it to the
//! library.

use clap::{Args, CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    // `run` is added to the subcommands of `cli::Cli` here, so that the run
    // mode's flags live with the run loop (`params::RunArgs`).
    let run = vetting_agent::params::RunArgs::augment_args(clap::Command::new("run")).about(
        "Vet this machine for the orchestrator: hello, claim, run the stages, report, and \
         power off on shutdown (parameters from /proc/cmdline, the environment or flags)",
    );
    let matches = vetting_agent::cli::Cli::command()
        .subcommand(run)
        .get_matches();
    if let Some(("run", run_matches)) = matches.subcommand() {
        return match vetting_agent::params::RunArgs::from_arg_matches(run_matches) {
            Ok(args) => vetting_agent::run_loop::run_command(&args),
            Err(error) => error.exit(),
        };
    }
    match vetting_agent::cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => vetting_agent::cli::run(cli),
        Err(error) => error.exit(),
    }
}
