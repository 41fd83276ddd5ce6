//! Parser for `lshw -json`: the root object (older lshw) or an array of
//! roots (newer lshw), walked into system, memory, CPUs, disks, NICs,
//! displays and the nodes that sit on PCI.
//!
//! lshw's JSON is loose: `logicalname` is a string or an array, numbers are
//! sometimes strings, and a NIC's `size` is its current link speed while
//! `capacity` is the fastest it can do. lshw output is inventory: its
//! verdict is always `pass`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ParseError, Thresholds, Tool, ToolReport, Verdict};

const TOOL: &str = "lshw";

/// What vetting reads from an lshw tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lshw {
    pub system: LshwSystem,
    /// The `System memory` node's size (or the sum of its banks).
    pub memory_bytes: Option<u64>,
    pub memory_banks: Vec<LshwMemoryBank>,
    pub cpus: Vec<LshwCpu>,
    pub disks: Vec<LshwDisk>,
    pub nics: Vec<LshwNic>,
    pub displays: Vec<LshwPciNode>,
    /// Every node with a `pci@` bus address.
    pub pci_nodes: Vec<LshwPciNode>,
    /// How many nodes the tree holds.
    pub node_count: usize,
}

/// The root node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwSystem {
    /// The root's `id`: the host name.
    pub id: Option<String>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwMemoryBank {
    pub slot: Option<String>,
    pub description: Option<String>,
    pub size_bytes: Option<u64>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwCpu {
    pub product: Option<String>,
    pub vendor: Option<String>,
    pub slot: Option<String>,
    pub businfo: Option<String>,
    pub cores: Option<u32>,
    pub enabled_cores: Option<u32>,
    pub threads: Option<u32>,
    /// Disabled CPUs are listed by lshw with `disabled: true`.
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwDisk {
    /// The first `/dev/…` logical name.
    pub device: Option<String>,
    pub logical_names: Vec<String>,
    pub description: Option<String>,
    pub product: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub businfo: Option<String>,
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwNic {
    pub logical_name: Option<String>,
    pub product: Option<String>,
    pub vendor: Option<String>,
    /// The MAC address (lshw's `serial`).
    pub mac: Option<String>,
    pub businfo: Option<String>,
    pub driver: Option<String>,
    /// `configuration.link`: `yes` / `no`.
    pub link: Option<bool>,
    /// Current link speed in bit/s (lshw's `size`).
    pub speed_bps: Option<u64>,
    /// Fastest supported speed in bit/s (lshw's `capacity`).
    pub capacity_bps: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LshwPciNode {
    pub businfo: String,
    pub class: Option<String>,
    pub description: Option<String>,
    pub product: Option<String>,
    pub vendor: Option<String>,
    pub driver: Option<String>,
}

/// Parses `lshw -json` output.
pub fn parse(input: &[u8]) -> Result<Lshw, ParseError> {
    let root: Value = crate::error::json(TOOL, input)?;
    let roots: Vec<&Value> = match &root {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![&root],
        _ => return Err(ParseError::format(TOOL, "expected a JSON object or array")),
    };
    let roots: Vec<&Value> = roots.into_iter().filter(|node| is_node(node)).collect();
    let Some(first) = roots.first() else {
        return Err(ParseError::format(
            TOOL,
            "no lshw node (an object with `id` and `class`) found",
        ));
    };
    let mut data = Lshw {
        system: LshwSystem {
            id: string(first, "id"),
            vendor: string(first, "vendor"),
            product: string(first, "product"),
            serial: string(first, "serial"),
            uuid: first
                .get("configuration")
                .and_then(|configuration| string(configuration, "uuid")),
        },
        ..Lshw::default()
    };
    for root in roots {
        walk(root, &mut data, 0);
    }
    Ok(data)
}

/// lshw output is inventory: it passes, with no reasons.
pub fn verdict(_data: &Lshw, _thresholds: &Thresholds) -> Verdict {
    Verdict::pass()
}

pub fn report(input: &[u8], thresholds: &Thresholds) -> Result<ToolReport, ParseError> {
    let data = parse(input)?;
    let verdict = verdict(&data, thresholds);
    ToolReport::new(Tool::Lshw, &data, verdict)
}

fn is_node(value: &Value) -> bool {
    value.get("id").is_some_and(Value::is_string)
        && value.get("class").is_some_and(Value::is_string)
}

/// How deep a tree may go before the rest is ignored (lshw trees are a
/// handful of levels; this only guards against hostile input).
const MAX_DEPTH: usize = 64;

fn walk(node: &Value, data: &mut Lshw, depth: usize) {
    if depth > MAX_DEPTH || !node.is_object() {
        return;
    }
    data.node_count += 1;
    let class = string(node, "class").unwrap_or_default();
    let id = string(node, "id").unwrap_or_default();
    let businfo = string(node, "businfo");
    let configuration = node.get("configuration");
    let config = |key: &str| configuration.and_then(|configuration| string(configuration, key));

    if let Some(pci) = businfo.as_deref().filter(|bus| bus.starts_with("pci@")) {
        let pci_node = LshwPciNode {
            businfo: pci.to_string(),
            class: Some(class.clone()),
            description: string(node, "description"),
            product: string(node, "product"),
            vendor: string(node, "vendor"),
            driver: config("driver"),
        };
        if class == "display" {
            data.displays.push(pci_node.clone());
        }
        data.pci_nodes.push(pci_node);
    }

    match class.as_str() {
        "memory" if is_system_memory(node, &id) => {
            let banks: Vec<LshwMemoryBank> = children(node)
                .filter(|bank| string(bank, "class").as_deref() == Some("memory"))
                .map(|bank| LshwMemoryBank {
                    slot: string(bank, "slot"),
                    description: string(bank, "description"),
                    size_bytes: number(bank, "size"),
                    vendor: string(bank, "vendor"),
                    product: string(bank, "product"),
                    serial: string(bank, "serial"),
                })
                .collect();
            let bank_total: u64 = banks.iter().filter_map(|bank| bank.size_bytes).sum();
            let size = number(node, "size").or((bank_total > 0).then_some(bank_total));
            data.memory_bytes =
                Some(data.memory_bytes.unwrap_or(0) + size.unwrap_or(0)).filter(|&total| total > 0);
            data.memory_banks.extend(banks);
        }
        "processor" => data.cpus.push(LshwCpu {
            product: string(node, "product"),
            vendor: string(node, "vendor"),
            slot: string(node, "slot"),
            businfo: businfo.clone(),
            cores: config("cores").and_then(|cores| cores.parse().ok()),
            enabled_cores: config("enabledcores").and_then(|cores| cores.parse().ok()),
            threads: config("threads").and_then(|threads| threads.parse().ok()),
            disabled: node
                .get("disabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        "disk" => {
            let logical_names = logical_names(node);
            data.disks.push(LshwDisk {
                device: logical_names
                    .iter()
                    .find(|name| name.starts_with("/dev/"))
                    .cloned(),
                logical_names,
                description: string(node, "description"),
                product: string(node, "product"),
                vendor: string(node, "vendor"),
                serial: string(node, "serial"),
                businfo: businfo.clone(),
                size_bytes: number(node, "size"),
            });
        }
        "network" => data.nics.push(LshwNic {
            logical_name: logical_names(node).into_iter().next(),
            product: string(node, "product"),
            vendor: string(node, "vendor"),
            mac: string(node, "serial"),
            businfo: businfo.clone(),
            driver: config("driver"),
            link: config("link").map(|link| link == "yes"),
            speed_bps: number(node, "size"),
            capacity_bps: number(node, "capacity"),
        }),
        _ => {}
    }
    for child in children(node) {
        walk(child, data, depth + 1);
    }
}

/// The `System memory` node (not a cache, not a firmware ROM, not a bank).
fn is_system_memory(node: &Value, id: &str) -> bool {
    let description = string(node, "description").unwrap_or_default();
    id == "memory"
        || id.starts_with("memory:")
        || description == "System Memory"
        || description == "System memory"
}

fn children(node: &Value) -> impl Iterator<Item = &Value> {
    node.get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A string field, trimmed; numbers are turned into text.
fn string(node: &Value, key: &str) -> Option<String> {
    match node.get(key)? {
        Value::String(text) => {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_string())
        }
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A numeric field, as a number or a string of digits.
fn number(node: &Value, key: &str) -> Option<u64> {
    match node.get(key)? {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|value| *value >= 0.0)
                .map(|value| value as u64)
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// `logicalname` as a list, whether lshw wrote a string or an array.
fn logical_names(node: &Value) -> Vec<String> {
    match node.get("logicalname") {
        Some(Value::String(name)) => vec![name.clone()],
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_root_and_string_numbers() {
        let json = br#"[{"id":"host","class":"system","children":[
            {"id":"memory","class":"memory","size":"1024"},
            {"id":"network","class":"network","logicalname":"eth0","serial":"aa:bb","size":1000000000,"capacity":10000000000}
        ]}]"#;
        let data = parse(json).unwrap();
        assert_eq!(data.system.id.as_deref(), Some("host"));
        assert_eq!(data.memory_bytes, Some(1024));
        assert_eq!(data.nics[0].capacity_bps, Some(10_000_000_000));
    }

    #[test]
    fn json_that_is_not_lshw_is_an_error() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"[1, 2]").is_err());
        assert!(parse(b"\"text\"").is_err());
    }
}
