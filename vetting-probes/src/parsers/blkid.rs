//! Parser and verdict rules for `blkid -p -o export` (low-level probing of
//! the device itself, no cache, no udev).
//!
//! Output: `KEY=VALUE` lines, one block per device, blocks separated by a
//! blank line (`DEVNAME`, `TYPE`, `USAGE`, `UUID`, `LABEL`, `PTTYPE`,
//! `PTUUID`, `PART_ENTRY_*`, and with some flags `SBMAGIC_OFFSET` /
//! `PTMAGIC_OFFSET`). Values escape spaces and specials with a backslash.
//! When two signatures conflict blkid prints (on stderr) `DEV: ambivalent
//! result (probably more filesystems on the device, use wipefs(8) to see
//! more details)`; that line is accepted too. `blkid -p` prints nothing
//! and exits 2 when it finds nothing: [`parse_or_empty`] reads empty output
//! as "nothing found", while [`parse`] (and [`report`]) treat it as an error.
//!
//! Verdict: a filesystem or other superblock (`TYPE`), a partition table
//! (`PTTYPE`), a partition entry (`PART_ENTRY_SCHEME`) or an ambivalent
//! result fails, naming what was found.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::text;
pub use crate::parsers::wipefs::Found;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "blkid";

/// Every device blkid reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkidReport {
    pub devices: Vec<BlkidDevice>,
}

/// What blkid found on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkidDevice {
    pub devname: Option<String>,
    /// Superblock type (`ext4`, `xfs`, `swap`, `LVM2_member`...).
    pub signature_type: Option<String>,
    /// `filesystem`, `raid`, `crypto`, `other`.
    pub usage: Option<String>,
    /// Partition table type (`gpt`, `dos`).
    pub partition_table: Option<String>,
    /// blkid could not decide between several signatures.
    pub ambivalent: bool,
    /// Every tag, unescaped.
    pub tags: BTreeMap<String, String>,
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Undoes blkid's export escaping (`my\ disk` → `my disk`).
fn unescape(value: &str) -> String {
    let mut unescaped = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                unescaped.push(escaped);
            }
        } else {
            unescaped.push(c);
        }
    }
    unescaped
}

fn finish(device: &mut BlkidDevice, devices: &mut Vec<BlkidDevice>) {
    if device.tags.is_empty() && !device.ambivalent {
        return;
    }
    let mut done = std::mem::take(device);
    done.devname = done.tags.get("DEVNAME").cloned().or(done.devname);
    done.signature_type = done.tags.get("TYPE").cloned();
    done.usage = done.tags.get("USAGE").cloned();
    done.partition_table = done.tags.get("PTTYPE").cloned();
    devices.push(done);
}

/// Parses `blkid -p -o export` output; empty input is an error.
pub fn parse(input: &[u8]) -> Result<BlkidReport, ParseError> {
    let text = text(TOOL, input)?;
    let mut devices = Vec::new();
    let mut current = BlkidDevice::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            finish(&mut current, &mut devices);
            continue;
        }
        if let Some((device, _)) = line.split_once(": ambivalent result") {
            // A separate device when the current block names another one.
            if current
                .tags
                .get("DEVNAME")
                .is_some_and(|name| name != device)
            {
                finish(&mut current, &mut devices);
            }
            current.ambivalent = true;
            current.devname = Some(device.trim().to_owned());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ParseError::format(
                TOOL,
                format!("line {}: expected KEY=VALUE, got {line:?}", number + 1),
            ));
        };
        if !is_key(key) {
            return Err(ParseError::format(
                TOOL,
                format!("line {}: {key:?} is not a blkid tag name", number + 1),
            ));
        }
        if key == "DEVNAME" && current.tags.contains_key("DEVNAME") {
            finish(&mut current, &mut devices);
        }
        current.tags.insert(key.to_owned(), unescape(value));
    }
    finish(&mut current, &mut devices);
    if devices.is_empty() {
        return Err(ParseError::Empty { tool: TOOL });
    }
    Ok(BlkidReport { devices })
}

/// Like [`parse`], but empty output (blkid found nothing, exit status 2)
/// means no signatures.
pub fn parse_or_empty(input: &[u8]) -> Result<BlkidReport, ParseError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Ok(BlkidReport::default());
    }
    parse(input)
}

fn at_offset(device: &BlkidDevice, key: &str) -> String {
    device
        .tags
        .get(key)
        .map(|offset| format!(" at offset {offset}"))
        .unwrap_or_default()
}

/// Any signature, partition table or ambivalent result fails.
pub fn verdict(report: &BlkidReport) -> Verdict {
    let mut verdict = Verdict::pass();
    for found in findings(report) {
        verdict.fail_with(found.message);
    }
    verdict
}

/// Every signature, partition table, partition entry and ambivalent
/// result, one [`Found`] each (offsets from `SBMAGIC_OFFSET` and
/// `PTMAGIC_OFFSET`; kinds `partition_entry` and `ambivalent` for the
/// last two).
pub fn findings(report: &BlkidReport) -> Vec<Found> {
    let mut found = Vec::new();
    for device in &report.devices {
        let on = device
            .devname
            .as_deref()
            .map(|name| format!(" on {name}"))
            .unwrap_or_default();
        let offset_of = |key: &str| {
            device
                .tags
                .get(key)
                .and_then(|offset| offset.trim().parse::<u64>().ok())
        };
        if let Some(signature) = &device.signature_type {
            let mut details: Vec<String> = device.usage.iter().cloned().collect();
            for (tag, name) in [("LABEL", "label"), ("UUID", "UUID")] {
                if let Some(value) = device.tags.get(tag) {
                    details.push(format!("{name} {value}"));
                }
            }
            let details = if details.is_empty() {
                String::new()
            } else {
                format!(" ({})", details.join(", "))
            };
            found.push(Found {
                kind: signature.clone(),
                offset: offset_of("SBMAGIC_OFFSET"),
                message: format!(
                    "wipe probe: found {signature}{}{on}{details}",
                    at_offset(device, "SBMAGIC_OFFSET")
                ),
            });
        }
        if let Some(table) = &device.partition_table {
            let uuid = device
                .tags
                .get("PTUUID")
                .map(|uuid| format!(" (PTUUID {uuid})"))
                .unwrap_or_default();
            found.push(Found {
                kind: table.clone(),
                offset: offset_of("PTMAGIC_OFFSET"),
                message: format!(
                    "wipe probe: found a {table} partition table{}{on}{uuid}",
                    at_offset(device, "PTMAGIC_OFFSET")
                ),
            });
        }
        if let Some(scheme) = device.tags.get("PART_ENTRY_SCHEME") {
            found.push(Found {
                kind: "partition_entry".to_string(),
                // PART_ENTRY_OFFSET counts sectors of the parent: not a byte offset
                offset: None,
                message: format!("wipe probe: found a {scheme} partition entry{on}"),
            });
        }
        if device.ambivalent {
            found.push(Found {
                kind: "ambivalent".to_string(),
                offset: None,
                message: format!(
                    "wipe probe: blkid found an ambivalent result{on} (several signatures: list them with wipefs)"
                ),
            });
        }
    }
    found
}

pub fn report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let parsed = parse(input)?;
    let verdict = verdict(&parsed);
    ToolReport::new(Tool::Blkid, &parsed, verdict)
}
