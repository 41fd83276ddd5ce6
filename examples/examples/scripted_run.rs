//! A run scripted through the libraries, one step at a time: register a
//! host with `vetting-core`, start a run, play the host's agent with the
//! agent library's client (`vetting_agent::client::Client`), and read the
//! report.
//!
//! The agent library speaks to the orchestrator only over HTTP (its client
//! is the one the agent binary uses, so the run takes the agent's real
//! path: token checks, body limits, the writer), and the orchestrator has
//! no in-process agent door, so the example serves the HTTP frontend on
//! loopback through `vetting_http::Server`; everything else is library
//! calls. Exits non-zero when the run does not complete.
//!
//! `cargo run -p vetting-examples --example scripted_run`

use std::time::Duration;

use anyhow::{Context, bail};
use vetting_agent::client::Client;
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, NewHost};
use vetting_examples::{EXAMPLE_BCRYPT_COST, ended, loopback_config, wait_for_run};
use vetting_probes::Verdict;
use vetting_probes::protocol::{
    ClaimRequest, Command, HeartbeatRequest, HelloRequest, Measurement, Outcome, PROTOCOL_VERSION,
    Stage, StageResult,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const SERIAL: &str = "SCRIPTED0001";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir().context("creating a data folder")?;
    let server = vetting_http::Server::new(loopback_config(data.path()))
        .bcrypt_cost(EXAMPLE_BCRYPT_COST)
        .start()
        .await?;
    let outcome = script(&server).await;
    server.shutdown().await?;
    outcome
}

async fn script(server: &vetting_http::ServerHandle) -> anyhow::Result<()> {
    let orchestrator = server.orchestrator();
    let actor = Actor::operator("script");

    // 1. the operator's side: a spec profile, a host that refers to it, a run
    orchestrator
        .operator()
        .put_spec_profile("example-1u", "schema_version: 1\n", &actor)
        .await?;
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: "rack2-u07".into(),
                macs: vec!["02:00:00:00:20:07".into()],
                serial: Some(SERIAL.into()),
                spec_profile: Some("example-1u".into()),
                ..Default::default()
            },
            &actor,
        )
        .await?;
    let run = orchestrator.operator().start_run(host.id, &actor).await?;
    println!("run {} for host {}", run.id, host.name);

    // 2. the dispatcher takes a slot and sends the power action (this host
    // has no BMC settings: powered on by hand), so the run waits to boot
    wait_for_run(
        orchestrator,
        &run.id,
        |state| state == RunState::Booting,
        STEP_TIMEOUT,
    )
    .await?;
    // what /ipxe/{mac} would put on the booted host's kernel command line
    let token = orchestrator.agent().token_for(&run.id).await?;

    // 3. the host's side, through the agent library's client
    let client = Client::new(&server.url(), &run.id, &token, Duration::from_secs(10))?;
    client
        .hello(&HelloRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "scripted-run-example".into(),
            addresses: vec!["eth0/192.0.2.7".into()],
            boot_id: None,
        })
        .await?;
    let claim = client
        .claim(&ClaimRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "scripted-run-example".into(),
        })
        .await?;
    println!(
        "claimed: stages {:?}",
        claim
            .stages
            .iter()
            .map(|stage| stage.as_str())
            .collect::<Vec<_>>()
    );
    let mut position = claim.position;
    while let Some(current) = position
        .current
        .filter(|current| position.state == current.stage.as_str())
    {
        let inventory = (current.stage == Stage::InventoryCheck).then(|| inventory_of(SERIAL));
        let answer = client
            .result(&StageResult {
                stage: current.stage,
                attempt: current.attempt,
                outcome: Outcome::Passed,
                verdict: Verdict::pass(),
                hold_reason: None,
                artifacts: Vec::new(),
                inventory: inventory.transpose()?,
                measurements: vec![Measurement {
                    name: format!("{}.example", current.stage.as_str().to_ascii_lowercase()),
                    value: 1.0,
                    unit: "points".into(),
                }],
                wipe_findings: Vec::new(),
            })
            .await
            .with_context(|| format!("the result of {}", current.stage.as_str()))?;
        println!(
            "{}: {:?}, next {}",
            current.stage.as_str(),
            answer.verdict.status,
            answer.position.state
        );
        position = answer.position;
    }

    // 4. the run ends; the agent hears it on its next heartbeat
    let state = wait_for_run(orchestrator, &run.id, ended, STEP_TIMEOUT).await?;
    let heartbeat = client
        .heartbeat(&HeartbeatRequest { current: None })
        .await?;
    println!("run ended {state}; the agent is told {:?}", heartbeat.cmd);

    // 5. the report, as data and as files
    let report = vetting_core::reports::build_report(orchestrator, &run.id).await?;
    for stage in &report.stages {
        println!(
            "  {:<14} attempt {} {}{}",
            stage.stage,
            stage.attempt,
            stage.outcome,
            stage
                .reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        );
    }
    let files = vetting_core::reports::write_reports(orchestrator, &run.id).await?;
    println!(
        "report: {} and {}",
        files.json.display(),
        files.html.display()
    );

    if state != RunState::Completed {
        bail!(
            "the run ended {state}: {}",
            report.run.failure_reason.unwrap_or_default()
        );
    }
    if heartbeat.cmd != Command::Shutdown {
        bail!("the agent was told {:?}, not to shut down", heartbeat.cmd);
    }
    Ok(())
}

/// What the InventoryCheck of this host found: only its identity.
fn inventory_of(serial: &str) -> anyhow::Result<serde_json::Value> {
    let mut inventory = vetting_probes::inventory::Inventory::empty(chrono::Utc::now());
    inventory.system.serial = Some(serial.to_string());
    inventory.system.product = Some("Example Server".into());
    Ok(serde_json::to_value(&inventory)?)
}
