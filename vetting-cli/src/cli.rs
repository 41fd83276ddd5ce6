//! The clap tree of `vetting`: every subcommand, its flags and help. The
//! completions and the man page are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vetting",
    version,
    about = "Vets bare-metal servers before they go into service",
    after_help = "Without --server, commands work on the local database (the data folder \
                  of the config), or through the `vetting serve` that holds it.\n\
                  Exit codes: 0 success (watch: every run completed), 1 a run failed, is \
                  held or was cancelled, 2 usage or input error, 3 cannot reach the database \
                  or server, 4 refused (auth or state), 5 internal error."
)]
pub struct Cli {
    /// The YAML config file (optional: defaults work with none).
    #[arg(long, short, global = true, env = "VETTING_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the operator API's JSON instead of tables (shapes:
    /// docs/operator-api.md, docs/openapi.json).
    #[arg(long, global = true)]
    pub json: bool,
    /// A running orchestrator's URL (its API token in VETTING_TOKEN).
    #[arg(long, global = true, env = "VETTING_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Starts the orchestrator (embedded SQLite in ./data by default).
    Serve {
        /// Listen address (overrides config `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Vets this machine end to end without server hardware and without
    /// destroying anything (its disk is a scratch file), then prints the
    /// run id, the final state and the report paths.
    Demo {
        /// Size of the scratch disk in MiB.
        #[arg(long, default_value_t = 64)]
        scratch_mib: u64,
        /// Seconds of CPU and memory stress.
        #[arg(long, default_value_t = 10)]
        stress_secs: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout_secs: u64,
    },
    /// Registered hosts.
    Hosts {
        #[command(subcommand)]
        command: HostsCommand,
    },
    /// Spec profiles (one per server model).
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Runs: start, list, watch, act on them.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// A run's report (the same as `runs report`).
    Report(ReportArgs),
    /// API tokens for `--server` and automation.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Pause or resume starting new runs (runs in flight go on).
    Dispatch {
        #[command(subcommand)]
        command: DispatchCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Database commands.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Prints a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff) to stdout.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Checks a config file and prints the configuration in effect.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Brings the database schema up to date.
    Migrate,
}

/// A host's power settings on the command line: the driver and its
/// options (`--power ipmi --power-opt host=10.0.0.5 --power-opt username=admin`).
#[derive(Debug, Clone, Args)]
pub struct PowerArgs {
    /// The power driver.
    #[arg(long, value_enum)]
    pub power: Option<PowerDriver>,
    /// A driver option as KEY=VALUE (repeatable; numbers and booleans are
    /// sent as such).
    #[arg(long = "power-opt", value_name = "KEY=VALUE", requires = "power")]
    pub power_options: Vec<String>,
    /// The BMC password (IPMI, Redfish), read from this file (`-`: stdin)
    /// rather than the command line; sent as `password_plaintext`, stored
    /// only encrypted with the secret key.
    #[arg(long = "power-password-file", value_name = "FILE", requires = "power")]
    pub power_password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerDriver {
    Wol,
    Ipmi,
    Redfish,
    Manual,
}

impl PowerDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerDriver::Wol => "wol",
            PowerDriver::Ipmi => "ipmi",
            PowerDriver::Redfish => "redfish",
            PowerDriver::Manual => "manual",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Registers a host.
    Add {
        #[arg(long)]
        name: String,
        /// A MAC address of the host (repeatable).
        #[arg(long = "mac", required = true, value_name = "MAC")]
        macs: Vec<String>,
        /// The spec profile the host is held to.
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        #[command(flatten)]
        power: PowerArgs,
    },
    /// Lists hosts.
    List {
        /// Removed hosts too.
        #[arg(long)]
        include_removed: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Shows a host, its active run and its recent runs.
    Show { name: String },
    /// Changes a host (an empty value clears a field).
    Edit {
        name: String,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long = "add-mac", value_name = "MAC")]
        add_macs: Vec<String>,
        #[arg(long = "remove-mac", value_name = "MAC")]
        remove_macs: Vec<String>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[command(flatten)]
        power: PowerArgs,
        /// Clears the power settings.
        #[arg(long, conflicts_with = "power")]
        clear_power: bool,
    },
    /// Removes a host (its history stays; its MACs are free again).
    Remove { name: String },
    /// Registers every host of a CSV file (header: name,macs,serial,profile,power;
    /// several MACs separated by spaces or `;`). Nothing is imported when
    /// any row is bad.
    Import { file: PathBuf },
}

#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// At most this many (1 to 1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[arg(long, value_name = "CURSOR")]
    pub before: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Stores a spec profile from a YAML file (replacing one of that name).
    Add { name: String, file: PathBuf },
    /// Lists spec profiles.
    List,
    /// Prints a spec profile's text.
    Show { name: String },
    /// Checks a spec file without storing it (works offline).
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Starts a run on each host named (prints the run ids).
    Start {
        #[arg(value_name = "HOST", required_unless_present = "all_idle")]
        hosts: Vec<String>,
        /// Every host that has no active run.
        #[arg(long)]
        all_idle: bool,
    },
    /// Lists runs, newest first.
    List {
        /// Only runs in this state (e.g. FailedHolding).
        #[arg(long)]
        state: Option<String>,
        /// Only runs of this host.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Shows a run: its stages, transitions and hold findings.
    Show { id: String },
    /// Follows runs live until they end; exits with their verdict.
    Watch {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Prints a run's log.
    Logs {
        id: String,
        /// Only this stage's lines.
        #[arg(long)]
        stage: Option<String>,
        /// Keep printing new lines until the run ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancels a run.
    Cancel { id: String },
    /// Overrides a wipe-probe hold: re-runs Storage, writing the disks
    /// whose findings are acknowledged.
    OverrideWipe {
        id: String,
        /// The finding ids acknowledged (as `runs show` lists them).
        #[arg(long = "acknowledge", required = true, num_args = 1.., value_name = "FINDING")]
        acknowledge: Vec<String>,
    },
    /// Releases a held run (the host powers off).
    Release { id: String },
    /// A run's report.
    Report(ReportArgs),
    /// Re-runs a stage of a held run as a new attempt.
    RetryStage { id: String, stage: String },
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    pub id: String,
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    pub format: ReportFormat,
    /// Write it to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
    Ocp,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Html => "html",
            ReportFormat::Json => "json",
            ReportFormat::Ocp => "ocp",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Creates an API token (its secret is printed once).
    Create {
        name: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Viewer)]
        role: RoleArg,
    },
    /// Lists API tokens (never their secrets).
    List,
    /// Revokes an API token: it stops working at once.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

impl RoleArg {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Viewer => "viewer",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DispatchCommand {
    /// Stops starting new runs (runs in flight go on).
    Pause,
    /// Starts new runs again.
    Resume,
    /// Whether the dispatcher is paused, slots in use, runs queued.
    Status,
}
