//! A server embedding its own notifier and its own power driver, through
//! `vetting_http::Server`, on loopback.
//!
//! The power driver stands in for a BMC: "powering on" a host starts a
//! simulated machine in this process, which does what a real one does after
//! PXE: it fetches its boot script from `/ipxe/{mac}`, reads the run and
//! token from the kernel command line in it, and runs the agent (the load
//! harness's simulated agent, on the agent library). The notifier collects
//! what the orchestrator tells it. The example registers one host, starts a
//! run, and ends when the notifier has been told the run completed; it
//! exits non-zero when the run does not complete or no notification comes.
//!
//! `cargo run -p vetting-examples --example custom_server`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, Host, NewHost};
use vetting_core::notify::{Notification, NotificationKind, Notifier, NotifyError, Route};
use vetting_core::power::PowerDrivers;
use vetting_core::power::{PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome};
use vetting_examples::{
    EXAMPLE_BCRYPT_COST, ended, loopback_config, simulated_agent, wait_for_run,
};
use vetting_probes::protocol::{CMDLINE_RUN, CMDLINE_TOKEN, CMDLINE_URL};

/// How long the example gives each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the notification may take once the run has completed: the
/// registry's own timeout per delivery, and a margin.
const NOTIFY_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- notifier

/// A notifier that hands every notification to a channel (a real one would
/// post to a chat or a pager).
struct ChannelNotifier {
    sender: mpsc::UnboundedSender<Notification>,
}

#[async_trait::async_trait]
impl Notifier for ChannelNotifier {
    fn name(&self) -> &str {
        "channel"
    }

    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        println!("notified: {notification}");
        self.sender
            .send(notification.clone())
            .map_err(|_| NotifyError::Other("the example stopped listening".into()))
    }
}

// ------------------------------------------------------------ power driver

/// Chooses the driver of a host: here every host is a simulated machine of
/// this process, reached through the server at `url`.
#[derive(Debug)]
struct InProcessMachines {
    url: String,
}

impl PowerDrivers for InProcessMachines {
    fn driver_for(&self, host: &Host) -> Result<Box<dyn PowerDriver>, PowerError> {
        let mac = host
            .macs
            .first()
            .map(|mac| mac.to_string())
            .ok_or_else(|| {
                PowerError::InvalidSettings(format!("host `{}` has no MAC", host.name))
            })?;
        let serial = host.serial.clone().ok_or_else(|| {
            PowerError::InvalidSettings(format!("host `{}` has no serial", host.name))
        })?;
        Ok(Box::new(InProcessBoot {
            url: self.url.clone(),
            mac,
            serial,
        }))
    }
}

/// "Powers on" one simulated machine: starts it in a task of its own and
/// returns at once, as a BMC returns once the host is powering on.
struct InProcessBoot {
    url: String,
    mac: String,
    serial: String,
}

#[async_trait::async_trait]
impl PowerDriver for InProcessBoot {
    fn name(&self) -> &str {
        "in-process"
    }

    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        log.record(
            PowerLogLevel::Info,
            &format!("starting the simulated machine with MAC {}", self.mac),
        );
        let (url, mac, serial) = (self.url.clone(), self.mac.clone(), self.serial.clone());
        tokio::spawn(async move {
            if let Err(error) = simulated_machine(&url, &mac, &serial).await {
                eprintln!("simulated machine {mac}: {error:#}");
            }
        });
        Ok(PowerOutcome::PoweredOn {
            action: "in-process boot".into(),
        })
    }
}

/// What the machine does once powered: PXE (its boot script from
/// `/ipxe/{mac}`, asked again until the run is waiting for it), then the
/// agent with the parameters of the kernel command line.
async fn simulated_machine(url: &str, mac: &str, serial: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    let cmdline = loop {
        let script = http
            .get(format!("{url}/ipxe/{mac}"))
            .send()
            .await
            .context("fetching the boot script")?
            .text()
            .await
            .context("reading the boot script")?;
        if let Some(line) = script
            .lines()
            .find(|line| line.trim_start().starts_with("kernel "))
        {
            break line.to_string();
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no boot script for {mac} within {} s",
                STEP_TIMEOUT.as_secs()
            );
        }
        // a machine whose run is not waiting yet boots from disk and comes
        // back through DHCP a moment later
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let params = vetting_agent::params::parse_cmdline(&cmdline);
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .with_context(|| format!("`{name}` is not on the kernel command line"))
    };
    let (agent_url, run_id, token) = (
        param(CMDLINE_URL)?,
        param(CMDLINE_RUN)?,
        param(CMDLINE_TOKEN)?,
    );
    println!("machine {mac} booted for run {run_id}");
    let report = simulated_agent(0, &agent_url, &run_id, &token, serial).await;
    if let Some(error) = report.error {
        bail!("the agent stopped: {error}");
    }
    println!(
        "machine {mac}: agent done after {} stages, told {}",
        report.stages_done, report.final_state
    );
    Ok(())
}

// ------------------------------------------------------------------ main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir().context("creating a data folder")?;
    // bound first, so that the power driver knows the URL to boot from
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening on 127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (sender, mut notifications) = mpsc::unbounded_channel();
    let server = vetting_http::Server::new(loopback_config(data.path()))
        .listener(listener)
        .bcrypt_cost(EXAMPLE_BCRYPT_COST)
        .power(Arc::new(InProcessMachines { url: url.clone() }))
        .notifier(
            "example-channel",
            Arc::new(ChannelNotifier { sender }),
            Route::all(),
        )
        .start()
        .await?;
    println!("serving on {}", server.url());
    let orchestrator = server.orchestrator().clone();

    let actor = Actor::operator("example");
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: "rack1-u01".into(),
                macs: vec!["02:00:00:00:10:01".into()],
                serial: Some("EXAMPLE0001".into()),
                ..Default::default()
            },
            &actor,
        )
        .await?;
    let run = orchestrator.operator().start_run(host.id, &actor).await?;
    println!("run {} started for host {}", run.id, host.name);

    let outcome = async {
        let state = wait_for_run(&orchestrator, &run.id, ended, STEP_TIMEOUT).await?;
        if state != RunState::Completed {
            let run = orchestrator.operator().get_run(&run.id).await?;
            bail!(
                "the run ended {state}: {}",
                run.failure_reason.unwrap_or_default()
            );
        }
        println!("run {} completed", run.id);
        let told = tokio::time::timeout(NOTIFY_WAIT, async {
            while let Some(notification) = notifications.recv().await {
                if notification.kind == NotificationKind::RunCompleted
                    && notification.run_id == run.id
                {
                    return Some(notification);
                }
            }
            None
        })
        .await;
        match told {
            Ok(Some(notification)) => {
                println!("the notifier was told: {notification}");
                Ok(())
            }
            _ => bail!(
                "the notifier was not told that run {} completed within {} s",
                run.id,
                NOTIFY_WAIT.as_secs()
            ),
        }
    }
    .await;
    server.shutdown().await?;
    outcome
}
