//! Storage: the destructive surface test, behind the safety gates.
//!
//! 1. The device allowlist ([`super::allowlist`]): only disks that match the
//!    expected disks are candidates; removable, USB, MMC/SD and unexpected
//!    disks are never written and are reported, and a disk of unknown
//!    transport only when the spec names it by serial or WWN; with no
//!    expected disks the stage is skipped and nothing destructive runs.
//!    Disks in use (mounted, swap, held by device-mapper or md) are not
//!    written either.
//! 2. The wipe probe ([`super::wipe_probe`]) on every candidate before any
//!    write, each opened and checked to still be the allowlisted disk
//!    ([`super::identity`]; checked again right before its first write): a
//!    signature holds the run (`wipe_signatures`), data without a signature
//!    too (`unexpected_data`); the held result lists every finding with a
//!    stable id. The operator's override names the ids it acknowledges:
//!    the attempt after it writes a disk only when every finding on it is
//!    acknowledged, and holds again (writing nothing) on any finding that
//!    is not. A sampled block that cannot be read is a failing sector: that
//!    disk fails, naming the block, and is not written; such a failure is
//!    not a hold, and no override applies to it (nor is the stage held for
//!    another disk's signatures then).
//! 3. The surface test: rotational disks (HDD) get `badblocks -wsv` (block
//!    size chosen so the block count fits 32 bits, time-bounded by
//!    `max_secs_per_disk`), non-rotational ones (SSD/NVMe) a bounded `fio`
//!    write-and-verify on `ssd_verify_share` of their capacity. Loop
//!    devices report rotational=1 on many kernels; the choice and its
//!    reason are logged. Bad blocks or verify errors fail the stage (an
//!    I/O or verify error of fio is located with a read-only badblocks over
//!    the range fio names, so the reason names the bad blocks), and so do
//!    SMART counters (reallocated, pending, uncorrectable sectors; NVMe
//!    media errors and critical warning) that grew during the test
//!    (`vetting_probes::verdicts::storage`, from smartctl's outputs before
//!    and after, uploaded as `smart-growth` evidence). Drive
//!    temperatures are sampled (hwmon, every second) while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vetting_probes::inventory::{CollectOptions, Disk, collect};
use vetting_probes::parsers::smartctl::{self, SmartctlOutput};
use vetting_probes::protocol::{ExpectedDisk, FINDING_UNEXPECTED_DATA, Outcome, WipeFinding};
use vetting_probes::runner::{RunError, ToolCommand};
use vetting_probes::verdicts::BeforeAfter;
use vetting_probes::verdicts::storage::smart_counters;
use vetting_probes::{Status, Tool, Verdict, parse_and_judge};

use super::allowlist::{self, describe_disk, describe_entry, loop_disks, never_candidate};
use super::identity::{self, PinnedDisk};
use super::wipe_probe::{self, ProbeFindings};
use super::{
    Artifact, Cancelled, StageContext, StageReport, combined_output, evidence_document,
    judged_report, measurement, stop_if_cancelled,
};
use crate::params::SurfaceTest;
use crate::sidecar::Sidecar;

/// The hold reasons of the wipe probe.
pub const HOLD_WIPE_SIGNATURES: &str = "wipe_signatures";
pub const HOLD_UNEXPECTED_DATA: &str = "unexpected_data";

/// The surface test chosen for a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurfaceMethod {
    Badblocks,
    Fio,
}

