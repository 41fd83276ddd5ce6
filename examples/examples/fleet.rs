//! A fleet simulator: one server on loopback, N hosts registered and
//! started at once, and one simulated agent per host (the load harness's
//! agent, on the agent library) started when its run waits to boot. The
//! dispatcher lets at most `dispatcher.max_in_flight` runs (3 by default)
//! be in flight, so the rest queue and follow as slots free up. Prints
//! each run's outcome; exits non-zero unless every run completed.
//!
//! `cargo run -p vetting-examples --example fleet -- --hosts 8`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vetting_benches::load::server::register_and_start;
use vetting_core::machine::RunState;
use vetting_core::orchestrator::Orchestrator;
use vetting_examples::{
    EXAMPLE_BCRYPT_COST, ended, loopback_config, simulated_agent, wait_for_run,
};

const DEFAULT_HOSTS: usize = 6;
const MOST_HOSTS: usize = 1000;
/// How long one run may take, queueing included.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn hosts_flag() -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut hosts = DEFAULT_HOSTS;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--hosts" => args.next().context("--hosts needs a number")?,
            other => match other.strip_prefix("--hosts=") {
                Some(value) => value.to_string(),
                None => bail!("unknown argument {other:?} (usage: fleet [--hosts N])"),
            },
        };
        hosts = value
            .parse()
            .with_context(|| format!("--hosts {value:?}: not a number"))?;
    }
    if hosts == 0 || hosts > MOST_HOSTS {
        bail!("--hosts {hosts}: must be between 1 and {MOST_HOSTS}");
    }
    Ok(hosts)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let hosts = hosts_flag()?;
    let data = tempfile::tempdir().context("creating a data folder")?;
    // the store is opened first and the fleet registered before anything
    // runs (see `register`)
    let opened = vetting_http::Server::new(loopback_config(data.path()))
        .bcrypt_cost(EXAMPLE_BCRYPT_COST)
        .open()
        .await?;
    let fleet = register(opened.orchestrator(), hosts).await?;
    let server = opened.start().await?;
    let started = Instant::now();
    let outcomes = boot_and_wait(server.orchestrator(), &server.url(), fleet).await;
    server.shutdown().await?;
    let completed = outcomes
        .iter()
        .filter(|state| **state == Some(RunState::Completed))
        .count();
    println!(
        "{completed} of {hosts} runs completed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if completed != hosts {
        bail!("{} runs did not complete", hosts - completed);
    }
    Ok(())
}

/// One simulated machine: its host's serial, its run.
struct Machine {
    index: usize,
    serial: String,
    run_id: String,
}

/// Registers the hosts and starts their runs (the load harness's
/// registration). Done before the reconcilers start: with them running,
/// SQLite refused some of these writes as "database is locked" (a write
/// racing the dispatcher's).
async fn register(orchestrator: &Orchestrator, hosts: usize) -> anyhow::Result<Vec<Machine>> {
    let runs = register_and_start(orchestrator, "fleet", hosts).await?;
    Ok(runs
        .into_iter()
        .enumerate()
        .map(|(index, (run_id, serial))| Machine {
            index,
            serial,
            run_id,
        })
        .collect())
}

/// Boots each machine's agent when its run waits to boot, and waits for
/// every run to end; returns each run's last state (`None`: it did not
/// end, or its agent failed).
async fn boot_and_wait(
    orchestrator: &Orchestrator,
    url: &str,
    machines: Vec<Machine>,
) -> Vec<Option<RunState>> {
    let mut running = tokio::task::JoinSet::new();
    for machine in machines {
        let orchestrator = orchestrator.clone();
        let url = url.to_string();
        running.spawn(async move {
            let outcome = async {
                // queued until a slot is free, then powered on (by hand:
                // these hosts have no BMC settings)
                let state = wait_for_run(
                    &orchestrator,
                    &machine.run_id,
                    |state| state == RunState::Booting || ended(state),
                    RUN_TIMEOUT,
                )
                .await?;
                if state == RunState::Booting {
                    let token = orchestrator.agent().token_for(&machine.run_id).await?;
                    let report = simulated_agent(
                        machine.index,
                        &url,
                        &machine.run_id,
                        &token,
                        &machine.serial,
                    )
                    .await;
                    if let Some(error) = report.error {
                        bail!("the agent stopped: {error}");
                    }
                }
                wait_for_run(&orchestrator, &machine.run_id, ended, RUN_TIMEOUT).await
            }
            .await;
            match outcome {
                Ok(state) => {
                    println!("{}: run {} {state}", machine.serial, machine.run_id);
                    Some(state)
                }
                Err(error) => {
                    println!("{}: run {}: {error:#}", machine.serial, machine.run_id);
                    None
                }
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = running.join_next().await {
        outcomes.push(joined.unwrap_or_else(|error| {
            println!("a simulated machine panicked: {error}");
            None
        }));
    }
    outcomes
}
