//! The evidence of a stage result, checked before anything is written: the
//! uploaded tool outputs are found only through the `artifacts` rows of
//! the run, stage and attempt (never through a name or path the request
//! carries), read without following links and with a size cap, and
//! re-judged with the verdict rules of `vetting-probes` using the tool
//! recorded at upload (the agent's own rules as well: EDAC, throttle,
//! thermal sidecar, NIC counters and SMART growth are uploaded as
//! documents of `vetting_probes::verdicts`, whose tools judge them). An
//! output of a verdict tool that cannot be read never passes a stage, and
//! no error ever carries a file's content.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vetting_probes::protocol::{ArtifactRef, Stage};
use vetting_probes::{ParseError, Status, Thresholds, Tool, Verdict};

use crate::store::entities::artifact;

/// The most tool outputs one stage attempt may upload and name in its
/// result, before counting disks: inventory probes, the stress report,
/// both iperf3 directions, sensors.
pub const ARTIFACTS_PER_STAGE: usize = 16;
/// What each allowlisted disk adds to [`ARTIFACTS_PER_STAGE`] (SMART
/// before and after, surface test, wipe probe outputs).
pub const ARTIFACTS_PER_DISK: usize = 8;
/// The most bytes of one artifact the orchestrator reads to re-judge it
/// (the artifact endpoint's own body limit is the same).
pub const MAX_EVIDENCE_BYTES: u64 = 64 * 1024 * 1024;

/// How many artifacts a stage attempt of a host with `disks` allowlisted
/// disks may carry.
pub fn artifact_cap(disks: usize) -> usize {
    ARTIFACTS_PER_STAGE + ARTIFACTS_PER_DISK * disks
}

/// Why a result's evidence is refused (a 422: nothing was opened or
/// written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "the result names artifact `{name}`, which was not uploaded for {stage} attempt {attempt}"
    )]
    NotUploaded {
        name: String,
        stage: Stage,
        attempt: u32,
    },
    #[error("the result names {count} artifacts; at most {cap} are taken for this stage")]
    TooMany { count: usize, cap: usize },
    #[error(
        "the result names artifact `{name}` as `{claimed}` output, but it was uploaded as {recorded}"
    )]
    ToolMismatch {
        name: String,
        claimed: String,
        recorded: String,
    },
}

/// The references of a result with repeats merged (same name: one
/// reference; a tool or subject given once is kept).
pub fn merge_references(references: &[ArtifactRef]) -> Vec<ArtifactRef> {
    let mut merged: BTreeMap<&str, ArtifactRef> = BTreeMap::new();
    for reference in references {
        let entry = merged
            .entry(reference.name.as_str())
            .or_insert_with(|| ArtifactRef {
                name: reference.name.clone(),
                tool: None,
                subject: None,
            });
        if entry.tool.is_none() {
            entry.tool.clone_from(&reference.tool);
        }
        if entry.subject.is_none() {
            entry.subject.clone_from(&reference.subject);
        }
    }
    merged.into_values().collect()
}

/// Checks a result's (merged) references against the artifact rows of its
/// stage attempt: each names an uploaded artifact, with the tool it was
/// uploaded as; at most `cap` of them.
pub fn check_references(
    references: &[ArtifactRef],
    rows: &[artifact::Model],
    stage: Stage,
    attempt: u32,
    cap: usize,
) -> Result<(), EvidenceError> {
    if references.len() > cap {
        return Err(EvidenceError::TooMany {
            count: references.len(),
            cap,
        });
    }
    for reference in references {
        let Some(row) = rows.iter().find(|row| row.name == reference.name) else {
            return Err(EvidenceError::NotUploaded {
                name: reference.name.clone(),
                stage,
                attempt,
            });
        };
        if let Some(claimed) = &reference.tool
            && row.tool.as_deref() != Some(claimed.as_str())
        {
            return Err(EvidenceError::ToolMismatch {
                name: reference.name.clone(),
                claimed: claimed.clone(),
                recorded: row
                    .tool
                    .as_deref()
                    .map_or("no tool".to_string(), |tool| format!("`{tool}` output")),
            });
        }
    }
    Ok(())
}

