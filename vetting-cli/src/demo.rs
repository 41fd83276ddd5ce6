//! `vetting demo`: the main job without server hardware. Starts the
//! orchestrator on the embedded default, registers this machine with a spec
//! that expects one scratch disk (a loop device over a file where one can
//! be made, else the file itself), starts a local agent that vets this
//! machine without destroying anything else, waits for the run to end and
//! prints the run id, the final state and the report paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use vetting_core::config::Config;
use vetting_core::machine::RunState;
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;

/// Options of `vetting demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Size of the scratch disk in MiB.
    pub scratch_mib: u64,
    /// Seconds of CPU/memory stress.
    pub stress_secs: u64,
    /// Give up after this many seconds.
    pub timeout_secs: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scratch_mib: 64,
            stress_secs: 10,
            timeout_secs: 900,
        }
    }
}

/// A loop device over the scratch file, detached on drop.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

fn attach_loop(file: &Path) -> Option<LoopDevice> {
    let output = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(file)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let device = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (!device.is_empty()).then_some(LoopDevice(device))
}

/// The agent binary next to this one.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the vetting binary")?;
    let candidate = me.with_file_name("vetting-agent");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "vetting-agent is not next to {} (build it: cargo build -p vetting-agent)",
        me.display()
    )
}

/// Runs the demo; returns whether the run completed.
pub async fn run(mut config: Config, options: DemoOptions) -> anyhow::Result<bool> {
    // an ephemeral port, announced to the agent as it is bound
    config.listen.set_port(0);
    config.public_url = None;
    // the host is this machine: no DHCP/TFTP for the vetting LAN
    config.pxe.enabled = false;
    config.iperf.port = 0;
    config.stages.cpu_stress.duration_secs = options.stress_secs;
    config.stages.cpu_stress.memory_share = 0.05;
    config.stages.network.duration_secs = 2;
    config.stages.smart.run_short_self_test = false;
    config.stages.storage.max_secs_per_disk = 120;
    config.stages.storage.ssd_verify_share = 0.25;
    config.runs.hold_on_failure = false;
    config.dispatcher.interval_ms = 200;
    let data_dir = config.data_dir.clone();
    let server = vetting_http::Server::new(config).start().await?;
    let orchestrator = server.orchestrator().clone();
    let url = server.url();

    // the scratch disk: a zeroed file, behind a loop device where possible
    let demo_dir = data_dir.join("demo");
    std::fs::create_dir_all(&demo_dir).context("creating the demo folder")?;
    let scratch = demo_dir.join(format!("scratch-{}.img", uuid_suffix()));
    let file = std::fs::File::create(&scratch)
        .with_context(|| format!("creating {}", scratch.display()))?;
    file.set_len(options.scratch_mib * 1024 * 1024)
        .context("sizing the scratch file")?;
    drop(file);
    let loop_device = attach_loop(&scratch);
    let disk_arg = match &loop_device {
        Some(device) => device.0.clone(),
        None => scratch.display().to_string(),
    };
    let disk_name = disk_arg.trim_start_matches("/dev/").to_string();
    crate::outln!(
        "scratch disk: {disk_arg} ({} MiB{})",
        options.scratch_mib,
        if loop_device.is_some() {
            ", a loop device over a file"
        } else {
            ", a file: no loop device could be made, so Storage is skipped"
        }
    );

    let actor = Actor::operator("demo");
    let profile = format!("demo-{}", uuid_suffix());
    let spec = if loop_device.is_some() {
        format!(
            "schema_version: 1\ndisks:\n  devices:\n    - size_bytes: {}\n      count: 1\n",
            options.scratch_mib * 1024 * 1024
        )
    } else {
        "schema_version: 1\n".to_string()
    };
    orchestrator
        .operator()
        .put_spec_profile(&profile, &spec, &actor)
        .await
        .context("storing the demo spec")?;
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: format!("demo-{}", uuid_suffix()),
                macs: vec![format!("02:00:00:{}", random_mac_tail())],
                spec_profile: Some(profile),
                ..Default::default()
            },
            &actor,
        )
        .await
        .context("registering this machine")?;
    let run = orchestrator
        .operator()
        .start_run(host.id, &actor)
        .await
        .context("starting the run")?;
    crate::outln!("run {}", run.id);

    // wait for the dispatcher to put the run in Booting, then boot the agent
    wait_for(
        &orchestrator,
        &run.id,
        |state| state == RunState::Booting,
        30,
    )
    .await?;
    let token = orchestrator.agent().token_for(&run.id).await?;
    let mut agent = tokio::process::Command::new(agent_binary()?)
        .arg("run")
        .args(["--url", &url])
        .args(["--run", &run.id])
        .args(["--token", &token])
        .arg("--local")
        .arg("--allow-loop-devices")
        .args(["--disk-filter", &disk_name])
        .args(["--work-dir", &demo_dir.display().to_string()])
        .kill_on_drop(true)
        .spawn()
        .context("starting the local agent")?;

    let ended = wait_for(
        &orchestrator,
        &run.id,
        |state| state.is_terminal() || state == RunState::FailedHolding,
        options.timeout_secs,
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), agent.wait()).await;
    let _ = agent.start_kill();
    let final_state = orchestrator.operator().get_run(&run.id).await?.state;
    server.shutdown().await?;
    drop(loop_device);
    let _ = std::fs::remove_file(&scratch);
    ended?;
    // the orchestrator writes the reports of an ended run off the request
    // path; written here too so that they are on disk before the process
    // exits, whatever the run's outcome (each file is replaced atomically)
    let reports = vetting_core::reports::write_reports(&orchestrator, &run.id)
        .await
        .context("writing the reports")?;
    crate::outln!("final state: {final_state}");
    crate::outln!("report (HTML): {}", reports.html.display());
    crate::outln!("report (JSON): {}", reports.json.display());
    Ok(final_state == RunState::Completed)
}

async fn wait_for(
    orchestrator: &Orchestrator,
    run_id: &str,
    done: impl Fn(RunState) -> bool,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let mut events = orchestrator.hub().subscribe();
    loop {
        let state = orchestrator.operator().get_run(run_id).await?.state;
        if done(state) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("run {run_id} is still in {state} after {timeout_secs} s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    }
}

fn uuid_suffix() -> String {
    format!("{:08x}", rand_u32())
}

fn random_mac_tail() -> String {
    let value = rand_u32();
    format!(
        "{:02x}:{:02x}:{:02x}",
        (value >> 16) & 0xff,
        (value >> 8) & 0xff,
        value & 0xff
    )
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
