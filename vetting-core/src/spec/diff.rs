//! The diff engine: a spec against an inventory, every difference with a
//! severity (critical fails SpecValidate), and the identity check that
//! stands before anything destructive.

use vetting_probes::disks::{DiskRule, match_disks, never_counted, same_serial};
use vetting_probes::inventory::{Disk, Inventory, LinkState, Nic};
use vetting_probes::parsers::dmidecode::{is_placeholder_uuid, meaningful};

use super::{
    DEFAULT_DISK_TOLERANCE_PERCENT, DEFAULT_MEMORY_TOLERANCE_PERCENT, DiskSpec, DisksSpec,
    Severity, Spec, SpecDiff, format_bytes_binary, format_bytes_decimal, glob_matches,
};

/// Compares the host record's identity (serial, UUID) with what the machine
/// reports. A mismatch is critical: a mistyped MAC or a moved cable must
/// not wipe the wrong server. Empty when the host record has neither.
pub fn identity_diff(
    host_serial: Option<&str>,
    host_uuid: Option<&str>,
    inventory: &Inventory,
) -> Vec<SpecDiff> {
    check_identity("host record", "identity", host_serial, host_uuid, inventory)
}

/// Every difference between `spec` and `inventory`, with its severity.
/// Matches are listed as `info`.
pub fn diff(spec: &Spec, inventory: &Inventory) -> Vec<SpecDiff> {
    let mut diffs = Vec::new();
    if let Some(system) = &spec.system {
        diffs.extend(check_identity(
            "spec",
            "system",
            system.serial.as_deref(),
            system.uuid.as_deref(),
            inventory,
        ));
        if let Some(pattern) = &system.product {
            let actual = inventory.system.product.clone();
            diffs.push(match &actual {
                Some(product) if glob_matches(pattern, product) => SpecDiff::new(
                    Severity::Info,
                    "system.product",
                    Some(pattern.clone()),
                    actual.clone(),
                    format!("product {product} matches"),
                ),
                Some(product) => SpecDiff::new(
                    Severity::Critical,
                    "system.product",
                    Some(pattern.clone()),
                    actual.clone(),
                    format!(
                        "wrong product: the machine is a {product}, the spec expects {pattern}"
                    ),
                ),
                None => SpecDiff::new(
                    Severity::Warning,
                    "system.product",
                    Some(pattern.clone()),
                    None,
                    format!("the machine reports no product name; the spec expects {pattern}"),
                ),
            });
        }
    }
    check_cpu(spec, inventory, &mut diffs);
    check_memory(spec, inventory, &mut diffs);
    check_disks(spec, inventory, &mut diffs);
    check_nics(spec, inventory, &mut diffs);
    check_gpus(spec, inventory, &mut diffs);
    check_psus(spec, inventory, &mut diffs);
    diffs
}

/// A serial as the firmware reports it, without placeholders.
fn reported_serial(inventory: &Inventory) -> Option<String> {
    inventory.system.serial.as_deref().and_then(meaningful)
}

/// A UUID as the firmware reports it, without placeholders.
fn reported_uuid(inventory: &Inventory) -> Option<String> {
    inventory
        .system
        .uuid
        .as_deref()
        .and_then(meaningful)
        .filter(|uuid| !is_placeholder_uuid(uuid))
}

