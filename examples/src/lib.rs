//! What the embedding examples in `examples/examples/` share: a config for
//! a throwaway orchestrator on loopback, waiting for a run's state, and a
//! simulated host (the load harness's agent, built on the agent library).
//!
//! - `custom_server`: a server with a custom notifier and a custom power
//!   driver that "boots" the host in-process;
//! - `scripted_run`: a run scripted through the libraries, step by step;
//! - `fleet`: N simulated agents against one server (`--hosts N`).
//!
//! Run one with `cargo run -p vetting-examples --example custom_server`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use vetting_benches::load::agents::{AgentReport, Phases, Traffic, run_agent};
use vetting_benches::load::server::SeededRun;
use vetting_benches::load::stats::Recorder;
use vetting_core::config::Config;
use vetting_core::machine::RunState;
use vetting_core::orchestrator::Orchestrator;

/// An orchestrator config for an example: data under `data_dir`, HTTP on
/// an ephemeral loopback port, no iperf3 server (the simulated hosts run
/// no network test), the reconcilers every 100 ms.
pub fn loopback_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.listen = ([127, 0, 0, 1], 0).into();
    config.public_url = None;
    config.pxe.enabled = false;
    config.iperf.enabled = false;
    config.iperf.port = 0;
    config.dispatcher.interval_ms = 100;
    config
}

/// The bcrypt cost of the examples' run tokens: cheap, since the examples
/// start many runs in seconds (production keeps the default).
pub const EXAMPLE_BCRYPT_COST: u32 = 4;

/// Waits until the run's state satisfies `done` and returns it; fails
/// after `timeout`. Wakes on every event of the hub, re-reading the run
/// from the database (the hub is a hint, the database the truth).
pub async fn wait_for_run(
    orchestrator: &Orchestrator,
    run_id: &str,
    done: impl Fn(RunState) -> bool,
    timeout: Duration,
) -> anyhow::Result<RunState> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = orchestrator.hub().subscribe();
    loop {
        let state = orchestrator.operator().get_run(run_id).await?.state;
        if done(state) {
            return Ok(state);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "run {run_id} is still in {state} after {} s",
                timeout.as_secs()
            );
        }
        let _ = tokio::time::timeout_at(deadline, events.recv()).await;
    }
}

/// Whether a run has ended, or is held for an operator.
pub fn ended(state: RunState) -> bool {
    state.is_terminal() || state == RunState::FailedHolding
}

/// A simulated host's agent: the load harness's scripted agent
/// (`vetting_benches::load::agents::run_agent`, on the agent library's
/// client and outboxes) at a gentle pace: every agent stage passes after
/// one second's worth of log lines and readings and an artifact, the
/// inventory carries `serial`. Returns what it sent and the last state it
/// was told.
pub async fn simulated_agent(
    index: usize,
    url: &str,
    run_id: &str,
    token: &str,
    serial: &str,
) -> AgentReport {
    let traffic = Traffic {
        heartbeat_every: Duration::from_secs(1),
        log_lines_per_sec: 5,
        readings_per_sec: 2,
        stage_secs: 0.01,
        artifact_bytes: 4 * 1024,
        inventory_artifact_bytes: 16 * 1024,
        request_timeout: Duration::from_secs(10),
    };
    // no measured window: the agent starts producing at once
    let (_start_sender, start) = tokio::sync::watch::channel(true);
    let phases = Phases {
        claimed: Arc::default(),
        start,
        stop_at: Arc::default(),
    };
    run_agent(
        index,
        url.to_string(),
        SeededRun {
            run_id: run_id.to_string(),
            token: token.to_string(),
            serial: serial.to_string(),
        },
        traffic,
        Arc::new(Recorder::new()),
        phases,
    )
    .await
}
