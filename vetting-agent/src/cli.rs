//! The agent's command-line subcommands for operators and offline use:
//! `inventory` prints this machine's inventory, `parse TOOL FILE` parses a
//! saved tool output and prints it normalized with its verdict.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use vetting_probes::inventory::{self, CollectOptions, Inventory};
use vetting_probes::{Thresholds, Tool, ToolReport, parse_and_judge};

/// Exit status when a tool output could not be parsed.
pub const EXIT_PARSE_FAILED: u8 = 2;
/// Exit status for any other error.
pub const EXIT_FAILED: u8 = 1;

/// The vetting agent: tests a server's hardware inside the live image.
#[derive(Debug, Parser)]
#[command(name = "vetting-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The agent's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this machine's inventory as JSON, with a `missing` list naming
    /// what could not be read and why.
    Inventory(InventoryArgs),
    /// Parse a saved tool output and print `{"tool", "data", "verdict"}` as
    /// JSON. Exits 0 when the file was parsed (whatever the verdict), 2 when
    /// it could not be.
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Read only the kernel's files; run no tool (dmidecode, lshw, lspci,
    /// ethtool, nvidia-smi).
    #[arg(long)]
    pub no_tools: bool,
    /// The limit for each tool, in seconds.
    #[arg(long, default_value_t = 120)]
    pub tool_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The tool that wrote the file.
    #[arg(value_parser = PossibleValuesParser::new(Tool::ALL.map(Tool::name)))]
    pub tool: String,
    /// The saved output.
    pub file: PathBuf,
}

/// Runs a subcommand, printing its result on stdout and any error (with its
/// whole chain) on stderr; returns the exit status.
pub fn run(cli: Cli) -> ExitCode {
    let (result, failure_status) = match cli.command {
        Command::Inventory(args) => (inventory_command(&args), EXIT_FAILED),
        Command::Parse(args) => (parse_command(&args), EXIT_PARSE_FAILED),
    };
    match result.and_then(|json| print_line(&json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vetting-agent: error: {error:#}");
            ExitCode::from(failure_status)
        }
    }
}

fn print_line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

fn inventory_command(args: &InventoryArgs) -> anyhow::Result<String> {
    let options = CollectOptions {
        run_tools: !args.no_tools,
        tool_timeout: Duration::from_secs(args.tool_timeout_secs),
        ..CollectOptions::default()
    };
    let inventory: Inventory = inventory::collect(&options);
    serde_json::to_string_pretty(&inventory).context("serializing the inventory")
}

fn parse_command(args: &ParseArgs) -> anyhow::Result<String> {
    let tool = Tool::from_name(&args.tool).with_context(|| {
        format!(
            "unknown tool {:?}; valid tools: {}",
            args.tool,
            valid_tool_names()
        )
    })?;
    let report = parse_file(tool, &args.file)?;
    serde_json::to_string_pretty(&report).context("serializing the report")
}

/// Parses and judges one saved tool output with the default thresholds.
pub fn parse_file(tool: Tool, path: &Path) -> anyhow::Result<ToolReport> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_and_judge(tool, &bytes, &Thresholds::default())
        .with_context(|| format!("parsing {} as {tool} output", path.display()))
}

/// The tool names `parse` accepts, comma-separated.
pub fn valid_tool_names() -> String {
    Tool::ALL.map(Tool::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_tool_name_is_accepted() {
        for tool in Tool::ALL {
            let cli = Cli::try_parse_from(["vetting-agent", "parse", tool.name(), "file"]).unwrap();
            let Command::Parse(args) = cli.command else {
                panic!("not a parse command");
            };
            assert_eq!(Tool::from_name(&args.tool), Some(tool));
        }
        assert!(Cli::try_parse_from(["vetting-agent", "parse", "nope", "file"]).is_err());
    }
}