/// UUIDs compare by their hex digits, case-insensitively; the byte order of
/// the first three fields differs between SMBIOS versions (and dmidecode
/// versions), so the swapped form matches too.
fn same_uuid(a: &str, b: &str) -> bool {
    let hex = |text: &str| -> String {
        text.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let (a, b) = (hex(a), hex(b));
    if a == b {
        return true;
    }
    if a.len() != 32 || b.len() != 32 {
        return false;
    }
    let swap = |field: &str| -> String {
        let bytes: Vec<&str> = (0..field.len() / 2)
            .map(|index| &field[index * 2..index * 2 + 2])
            .collect();
        bytes.into_iter().rev().collect()
    };
    let swapped = format!(
        "{}{}{}{}",
        swap(&a[0..8]),
        swap(&a[8..12]),
        swap(&a[12..16]),
        &a[16..]
    );
    swapped == b
}

/// The identity check shared by the host record and the spec's `system`.
fn check_identity(
    source: &str,
    path: &str,
    expected_serial: Option<&str>,
    expected_uuid: Option<&str>,
    inventory: &Inventory,
) -> Vec<SpecDiff> {
    let expected_serial = expected_serial.map(str::trim).filter(|s| !s.is_empty());
    let expected_uuid = expected_uuid.map(str::trim).filter(|s| !s.is_empty());
    // (what, expected, reported, how to compare)
    type Check<'a> = (
        &'a str,
        Option<&'a str>,
        Option<String>,
        fn(&str, &str) -> bool,
    );
    let checks: [Check; 2] = [
        (
            "serial",
            expected_serial,
            reported_serial(inventory),
            same_serial,
        ),
        ("UUID", expected_uuid, reported_uuid(inventory), same_uuid),
    ];
    let mut diffs = Vec::new();
    let mut matched = Vec::new();
    let mut mismatched = false;
    let mut unreadable = Vec::new();
    for (what, expected, actual, same) in checks {
        let Some(expected) = expected else { continue };
        let key = format!("{path}.{}", what.to_ascii_lowercase());
        match &actual {
            Some(actual) if same(expected, actual) => {
                matched.push(what);
                diffs.push(SpecDiff::new(
                    Severity::Info,
                    key,
                    Some(expected.to_string()),
                    Some(actual.clone()),
                    format!("identity: {what} {actual} matches the {source}"),
                ));
            }
            Some(actual) => {
                mismatched = true;
                diffs.push(SpecDiff::new(
                    Severity::Critical,
                    key,
                    Some(expected.to_string()),
                    Some(actual.clone()),
                    format!(
                        "identity mismatch: {source} says {what} {expected}, machine reports \
                         {actual}: wrong server? nothing destructive will run"
                    ),
                ));
            }
            None => unreadable.push((what, key, expected)),
        }
    }
    for (what, key, expected) in unreadable {
        let (severity, message) = if matched.is_empty() && !mismatched {
            (
                Severity::Critical,
                format!(
                    "identity cannot be confirmed: {source} says {what} {expected}, the machine \
                     reports no {what}: nothing destructive will run"
                ),
            )
        } else {
            (
                Severity::Warning,
                format!(
                    "the machine reports no {what} ({source} says {expected}); identity decided \
                     by the {}",
                    matched.join(" and ")
                ),
            )
        };
        diffs.push(SpecDiff::new(
            severity,
            key,
            Some(expected.to_string()),
            None,
            message,
        ));
    }
    diffs
}

fn check_cpu(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(cpu) = &spec.cpu else { return };
    let cpus = &inventory.cpus;
    if let Some(pattern) = &cpu.model {
        let models: Vec<(String, Option<String>)> = if cpus.packages.is_empty() {
            vec![("the CPU".to_string(), cpus.model.clone())]
        } else {
            cpus.packages
                .iter()
                .map(|package| {
                    (
                        format!("socket {}", package.socket),
                        package.model.clone().or_else(|| cpus.model.clone()),
                    )
                })
                .collect()
        };
        let mut all_match = true;
        for (place, model) in &models {
            match model {
                Some(model) if glob_matches(pattern, model) => {}
                Some(model) => {
                    all_match = false;
                    diffs.push(SpecDiff::new(
                        Severity::Critical,
                        "cpu.model",
                        Some(pattern.clone()),
                        Some(model.clone()),
                        format!("wrong CPU: {place} holds a {model}, the spec expects {pattern}"),
                    ));
                }
                None => {
                    all_match = false;
                    diffs.push(SpecDiff::new(
                        Severity::Critical,
                        "cpu.model",
                        Some(pattern.clone()),
                        None,
                        format!("the model of {place} is unknown; the spec expects {pattern}"),
                    ));
                }
            }
        }
        if all_match {
            let model = models
                .iter()
                .find_map(|(_, model)| model.clone())
                .unwrap_or_default();
            diffs.push(SpecDiff::new(
                Severity::Info,
                "cpu.model",
                Some(pattern.clone()),
                Some(model.clone()),
                format!("CPU model {model} matches"),
            ));
        }
    }
    let counted = [
        (
            "cpu.sockets",
            "populated sockets",
            cpu.sockets,
            cpus.sockets,
        ),
        ("cpu.cores", "physical cores", cpu.cores, cpus.cores),
    ];
    for (path, what, expected, actual) in counted {
        let Some(expected) = expected else { continue };
        let (severity, message) = if actual == 0 {
            (
                Severity::Critical,
                format!("the number of {what} is unknown; the spec expects {expected}"),
            )
        } else if actual != expected {
            (
                Severity::Critical,
                format!("wrong CPU: {actual} {what}, the spec expects {expected}"),
            )
        } else {
            (Severity::Info, format!("{actual} {what}, as expected"))
        };
        diffs.push(SpecDiff::new(
            severity,
            path,
            Some(expected.to_string()),
            (actual != 0).then(|| actual.to_string()),
            message,
        ));
    }
}