/// Runs the stage.
pub fn run(context: &StageContext) -> Result<StageReport, Cancelled> {
    let storage = &context.params.storage;
    let disks = visible_disks(context);
    context.check_cancelled()?;
    for disk in &disks {
        context.log.agent(format!("disk {}", describe_disk(disk)));
    }
    if storage.expected_disks.is_empty() {
        for disk in &disks {
            context
                .log
                .agent(format!("{}: not written (no expected disks)", disk.name));
        }
        return Ok(StageReport::skipped(
            "no expected disks in the spec: nothing destructive runs",
        ));
    }
    for entry in &storage.expected_disks {
        context.log.agent(format!(
            "expected: {} disk(s) {}",
            entry.count.unwrap_or(1),
            describe_entry(entry)
        ));
    }

    let decision = allowlist::decide(&disks, &storage.expected_disks);
    let mut verdict = Verdict::pass();
    for refused in &decision.refused {
        let message = format!(
            "{}: not written: {}",
            describe_disk(&refused.disk),
            refused.reason
        );
        context.log.agent(&message);
        verdict.add(Status::Skip, message);
    }
    for problem in &decision.problems {
        context.log.agent(format!("allowlist: {problem}"));
        verdict.fail_with(format!("device allowlist: {problem}"));
    }
    let mut candidates = Vec::new();
    for disk in decision.candidates {
        match in_use(&disk.name, &context.local.sys_root) {
            Some(why) => {
                let message = format!("{}: not written: in use ({why})", describe_disk(&disk));
                context.log.agent(&message);
                verdict.fail_with(message);
            }
            None => candidates.push(disk),
        }
    }
    if candidates.is_empty() {
        if verdict.status != Status::Fail {
            verdict.fail_with("device allowlist: no disk may be tested");
        }
        return Ok(StageReport::from_verdict(verdict));
    }

    // The wipe probe, on every candidate before anything is written, each
    // opened and checked to be the allowlisted disk first.
    let mut artifacts = Vec::new();
    let mut probed: Vec<(Disk, ProbeFindings)> = Vec::new();
    for disk in candidates {
        context.check_cancelled()?;
        let pinned = match pin(context, &disk) {
            Ok(pinned) => pinned,
            Err(message) => {
                verdict.fail_with(message);
                continue;
            }
        };
        context.log.agent(format!(
            "wipe probe on {} as {}",
            describe_disk(&disk),
            pinned.path.display()
        ));
        let findings = wipe_probe::probe(context, &disk.name, &pinned.path)?;
        drop(pinned);
        artifacts.extend(findings.artifacts.iter().cloned());
        probed.push((disk, findings));
    }
    if probed.is_empty() {
        return Ok(StageReport::from_verdict(verdict));
    }
    // What the operator's override acknowledged: nothing unless this
    // attempt follows one.
    let acknowledged: BTreeSet<&str> = if storage.override_wipe {
        storage
            .acknowledged_findings
            .iter()
            .map(String::as_str)
            .collect()
    } else {
        BTreeSet::new()
    };
    let wipe_findings = unique_ids(
        probed
            .iter()
            .flat_map(|(disk, findings)| findings.wipe_findings(disk))
            .collect(),
    );
    let unacknowledged: Vec<&WipeFinding> = wipe_findings
        .iter()
        .filter(|finding| !acknowledged.contains(finding.id.as_str()))
        .collect();
    // failing sectors are a failure, never a hold: an override could not
    // change the outcome
    let failing_sectors = probed.iter().any(|(_, f)| !f.unreadable_blocks.is_empty());
    if !unacknowledged.is_empty() && !failing_sectors {
        // every finding with its id (what the operator names to override)
        let mut held = verdict.clone();
        for (_, findings) in &probed {
            for error in &findings.errors {
                held.fail_with(error.clone());
            }
        }
        for finding in &wipe_findings {
            let note = if storage.override_wipe && !acknowledged.contains(finding.id.as_str()) {
                "not acknowledged by the override: "
            } else {
                ""
            };
            held.fail_with(format!(
                "{note}{} (finding {})",
                finding.message, finding.id
            ));
        }
        let signatures = unacknowledged
            .iter()
            .any(|finding| finding.kind != FINDING_UNEXPECTED_DATA);
        let reason = if signatures {
            HOLD_WIPE_SIGNATURES
        } else {
            HOLD_UNEXPECTED_DATA
        };
        context.log.agent(format!(
            "holding{}: the wipe probe found {} (nothing was written; an operator must override, naming the findings: {})",
            if storage.override_wipe {
                " again"
            } else {
                ""
            },
            if signatures {
                "signatures"
            } else {
                "data without a signature"
            },
            unacknowledged
                .iter()
                .map(|finding| finding.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut report = StageReport::from_verdict(held).with_artifacts(artifacts);
        report.outcome = Outcome::Held;
        report.hold_reason = Some(reason.to_string());
        report.wipe_findings = wipe_findings;
        return Ok(report);
    }

    // The surface test.
    let mut measurements = Vec::new();
    let sidecar = Sidecar::start(
        context.local.sys_root.join("class/hwmon"),
        Duration::from_secs(1),
        context.sensors.clone(),
    );
    for (disk, findings) in probed {
        context.check_cancelled()?;
        let device = device_path(&disk).display().to_string();
        if let Some(failing) = findings.failing_sectors(&device) {
            let message = format!("{}: {failing}: not written", disk.name);
            context.log.agent(&message);
            verdict.fail_with(message);
        }
        for error in &findings.errors {
            verdict.fail_with(format!("{}: not written: {error}", disk.name));
        }
        if !findings.unreadable_blocks.is_empty() || !findings.errors.is_empty() {
            continue;
        }
        let found: Vec<&WipeFinding> = wipe_findings
            .iter()
            .filter(|finding| finding.disk == disk.name)
            .collect();
        if found
            .iter()
            .any(|finding| !acknowledged.contains(finding.id.as_str()))
        {
            // held back only because another disk fails on failing sectors
            let message = format!(
                "{}: not written: the wipe probe found {}",
                disk.name,
                found
                    .iter()
                    .map(|finding| finding.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            context.log.agent(&message);
            verdict.add(Status::Skip, message);
            continue;
        }
        if !found.is_empty() {
            let message = format!(
                "{}: override_wipe acknowledged by the operator: {}",
                disk.name,
                found
                    .iter()
                    .map(|finding| format!("{} ({})", finding.id, finding.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            context.log.agent(&message);
            verdict.add(Status::Pass, message);
        }
        // the identity once more, right before the first write; the device
        // stays open until the surface test is over
        let pinned = match pin(context, &disk) {
            Ok(pinned) => pinned,
            Err(message) => {
                verdict.fail_with(message);
                continue;
            }
        };
        let device = pinned.path.as_path();
        let (method, why) = choose_method(&disk, context.local.disks.surface_test);
        context.log.agent(format!(
            "{}: surface test with {} ({why})",
            disk.name,
            match method {
                SurfaceMethod::Badblocks => "badblocks write-and-verify",
                SurfaceMethod::Fio => "fio write-and-verify",
            }
        ));
        let smart_before = smart_output(context, &disk, device);
        let outcome = match method {
            SurfaceMethod::Badblocks => badblocks(context, &disk, device)?,
            SurfaceMethod::Fio => fio(context, &disk, device)?,
        };
        let mut disk_verdict = outcome.verdict;
        let mut disk_artifacts = outcome.artifacts;
        if let Some(before) = smart_before {
            match smart_output(context, &disk, device) {
                Some(after) => disk_artifacts.extend(judge_smart_growth(
                    &disk,
                    before,
                    after,
                    &context.thresholds,
                    &mut disk_verdict,
                )),
                None => disk_verdict.warn(
                    "SMART counters could not be read after the surface test: their growth \
                     was not judged",
                ),
            }
        }
        drop(pinned);
        for reason in &mut disk_verdict.reasons {
            reason.message = format!("{}: {}", disk.name, reason.message);
        }
        if disk_verdict.status == Status::Pass {
            disk_verdict.add(Status::Pass, format!("{}: surface test passed", disk.name));
        }
        verdict.merge(disk_verdict);
        artifacts.extend(disk_artifacts);
        measurements.extend(outcome.measurements);
    }
    let watched = sidecar.stop();
    measurements.extend(super::peak_measurements("storage", &watched));
    Ok(judged_report(context, verdict, artifacts, measurements))
}

/// `smartctl -a --json` of a disk, when it has SMART counters whose
/// growth during the surface test fails
/// (`vetting_probes::verdicts::storage::smart_counters`). `None` when they
/// cannot be read (no smartctl, a loop device, a RAID volume, a disk
/// without such counters).
pub fn smart_output(
    context: &StageContext,
    disk: &Disk,
    device: &Path,
) -> Option<serde_json::Value> {
    if disk.transport.as_deref() == Some("loop") || disk.behind_raid {
        return None;
    }
    let device = device.display().to_string();
    let command = ToolCommand::new("smartctl")
        .args(["-a", "--json", &device])
        .timeout(Duration::from_secs(120));
    let output = context.run_tool_quiet(&command).ok()?;
    let SmartctlOutput::Device(data) = smartctl::parse(&output.stdout).ok()? else {
        return None;
    };
    if smart_counters(&data).is_empty() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// Judges the growth of a disk's SMART counters from its outputs before
/// and after the surface test, through the `smart-growth` document the
/// orchestrator re-judges (uploaded as the returned artifact).
fn judge_smart_growth(
    disk: &Disk,
    before: serde_json::Value,
    after: serde_json::Value,
    thresholds: &vetting_probes::Thresholds,
    verdict: &mut Verdict,
) -> Option<Artifact> {
    let document = BeforeAfter::new(Some(&disk.name), before, after).to_json();
    let artifact = evidence_document(
        &format!("smart-growth-{}.json", disk.name),
        Tool::SmartGrowth,
        document,
        verdict,
    )?;
    match parse_and_judge(Tool::SmartGrowth, &artifact.body, thresholds) {
        Ok(report) => verdict.merge(report.verdict),
        Err(error) => verdict.fail_with(format!("the SMART growth cannot be judged: {error}")),
    }
    Some(artifact)
}

/// The disks the stage looks at: the inventory's (this agent's own
/// InventoryCheck, else a fresh collection), plus loop devices when
/// allowed, less the names that are never disks and those outside
/// `--disk-filter`.
pub fn visible_disks(context: &StageContext) -> Vec<Disk> {
    let selection = &context.local.disks;
    let mut disks: Vec<Disk> = match &context.inventory {
        Some(inventory) => inventory.disks.clone(),
        None => {
            context
                .log
                .agent("reading the disks (no inventory from this boot)");
            collect(&CollectOptions {
                sys_root: context.local.sys_root.clone(),
                dev_root: context.local.dev_root.clone(),
                ..CollectOptions::default()
            })
            .disks
        }
    };
    for disk in loop_disks(&context.local.sys_root, selection) {
        if disks.iter().all(|known| known.name != disk.name) {
            disks.push(disk);
        }
    }
    disks.retain(|disk| {
        if never_candidate(&disk.name, selection) {
            return false;
        }
        if !selection.admits(&disk.name) {
            context
                .log
                .agent(format!("{}: ignored (not in --disk-filter)", disk.name));
            return false;
        }
        true
    });
    disks
}

/// Findings with unique ids: a repeat (two disks reporting the same serial,
/// a tool naming one signature twice) gets `#2`, `#3`, … in the order
/// found, so every id names one finding.
pub fn unique_ids(findings: Vec<WipeFinding>) -> Vec<WipeFinding> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    findings
        .into_iter()
        .map(|mut finding| {
            let count = seen.entry(finding.id.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                finding.id = format!("{}#{count}", finding.id);
            }
            finding
        })
        .collect()
}

/// Opens the disk and checks it is still the allowlisted one
/// ([`identity::pin`]); a refusal is logged and given as the reason.
fn pin(context: &StageContext, disk: &Disk) -> Result<PinnedDisk, String> {
    identity::pin(disk, &context.local.sys_root, Path::new(DISK_DEV_ROOT)).map_err(|error| {
        let message = format!("{}: not written: {error}", describe_disk(disk));
        context.log.agent(&message);
        message
    })
}

/// Where disks are opened (`--dev-root` is for the IPMI node only: tests
/// point it elsewhere while their loop devices are in `/dev`).
pub const DISK_DEV_ROOT: &str = "/dev";

/// `/dev/NAME`.
pub fn device_path(disk: &Disk) -> PathBuf {
    Path::new(DISK_DEV_ROOT).join(&disk.name)
}

/// Why a disk is in use, if it is: mounted, swap, or held by another
/// block device (device-mapper, md), itself or through a partition.
pub fn in_use(name: &str, sys_root: &Path) -> Option<String> {
    let block = sys_root.join("block").join(name);
    let mut devices = vec![name.to_string()];
    if let Ok(entries) = std::fs::read_dir(&block) {
        for entry in entries.flatten() {
            let child = entry.file_name().to_string_lossy().into_owned();
            if child.starts_with(name) && entry.path().join("partition").exists() {
                devices.push(child);
            }
        }
    }
    for device in &devices {
        let holders = if device == name {
            block.join("holders")
        } else {
            block.join(device).join("holders")
        };
        if let Ok(entries) = std::fs::read_dir(&holders) {
            let held_by: Vec<String> = entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
            if !held_by.is_empty() {
                return Some(format!("{device} is held by {}", held_by.join(", ")));
            }
        }
    }
    let is_ours = |source: &str| {
        source
            .strip_prefix("/dev/")
            .is_some_and(|source| devices.iter().any(|device| device == source))
    };
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            if let (Some(source), Some(target)) = (fields.next(), fields.next())
                && is_ours(source)
            {
                return Some(format!("{source} is mounted on {target}"));
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            if let Some(source) = line.split_whitespace().next()
                && is_ours(source)
            {
                return Some(format!("{source} is used as swap"));
            }
        }
    }
    None
}

/// Chooses the surface test of a disk, and says why.
pub fn choose_method(disk: &Disk, choice: SurfaceTest) -> (SurfaceMethod, String) {
    let loop_note = if disk.transport.as_deref() == Some("loop") {
        "; a loop device reports rotational=1 on many kernels whatever its backing"
    } else {
        ""
    };
    match choice {
        SurfaceTest::Badblocks => (
            SurfaceMethod::Badblocks,
            "--surface-test badblocks".to_string(),
        ),
        SurfaceTest::Fio => (SurfaceMethod::Fio, "--surface-test fio".to_string()),
        SurfaceTest::Auto => match disk.rotational {
            Some(false) => (
                SurfaceMethod::Fio,
                format!("rotational=0: SSD/NVMe, a bounded verify spares its wear{loop_note}"),
            ),
            Some(true) => (
                SurfaceMethod::Badblocks,
                format!("rotational=1: HDD{loop_note}"),
            ),
            None => (
                SurfaceMethod::Badblocks,
                format!("rotational unknown: treated as an HDD{loop_note}"),
            ),
        },
    }
}

/// The smallest badblocks block size (a power of two, at least 4096) that
/// keeps the block count of a `size`-byte disk within 32 bits.
pub fn badblocks_block_size(size: u64) -> u64 {
    let mut block = 4096u64;
    while size / block > u64::from(u32::MAX) {
        block *= 2;
    }
    block
}

/// What one disk's surface test gave.
struct DiskOutcome {
    verdict: Verdict,
    artifacts: Vec<Artifact>,
    measurements: Vec<vetting_probes::protocol::Measurement>,
}

fn badblocks(context: &StageContext, disk: &Disk, device: &Path) -> Result<DiskOutcome, Cancelled> {
    let device = device.display().to_string();
    let block_size = badblocks_block_size(disk.size_bytes);
    let list_file = context.scratch_file(&format!("badblocks-{}.txt", disk.name));
    let _ = std::fs::remove_file(&list_file);
    let budget = Duration::from_secs(context.params.storage.max_secs_per_disk.max(1));
    let command = ToolCommand::new("badblocks")
        .args(["-wsv", "-b", &block_size.to_string(), "-o"])
        .arg(list_file.display().to_string())
        .arg(&device)
        .timeout(budget);
    let list = || std::fs::read(&list_file).unwrap_or_default();
    let artifact_name = format!("badblocks-{}.txt", disk.name);
    let mut measurements = Vec::new();
    match context.run_tool(&command) {
        Ok(output) => {
            let mut body = combined_output(&output);
            body.extend_from_slice(&list());
            measurements.push(measurement(
                &format!("storage.{}.badblocks_secs", disk.name),
                output.duration.as_secs_f64(),
                "s",
            ));
            let (verdict, tool) = match parse_and_judge(Tool::Badblocks, &body, &context.thresholds)
            {
                Ok(report) => (report.verdict, Some(Tool::Badblocks)),
                Err(error) => (
                    Verdict::fail(format!(
                        "badblocks did not complete ({}): {error}",
                        output.status
                    )),
                    None,
                ),
            };
            Ok(DiskOutcome {
                verdict,
                artifacts: vec![Artifact::new(&artifact_name, tool, Some(&device), body)],
                measurements,
            })
        }
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            let blocks = list();
            let verdict = match &error {
                RunError::TimedOut { .. } => partial_badblocks_verdict(&blocks, budget),
                RunError::NotFound { .. } => Verdict::fail(format!(
                    "tool badblocks is not installed: {} cannot be surface-tested",
                    disk.name
                )),
                other => Verdict::fail(other.to_string()),
            };
            let mut body = error.to_string().into_bytes();
            body.push(b'\n');
            body.extend_from_slice(&blocks);
            Ok(DiskOutcome {
                verdict,
                artifacts: vec![Artifact::new(&artifact_name, None, Some(&device), body)],
                measurements,
            })
        }
    }
}

/// A badblocks run cut off by its time budget: the blocks it listed fail,
/// otherwise the partial test warns.
fn partial_badblocks_verdict(list: &[u8], budget: Duration) -> Verdict {
    let blocks: Vec<&str> = std::str::from_utf8(list)
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if blocks.is_empty() {
        let mut verdict = Verdict::pass();
        verdict.warn(format!(
            "badblocks reached its time budget of {} s before it finished: the surface test is partial (no bad block found so far)",
            budget.as_secs()
        ));
        verdict
    } else {
        let listed: Vec<&str> = blocks.iter().take(10).copied().collect();
        Verdict::fail(format!(
            "badblocks found {} bad blocks before its time budget of {} s: {}{}",
            blocks.len(),
            budget.as_secs(),
            listed.join(", "),
            if blocks.len() > listed.len() {
                ", …"
            } else {
                ""
            }
        ))
    }
}

const MIB: u64 = 1024 * 1024;

/// How many bytes fio verifies on a disk of `capacity`.
pub fn fio_verify_bytes(capacity: u64, share: f64) -> u64 {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let bytes = (capacity as f64 * share) as u64 / MIB * MIB;
    bytes.max(MIB).min(capacity / MIB * MIB)
}

fn fio(context: &StageContext, disk: &Disk, device: &Path) -> Result<DiskOutcome, Cancelled> {
    let device_text = device.display().to_string();
    let bytes = fio_verify_bytes(disk.size_bytes, context.params.storage.ssd_verify_share);
    let budget = Duration::from_secs(context.params.storage.max_secs_per_disk.max(1));
    let command = ToolCommand::new("fio")
        .arg(format!("--name=verify-{}", disk.name))
        .arg(format!("--filename={device_text}"))
        .args([
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--ioengine=psync",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_state_save=0",
            "--output-format=json",
        ])
        .arg(format!("--size={bytes}"))
        .timeout(budget);
    let artifact_name = format!("fio-{}.json", disk.name);
    let mut extra_artifacts = Vec::new();
    match context.run_tool(&command) {
        Ok(output) => {
            let body = combined_output(&output);
            let mut measurements = vec![measurement(
                &format!("storage.{}.fio_verified_bytes", disk.name),
                bytes as f64,
                "B",
            )];
            let (verdict, tool) = match vetting_probes::parsers::fio::parse(&body) {
                Ok(run) => {
                    if let Some(job) = run.jobs.first() {
                        measurements.push(measurement(
                            &format!("storage.{}.write_bytes_per_sec", disk.name),
                            job.write.bandwidth_bytes_per_second as f64,
                            "B/s",
                        ));
                    }
                    let mut verdict = vetting_probes::parsers::fio::verdict(&run);
                    if !output.status.success() && verdict.status != Status::Fail {
                        verdict.fail_with(format!("fio ended with {}", output.status));
                    }
                    if verdict.status == Status::Fail {
                        let ranges = failed_ranges(&run.messages);
                        let (located, located_artifacts) =
                            locate_bad_blocks(context, disk, device, &ranges)?;
                        verdict.merge(located);
                        extra_artifacts.extend(located_artifacts);
                    }
                    (verdict, Some(Tool::Fio))
                }
                Err(error) => (
                    Verdict::fail(format!("fio gave no report ({}): {error}", output.status)),
                    None,
                ),
            };
            let mut artifacts = vec![Artifact::new(
                &artifact_name,
                tool,
                Some(&device_text),
                body,
            )];
            artifacts.extend(extra_artifacts);
            Ok(DiskOutcome {
                verdict,
                artifacts,
                measurements,
            })
        }
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            let verdict = match &error {
                RunError::TimedOut { .. } => {
                    let mut verdict = Verdict::pass();
                    verdict.warn(format!(
                        "fio reached its time budget of {} s before it finished: the verify is partial",
                        budget.as_secs()
                    ));
                    verdict
                }
                RunError::NotFound { .. } => Verdict::fail(format!(
                    "tool fio is not installed: {} cannot be surface-tested",
                    disk.name
                )),
                other => Verdict::fail(other.to_string()),
            };
            Ok(DiskOutcome {
                verdict,
                artifacts: vec![Artifact::new(
                    &artifact_name,
                    None,
                    Some(&device_text),
                    error.to_string().into_bytes(),
                )],
                measurements: Vec::new(),
            })
        }
    }
}

/// The block size bad blocks are named in after a fio error.
const LOCATE_BLOCK: u64 = 4096;
/// At most this many failed ranges are located, each of at most
/// [`LOCATE_MAX_BYTES`].
const LOCATE_MAX_RANGES: usize = 8;
const LOCATE_MAX_BYTES: u64 = 64 * MIB;

/// The byte ranges (offset, length) fio's error messages name: `io_u
/// error on file /dev/sdb: Input/output error: write offset=4194304,
/// buflen=1048576`, and verify failures `... offset 4194304, length
/// 1048576`. In order, without repeats.
pub fn failed_ranges(messages: &[String]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for message in messages {
        let lower = message.to_ascii_lowercase();
        if !(lower.contains("error") || lower.contains("verify") || lower.contains("bad")) {
            continue;
        }
        let words: Vec<&str> = lower
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '=' | '(' | ')' | ':'))
            .filter(|word| !word.is_empty())
            .collect();
        let number_after = |from: usize, keys: &[&str]| {
            words[from..]
                .windows(2)
                .position(|pair| keys.contains(&pair[0]) && pair[1].parse::<u64>().is_ok())
                .and_then(|index| {
                    words[from + index + 1]
                        .parse::<u64>()
                        .ok()
                        .map(|n| (from + index + 1, n))
                })
        };
        let Some((at, offset)) = number_after(0, &["offset"]) else {
            continue;
        };
        let Some((_, length)) = number_after(at, &["buflen", "length", "len"]) else {
            continue;
        };
        if length > 0 && !ranges.contains(&(offset, length)) {
            ranges.push((offset, length));
        }
    }
    ranges
}

/// Names the bad blocks of the ranges fio failed on: a read-only
/// `badblocks` (never a write) over each range, in blocks of
/// [`LOCATE_BLOCK`] bytes. Whatever it finds, the reason names the range's
/// blocks; the disk has already failed.
fn locate_bad_blocks(
    context: &StageContext,
    disk: &Disk,
    device: &Path,
    ranges: &[(u64, u64)],
) -> Result<(Verdict, Vec<Artifact>), Cancelled> {
    let mut verdict = Verdict::pass();
    let mut artifacts = Vec::new();
    let device = device.display().to_string();
    let device_blocks = disk.size_bytes / LOCATE_BLOCK;
    for (index, &(offset, length)) in ranges.iter().take(LOCATE_MAX_RANGES).enumerate() {
        let first = offset / LOCATE_BLOCK;
        let end = offset.saturating_add(length.min(LOCATE_MAX_BYTES));
        let mut last = end.div_ceil(LOCATE_BLOCK).saturating_sub(1).max(first);
        if device_blocks > 0 {
            last = last.min(device_blocks - 1);
        }
        let range_text = format!(
            "fio failed at offset 0x{offset:x} ({length} bytes: blocks {first}–{last} of {LOCATE_BLOCK} bytes)"
        );
        let command = ToolCommand::new("badblocks")
            .args(["-sv", "-b", &LOCATE_BLOCK.to_string(), &device])
            .arg(last.to_string())
            .arg(first.to_string())
            .timeout(Duration::from_secs(120));
        context.log.agent(format!(
            "{range_text}: locating the bad blocks with a read-only badblocks"
        ));
        let found = match context.run_tool(&command) {
            Ok(output) => {
                let body = combined_output(&output);
                let found = vetting_probes::parsers::badblocks::parse(&body)
                    .ok()
                    .map(|run| run.bad_blocks);
                artifacts.push(Artifact::new(
                    &format!("badblocks-read-{}-{index}.txt", disk.name),
                    found.is_some().then_some(Tool::Badblocks),
                    Some(&device),
                    body,
                ));
                found
            }
            Err(error) => {
                stop_if_cancelled(context, &error)?;
                None
            }
        };
        let message = match found {
            Some(blocks) if !blocks.is_empty() => {
                let listed: Vec<String> = blocks.iter().take(10).map(u64::to_string).collect();
                format!(
                    "{range_text}: bad block(s) {}{} (read-only badblocks, {LOCATE_BLOCK}-byte blocks)",
                    listed.join(", "),
                    if blocks.len() > listed.len() {
                        ", …"
                    } else {
                        ""
                    }
                )
            }
            Some(_) => format!(
                "{range_text}: bad blocks in that range (a read-only badblocks reads them back: they fail on write or verify)"
            ),
            None => format!("{range_text}: bad blocks in that range (could not be narrowed down)"),
        };
        verdict.fail_with(message);
    }
    Ok((verdict, artifacts))
}

/// An expected disk matched by size and count (what tests and the demo
/// use for loop devices, which have no model, serial or WWN).
pub fn expected_by_size(size_bytes: u64, count: u32) -> ExpectedDisk {
    ExpectedDisk {
        size_bytes: Some(size_bytes),
        count: Some(count),
        ..ExpectedDisk::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_finding_ids_are_numbered() {
        let finding = |disk: &str| WipeFinding {
            id: "serial:S1/gpt@0x200".into(),
            disk: disk.into(),
            kind: "gpt".into(),
            offset: Some(0x200),
            message: String::new(),
        };
        let ids: Vec<String> = unique_ids(vec![finding("sda"), finding("sdb"), finding("sdc")])
            .into_iter()
            .map(|finding| finding.id)
            .collect();
        assert_eq!(
            ids,
            [
                "serial:S1/gpt@0x200",
                "serial:S1/gpt@0x200#2",
                "serial:S1/gpt@0x200#3"
            ]
        );
    }

    #[test]
    fn block_size_keeps_the_count_in_32_bits() {
        assert_eq!(badblocks_block_size(4_000_000_000_000), 4096);
        assert_eq!(badblocks_block_size(20_000_000_000_000), 8192);
        assert!(
            30_000_000_000_000 / badblocks_block_size(30_000_000_000_000) <= u64::from(u32::MAX)
        );
    }

    #[test]
    fn fio_share_is_whole_mebibytes_within_the_disk() {
        assert_eq!(fio_verify_bytes(1000 * MIB, 0.05), 50 * MIB);
        assert_eq!(fio_verify_bytes(10 * MIB, 0.0), MIB);
        assert_eq!(fio_verify_bytes(10 * MIB, 7.0), 10 * MIB);
        assert_eq!(fio_verify_bytes(10 * MIB, f64::NAN), MIB);
    }

    #[test]
    fn the_method_follows_rotational_and_says_why() {
        let mut disk = Disk {
            name: "loop3".into(),
            transport: Some("loop".into()),
            rotational: Some(true),
            ..Disk::default()
        };
        let (method, why) = choose_method(&disk, SurfaceTest::Auto);
        assert_eq!(method, SurfaceMethod::Badblocks);
        assert!(why.contains("loop device"), "{why}");
        disk.rotational = Some(false);
        assert_eq!(
            choose_method(&disk, SurfaceTest::Auto).0,
            SurfaceMethod::Fio
        );
        assert_eq!(
            choose_method(&disk, SurfaceTest::Badblocks).0,
            SurfaceMethod::Badblocks
        );
        disk.rotational = None;
        assert_eq!(
            choose_method(&disk, SurfaceTest::Auto).0,
            SurfaceMethod::Badblocks
        );
    }

    #[test]
    fn fio_error_messages_give_the_failed_ranges() {
        let messages = vec![
            "fio: io_u error on file /dev/loop0: Input/output error: write offset=4194304, buflen=1048576".to_string(),
            "fio: pid=7281, err=5/file:io_u.c:1876, func=io_u error, error=Input/output error".to_string(),
            "verify: bad magic header 0, wanted acca at file /dev/sdb offset 8388608, length 1048576 (requested block: offset=8388608, length=1048576)".to_string(),
            "fio: io_u error on file /dev/loop0: Input/output error: write offset=4194304, buflen=1048576".to_string(),
            "starting offset=5, length=7 but no trouble".to_string(),
        ];
        assert_eq!(
            failed_ranges(&messages),
            vec![(4_194_304, 1_048_576), (8_388_608, 1_048_576)]
        );
        assert!(failed_ranges(&[]).is_empty());
    }

    #[test]
    fn a_cut_off_badblocks_fails_on_listed_blocks_and_warns_otherwise() {
        let budget = Duration::from_secs(60);
        assert_eq!(partial_badblocks_verdict(b"", budget).status, Status::Warn);
        let verdict = partial_badblocks_verdict(b"17\n4242\n", budget);
        assert_eq!(verdict.status, Status::Fail);
        assert!(verdict.reasons[0].message.contains("17, 4242"));
    }
}
