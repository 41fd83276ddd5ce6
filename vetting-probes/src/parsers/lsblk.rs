//! Parser for `lsblk -J` (best with `-b -O`, or `-b -o` a column set such as
//! NAME,SIZE,ROTA,TRAN,RM,MODEL,SERIAL,WWN,TYPE,FSTYPE,PTTYPE): inventory
//! only, so the verdict is a pass with no reasons.
//!
//! Versions differ: util-linux 2.33 and later print booleans and numbers
//! (`"rota": true`, `"size": 16777216` with `-b`), older versions print
//! strings (`"rota": "1"`, `"size": "16777216"`) and pad `model` with
//! spaces. Without `-b` the size is human-readable (`"931.5G"`): it is kept
//! as text and `size_bytes` stays empty. Without udev (a live image before
//! udev runs) `fstype` and `pttype` are empty: the wipe probe reads the
//! device itself with wipefs and blkid instead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::json;
use crate::parsers::shared::lenient_u64;
use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "lsblk";

/// How deep `children` may nest (disk → partition → LVM → crypt ...).
const MAX_DEPTH: usize = 16;

/// Every block device lsblk listed, as a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsblkReport {
    pub devices: Vec<BlockDevice>,
}

impl LsblkReport {
    /// Every device, parents before their children.
    pub fn flatten(&self) -> Vec<&BlockDevice> {
        fn walk<'a>(devices: &'a [BlockDevice], out: &mut Vec<&'a BlockDevice>) {
            for device in devices {
                out.push(device);
                walk(&device.children, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.devices, &mut out);
        out
    }
}

/// One block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    pub kernel_name: Option<String>,
    pub path: Option<String>,
    pub size_bytes: Option<u64>,
    /// The size as printed when it was not a byte count (no `-b`).
    pub size_text: Option<String>,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
    pub read_only: Option<bool>,
    /// `sata`, `sas`, `nvme`, `usb`...
    pub transport: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub hctl: Option<String>,
    /// `disk`, `part`, `loop`, `lvm`, `raid1`, `rom`...
    pub device_type: Option<String>,
    pub fstype: Option<String>,
    pub pttype: Option<String>,
    pub mountpoints: Vec<String>,
    pub children: Vec<BlockDevice>,
}

fn text_field(entry: &Value, key: &str) -> Option<String> {
    match entry.get(key)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn bool_field(entry: &Value, key: &str) -> Option<bool> {
    match entry.get(key)? {
        Value::Bool(flag) => Some(*flag),
        Value::Number(number) => number.as_u64().map(|number| number != 0),
        Value::String(text) => match text.trim() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn parse_device(entry: &Value, depth: usize) -> Result<BlockDevice, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::format(TOOL, "children nest too deeply"));
    }
    let name = text_field(entry, "name")
        .ok_or_else(|| ParseError::format(TOOL, "a block device has no \"name\""))?;
    let size_bytes = entry.get("size").and_then(lenient_u64);
    let size_text = match size_bytes {
        Some(_) => None,
        None => text_field(entry, "size"),
    };
    let mut mountpoints: Vec<String> = entry
        .get("mountpoints")
        .and_then(Value::as_array)
        .map(|points| {
            points
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if mountpoints.is_empty()
        && let Some(point) = text_field(entry, "mountpoint")
    {
        mountpoints.push(point);
    }
    let children = match entry.get("children") {
        Some(Value::Array(children)) => children
            .iter()
            .map(|child| parse_device(child, depth + 1))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok(BlockDevice {
        name,
        kernel_name: text_field(entry, "kname"),
        path: text_field(entry, "path"),
        size_bytes,
        size_text,
        rotational: bool_field(entry, "rota"),
        removable: bool_field(entry, "rm"),
        read_only: bool_field(entry, "ro"),
        transport: text_field(entry, "tran"),
        vendor: text_field(entry, "vendor"),
        model: text_field(entry, "model"),
        serial: text_field(entry, "serial"),
        wwn: text_field(entry, "wwn"),
        hctl: text_field(entry, "hctl"),
        device_type: text_field(entry, "type"),
        fstype: text_field(entry, "fstype"),
        pttype: text_field(entry, "pttype"),
        mountpoints,
        children,
    })
}

/// Parses `lsblk -J` output.
pub fn parse(input: &[u8]) -> Result<LsblkReport, ParseError> {
    let document: Value = json(TOOL, input)?;
    let entries = document
        .get("blockdevices")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ParseError::format(TOOL, "no \"blockdevices\" array: not lsblk -J output")
        })?;
    let devices = entries
        .iter()
        .map(|entry| parse_device(entry, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LsblkReport { devices })
}

/// Inventory only: always a pass without reasons.
pub fn verdict(_report: &LsblkReport) -> Verdict {
    Verdict::pass()
}

pub fn report(input: &[u8], _thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let parsed = parse(input)?;
    let verdict = verdict(&parsed);
    ToolReport::new(Tool::Lsblk, &parsed, verdict)
}
