//! `vetting`: the orchestrator's command line. Thin glue over
//! `vetting-core` and `vetting-http`.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vetting_core::config::Config;
use vetting_core::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "vetting",
    version,
    about = "Vets bare-metal servers before they go into service"
)]
struct Cli {
    /// The YAML config file (optional: defaults work with none).
    #[arg(long, short, global = true, env = "VETTING_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Checks a config file and prints the configuration in effect.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Brings the database schema up to date.
    Migrate,
}

fn main() -> std::process::ExitCode {
    vetting_http::init_logging("VETTING_LOG");
    let cli = Cli::parse();
    // one descriptor per connection: the usual soft limit of 1024 is below
    // http.max_connections
    match vetting_http::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!("cannot raise the open-file limit: {error}"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            serve(config).await
        }
        Command::Demo {
            scratch_mib,
            stress_secs,
            timeout_secs,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let completed = demo::run(
                config,
                demo::DemoOptions {
                    scratch_mib,
                    stress_secs,
                    timeout_secs,
                },
            )
            .await?;
            if completed {
                Ok(())
            } else {
                anyhow::bail!("the demo run did not complete")
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::load(Some(&file))?;
            println!("{} is valid", file.display());
            println!("{config:#?}");
            Ok(())
        }
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            let store = Store::connect(&config.database_url()).await?;
            let applied = store.migrate().await?;
            println!(
                "database at schema version {} (applied: {:?})",
                store.schema_version().await?,
                applied
            );
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = vetting_http::Server::new(config).start().await?;
    if let Some(interface) = server.pxe_interface() {
        println!("vetting serving PXE (dnsmasq) on {interface}");
    }
    println!("vetting listening on http://{}", server.local_addr());
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
