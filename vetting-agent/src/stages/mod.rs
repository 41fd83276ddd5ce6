//! The stage runners. Each runs on a blocking thread with a
//! [`StageContext`] (parameters, thresholds, log and sensor sinks, a cancel
//! token) and returns a [`StageReport`]: the outcome, the agent's verdict
//! (read from vetting-probes' parsers), the raw outputs to upload as
//! artifacts, measurements, and for InventoryCheck the inventory.
//!
//! Tools are started only through `vetting_probes::runner`, each in its own
//! process group; [`StageContext::run_tool`] streams their output to the log
//! line by line as it comes and lets the run loop kill the group
//! ([`CancelToken::cancel`]) on `abort` or `shutdown`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vetting_probes::inventory::Inventory;
use vetting_probes::protocol::{
    ArtifactRef, LogStream, Measurement, Outcome, Stage, StageParams, StageRef, WipeFinding,
};
use vetting_probes::runner::{
    CancelHandle, OutputStream, OutputTap, RunError, ToolCommand, ToolOutput, spawn_tool_tapped,
};
use vetting_probes::{Status, Thresholds, Tool, Verdict};

use crate::outbox::{LineSplitter, LogSink, SensorSink};
use crate::params::DiskSelection;

pub mod allowlist;
pub mod cpu_stress;
pub mod gpu;
pub mod identity;
pub mod inventory;
pub mod network;
pub mod psu;
pub mod smart;
pub mod storage;
pub mod wipe_probe;

/// Stops a stage: sets a flag the stage checks between steps and kills the
/// process group of the tool it is running.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    running: Mutex<Option<CancelHandle>>,
}

impl CancelToken {
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels the stage: the running tool's whole process group is killed
    /// and no new tool starts.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = running.as_ref() {
            handle.cancel();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Remembers the running tool; kills it at once when already cancelled.
    fn register(&self, handle: CancelHandle) {
        let mut running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_cancelled() {
            handle.cancel();
        }
        *running = Some(handle);
    }

    fn unregister(&self) {
        *self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Local settings of the agent that stages use (not from the orchestrator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// Scratch files (tool reports).
    pub work_dir: PathBuf,
    pub disks: DiskSelection,
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            work_dir: std::env::temp_dir(),
            disks: DiskSelection::default(),
            sys_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
        }
    }
}

/// Everything a stage runner gets.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub stage: StageRef,
    pub params: StageParams,
    pub thresholds: Thresholds,
    pub local: LocalSettings,
    pub log: LogSink,
    pub sensors: SensorSink,
    pub cancel: CancelToken,
    /// The inventory taken at InventoryCheck by this agent process, if any.
    pub inventory: Option<Inventory>,
}

/// A raw output to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// A file name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Set only when the body is that tool's parseable output (the
    /// orchestrator re-judges it).
    pub tool: Option<Tool>,
    pub subject: Option<String>,
    pub body: Vec<u8>,
}

impl Artifact {
    pub fn new(name: &str, tool: Option<Tool>, subject: Option<&str>, body: Vec<u8>) -> Self {
        Artifact {
            name: artifact_name(name),
            tool,
            subject: subject.map(str::to_string),
            body,
        }
    }

    pub fn reference(&self) -> ArtifactRef {
        ArtifactRef {
            name: self.name.clone(),
            tool: self.tool.map(|tool| tool.name().to_string()),
            subject: self.subject.clone(),
        }
    }
}

/// A name reduced to what the orchestrator accepts: letters, digits, `.`,
/// `_`, `-`, at most 128 characters, not starting with a dot.
pub fn artifact_name(raw: &str) -> String {
    let mut name: String = raw
        .trim_start_matches("/dev/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while name.starts_with('.') {
        name.remove(0);
    }
    name.truncate(128);
    if name.is_empty() {
        name.push_str("output");
    }
    name
}

/// What a stage produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub outcome: Outcome,
    pub verdict: Verdict,
    pub artifacts: Vec<Artifact>,
    pub measurements: Vec<Measurement>,
    pub inventory: Option<serde_json::Value>,
    pub hold_reason: Option<String>,
    /// Storage: what the wipe probe found, with stable ids.
    pub wipe_findings: Vec<WipeFinding>,
}

impl StageReport {
    /// A report whose outcome follows the verdict.
    pub fn from_verdict(verdict: Verdict) -> Self {
        StageReport {
            outcome: outcome_of(&verdict),
            verdict,
            artifacts: Vec::new(),
            measurements: Vec::new(),
            inventory: None,
            hold_reason: None,
            wipe_findings: Vec::new(),
        }
    }