fn check_memory(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(memory) = &spec.memory else { return };
    if let Some(expected) = memory.total_bytes {
        let actual = inventory.memory.total_bytes;
        let tolerance = memory
            .tolerance_percent
            .unwrap_or(DEFAULT_MEMORY_TOLERANCE_PERCENT);
        let lower = expected as f64 * (1.0 - tolerance / 100.0);
        let upper = expected as f64 * (1.0 + tolerance / 100.0);
        let shown = |bytes: u64| format!("{} ({bytes} bytes)", format_bytes_binary(bytes));
        let (severity, message) = if actual == 0 {
            (
                Severity::Critical,
                format!(
                    "the installed memory is unknown; the spec expects {}",
                    format_bytes_binary(expected)
                ),
            )
        } else if (actual as f64) < lower {
            (
                Severity::Critical,
                format!(
                    "less memory than expected: {} installed, the spec expects {} \
                     (tolerance {tolerance} %)",
                    format_bytes_binary(actual),
                    format_bytes_binary(expected)
                ),
            )
        } else if (actual as f64) > upper {
            (
                Severity::Warning,
                format!(
                    "more memory than expected: {} installed, the spec expects {}",
                    format_bytes_binary(actual),
                    format_bytes_binary(expected)
                ),
            )
        } else {
            (
                Severity::Info,
                format!("{} of memory, as expected", format_bytes_binary(actual)),
            )
        };
        diffs.push(SpecDiff::new(
            severity,
            "memory.total_bytes",
            Some(shown(expected)),
            (actual != 0).then(|| shown(actual)),
            message,
        ));
    }
    if let Some(expected) = memory.dimm_count {
        let actual = inventory.memory.dimms.len();
        let (severity, message) = if actual == 0 {
            (
                Severity::Warning,
                format!(
                    "the firmware lists no DIMMs, so their number is unknown; the spec expects \
                     {expected}"
                ),
            )
        } else if actual != expected as usize {
            (
                Severity::Warning,
                format!("{actual} DIMMs populated, the spec expects {expected}"),
            )
        } else {
            (Severity::Info, format!("{actual} DIMMs, as expected"))
        };
        diffs.push(SpecDiff::new(
            severity,
            "memory.dimm_count",
            Some(expected.to_string()),
            (actual != 0).then(|| actual.to_string()),
            message,
        ));
    }
}

/// `sdb (MZ7LH1T9HMLT-00005, serial S1, 1.92 TB)`.
pub(crate) fn describe_disk(disk: &Disk) -> String {
    let mut parts = Vec::new();
    if let Some(model) = &disk.model {
        parts.push(model.clone());
    }
    if let Some(serial) = &disk.serial {
        parts.push(format!("serial {serial}"));
    }
    parts.push(format_bytes_decimal(disk.size_bytes));
    if disk.removable {
        parts.push("removable".into());
    }
    format!("{} ({})", disk.name, parts.join(", "))
}

