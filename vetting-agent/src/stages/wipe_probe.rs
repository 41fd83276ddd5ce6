//! The wipe probe: before anything is written to a candidate disk, look
//! for what it holds. Signatures come from `wipefs -J --no-act DEV` and
//! `blkid -p -o export DEV` (read-only listings); data without a signature
//! comes from the agent's own read of the device: the whole first and last
//! MiB plus `wipe_probe_samples` blocks of 4 KiB spread across the disk. A
//! block is clean when every byte in it is the same (zeros, or the 0xFF of
//! erased flash); any other block is data.
//!
//! The samples are read with `O_DIRECT` where the device allows it, one
//! block at a time, so a read error belongs to the block that was asked
//! for (a buffered read fails a whole readahead window, blaming blocks
//! that read fine). A block that cannot be read (EIO) is a failing sector:
//! it is recorded and sampling goes on, up to [`MAX_UNREADABLE`] of them.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use vetting_probes::Tool;
use vetting_probes::inventory::Disk;
use vetting_probes::parsers::wipefs::Found;
use vetting_probes::parsers::{blkid, wipefs};
use vetting_probes::protocol::{FINDING_UNEXPECTED_DATA, WipeFinding, wipe_finding_id};
use vetting_probes::runner::{RunError, ToolCommand};

use super::{Artifact, Cancelled, StageContext, stop_if_cancelled};

/// The size of a sampled block.
pub const SAMPLE_BLOCK: u64 = 4096;
/// The head and tail of the disk read in full.
pub const EDGE_BYTES: u64 = 1024 * 1024;

/// Sampling stops after this many unreadable blocks: enough evidence, and
/// a dying disk can take seconds per failed read.
pub const MAX_UNREADABLE: usize = 16;

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// What the probe found on one disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeFindings {
    /// `wipe probe: found gpt at offset 0x200 on /dev/loop3` and the like,
    /// with the signature's kind and offset.
    pub signatures: Vec<Found>,
    /// The data sampling's finding, when a block held data (kind
    /// `unexpected_data`, at the first such block).
    pub unexpected_data: Option<Found>,
    /// Byte offsets of sampled blocks ([`SAMPLE_BLOCK`] bytes) that could
    /// not be read: failing sectors. Such a disk fails and is not written.
    pub unreadable_blocks: Vec<u64>,
    /// Why the probe could not look (a tool failed, the device is
    /// unreadable): the disk is not written then.
    pub errors: Vec<String>,
    pub artifacts: Vec<Artifact>,
}

impl ProbeFindings {
    /// The signatures and the data finding.
    pub fn found(&self) -> impl Iterator<Item = &Found> {
        self.signatures.iter().chain(self.unexpected_data.iter())
    }

    /// What was found, as wire findings with stable ids (the disk's
    /// identity, the kind, the offset).
    pub fn wipe_findings(&self, disk: &Disk) -> Vec<WipeFinding> {
        let identity = disk.identity();
        self.found()
            .map(|found| WipeFinding {
                id: wipe_finding_id(&identity, &found.kind, found.offset),
                disk: disk.name.clone(),
                kind: found.kind.clone(),
                offset: found.offset,
                message: found.message.clone(),
            })
            .collect()
    }

    pub fn is_clean(&self) -> bool {
        self.signatures.is_empty()
            && self.unexpected_data.is_none()
            && self.unreadable_blocks.is_empty()
            && self.errors.is_empty()
    }

    /// What the unreadable blocks say, when there are any: the failing
    /// sectors, named by block number (of [`SAMPLE_BLOCK`] bytes) and
    /// offset.
    pub fn failing_sectors(&self, device: &str) -> Option<String> {
        if self.unreadable_blocks.is_empty() {
            return None;
        }
        let named: Vec<String> = self
            .unreadable_blocks
            .iter()
            .take(10)
            .map(|offset| format!("{} (offset 0x{offset:x})", offset / SAMPLE_BLOCK))
            .collect();
        let more = if self.unreadable_blocks.len() > named.len() {
            ", …"
        } else {
            ""
        };
        Some(format!(
            "failing sectors: the wipe probe could not read {} bad block(s) of {SAMPLE_BLOCK} bytes on {device}: {}{more}",
            self.unreadable_blocks.len(),
            named.join(", ")
        ))
    }
}

