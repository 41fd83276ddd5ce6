//! The `vetting-agent` binary: parses the command line and hands it to the
//! library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = vetting_agent::cli::Cli::parse();
    vetting_agent::cli::run(cli)
}
