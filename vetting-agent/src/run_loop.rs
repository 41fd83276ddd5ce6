//! The run loop of `vetting-agent run`: hello → claim (retried with
//! backoff until the orchestrator answers) → for each stage from the
//! claim's position: run the stage on a blocking thread, stream its log
//! lines and sensor samples through the outboxes, heartbeat on a separate
//! task and obey its `cmd`, upload the raw outputs, then post the result
//! (which names them) and go where its answer says.
//!
//! Commands: `continue` keeps going; `abort` kills the running tool's
//! process group, stops testing and heartbeats slowly until `retry_stage`
//! (the stage of the position, with `override_flags` and the
//! acknowledged wipe-probe findings) or `shutdown`;
//! `shutdown` kills any tool still running, flushes the logs and powers
//! off (or, with `--local` / `--no-poweroff`, returns so the process exits
//! 0).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vetting_probes::inventory::Inventory;
use vetting_probes::protocol::{
    ArtifactQuery, ClaimRequest, ClaimResponse, Command, HeartbeatRequest, HeartbeatResponse,
    HelloRequest, LogBatch, LogLine, PROTOCOL_VERSION, RunPosition, SensorBatch, SensorSample,
    Stage, StageRef, StageResult,
};
use vetting_probes::runner::{ToolCommand, run_tool};

use crate::client::{Backoff, Client, ClientError};
use crate::outbox::{DEFAULT_CAPACITY, LogSink, Outbox, SensorSink, run_flusher};
use crate::params::{AgentConfig, RunArgs};
use crate::stages::{self, CancelToken, LocalSettings, StageContext, StageReport};

/// The agent's version, as sent in hello and claim.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the logs may take to drain at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// The override flag that acknowledges the wipe probe's hold.
pub const OVERRIDE_WIPE: &str = "override_wipe";

/// Why the run loop could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the orchestrator refused the claim: {0}")]
    ClaimRefused(ClientError),
}

/// How the run loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// `shutdown` was obeyed; the machine is powering off (or, in local
    /// mode, the process should exit 0).
    Shutdown,
}

/// What an operator's override arms for a stage attempt: the flags
/// (`override_wipe`) and the wipe-probe findings acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Overrides {
    flags: Vec<String>,
    acknowledged_findings: Vec<String>,
}

impl Overrides {
    fn of(answer: &HeartbeatResponse) -> Overrides {
        Overrides {
            flags: answer.override_flags.clone(),
            acknowledged_findings: answer.acknowledged_findings.clone(),
        }
    }

    /// ` with override_wipe (acknowledged: id1, id2)`, or nothing.
    fn describe(&self) -> String {
        if self.flags.is_empty() {
            return String::new();
        }
        let acknowledged = if self.acknowledged_findings.is_empty() {
            String::new()
        } else {
            format!(" (acknowledged: {})", self.acknowledged_findings.join(", "))
        };
        format!(" with {}{acknowledged}", self.flags.join(", "))
    }
}

/// What the agent does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Run {
        stage: StageRef,
        overrides: Overrides,
    },
    /// Wait for the orchestrator's word; `held` heartbeats slowly.
    Idle {
        held: bool,
    },
    Shutdown,
}

/// What the heartbeat task reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HeartbeatState {
    current: Option<StageRef>,
    held: bool,
}

/// The command a position implies when no command came with it.
fn command_of(position: &RunPosition) -> Command {
    match position.state.as_str() {
        "FailedHolding" => Command::Abort,
        "Completed" | "Released" | "Cancelled" | "Failed" => Command::Shutdown,
        _ => Command::Continue,
    }
}

/// Where a position and command send the agent.
fn decide(position: &RunPosition, cmd: Command, overrides: &Overrides) -> Next {
    match cmd {
        Command::Shutdown => Next::Shutdown,
        Command::Abort => Next::Idle { held: true },
        Command::Continue | Command::RetryStage => {
            if position.state == "FailedHolding" {
                return Next::Idle { held: true };
            }
            match position.current {
                Some(stage) if position.state == stage.stage.as_str() => Next::Run {
                    stage,
                    overrides: overrides.clone(),
                },
                _ => Next::Idle { held: false },
            }
        }
    }
}