    /// A skipped stage with its reason.
    pub fn skipped(reason: impl Into<String>) -> Self {
        StageReport::from_verdict(Verdict::skip(reason))
    }

    /// A failed stage with its reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        StageReport::from_verdict(Verdict::fail(reason))
    }

    pub fn with_artifacts(mut self, artifacts: Vec<Artifact>) -> Self {
        self.artifacts = artifacts;
        self
    }

    pub fn with_measurements(mut self, measurements: Vec<Measurement>) -> Self {
        self.measurements = measurements;
        self
    }
}

/// The outcome a verdict gives.
pub fn outcome_of(verdict: &Verdict) -> Outcome {
    match verdict.status {
        Status::Pass => Outcome::Passed,
        Status::Warn => Outcome::Warned,
        Status::Fail => Outcome::Failed,
        Status::Skip => Outcome::Skipped,
    }
}

/// A measurement.
pub fn measurement(name: &str, value: f64, unit: &str) -> Measurement {
    Measurement {
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    }
}

/// The sensor sidecar's peak readings as measurements named
/// `{prefix}.peak.{driver}/{label}` (readings without a value left out).
pub fn peak_measurements(
    prefix: &str,
    summary: &vetting_probes::verdicts::cpu::SidecarSummary,
) -> impl Iterator<Item = Measurement> {
    summary.peaks.iter().filter_map(move |peak| {
        peak.input.map(|value| {
            measurement(
                &format!("{prefix}.peak.{}/{}", peak.driver, peak.label),
                value,
                &peak.unit,
            )
        })
    })
}

/// The stage was cancelled (abort or shutdown) before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stage was cancelled")]
pub struct Cancelled;

impl StageContext {
    /// Runs a tool in its own process group, streaming every line of its
    /// stdout and stderr to the log as it comes, and logging the command
    /// line and how it ended. A cancel kills the group.
    pub fn run_tool(&self, command: &ToolCommand) -> Result<ToolOutput, RunError> {
        self.run_tool_streaming(command, true)
    }

    /// As [`StageContext::run_tool`], but the output is only captured, not
    /// streamed to the log (polls and before/after readings whose output
    /// would flood the log; the command line and exit are still logged).
    pub fn run_tool_quiet(&self, command: &ToolCommand) -> Result<ToolOutput, RunError> {
        self.run_tool_streaming(command, false)
    }

    fn run_tool_streaming(
        &self,
        command: &ToolCommand,
        stream_output: bool,
    ) -> Result<ToolOutput, RunError> {
        if self.cancel.is_cancelled() {
            return Err(RunError::Cancelled {
                command_line: command.command_line(),
                stderr: String::new(),
            });
        }
        self.log.agent(format!("$ {}", command.command_line()));
        let splitters = Arc::new(Mutex::new((
            LineSplitter::default(),
            LineSplitter::default(),
        )));
        let tap: OutputTap = {
            let splitters = Arc::clone(&splitters);
            let log = self.log.clone();
            Arc::new(move |stream: OutputStream, chunk: &[u8]| {
                let lines = {
                    let mut pair = splitters.lock().unwrap_or_else(PoisonError::into_inner);
                    match stream {
                        OutputStream::Stdout => pair.0.feed(chunk),
                        OutputStream::Stderr => pair.1.feed(chunk),
                    }
                };
                let stream = match stream {
                    OutputStream::Stdout => LogStream::Stdout,
                    OutputStream::Stderr => LogStream::Stderr,
                };
                for line in lines {
                    log.emit_blocking(stream, &line);
                }
            })
        };
        let running = match spawn_tool_tapped(command, stream_output.then_some(tap)) {
            Ok(running) => running,
            Err(error) => {
                self.log.agent(format!("{error}"));
                return Err(error);
            }
        };
        self.cancel.register(running.cancel_handle());
        let result = running.wait_with_timeout(command.timeout);
        self.cancel.unregister();
        {
            let mut pair = splitters.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(line) = pair.0.finish() {
                self.log.emit_blocking(LogStream::Stdout, &line);
            }
            if let Some(line) = pair.1.finish() {
                self.log.emit_blocking(LogStream::Stderr, &line);
            }
        }
        match &result {
            Ok(output) => self.log.agent(format!(
                "{} ended: {} after {:.1} s",
                command.program,
                output.status,
                output.duration.as_secs_f64()
            )),
            Err(error) => self.log.agent(format!("{error}")),
        }
        result
    }

