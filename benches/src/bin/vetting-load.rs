//! `vetting-load`: the load harness. The orchestrator runs in its own
//! process pinned to one core; simulated agents (the agent library's own
//! client and outbox) run in this process, pinned to the other; see
//! `docs/performance.md`.
//!
//! `cargo run --release -p vetting-benches --bin vetting-load -- all`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vetting_benches::load::agents::Traffic;
use vetting_benches::load::scenarios::{self, Harness};
use vetting_benches::load::{pin, server};

#[derive(Debug, Parser)]
#[command(
    name = "vetting-load",
    about = "Load harness of the vetting orchestrator"
)]
struct Cli {
    /// The core the server process is pinned to.
    #[arg(long, default_value_t = 0, global = true)]
    server_cpu: usize,
    /// The core the load generator (this process) is pinned to.
    #[arg(long, default_value_t = 1, global = true)]
    load_cpu: usize,
    /// A PostgreSQL admin URL (as `scripts/postgres.sh` prints): each
    /// server gets a fresh database on it. SQLite when absent.
    #[arg(long, global = true, env = "VETTING_LOAD_POSTGRES")]
    postgres: Option<String>,
    /// bcrypt cost of the seeded runs' tokens (the claim pays it once).
    #[arg(long, default_value_t = 10, global = true)]
    bcrypt_cost: u32,
    /// Where the servers' data folders go (a temporary folder inside).
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
    /// Keep the data folders.
    #[arg(long, global = true)]
    keep: bool,
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Idle orchestrator memory.
    Idle {
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
    },
    /// Authenticated heartbeats in a closed loop, and the bare axum baseline.
    Heartbeats {
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
    },
    /// N simulated hosts with realistic traffic.
    Hosts {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
        /// Seconds per agent stage (default: an eighth of the window).
        #[arg(long)]
        stage_secs: Option<f64>,
    },
    /// N simulated hosts, `--watchers` of their runs followed by `vetting
    /// runs watch` processes: no transition missed, p99 under 50 ms.
    Watch {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 50)]
        watchers: usize,
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
        /// Seconds per agent stage (default: an eighth of the window).
        #[arg(long)]
        stage_secs: Option<f64>,
    },
    /// Raises N until p99 of an agent endpoint crosses 50 ms.
    Sweep {
        #[arg(long, default_value_t = 500)]
        from: usize,
        #[arg(long, default_value_t = 250)]
        step: usize,
        #[arg(long, default_value_t = 10_000)]
        max: usize,
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
    },
    /// 2× the sustainable heartbeat rate for a while; how fast it recovers.
    Burst {
        /// The sustainable rate (default: 80 % of the measured closed-loop
        /// throughput).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 30)]
        burst_secs: u64,
        #[arg(long, default_value_t = 64)]
        agents: usize,
    },
    /// idle, heartbeats, hosts (1000), burst.
    All {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
    },
    /// (internal) the orchestrator process.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        cpu: usize,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        hosts: usize,
        #[arg(long)]
        seeded_file: PathBuf,
    },
    /// (internal) the bare axum baseline process.
    #[command(hide = true)]
    Bare {
        #[arg(long)]
        cpu: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn traffic_for(duration: Duration, stage_secs: Option<f64>) -> Traffic {
    Traffic {
        // 7 agent stages, so each run ends inside the window
        stage_secs: stage_secs.unwrap_or(duration.as_secs_f64() / 8.0),
        ..Traffic::default()
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Scenario::Serve {
            cpu,
            data_dir,
            database_url,
            hosts,
            seeded_file,
        } => {
            pin::pin_to_cpu(cpu)?;
            vetting_http::init_logging("VETTING_LOG");
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            return runtime.block_on(server::serve(server::ServeOptions {
                data_dir,
                database_url,
                hosts,
                bcrypt_cost: cli.bcrypt_cost,
                seeded_file,
            }));
        }
        Scenario::Bare { cpu } => {
            pin::pin_to_cpu(cpu)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            return runtime.block_on(server::bare());
        }
        _ => {}
    }
    pin::pin_to_cpu(cli.load_cpu)?;
    let base = cli.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let work = tempfile::Builder::new()
        .prefix("vetting-load-")
        .tempdir_in(&base)
        .context("creating the work folder")?;
    let harness = Harness {
        server_cpu: cli.server_cpu,
        load_cpu: cli.load_cpu,
        postgres: cli.postgres.clone(),
        bcrypt_cost: cli.bcrypt_cost,
        work_dir: work.path().to_path_buf(),
        keep: cli.keep,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    scenarios::describe_machine(&harness);
    let result = runtime.block_on(async {
        match cli.command {
            Scenario::Idle { settle_secs } => {
                scenarios::idle(&harness, Duration::from_secs(settle_secs)).await?;
            }
            Scenario::Heartbeats {
                concurrency,
                duration_secs,
            } => {
                scenarios::heartbeats(&harness, concurrency, Duration::from_secs(duration_secs))
                    .await?;
            }
            Scenario::Hosts {
                hosts,
                duration_secs,
                stage_secs,
            } => {
                let duration = Duration::from_secs(duration_secs);
                let run = scenarios::hosts(
                    &harness,
                    hosts,
                    duration,
                    &traffic_for(duration, stage_secs),
                )
                .await?;
                scenarios::print_hosts(&harness, &run);
            }
            Scenario::Watch {
                hosts,
                watchers,
                duration_secs,
                stage_secs,
            } => {
                let duration = Duration::from_secs(duration_secs);
                let mut watching = vetting_benches::load::watch::Watchers::new(
                    watchers,
                    &harness.work_dir.join("watchers"),
                )?;
                let (run, watched) = scenarios::hosts_watched(
                    &harness,
                    hosts,
                    duration,
                    &traffic_for(duration, stage_secs),
                    Some(&mut watching),
                )
                .await?;
                scenarios::print_hosts(&harness, &run);
                if let Some(watched) = &watched {
                    vetting_benches::load::watch::print_check(watched);
                }
            }
            Scenario::Sweep {
                from,
                step,
                max,
                duration_secs,
            } => {
                let duration = Duration::from_secs(duration_secs);
                scenarios::sweep(
                    &harness,
                    from,
                    step,
                    max,
                    duration,
                    &traffic_for(duration, None),
                )
                .await?;
            }
            Scenario::Burst {
                rate,
                burst_secs,
                agents,
            } => {
                scenarios::burst(&harness, rate, Duration::from_secs(burst_secs), agents).await?;
            }
            Scenario::All {
                hosts,
                duration_secs,
            } => {
                scenarios::idle(&harness, Duration::from_secs(5)).await?;
                println!();
                scenarios::heartbeats(&harness, 64, Duration::from_secs(20)).await?;
                println!();
                let duration = Duration::from_secs(duration_secs);
                let run = scenarios::hosts(&harness, hosts, duration, &traffic_for(duration, None))
                    .await?;
                scenarios::print_hosts(&harness, &run);
                println!();
                scenarios::burst(&harness, None, Duration::from_secs(30), 64).await?;
            }
            Scenario::Serve { .. } | Scenario::Bare { .. } => {}
        }
        anyhow::Ok(())
    });
    if cli.keep {
        let kept = work.keep();
        println!("data kept in {}", kept.display());
    }
    result
}