/// Whether `next` runs a stage attempt that is over: refused for good, or
/// one of `finished` (results taken). Attempts are never reused (a retry
/// is a new attempt), so such an instruction can only come from a stale
/// answer.
fn runs_an_attempt_that_is_over(
    next: &Next,
    refused: Option<StageRef>,
    finished: &[StageRef],
) -> bool {
    match next {
        Next::Run { stage, .. } => refused == Some(*stage) || finished.contains(stage),
        _ => false,
    }
}

/// The addresses of this host, for the operator (no loopback).
fn host_addresses() -> Vec<String> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addresses: Vec<String> = interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            let ip: std::net::IpAddr = if let Some(v4) = address.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                return None;
            };
            (!ip.is_loopback()).then(|| format!("{}/{ip}", interface.interface_name))
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// Retries `operation` while its error is retryable (backoff 100 ms
/// doubling to 5 s); a final error is returned.
pub async fn retry<T, F, Fut>(what: &str, mut operation: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::standard();
    let mut warned = false;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() => {
                if !warned {
                    tracing::warn!(what, "{error}; retrying");
                    warned = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The agent of one run, once it has claimed it.
struct Agent {
    config: AgentConfig,
    client: Client,
    claim: ClaimResponse,
    logs: Outbox<LogLine>,
    sensors: Outbox<SensorSample>,
    heartbeat: watch::Sender<HeartbeatState>,
    commands: watch::Receiver<Option<HeartbeatResponse>>,
    inventory: Option<Inventory>,
    /// A stage attempt whose result the orchestrator refused for good: not
    /// run again on a stale instruction.
    refused: Option<StageRef>,
    /// The stage attempts whose results the orchestrator took. The
    /// orchestrator never names one of them again (a retry is a new
    /// attempt), so an instruction naming one is stale: a heartbeat answered
    /// before the result was taken but seen after it.
    finished: Vec<StageRef>,
}

/// Runs the agent until the orchestrator says `shutdown`.
pub async fn run(config: AgentConfig) -> Result<RunEnd, AgentError> {
    let client = Client::new(
        &config.url,
        &config.run_id,
        &config.token,
        config.request_timeout,
    )?;
    tracing::info!(url = %config.url, run = %config.run_id, "vetting-agent {AGENT_VERSION} starting");
    let hello = HelloRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_string(),
        addresses: host_addresses(),
        boot_id: boot_id(),
    };
    match retry("hello", || client.hello(&hello)).await {
        Ok(position) => tracing::info!(state = %position.state, "hello answered"),
        // A refused hello (e.g. the run is already past Booting after an
        // agent restart) is no reason not to claim.
        Err(error) => tracing::warn!("{error}"),
    }
    let claim_request = ClaimRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_string(),
    };
    let claim = retry("claim", || client.claim(&claim_request))
        .await
        .map_err(AgentError::ClaimRefused)?;
    tracing::info!(
        state = %claim.position.state,
        current = ?claim.position.current,
        "claimed: {} stage(s), next log seq {}, next sensor seq {}",
        claim.stages.len(),
        claim.next_log_seq,
        claim.next_sensor_seq
    );
    if let Err(error) = std::fs::create_dir_all(&config.work_dir) {
        tracing::warn!(
            "cannot create the work folder {}: {error}",
            config.work_dir.display()
        );
    }

    let logs: Outbox<LogLine> = Outbox::new(claim.next_log_seq, DEFAULT_CAPACITY);
    let sensors: Outbox<SensorSample> = Outbox::new(claim.next_sensor_seq, DEFAULT_CAPACITY);
    let mut background = Vec::new();
    {
        let client = client.clone();
        background.push(tokio::spawn(run_flusher(
            logs.clone(),
            "log",
            move |lines| {
                let client = client.clone();
                async move { client.log(&LogBatch { lines }).await }
            },
        )));
    }
    {
        let client = client.clone();
        background.push(tokio::spawn(run_flusher(
            sensors.clone(),
            "sensor",
            move |samples| {
                let client = client.clone();
                async move { client.sensor(&SensorBatch { samples }).await }
            },
        )));
    }
    let (heartbeat, heartbeat_state) = watch::channel(HeartbeatState::default());
    let (command_sender, commands) = watch::channel(None);
    background.push(tokio::spawn(heartbeat_loop(
        client.clone(),
        heartbeat_state,
        Duration::from_secs(claim.heartbeat_interval_secs.max(1)),
        Duration::from_secs(claim.slow_heartbeat_interval_secs.max(1)),
        command_sender,
    )));

    let mut agent = Agent {
        config,
        client,
        logs,
        sensors,
        heartbeat,
        commands,
        inventory: None,
        refused: None,
        finished: Vec::new(),
        claim,
    };
    let position = agent.claim.position.clone();
    let mut next = decide(
        &position,
        command_of(&position),
        &if agent.claim.params.storage.override_wipe {
            Overrides {
                flags: vec![OVERRIDE_WIPE.to_string()],
                acknowledged_findings: agent.claim.params.storage.acknowledged_findings.clone(),
            }
        } else {
            Overrides::default()
        },
    );
    let end = loop {
        next = match next {
            Next::Run { stage, overrides } => agent.run_stage(stage, &overrides).await,
            Next::Idle { held } => agent.idle(held).await,
            Next::Shutdown => break agent.shutdown().await,
        };
    };
    for task in background {
        task.abort();
    }
    Ok(end)
}

/// Heartbeats every `fast` (`slow` while held), at once when the state
/// changes, publishing every answer.
async fn heartbeat_loop(
    client: Client,
    mut state: watch::Receiver<HeartbeatState>,
    fast: Duration,
    slow: Duration,
    answers: watch::Sender<Option<HeartbeatResponse>>,
) {
    let mut failing = false;
    loop {
        let current = state.borrow_and_update().clone();
        let request = HeartbeatRequest {
            current: current.current,
        };
        match client.heartbeat(&request).await {
            Ok(answer) => {
                if failing {
                    tracing::info!("heartbeats answered again");
                    failing = false;
                }
                answers.send_replace(Some(answer));
            }
            Err(error) => {
                if !failing {
                    tracing::warn!("{error}");
                    failing = true;
                }
            }
        }
        let interval = if current.held { slow } else { fast };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

impl Agent {
    fn log_sink(&self, stage: Option<StageRef>) -> LogSink {
        LogSink::new(self.logs.clone(), stage)
    }

    fn set_heartbeat(&self, current: Option<StageRef>, held: bool) {
        self.heartbeat
            .send_replace(HeartbeatState { current, held });
    }

    /// Whether `next` runs a stage attempt that is over (its result was
    /// taken, or refused for good): an instruction from a stale answer.
    fn is_stale(&self, next: &Next) -> bool {
        runs_an_attempt_that_is_over(next, self.refused, &self.finished)
    }

    /// The latest heartbeat answer, if a new one came since the last look.
    fn new_command(&mut self) -> Option<HeartbeatResponse> {
        if self.commands.has_changed().unwrap_or(false) {
            self.commands.borrow_and_update().clone()
        } else {
            None
        }
    }

    /// Runs one stage attempt to its result; returns where to go next.
    async fn run_stage(&mut self, stage: StageRef, overrides: &Overrides) -> Next {
        let log = self.log_sink(Some(stage));
        self.set_heartbeat(Some(stage), false);
        // Answers from before this stage started are not about it.
        self.commands.borrow_and_update();
        let mut params = self.claim.params.clone();
        if overrides.flags.iter().any(|flag| flag == OVERRIDE_WIPE) {
            params.storage.override_wipe = true;
            params.storage.acknowledged_findings = overrides.acknowledged_findings.clone();
        }
        log.agent_async(format!(
            "stage {} attempt {} starting{}",
            stage.stage,
            stage.attempt,
            overrides.describe()
        ))
        .await;
        let cancel = CancelToken::new();
        let context = StageContext {
            stage,
            params,
            thresholds: self.claim.thresholds.clone(),
            local: LocalSettings {
                work_dir: self.config.work_dir.clone(),
                disks: self.config.disks.clone(),
                sys_root: self.config.sys_root.clone(),
                dev_root: self.config.dev_root.clone(),
            },
            log: log.clone(),
            sensors: SensorSink::new(self.sensors.clone(), Some(stage)),
            cancel: cancel.clone(),
            inventory: self.inventory.clone(),
        };
        let context = Arc::new(context);
        let mut task = {
            let context = Arc::clone(&context);
            tokio::task::spawn_blocking(move || stages::run_stage(&context))
        };
        let mut interrupted: Option<Next> = None;
        let outcome = loop {
            tokio::select! {
                joined = &mut task => break joined,
                changed = self.commands.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let Some(answer) = self.commands.borrow_and_update().clone() else {
                        continue;
                    };
                    let next = decide(&answer.position, answer.cmd, &Overrides::of(&answer));
                    let stop = match &next {
                        Next::Shutdown | Next::Idle { held: true } => true,
                        Next::Run { stage: other, .. } => {
                            *other != stage && !self.is_stale(&next)
                        }
                        Next::Idle { held: false } => false,
                    };
                    if stop && interrupted.is_none() {
                        log.agent_async(format!(
                            "{:?} from the orchestrator (state {}): stopping {} and killing its tools",
                            answer.cmd, answer.position.state, stage.stage
                        ))
                        .await;
                        cancel.cancel();
                        interrupted = Some(next);
                    }
                }
            }
        };
        if let Some(next) = interrupted {
            return next;
        }
        let report = match outcome {
            Ok(Ok(report)) => report,
            Ok(Err(stages::Cancelled)) => StageReport::failed("the stage was cancelled"),
            Err(error) => StageReport::failed(format!("the stage runner crashed: {error}")),
        };
        if stage.stage == Stage::InventoryCheck
            && let Some(json) = &report.inventory
        {
            self.inventory = serde_json::from_value(json.clone()).ok();
        }
        log.agent_async(format!(
            "stage {} attempt {}: {:?}{}",
            stage.stage,
            stage.attempt,
            report.outcome,
            report
                .hold_reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ))
        .await;
        self.post_report(stage, report, &log).await
    }

    /// Uploads the artifacts, waits until the stage's log lines and samples
    /// are stored, posts the result, and decides from its answer.
    async fn post_report(&mut self, stage: StageRef, report: StageReport, log: &LogSink) -> Next {
        let mut references = Vec::new();
        for artifact in &report.artifacts {
            let upload = ArtifactQuery::for_stage(
                artifact.name.clone(),
                artifact.tool.map(|tool| tool.name().to_string()),
                stage,
                artifact.subject.clone(),
            );
            let client = self.client.clone();
            let body = artifact.body.clone();
            let sent = self
                .retry_unless_shutdown(&format!("artifact {}", artifact.name), move || {
                    let client = client.clone();
                    let upload = upload.clone();
                    let body = body.clone();
                    async move { client.artifact(&upload, body).await }
                })
                .await;
            match sent {
                Ok(Ok(_)) => references.push(artifact.reference()),
                Ok(Err(error)) => {
                    log.agent_async(format!(
                        "artifact {} was refused and is left out of the result: {error}",
                        artifact.name
                    ))
                    .await;
                }
                Err(next) => return next,
            }
        }
        // Every line of the stage is stored before its result (the run may
        // end with it, and then the log is closed).
        if let Err(next) = self.wait_drained().await {
            return next;
        }
        let result = StageResult {
            stage: stage.stage,
            attempt: stage.attempt,
            outcome: report.outcome,
            verdict: report.verdict,
            hold_reason: report.hold_reason,
            artifacts: references,
            inventory: report.inventory,
            measurements: report.measurements,
            wipe_findings: report.wipe_findings,
        };
        let client = self.client.clone();
        let posted = self
            .retry_unless_shutdown("result", move || {
                let client = client.clone();
                let result = result.clone();
                async move { client.result(&result).await }
            })
            .await;
        match posted {
            Ok(Ok(answer)) => {
                tracing::info!(
                    state = %answer.position.state,
                    cmd = ?answer.cmd,
                    "result of {} taken: orchestrator verdict {}",
                    stage.stage,
                    answer.verdict.status
                );
                if !self.finished.contains(&stage) {
                    self.finished.push(stage);
                }
                let next = decide(&answer.position, answer.cmd, &Overrides::default());
                self.note_next(&next);
                next
            }
            Ok(Err(error)) => match error.position() {
                Some(position) => {
                    tracing::warn!("{error}: following the orchestrator's position");
                    let next = decide(position, command_of(position), &Overrides::default());
                    self.note_next(&next);
                    next
                }
                None => {
                    tracing::error!("{error}");
                    self.refused = Some(stage);
                    Next::Idle { held: false }
                }
            },
            Err(next) => next,
        }
    }

    fn note_next(&mut self, next: &Next) {
        // The heartbeat must not report a finished stage as current.
        let current = match next {
            Next::Run { stage, .. } => Some(*stage),
            _ => None,
        };
        self.set_heartbeat(current, false);
    }

    /// Retries a request while it is retryable, unless the orchestrator
    /// says `shutdown` meanwhile (then `Err(Next::Shutdown)`).
    async fn retry_unless_shutdown<T, F, Fut>(
        &mut self,
        what: &str,
        mut operation: F,
    ) -> Result<Result<T, ClientError>, Next>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = Backoff::standard();
        let mut warned = false;
        loop {
            match operation().await {
                Ok(value) => return Ok(Ok(value)),
                Err(error) if error.is_retryable() => {
                    if !warned {
                        tracing::warn!(what, "{error}; retrying");
                        warned = true;
                    }
                    if let Some(answer) = self.new_command()
                        && answer.cmd == Command::Shutdown
                    {
                        return Err(Next::Shutdown);
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Ok(Err(error)),
            }
        }
    }

    /// Waits until the log and sensor outboxes are drained, unless the
    /// orchestrator says `shutdown` meanwhile.
    async fn wait_drained(&mut self) -> Result<(), Next> {
        loop {
            let logs = self.logs.drained(Some(Duration::from_secs(1))).await;
            let sensors = self.sensors.drained(Some(Duration::from_secs(1))).await;
            if logs && sensors {
                return Ok(());
            }
            if let Some(answer) = self.new_command()
                && answer.cmd == Command::Shutdown
            {
                return Err(Next::Shutdown);
            }
        }
    }

    /// Waits for the orchestrator's word, heartbeating (slowly when held).
    async fn idle(&mut self, mut held: bool) -> Next {
        let log = self.log_sink(None);
        if held {
            log.agent_async(
                "holding: testing stopped, the host stays up for the operator; waiting for retry_stage or shutdown",
            )
            .await;
        }
        self.set_heartbeat(None, held);
        loop {
            if self.commands.changed().await.is_err() {
                // The heartbeat task is gone: nothing will ever come.
                return Next::Shutdown;
            }
            let Some(answer) = self.commands.borrow_and_update().clone() else {
                continue;
            };
            match decide(&answer.position, answer.cmd, &Overrides::of(&answer)) {
                Next::Idle { held: now_held } => {
                    if now_held != held {
                        held = now_held;
                        self.set_heartbeat(None, held);
                    }
                }
                next @ Next::Run { stage, .. } if self.is_stale(&next) => {
                    tracing::info!(
                        "ignoring a stale {:?} for {} attempt {}: its result was already taken or refused",
                        answer.cmd,
                        stage.stage,
                        stage.attempt
                    );
                }
                next => {
                    if let Next::Run { stage, overrides } = &next {
                        log.agent_async(format!(
                            "{:?}: running {} attempt {}{}",
                            answer.cmd,
                            stage.stage,
                            stage.attempt,
                            overrides.describe()
                        ))
                        .await;
                    }
                    return next;
                }
            }
        }
    }

    /// Flushes what is left of the logs, then powers off (or returns, in
    /// local mode).
    async fn shutdown(&mut self) -> RunEnd {
        tracing::info!("shutdown: flushing the logs");
        self.set_heartbeat(None, true);
        let _ = self.logs.drained(Some(SHUTDOWN_FLUSH)).await;
        let _ = self.sensors.drained(Some(SHUTDOWN_FLUSH)).await;
        tracing::info!(
            "shutdown: emitted {} log lines and {} sensor samples; acknowledged {} and {}",
            self.logs.next_seq(),
            self.sensors.next_seq(),
            self.logs.acked_seq(),
            self.sensors.acked_seq()
        );
        if self.config.exit_on_shutdown {
            tracing::info!("shutdown: local mode, exiting instead of powering off");
            return RunEnd::Shutdown;
        }
        tracing::info!("shutdown: powering off");
        let _ = tokio::task::spawn_blocking(power_off).await;
        RunEnd::Shutdown
    }
}

/// `systemctl poweroff`, else `poweroff -f`.
fn power_off() {
    let timeout = Duration::from_secs(60);
    let attempts = [
        ToolCommand::new("systemctl")
            .arg("poweroff")
            .timeout(timeout),
        ToolCommand::new("poweroff").arg("-f").timeout(timeout),
    ];
    for command in attempts {
        match run_tool(&command) {
            Ok(output) if output.status.success() => return,
            Ok(output) => tracing::warn!("{}: {}", output.command_line, output.status),
            Err(error) => tracing::warn!("{error}"),
        }
    }
    tracing::error!("could not power off");
}

/// `vetting-agent run`: resolves the parameters, runs the agent, and
/// returns the process's exit status (0 after `shutdown`).
pub fn run_command(args: &RunArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let config = match crate::params::resolve(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vetting-agent: error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vetting-agent: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(RunEnd::Shutdown) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vetting-agent: error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(state: &str, current: Option<(Stage, u32)>) -> RunPosition {
        RunPosition {
            state: state.to_string(),
            current: current.map(|(stage, attempt)| StageRef { stage, attempt }),
        }
    }

    #[test]
    fn an_instruction_for_an_attempt_that_is_over_is_stale() {
        let psu = StageRef {
            stage: Stage::Psu,
            attempt: 1,
        };
        let storage = |attempt| StageRef {
            stage: Stage::Storage,
            attempt,
        };
        // a heartbeat answered while PSU was current, seen after its result
        let stale = decide(
            &position("PSU", Some((Stage::Psu, 1))),
            Command::Continue,
            &Overrides::default(),
        );
        assert!(runs_an_attempt_that_is_over(
            &stale,
            None,
            &[storage(1), psu]
        ));
        assert!(!runs_an_attempt_that_is_over(&stale, None, &[storage(1)]));
        assert!(runs_an_attempt_that_is_over(&stale, Some(psu), &[]));
        // an override's retry is a new attempt: never stale
        let retry = decide(
            &position("Storage", Some((Stage::Storage, 2))),
            Command::RetryStage,
            &Overrides {
                flags: vec!["override_wipe".into()],
                acknowledged_findings: Vec::new(),
            },
        );
        assert!(!runs_an_attempt_that_is_over(
            &retry,
            None,
            &[storage(1), psu]
        ));
        assert!(!runs_an_attempt_that_is_over(
            &Next::Shutdown,
            None,
            &[storage(1)]
        ));
    }

    #[test]
    fn positions_and_commands_decide_the_next_step() {
        let storage = position("Storage", Some((Stage::Storage, 2)));
        let armed = Overrides {
            flags: vec!["override_wipe".into()],
            acknowledged_findings: vec!["serial:S1/gpt@0x200".into()],
        };
        assert_eq!(
            decide(&storage, Command::RetryStage, &armed),
            Next::Run {
                stage: StageRef {
                    stage: Stage::Storage,
                    attempt: 2
                },
                overrides: armed.clone()
            }
        );
        let holding = position("FailedHolding", Some((Stage::Storage, 1)));
        assert_eq!(
            decide(&holding, Command::Continue, &Overrides::default()),
            Next::Idle { held: true }
        );
        assert_eq!(command_of(&holding), Command::Abort);
        let done = position("Completed", None);
        assert_eq!(
            decide(&done, command_of(&done), &Overrides::default()),
            Next::Shutdown
        );
        let reporting = position("Reporting", None);
        assert_eq!(
            decide(&reporting, Command::Continue, &Overrides::default()),
            Next::Idle { held: false }
        );
        // a current stage that is not the run's state is not run
        let stale = position("SpecValidate", Some((Stage::InventoryCheck, 1)));
        assert_eq!(
            decide(&stale, Command::Continue, &Overrides::default()),
            Next::Idle { held: false }
        );
    }
}