    /// `Err(Cancelled)` once the stage has been cancelled.
    pub fn check_cancelled(&self) -> Result<(), Cancelled> {
        if self.cancel.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Sleeps `duration`, waking early (with `Err(Cancelled)`) on a cancel.
    pub fn sleep(&self, duration: std::time::Duration) -> Result<(), Cancelled> {
        let deadline = std::time::Instant::now() + duration;
        loop {
            self.check_cancelled()?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
        }
    }

    /// A scratch file path in the work folder (created on demand).
    pub fn scratch_file(&self, name: &str) -> PathBuf {
        let dir = self.local.work_dir.join(format!(
            "{}-{}",
            self.stage.stage.as_str(),
            self.stage.attempt
        ));
        if let Err(error) = std::fs::create_dir_all(&dir) {
            self.log.agent(format!(
                "cannot create the work folder {}: {error}",
                dir.display()
            ));
        }
        dir.join(name)
    }
}

/// Runs one stage to its report, or `Err(Cancelled)` when it was cancelled.
pub fn run_stage(context: &StageContext) -> Result<StageReport, Cancelled> {
    let report = match context.stage.stage {
        Stage::InventoryCheck => inventory::run(context),
        Stage::Smart => smart::run(context),
        Stage::CpuStress => cpu_stress::run(context),
        Stage::Storage => storage::run(context),
        Stage::Network => network::run(context),
        Stage::Gpu => gpu::run(context),
        Stage::Psu => psu::run(context),
    }?;
    context.check_cancelled()?;
    Ok(report)
}

/// A tool's stdout followed by its stderr (what several parsers read).
pub fn combined_output(output: &ToolOutput) -> Vec<u8> {
    join_streams(&output.stdout, &output.stderr)
}

/// `stdout`, a newline when it lacks one, then `stderr`.
pub fn join_streams(stdout: &[u8], stderr: &[u8]) -> Vec<u8> {
    let mut body = stdout.to_vec();
    if !stderr.is_empty() {
        if !body.is_empty() && !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        body.extend_from_slice(stderr);
    }
    body
}

/// Turns a cancelled tool into the stage's `Cancelled`.
pub fn stop_if_cancelled(context: &StageContext, error: &RunError) -> Result<(), Cancelled> {
    if matches!(error, RunError::Cancelled { .. }) || context.cancel.is_cancelled() {
        return Err(Cancelled);
    }
    Ok(())
}

/// The evidence document of one of the agent's own rules
/// (`vetting_probes::verdicts`) as an artifact the orchestrator re-judges.
/// A document that cannot be written fails the verdict: without it the
/// orchestrator cannot judge what the agent judged.
pub fn evidence_document(
    name: &str,
    tool: Tool,
    document: Result<Vec<u8>, serde_json::Error>,
    verdict: &mut Verdict,
) -> Option<Artifact> {
    match document {
        Ok(body) => Some(Artifact::new(name, Some(tool), None, body)),
        Err(error) => {
            verdict.fail_with(format!("the {tool} evidence cannot be written: {error}"));
            None
        }
    }
}

/// The end of a stage that judged several things: every reason logged,
/// then the report of the verdict with its artifacts and measurements.
pub fn judged_report(
    context: &StageContext,
    verdict: Verdict,
    artifacts: Vec<Artifact>,
    measurements: Vec<Measurement>,
) -> StageReport {
    for reason in &verdict.reasons {
        context
            .log
            .agent(format!("{}: {}", reason.status, reason.message));
    }
    StageReport::from_verdict(verdict)
        .with_artifacts(artifacts)
        .with_measurements(measurements)
}

/// A stage whose tool is missing: skipped, unless the part is expected.
pub fn missing_tool_report(program: &str, expected: bool, part: &str) -> StageReport {
    if expected {
        StageReport::failed(format!(
            "tool {program} is not installed, but the spec expects {part}"
        ))
    } else {
        StageReport::skipped(format!("tool {program} is not installed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_file_names() {
        assert_eq!(artifact_name("/dev/sda"), "sda");
        assert_eq!(
            artifact_name("smartctl /dev/bus/0 megaraid,1.json"),
            "smartctl__dev_bus_0_megaraid_1.json"
        );
        assert_eq!(artifact_name("..hidden"), "hidden");
        assert_eq!(artifact_name(""), "output");
        assert_eq!(artifact_name(&"a".repeat(300)).len(), 128);
    }
}