/// Probes `/dev/NAME` (or `device` as given).
pub fn probe(
    context: &StageContext,
    name: &str,
    device: &Path,
) -> Result<ProbeFindings, Cancelled> {
    let mut findings = ProbeFindings::default();
    let device_text = device.display().to_string();

    // wipefs
    let command = ToolCommand::new("wipefs")
        .args(["-J", "--no-act", &device_text])
        .timeout(TOOL_TIMEOUT);
    match context.run_tool(&command) {
        Ok(output) => {
            findings.artifacts.push(Artifact::new(
                &format!("wipefs-{name}.json"),
                Some(Tool::Wipefs),
                Some(&device_text),
                output.stdout.clone(),
            ));
            if !output.status.success() {
                findings.errors.push(format!(
                    "wipefs on {device_text}: {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            match wipefs::parse_or_empty(&output.stdout) {
                Ok(report) => findings.signatures.extend(wipefs::findings(&report)),
                Err(error) => findings.errors.push(format!(
                    "wipefs output on {device_text} unreadable: {error}"
                )),
            }
        }
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            findings.errors.push(probe_tool_error(&error));
        }
    }

    // blkid -p: low-level probing, no cache, no udev
    let command = ToolCommand::new("blkid")
        .args(["-p", "-o", "export", &device_text])
        .timeout(TOOL_TIMEOUT);
    match context.run_tool(&command) {
        Ok(output) => {
            findings.artifacts.push(Artifact::new(
                &format!("blkid-{name}.txt"),
                Some(Tool::Blkid).filter(|_| !output.stdout.iter().all(u8::is_ascii_whitespace)),
                Some(&device_text),
                output.stdout.clone(),
            ));
            // exit 2: nothing found; anything else but 0 is an error
            if !matches!(output.status.code, Some(0 | 2)) {
                findings.errors.push(format!(
                    "blkid on {device_text}: {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            match blkid::parse_or_empty(&output.stdout) {
                Ok(report) => {
                    for found in blkid::findings(&report) {
                        // wipefs usually names the same signature: keep one each
                        if !findings
                            .signatures
                            .iter()
                            .any(|known| same_signature(known, &found))
                        {
                            findings.signatures.push(found);
                        }
                    }
                }
                Err(error) => findings
                    .errors
                    .push(format!("blkid output on {device_text} unreadable: {error}")),
            }
        }
        Err(error) => {
            stop_if_cancelled(context, &error)?;
            findings.errors.push(probe_tool_error(&error));
        }
    }
    context.check_cancelled()?;

    // the agent's own look at the data
    match sample_device(device, context.params.storage.wipe_probe_samples) {
        Ok(sampling) => {
            context.log.agent(format!(
                "wipe probe: read {} block(s) of {} on {device_text}{}: {} hold data, {} unreadable",
                sampling.blocks_read,
                SAMPLE_BLOCK,
                if sampling.direct { " (O_DIRECT)" } else { "" },
                sampling.blocks_with_data,
                sampling.unreadable.len()
            ));
            for offset in &sampling.unreadable {
                context.log.agent(format!(
                    "wipe probe: block {} (offset 0x{offset:x}) of {device_text} cannot be read",
                    offset / SAMPLE_BLOCK
                ));
            }
            findings.unreadable_blocks = sampling.unreadable.clone();
            if sampling.blocks_with_data > 0 {
                let first = sampling.first_data_offset.unwrap_or(0);
                findings.unexpected_data = Some(Found {
                    kind: FINDING_UNEXPECTED_DATA.to_string(),
                    offset: Some(first),
                    message: format!(
                        "wipe probe: {} of {} sampled block(s) on {device_text} hold data without a known signature (first at offset 0x{first:x})",
                        sampling.blocks_with_data, sampling.blocks_read,
                    ),
                });
            }
        }
        Err(error) => findings
            .errors
            .push(format!("wipe probe cannot read {device_text}: {error}")),
    }
    Ok(findings)
}

/// Whether two tools name the same signature: the same kind, at the same
/// offset where both know it.
fn same_signature(known: &Found, other: &Found) -> bool {
    known.kind.eq_ignore_ascii_case(&other.kind)
        && match (known.offset, other.offset) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

fn probe_tool_error(error: &RunError) -> String {
    match error {
        RunError::NotFound { program } => format!(
            "wipe probe: tool {program} is not installed, so signatures cannot be ruled out"
        ),
        other => format!("wipe probe: {other}"),
    }
}

/// What sampling a device found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sampling {
    pub blocks_read: u64,
    pub blocks_with_data: u64,
    pub first_data_offset: Option<u64>,
    /// Offsets of the blocks that could not be read (I/O errors).
    pub unreadable: Vec<u64>,
    /// Whether the device was read with `O_DIRECT`.
    pub direct: bool,
}

/// The offsets to sample on a device of `size` bytes: every block of the
/// first and last MiB, and `samples` blocks spread evenly in between.
pub fn sample_offsets(size: u64, samples: u32) -> Vec<u64> {
    let blocks = size / SAMPLE_BLOCK;
    if blocks == 0 {
        return Vec::new();
    }
    let edge_blocks = EDGE_BYTES / SAMPLE_BLOCK;
    let mut offsets: Vec<u64> = Vec::new();
    offsets.extend((0..edge_blocks.min(blocks)).map(|block| block * SAMPLE_BLOCK));
    let tail_start = blocks.saturating_sub(edge_blocks);
    offsets.extend((tail_start..blocks).map(|block| block * SAMPLE_BLOCK));
    let samples = u64::from(samples);
    if samples > 0 {
        for index in 0..samples {
            // evenly spaced, the first at block 0 and the last at the end
            let block = if samples == 1 {
                0
            } else {
                index * (blocks - 1) / (samples - 1)
            };
            offsets.push(block * SAMPLE_BLOCK);
        }
    }
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// Whether every byte of `block` is the same.
pub fn is_uniform(block: &[u8]) -> bool {
    block
        .first()
        .is_none_or(|first| block.iter().all(|byte| byte == first))
}

/// Reads the sampled blocks of a device (read-only), with `O_DIRECT` where
/// the device takes it. An I/O error on a block is recorded and sampling
/// goes on (up to [`MAX_UNREADABLE`] such blocks); other errors (the
/// device cannot be opened or sized) end it.
pub fn sample_device(device: &Path, samples: u32) -> std::io::Result<Sampling> {
    let mut sampling = Sampling::default();
    let direct = open_direct(device);
    sampling.direct = direct.is_some();
    let buffered = File::open(device)?;
    let size = (&buffered).seek(SeekFrom::End(0))?;
    // an O_DIRECT buffer must be aligned: take an aligned window of a
    // larger allocation
    let mut storage = vec![0u8; 2 * SAMPLE_BLOCK as usize];
    let start = storage
        .as_ptr()
        .align_offset(SAMPLE_BLOCK as usize)
        .min(SAMPLE_BLOCK as usize);
    let block = &mut storage[start..start + SAMPLE_BLOCK as usize];
    for offset in sample_offsets(size, samples) {
        let read = match &direct {
            Some(file) => match read_block_at(file, block, offset) {
                // the device refuses O_DIRECT for this read: buffered instead
                Err(error) if error.raw_os_error() == Some(nix::libc::EINVAL) => {
                    read_block_at(&buffered, block, offset)
                }
                other => other,
            },
            None => read_block_at(&buffered, block, offset),
        };
        match read {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(nix::libc::EIO) => {
                sampling.unreadable.push(offset);
                if sampling.unreadable.len() >= MAX_UNREADABLE {
                    break;
                }
                continue;
            }
            Err(error) => return Err(error),
        }
        sampling.blocks_read += 1;
        if !is_uniform(block) {
            sampling.blocks_with_data += 1;
            sampling.first_data_offset.get_or_insert(offset);
        }
    }
    Ok(sampling)
}

/// The device opened read-only with `O_DIRECT`, when it allows that.
fn open_direct(device: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(device)
        .ok()
}

/// Reads exactly `block.len()` bytes at `offset`.
fn read_block_at(file: &File, block: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(block, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_both_edges_and_spread_between() {
        let size = 64 * 1024 * 1024;
        let offsets = sample_offsets(size, 16);
        assert!(offsets.contains(&0));
        assert!(offsets.contains(&(EDGE_BYTES - SAMPLE_BLOCK)));
        assert!(offsets.contains(&(size - SAMPLE_BLOCK)));
        assert!(offsets.contains(&(size - EDGE_BYTES)));
        assert!(
            offsets
                .iter()
                .any(|&o| o > EDGE_BYTES && o < size - EDGE_BYTES)
        );
        assert!(offsets.iter().all(|&o| o + SAMPLE_BLOCK <= size));
        // a tiny device: every block, no duplicates
        let tiny = sample_offsets(3 * SAMPLE_BLOCK, 100);
        assert_eq!(tiny, vec![0, SAMPLE_BLOCK, 2 * SAMPLE_BLOCK]);
        assert!(sample_offsets(100, 10).is_empty());
    }

    #[test]
    fn unreadable_blocks_are_named_by_number_and_offset() {
        let findings = ProbeFindings {
            unreadable_blocks: vec![128 * SAMPLE_BLOCK, 1024 * SAMPLE_BLOCK],
            ..ProbeFindings::default()
        };
        assert!(!findings.is_clean());
        let text = findings.failing_sectors("/dev/loop3").unwrap();
        assert!(text.contains("2 bad block(s)"), "{text}");
        assert!(text.contains("128 (offset 0x80000)"), "{text}");
        assert!(text.contains("1024 (offset 0x400000)"), "{text}");
        assert_eq!(ProbeFindings::default().failing_sectors("/dev/loop3"), None);
    }

    #[test]
    fn uniform_blocks_are_clean() {
        assert!(is_uniform(&[0; 4096]));
        assert!(is_uniform(&[0xff; 4096]));
        let mut data = [0u8; 4096];
        data[4000] = 1;
        assert!(!is_uniform(&data));
    }

    #[test]
    fn sampling_a_file_finds_data_anywhere_sampled() {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let size = 8 * 1024 * 1024;
        file.as_file().set_len(size).unwrap();
        let clean = sample_device(file.path(), 64).unwrap();
        assert_eq!(clean.blocks_with_data, 0);
        assert!(clean.blocks_read >= 512);
        // data in the last block only
        file.seek(SeekFrom::Start(size - 10)).unwrap();
        file.write_all(b"xyz").unwrap();
        file.flush().unwrap();
        let dirty = sample_device(file.path(), 64).unwrap();
        assert_eq!(dirty.blocks_with_data, 1);
        assert_eq!(dirty.first_data_offset, Some(size - SAMPLE_BLOCK));
    }
}
