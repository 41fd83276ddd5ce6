//! `vetting`: the orchestrator's command line. Thin glue over
//! `vetting-core` and `vetting-http`.

mod demo;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vetting_core::clock::SystemClock;
use vetting_core::config::Config;
use vetting_core::dispatcher::{Dispatcher, run_reconcilers};
use vetting_core::orchestrator::Orchestrator;
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VETTING_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let listen = config.listen;
    let pxe_settings = config
        .pxe_settings()
        .map_err(|message| anyhow::anyhow!("config: {message}"))?;
    let orchestrator = Orchestrator::open(config, Arc::new(SystemClock))
        .await
        .context("opening the orchestrator")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let mut state = vetting_http::AppState::new(orchestrator.clone());
    let mut pxe = None;
    if let Some(settings) = pxe_settings {
        let hosts =
            vetting_core::boot::host_entries(&orchestrator.operator().list_hosts(false).await?);
        let interface = settings.interface.clone();
        let supervisor = Arc::new(
            vetting_core::pxe::PxeSupervisor::start(settings, hosts)
                .await
                .with_context(|| format!("starting DHCP/TFTP (dnsmasq) on {interface}"))?,
        );
        println!("vetting serving PXE (dnsmasq) on {interface}");
        tokio::spawn(vetting_core::boot::sync_allowlist(
            orchestrator.clone(),
            Arc::clone(&supervisor),
            std::time::Duration::from_secs(60),
            stop.clone(),
        ));
        state = state.with_leases(supervisor.clone());
        pxe = Some(supervisor);
    }
    println!("vetting listening on http://{local}");
    let reconcilers = tokio::spawn(run_reconcilers(
        Dispatcher::with_stored_power(orchestrator.clone()),
        stop.clone(),
    ));
    vetting_http::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serving HTTP")?;
    let _ = stop_sender.send(true);
    reconcilers.abort();
    if let Some(supervisor) = pxe.and_then(|supervisor| Arc::try_unwrap(supervisor).ok()) {
        supervisor.shutdown().await;
    }
    orchestrator.iperf().stop().await;
    Ok(())
}