fn check_disks(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(disks_spec) = &spec.disks else {
        return;
    };
    let disks = &inventory.disks;
    let matched = match_disks(disks, &disk_rules(disks_spec));
    let names = |found: &[usize]| -> String {
        found
            .iter()
            .map(|&at| disks[at].name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let described = |found: &[usize]| -> Option<String> {
        (!found.is_empty()).then(|| {
            found
                .iter()
                .map(|&at| describe_disk(&disks[at]))
                .collect::<Vec<_>>()
                .join("; ")
        })
    };
    // disks named by serial or WWN first, then the model/size groups
    for identified in [true, false] {
        for (index, entry) in disks_spec.devices.iter().enumerate() {
            if entry.is_identified() != identified {
                continue;
            }
            let path = format!("disks.devices[{index}]");
            let found = &matched.rules[index];
            let not_counted = found
                .not_counted
                .iter()
                .map(|&(at, why)| format!("{} is {}: not counted", disks[at].name, why.why()))
                .collect::<Vec<_>>();
            let not_counted_text = if not_counted.is_empty() {
                String::new()
            } else {
                format!("; {}", not_counted.join("; "))
            };
            let (severity, message) = if found.met && identified {
                (
                    Severity::Info,
                    format!("disk {} found: {}", entry.describe(), names(&found.counted)),
                )
            } else if found.met {
                (
                    Severity::Info,
                    format!("{} found: {}", entry.describe(), names(&found.counted)),
                )
            } else if found.counted.len() > found.wanted
                || (identified && !found.counted.is_empty())
            {
                let all: Vec<usize> = found
                    .counted
                    .iter()
                    .copied()
                    .chain(found.not_counted.iter().map(|&(at, _)| at))
                    .collect();
                (
                    Severity::Critical,
                    format!(
                        "ambiguous disk: the spec expects {} × {}, {} disks match ({}){not_counted_text}: \
                         the Storage stage writes none of them",
                        found.wanted,
                        describe_group(entry),
                        all.len(),
                        names(&all)
                    ),
                )
            } else if identified && found.not_counted.is_empty() {
                (
                    Severity::Critical,
                    format!("missing disk: {} is not in the machine", entry.describe()),
                )
            } else {
                (
                    Severity::Critical,
                    format!(
                        "missing disk: the spec expects {} × {}, found {}{}{not_counted_text}",
                        found.wanted,
                        describe_group(entry),
                        found.counted.len(),
                        if found.counted.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", names(&found.counted))
                        }
                    ),
                )
            };
            diffs.push(SpecDiff::new(
                severity,
                path,
                Some(entry.describe()),
                described(&found.counted),
                message,
            ));
        }
    }
    let mut unmatched = Vec::new();
    for (at, disk) in disks.iter().enumerate() {
        if matched.claimed_by[at].is_some() {
            continue;
        }
        if let Some(why) = never_counted(disk) {
            diffs.push(SpecDiff::new(
                Severity::Info,
                "disks",
                None,
                Some(describe_disk(disk)),
                format!(
                    "disk {} is {}: not counted and never tested",
                    describe_disk(disk),
                    why.why()
                ),
            ));
        } else {
            unmatched.push(disk);
        }
    }
    let total = matched.matched().len() + unmatched.len();
    let unmatched_text = unmatched
        .iter()
        .map(|disk| describe_disk(disk))
        .collect::<Vec<_>>()
        .join("; ");
    match disks_spec.exact_count {
        Some(exact) => {
            let exact = exact as usize;
            let (severity, message) = if total < exact {
                (
                    Severity::Critical,
                    format!("fewer disks than expected: {total} of {exact}"),
                )
            } else if total > exact {
                (
                    Severity::Warning,
                    format!(
                        "more disks than expected: {total}, the spec expects {exact}; not in the \
                         spec (never tested destructively): {unmatched_text}"
                    ),
                )
            } else {
                (Severity::Info, format!("{total} disks, as expected"))
            };
            diffs.push(SpecDiff::new(
                severity,
                "disks.exact_count",
                Some(exact.to_string()),
                Some(total.to_string()),
                message,
            ));
        }
        None if !disks_spec.devices.is_empty() => {
            for disk in unmatched {
                diffs.push(SpecDiff::new(
                    Severity::Warning,
                    "disks",
                    None,
                    Some(describe_disk(disk)),
                    format!(
                        "extra disk {} is not in the spec (never tested destructively)",
                        describe_disk(disk)
                    ),
                ));
            }
        }
        None => {}
    }
}

/// The spec's disks as the shared disk rule (with their tolerance).
fn disk_rules(disks_spec: &DisksSpec) -> Vec<DiskRule> {
    disks_spec
        .devices
        .iter()
        .map(|entry| DiskRule {
            serial: entry.serial.clone(),
            wwn: entry.wwn.clone(),
            model: entry.model.clone(),
            size_bytes: entry.size_bytes,
            size_tolerance_percent: entry
                .size_tolerance_percent
                .unwrap_or(DEFAULT_DISK_TOLERANCE_PERCENT),
            count: entry.wanted(),
        })
        .collect()
}

/// The names of the disks that make an expected disk present, in the
/// inventory's order: the matched set of the disk rule
/// ([`vetting_probes::disks`]), the same disks the agent's allowlist may
/// write. Removable, USB and MMC/SD disks are never among them.
pub fn matched_disks(spec: &Spec, inventory: &Inventory) -> Vec<String> {
    let Some(disks_spec) = &spec.disks else {
        return Vec::new();
    };
    match_disks(&inventory.disks, &disk_rules(disks_spec))
        .matched()
        .into_iter()
        .map(|at| inventory.disks[at].name.clone())
        .collect()
}

/// `model X, 1.92 TB` without the count.
fn describe_group(entry: &DiskSpec) -> String {
    DiskSpec {
        count: None,
        ..entry.clone()
    }
    .describe()
}

/// `10000` → `10 Gb/s`, `2500` → `2.5 Gb/s`, `100` → `100 Mb/s`.
fn format_speed(mbps: u64) -> String {
    if mbps >= 1000 {
        let text = format!("{:.1}", mbps as f64 / 1000.0);
        format!("{} Gb/s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{mbps} Mb/s")
    }
}

/// What a NIC can do: its fastest supported speed, or (where the supported
/// speeds are unknown) the speed it negotiated, which it certainly supports.
fn nic_capability(nic: &Nic) -> Option<u64> {
    nic.max_supported_mbps().or(nic.speed_mbps)
}

fn check_nics(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(nics_spec) = &spec.nics else { return };
    let nics = &inventory.nics;
    if let Some(expected) = nics_spec.count {
        let actual = nics.len();
        let names = nics
            .iter()
            .map(|nic| nic.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (severity, message) = if actual < expected as usize {
            (
                Severity::Critical,
                format!(
                    "fewer NICs than expected: {actual} ({names}), the spec expects {expected}"
                ),
            )
        } else if actual > expected as usize {
            (
                Severity::Warning,
                format!("more NICs than expected: {actual} ({names}), the spec expects {expected}"),
            )
        } else {
            (Severity::Info, format!("{actual} NICs, as expected"))
        };
        diffs.push(SpecDiff::new(
            severity,
            "nics.count",
            Some(expected.to_string()),
            Some(actual.to_string()),
            message,
        ));
    }
    if let Some(min) = nics_spec.min_speed_mbps {
        let needed = nics_spec.min_speed_count.or(nics_spec.count).unwrap_or(1) as usize;
        let capable: Vec<&Nic> = nics
            .iter()
            .filter(|nic| nic_capability(nic).is_some_and(|speed| speed >= min))
            .collect();
        let shortfalls: Vec<String> = nics
            .iter()
            .filter(|nic| nic_capability(nic).is_none_or(|speed| speed < min))
            .map(|nic| match nic_capability(nic) {
                Some(speed) => format!("{} supports up to {}", nic.name, format_speed(speed)),
                None => format!("{}: supported speeds unknown", nic.name),
            })
            .collect();
        let expected = format!("{needed} × ≥ {}", format_speed(min));
        let actual = Some(format!("{} × ≥ {}", capable.len(), format_speed(min)));
        if capable.len() < needed {
            diffs.push(SpecDiff::new(
                Severity::Critical,
                "nics.min_speed_mbps",
                Some(expected),
                actual,
                format!(
                    "NIC below the expected capability: {} of {needed} NICs support {} or more{}",
                    capable.len(),
                    format_speed(min),
                    if shortfalls.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", shortfalls.join("; "))
                    }
                ),
            ));
        } else {
            diffs.push(SpecDiff::new(
                Severity::Info,
                "nics.min_speed_mbps",
                Some(expected),
                actual,
                format!(
                    "{} support {} or more",
                    capable
                        .iter()
                        .map(|nic| nic.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    format_speed(min)
                ),
            ));
        }
        for nic in &capable {
            if nic.link == LinkState::Up
                && let Some(speed) = nic.speed_mbps
                && speed < min
            {
                diffs.push(SpecDiff::new(
                    Severity::Info,
                    "nics.min_speed_mbps",
                    Some(format_speed(min)),
                    Some(format_speed(speed)),
                    format!(
                        "{} supports {} and is linked at {}: the negotiated speed depends on the \
                         vetting switch, not a difference",
                        nic.name,
                        format_speed(nic_capability(nic).unwrap_or(speed)),
                        format_speed(speed)
                    ),
                ));
            }
        }
    }
}

fn check_gpus(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(gpus_spec) = &spec.gpus else { return };
    let gpus = &inventory.gpus;
    if let Some(expected) = gpus_spec.count {
        let actual = gpus.len();
        let (severity, message) = if actual < expected as usize {
            (
                Severity::Critical,
                format!("missing GPU: {actual} found, the spec expects {expected}"),
            )
        } else if actual > expected as usize {
            (
                Severity::Warning,
                format!("more GPUs than expected: {actual}, the spec expects {expected}"),
            )
        } else {
            (Severity::Info, format!("{actual} GPUs, as expected"))
        };
        diffs.push(SpecDiff::new(
            severity,
            "gpus.count",
            Some(expected.to_string()),
            Some(actual.to_string()),
            message,
        ));
    }
    if let Some(pattern) = &gpus_spec.model {
        if gpus.is_empty() && gpus_spec.count.is_none() {
            diffs.push(SpecDiff::new(
                Severity::Critical,
                "gpus.model",
                Some(pattern.clone()),
                None,
                format!("missing GPU: none found, the spec expects {pattern}"),
            ));
        }
        for gpu in gpus {
            let place = gpu
                .pci_slot
                .as_deref()
                .map_or_else(|| gpu.identity(), |slot| format!("PCI {slot}"));
            match &gpu.model {
                Some(model) if glob_matches(pattern, model) => diffs.push(SpecDiff::new(
                    Severity::Info,
                    "gpus.model",
                    Some(pattern.clone()),
                    Some(model.clone()),
                    format!("GPU at {place}: {model} matches"),
                )),
                Some(model) => diffs.push(SpecDiff::new(
                    Severity::Critical,
                    "gpus.model",
                    Some(pattern.clone()),
                    Some(model.clone()),
                    format!("wrong GPU at {place}: {model}, the spec expects {pattern}"),
                )),
                None => diffs.push(SpecDiff::new(
                    Severity::Warning,
                    "gpus.model",
                    Some(pattern.clone()),
                    None,
                    format!("the model of the GPU at {place} is unknown"),
                )),
            }
        }
    }
}

fn check_psus(spec: &Spec, inventory: &Inventory, diffs: &mut Vec<SpecDiff>) {
    let Some(expected) = spec.psus.as_ref().and_then(|psus| psus.count) else {
        return;
    };
    let actual = inventory.psus.len();
    let (severity, message) = if actual < expected as usize {
        (
            Severity::Critical,
            format!("fewer power supplies than expected: {actual}, the spec expects {expected}"),
        )
    } else if actual > expected as usize {
        (
            Severity::Warning,
            format!("more power supplies than expected: {actual}, the spec expects {expected}"),
        )
    } else {
        (
            Severity::Info,
            format!("{actual} power supplies, as expected"),
        )
    };
    diffs.push(SpecDiff::new(
        severity,
        "psus.count",
        Some(expected.to_string()),
        Some(actual.to_string()),
        message,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_match_across_smbios_byte_orders() {
        let dmidecode = "35353636-3335-5A43-3232-343630335138";
        assert!(same_uuid(dmidecode, &dmidecode.to_lowercase()));
        assert!(same_uuid(dmidecode, "36363535-3533-435a-3232-343630335138"));
        assert!(!same_uuid(
            dmidecode,
            "36363535-3533-435a-3232-343630335139"
        ));
    }

    #[test]
    fn speeds_format() {
        assert_eq!(format_speed(10_000), "10 Gb/s");
        assert_eq!(format_speed(2_500), "2.5 Gb/s");
        assert_eq!(format_speed(100), "100 Mb/s");
    }
}