/// One uploaded output to re-judge, as its row describes it.
#[derive(Debug, Clone)]
pub struct EvidenceFile {
    pub name: String,
    pub tool: Tool,
    /// Where the orchestrator itself put it (rebuilt from the row's stage,
    /// attempt and checked name, not read from the row's path).
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// The outputs of a stage attempt that carry a verdict tool, from its rows.
/// `dir` is the stage attempt's artifact folder. Rows whose name is not a
/// plain file name (none are written so) or whose tool is unknown are
/// listed in the second value instead.
pub fn evidence_files(dir: &Path, rows: &[artifact::Model]) -> (Vec<EvidenceFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut unusable = Vec::new();
    for row in rows {
        let Some(tool_name) = row.tool.as_deref() else {
            continue; // a raw log: evidence for the operator, no verdict
        };
        let Some(tool) = Tool::from_name(tool_name) else {
            unusable.push(format!(
                "artifact `{}` names unknown tool `{tool_name}`",
                row.name
            ));
            continue;
        };
        if !rejudged(tool) {
            continue;
        }
        if !crate::agent::valid_artifact_name(&row.name) {
            unusable.push(format!("artifact row {} has no plain file name", row.id));
            continue;
        }
        files.push(EvidenceFile {
            name: row.name.clone(),
            tool,
            path: dir.join(&row.name),
            size: row.size_bytes.max(0) as u64,
            sha256: row.sha256.clone(),
        });
    }
    (files, unusable)
}

/// Tools whose output is evidence for a hold, not a pass/fail verdict:
/// the wipe probe's outputs are not re-judged.
pub fn rejudged(tool: Tool) -> bool {
    !matches!(tool, Tool::Wipefs | Tool::Blkid | Tool::Lsblk)
}

/// Reads an artifact file the orchestrator wrote: never through a link,
/// never a FIFO or device (opened non-blocking, then checked to be a
/// regular file), at most `cap` bytes, and only if it is still what was
/// uploaded (size and SHA-256 of the row).
pub fn read_evidence(file: &EvidenceFile, cap: u64) -> Result<Vec<u8>, String> {
    use nix::fcntl::OFlag;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(&file.path)
        .map_err(|error| match error.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => {
                "it is a symbolic link, not the uploaded file".to_string()
            }
            _ => format!("it cannot be opened ({})", error.kind()),
        })?;
    let metadata = opened
        .metadata()
        .map_err(|error| format!("it cannot be examined ({})", error.kind()))?;
    if !metadata.is_file() {
        return Err("it is not a regular file".to_string());
    }
    if metadata.len() > cap {
        return Err(format!(
            "it is {} bytes, more than the {cap} bytes read to re-judge",
            metadata.len()
        ));
    }
    if metadata.len() != file.size {
        return Err(format!(
            "it is {} bytes, not the {} bytes uploaded",
            metadata.len(),
            file.size
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    opened
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("it cannot be read ({})", error.kind()))?;
    if bytes.len() as u64 != file.size || hex::encode(Sha256::digest(&bytes)) != file.sha256 {
        return Err("its content changed since it was uploaded".to_string());
    }
    Ok(bytes)
}

/// What went wrong in a parse, without any of the input.
pub fn describe_parse_error(error: &ParseError) -> String {
    match error {
        ParseError::Empty { .. } => "the output is empty".to_string(),
        ParseError::NotUtf8 { offset, .. } => {
            format!("the output is not UTF-8 (byte {offset})")
        }
        ParseError::Json { source, .. } => format!(
            "the output is not the expected JSON (line {}, column {})",
            source.line(),
            source.column()
        ),
        ParseError::Xml { .. } => "the output is not the expected XML".to_string(),
        ParseError::Yaml { source, .. } => match source.location() {
            Some(at) => format!(
                "the output is not the expected YAML (line {}, column {})",
                at.line(),
                at.column()
            ),
            None => "the output is not the expected YAML".to_string(),
        },
        ParseError::Format { .. } => "the output is not in the tool's format".to_string(),
    }
}

/// The orchestrator's verdict on one uploaded output. At InventoryCheck an
/// unreadable probe is listed (a warning; whether anything usable remains
/// is decided over the whole stage); anywhere else output of a verdict
/// tool that cannot be read fails, naming the tool and what was wrong.
pub fn judge_file(file: &EvidenceFile, stage: Stage, thresholds: &Thresholds) -> Judged {
    let unreadable = |what: String| {
        let message = format!(
            "{} output `{}` cannot be re-judged: {what}",
            file.tool, file.name
        );
        let mut verdict = Verdict::pass();
        if stage == Stage::InventoryCheck {
            verdict.warn(message);
        } else {
            verdict.fail_with(message);
        }
        Judged {
            name: file.name.clone(),
            tool: file.tool,
            readable: false,
            verdict,
        }
    };
    let bytes = match read_evidence(file, MAX_EVIDENCE_BYTES) {
        Ok(bytes) => bytes,
        Err(what) => return unreadable(what),
    };
    match vetting_probes::parse_and_judge(file.tool, &bytes, thresholds) {
        Ok(report) => {
            let mut verdict = report.verdict;
            for reason in &mut verdict.reasons {
                reason.message = format!("{} `{}`: {}", file.tool, file.name, reason.message);
            }
            Judged {
                name: file.name.clone(),
                tool: file.tool,
                readable: true,
                verdict,
            }
        }
        Err(error) => unreadable(describe_parse_error(&error)),
    }
}

/// The re-judged verdict of one output.
#[derive(Debug, Clone)]
pub struct Judged {
    pub name: String,
    pub tool: Tool,
    pub readable: bool,
    pub verdict: Verdict,
}

/// Folds the re-judged outputs of a stage into one verdict. At
/// InventoryCheck the stage fails only when nothing usable remains: no
/// inventory, or tool outputs of which none could be read.
pub fn fold(stage: Stage, judged: &[Judged], unusable: &[String], has_inventory: bool) -> Verdict {
    let mut verdict = Verdict::pass();
    for one in judged {
        verdict.merge(one.verdict.clone());
    }
    for line in unusable {
        if stage == Stage::InventoryCheck {
            verdict.warn(line.clone());
        } else {
            verdict.fail_with(line.clone());
        }
    }
    if stage == Stage::InventoryCheck {
        if !has_inventory {
            verdict.fail_with("the result carries no inventory");
        } else if !judged.is_empty() && judged.iter().all(|one| !one.readable) {
            verdict.fail_with("none of the inventory probes' outputs could be read");
        }
    }
    verdict
}

/// Whether a folded verdict fails.
pub fn fails(verdict: &Verdict) -> bool {
    verdict.status == Status::Fail
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(name: &str, tool: Option<&str>) -> artifact::Model {
        artifact::Model {
            id: 1,
            run_id: "r".into(),
            stage: Some("SMART".into()),
            attempt: Some(1),
            name: name.into(),
            tool: tool.map(str::to_string),
            path: "/etc/shadow".into(),
            size_bytes: 0,
            sha256: String::new(),
            created_at_ms: 0,
        }
    }

    pub(crate) fn reference(name: &str, tool: Option<&str>) -> ArtifactRef {
        ArtifactRef {
            name: name.into(),
            tool: tool.map(str::to_string),
            subject: None,
        }
    }

    #[test]
    pub(crate) fn references_resolve_only_through_rows() {
        let rows = vec![row("smartctl-sda.json", Some("smartctl"))];
        for name in ["/etc/passwd", "../secret.key", "x", "smartctl-sdb.json"] {
            assert_eq!(
                check_references(&[reference(name, None)], &rows, Stage::Smart, 1, 16),
                Err(EvidenceError::NotUploaded {
                    name: name.into(),
                    stage: Stage::Smart,
                    attempt: 1
                })
            );
        }
        check_references(
            &[reference("smartctl-sda.json", Some("smartctl"))],
            &rows,
            Stage::Smart,
            1,
            16,
        )
        .unwrap();
        assert!(matches!(
            check_references(
                &[reference("smartctl-sda.json", Some("lspci"))],
                &rows,
                Stage::Smart,
                1,
                16
            ),
            Err(EvidenceError::ToolMismatch { .. })
        ));
    }

    #[test]
    pub(crate) fn repeats_merge_and_the_count_is_capped() {
        let repeated: Vec<ArtifactRef> = (0..300).map(|_| reference("a.json", None)).collect();
        let merged = merge_references(&repeated);
        assert_eq!(merged.len(), 1);
        let many: Vec<ArtifactRef> = (0..17).map(|i| reference(&format!("a{i}"), None)).collect();
        assert_eq!(
            check_references(&merge_references(&many), &[], Stage::Smart, 1, 16),
            Err(EvidenceError::TooMany { count: 17, cap: 16 })
        );
        assert_eq!(artifact_cap(2), 32);
    }

    #[test]
    pub(crate) fn the_path_read_is_rebuilt_not_taken_from_the_row() {
        let (files, unusable) = evidence_files(
            Path::new("/data/runs/r/artifacts/SMART-1"),
            &[row("smartctl-sda.json", Some("smartctl"))],
        );
        assert!(unusable.is_empty());
        assert_eq!(
            files[0].path,
            Path::new("/data/runs/r/artifacts/SMART-1/smartctl-sda.json")
        );
        let (files, unusable) = evidence_files(Path::new("/d"), &[row("../x", Some("lspci"))]);
        assert!(files.is_empty());
        assert_eq!(unusable.len(), 1);
    }

    #[test]
    pub(crate) fn unreadable_output_fails_outside_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lspci.txt");
        std::fs::write(&path, b"\xff\xfe not text").unwrap();
        let file = EvidenceFile {
            name: "lspci.txt".into(),
            tool: Tool::Lspci,
            path: path.clone(),
            size: 11,
            sha256: hex::encode(Sha256::digest(b"\xff\xfe not text")),
        };
        let thresholds = Thresholds::default();
        let judged = judge_file(&file, Stage::Gpu, &thresholds);
        assert_eq!(judged.verdict.status, Status::Fail, "{:?}", judged.verdict);
        assert!(!judged.verdict.reasons[0].message.contains("not text"));
        let judged = judge_file(&file, Stage::InventoryCheck, &thresholds);
        assert_eq!(judged.verdict.status, Status::Warn);
        let folded = fold(Stage::InventoryCheck, &[judged], &[], true);
        assert_eq!(folded.status, Status::Fail, "nothing usable remains");
    }

    #[test]
    pub(crate) fn links_fifos_and_devices_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, b"top secret").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let fifo = dir.path().join("fifo.txt");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [link, fifo, PathBuf::from("/dev/zero")] {
            let file = EvidenceFile {
                name: "x".into(),
                tool: Tool::Lspci,
                path,
                size: 10,
                sha256: String::new(),
            };
            let error = read_evidence(&file, 1024).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
