//! The server side of the harness, each in its own process: `serve` opens
//! the orchestrator through `vetting_http::Server` (the server `vetting
//! serve` runs), seeds N hosts whose runs wait in `Booting`
//! for their agent, writes their tokens to a file, and serves on
//! 127.0.0.1:0; `bare` serves the heartbeat route with a fixed JSON body
//! (the baseline). Both print `READY {url}` on stdout when they accept
//! requests, and stop on SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use vetting_core::config::{Config, Secret};
use vetting_core::machine::{Event, RunState};
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::runs::EventContext;

/// The secret key of the harness's orchestrators (a throwaway data folder
/// each time; fixed so the verifier can open the same store).
pub const HARNESS_KEY_HEX: &str =
    "6c6f61642d6861726e6573732d6b65792d6e6f742d666f722d70726f64756374";

/// What `serve` seeded: the URL and one entry per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seeded {
    pub url: String,
    pub runs: Vec<SeededRun>,
}

/// One seeded run, waiting in `Booting` for its agent's hello and claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeededRun {
    pub run_id: String,
    pub token: String,
    /// The host's serial (the simulated inventory carries it).
    pub serial: String,
}

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub hosts: usize,
    pub bcrypt_cost: u32,
    pub seeded_file: PathBuf,
}

/// The orchestrator config of the harness: the defaults, a dispatcher cap
/// that lets every seeded run be in flight, an ephemeral iperf3 port.
pub fn harness_config(data_dir: PathBuf, database_url: Option<String>, hosts: usize) -> Config {
    let mut config = Config {
        data_dir,
        database_url: database_url.map(Secret),
        secret_key: Some(Secret(HARNESS_KEY_HEX.into())),
        ..Config::default()
    };
    config.dispatcher.max_in_flight = hosts.max(1) as u32;
    config.iperf.port = 0;
    config
}

/// `serve`: seeds, then serves until SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let mut config = harness_config(
        options.data_dir.clone(),
        options.database_url.clone(),
        options.hosts,
    );
    config.listen = ([127, 0, 0, 1], 0).into();
    config.public_url = None;
    let server = vetting_http::Server::new(config)
        .bcrypt_cost(options.bcrypt_cost)
        .open()
        .await?;
    let url = server.url();
    let runs = seed(server.orchestrator(), options.hosts).await?;
    let seeded = Seeded {
        url: url.clone(),
        runs,
    };
    let text = serde_json::to_string(&seeded).context("writing the seeded runs")?;
    std::fs::write(&options.seeded_file, text)
        .with_context(|| format!("writing {}", options.seeded_file.display()))?;

    let server = server.start().await?;
    println!("READY {url}");
    server.run_until(terminated()).await?;
    Ok(())
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Registers `hosts` hosts named `{prefix}-000000`, ... (serials
/// `{PREFIX}000000`, ...) and starts a run for each; returns each run's id
/// and its host's serial. Call it before the reconcilers start (with
/// `vetting_http::Server::open`): on SQLite a registration racing the
/// dispatcher's writes can be refused as "database is locked".
pub async fn register_and_start(
    orchestrator: &Orchestrator,
    prefix: &str,
    hosts: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let actor = Actor::operator(prefix);
    let mut runs = Vec::with_capacity(hosts);
    for index in 0..hosts {
        let serial = format!("{}{index:06}", prefix.to_ascii_uppercase());
        let host = orchestrator
            .operator()
            .register_host(
                NewHost {
                    name: format!("{prefix}-{index:06}"),
                    macs: vec![format!(
                        "02:1a:{:02x}:{:02x}:{:02x}:01",
                        (index >> 16) & 0xff,
                        (index >> 8) & 0xff,
                        index & 0xff
                    )],
                    serial: Some(serial.clone()),
                    ..Default::default()
                },
                &actor,
            )
            .await
            .with_context(|| format!("registering host {index}"))?;
        let run = orchestrator
            .operator()
            .start_run(host.id, &actor)
            .await
            .with_context(|| format!("starting the run of host {index}"))?;
        runs.push((run.id, serial));
    }
    Ok(runs)
}

/// Registers `hosts` hosts, starts a run for each, dispatches them and
/// sends the (manual) power action, so each run waits in `Booting`.
async fn seed(orchestrator: &Orchestrator, hosts: usize) -> anyhow::Result<Vec<SeededRun>> {
    let runs = register_and_start(orchestrator, "load", hosts).await?;
    orchestrator
        .runs()
        .dispatch()
        .await
        .context("dispatching")?;
    let mut seeded = Vec::with_capacity(hosts);
    for (run_id, serial) in runs {
        orchestrator
            .runs()
            .apply(
                &run_id,
                Event::PowerOnSent,
                EventContext {
                    actor: Some(Actor("power".into())),
                    expected_state: Some(RunState::WaitingWoL),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("powering on run {run_id}"))?;
        let token = orchestrator.agent().token_for(&run_id).await?;
        seeded.push(SeededRun {
            run_id,
            token,
            serial,
        });
    }
    Ok(seeded)
}

/// `bare`: the baseline, a bare axum handler on the heartbeat route
/// answering a fixed heartbeat response.
pub async fn bare() -> anyhow::Result<()> {
    use axum::body::Bytes;
    use axum::routing::post;
    use vetting_probes::protocol::{Command, Endpoint, HeartbeatResponse, RunPosition};

    let body = Bytes::from(
        serde_json::to_vec(&HeartbeatResponse {
            cmd: Command::Continue,
            position: RunPosition {
                state: "Booting".into(),
                current: None,
            },
            override_flags: Vec::new(),
            acknowledged_findings: Vec::new(),
        })
        .context("encoding the fixed answer")?,
    );
    let heartbeat = format!(
        "{}{}",
        vetting_probes::protocol::API_PREFIX,
        Endpoint::Heartbeat.route()
    );
    let app = axum::Router::new().route(
        &heartbeat,
        post(move |_request: Bytes| {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening on 127.0.0.1:0")?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    println!("READY http://{local}");
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated())
        .await
        .context("serving HTTP")?;
    Ok(())
}
