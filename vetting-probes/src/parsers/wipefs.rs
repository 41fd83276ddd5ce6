//! Parser and verdict rules for `wipefs -J` (read-only listing; the wipe
//! probe never runs wipefs with `-a`).
//!
//! Output: `{"signatures": [{"device", "offset", "type", "uuid", "label"}]}`,
//! with the offset as a `0x...` string. util-linux 2.38 prints an empty
//! `signatures` array on a clean device, older versions print nothing at
//! all: [`parse_or_empty`] reads empty output as "no signatures", while
//! [`parse`] (and [`report`]) treat empty input as an error.
//!
//! Verdict: any signature (partition table, filesystem, RAID or LVM member)
//! fails, naming its type and offset; the stage turns that into a hold.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::json;
use crate::parsers::shared::lenient_u64;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "wipefs";

/// The signatures wipefs found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipefsReport {
    pub signatures: Vec<Signature>,
}

/// One signature: a magic string at an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub device: Option<String>,
    /// Byte offset of the magic on the device.
    pub offset: Option<u64>,
    /// The offset as wipefs printed it (`0x200`).
    pub offset_text: Option<String>,
    /// `gpt`, `PMBR`, `dos`, `ext4`, `LVM2_member`, `linux_raid_member`...
    pub signature_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// `filesystem`, `partition-table`, `raid`... when printed.
    pub usage: Option<String>,
}

fn text_field(entry: &Value, key: &str) -> Option<String> {
    match entry.get(key)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Parses `wipefs -J` output; empty input is an error.
pub fn parse(input: &[u8]) -> Result<WipefsReport, ParseError> {
    let document: Value = json(TOOL, input)?;
    let entries = document
        .get("signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::format(TOOL, "no \"signatures\" array: not wipefs -J output"))?;
    let signatures = entries
        .iter()
        .map(|entry| {
            let signature_type = text_field(entry, "type")
                .ok_or_else(|| ParseError::format(TOOL, "a signature has no \"type\""))?;
            let offset_value = entry.get("offset");
            Ok(Signature {
                device: text_field(entry, "device"),
                offset: offset_value.and_then(lenient_u64),
                offset_text: text_field(entry, "offset"),
                signature_type,
                uuid: text_field(entry, "uuid"),
                label: text_field(entry, "label"),
                usage: text_field(entry, "usage"),
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(WipefsReport { signatures })
}

/// Like [`parse`], but empty output (what older wipefs prints on a clean
/// device) means no signatures.
pub fn parse_or_empty(input: &[u8]) -> Result<WipefsReport, ParseError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Ok(WipefsReport::default());
    }
    parse(input)
}

/// Any signature fails, naming its type and offset.
pub fn verdict(report: &WipefsReport) -> Verdict {
    let mut verdict = Verdict::pass();
    for found in findings(report) {
        verdict.fail_with(found.message);
    }
    verdict
}

/// One thing a wipe-probe tool found: its kind (a signature type such as
/// `gpt`, `ext4`, `LVM2_member`), its byte offset where known, and what
/// it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: String,
    pub offset: Option<u64>,
    pub message: String,
}

/// Every signature, one [`Found`] each, in wipefs' order.
pub fn findings(report: &WipefsReport) -> Vec<Found> {
    report
        .signatures
        .iter()
        .map(|signature| {
            let offset = match (&signature.offset_text, signature.offset) {
                (Some(text), _) => text.clone(),
                (None, Some(offset)) => format!("0x{offset:x}"),
                (None, None) => "an unknown offset".to_owned(),
            };
            let mut message = format!(
                "wipe probe: found {} at offset {offset}",
                signature.signature_type
            );
            if let Some(device) = &signature.device {
                message.push_str(&format!(" on {device}"));
            }
            let details: Vec<String> = [("label", &signature.label), ("UUID", &signature.uuid)]
                .iter()
                .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name} {value}")))
                .collect();
            if !details.is_empty() {
                message.push_str(&format!(" ({})", details.join(", ")));
            }
            Found {
                kind: signature.signature_type.clone(),
                offset: signature.offset,
                message,
            }
        })
        .collect()
}

pub fn report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let parsed = parse(input)?;
    let verdict = verdict(&parsed);
    ToolReport::new(Tool::Wipefs, &parsed, verdict)
}
