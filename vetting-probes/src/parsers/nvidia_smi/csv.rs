//! `nvidia-smi --query-gpu=... --format=csv` (units in the header or in the
//! values, `nounits`, `[N/A]`) and `--query-retired-pages` into typed rows.
//! Rows repeating another row under a new index (same bus id) are recorded
//! as duplicates; rows repeating a GPU with other values are later samples.

use std::collections::{BTreeMap, HashMap};

use crate::ParseError;

use super::tree::{leading_count, leading_number, meaningful, yes_no};
use super::{
    DuplicateRow, EccErrors, Gpu, MemoryRepair, PcieLink, RemappedRows, RetiredPage,
    RetiredPageCounts, Snapshot, SourceFormat, TOOL, any_flag, canonical_reason,
};

/// Field names every query-gpu header is likely to hold one of.
const KNOWN_FIELDS: [&str; 10] = [
    "index",
    "name",
    "uuid",
    "serial",
    "pci.bus_id",
    "driver_version",
    "timestamp",
    "power.draw",
    "temperature.gpu",
    "memory.total",
];

/// `power.draw [W]` → `power.draw`.
fn field_name(header_field: &str) -> &str {
    let field = header_field.trim();
    match field.find(" [") {
        Some(position) if field.ends_with(']') => field[..position].trim(),
        _ => field,
    }
}

fn split_row(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// Whether a line is a `--query-gpu` CSV header.
pub(super) fn looks_like_query_header(header: &str) -> bool {
    let fields: Vec<&str> = split_row(header).into_iter().map(field_name).collect();
    let well_formed = fields.iter().all(|field| {
        !field.is_empty()
            && field.chars().all(|character| {
                character.is_ascii_alphanumeric() || character == '_' || character == '.'
            })
    });
    // A known field, and one that only nvidia-smi names this way (dotted
    // names like `power.draw`, or `index`/`uuid`).
    well_formed
        && fields.iter().any(|field| KNOWN_FIELDS.contains(field))
        && fields.iter().any(|field| {
            field.contains('.') || matches!(*field, "index" | "uuid" | "driver_version" | "pstate")
        })
}

/// The header and the data rows, each row as many fields as the header.
fn table(body: &str) -> Result<(Vec<String>, Vec<Vec<&str>>), ParseError> {
    let mut lines = body.lines().filter(|line| !line.trim().is_empty());
    let header_line = lines
        .next()
        .ok_or_else(|| ParseError::format(TOOL, "CSV without a header"))?;
    let header: Vec<String> = split_row(header_line)
        .into_iter()
        .map(|field| field_name(field).to_string())
        .collect();
    let mut rows = Vec::new();
    for (number, line) in lines.enumerate() {
        let row = split_row(line);
        if row.len() != header.len() {
            return Err(ParseError::format(
                TOOL,
                format!(
                    "CSV row {} has {} fields, the header {} (truncated or not nvidia-smi CSV)",
                    number + 1,
                    row.len(),
                    header.len()
                ),
            ));
        }
        rows.push(row);
    }
    Ok((header, rows))
}

/// Parses `--query-gpu` CSV.
pub(super) fn parse_query_gpu(body: &str) -> Result<Snapshot, ParseError> {
    let (header, rows) = table(body)?;
    if !looks_like_query_header(&header.join(",")) {
        return Err(ParseError::format(
            TOOL,
            "CSV header is not a --query-gpu header",
        ));
    }
    if rows.is_empty() {
        return Err(ParseError::format(TOOL, "--query-gpu CSV has no GPU rows"));
    }
    let position = |name: &str| header.iter().position(|field| field == name);
    let index_column = position("index");
    let identity_column = position("pci.bus_id")
        .or_else(|| position("uuid"))
        .or(index_column);

    let mut snapshot = Snapshot {
        label: String::new(),
        source: SourceFormat::QueryCsv,
        phase: None,
        driver_version: None,
        attached_gpus: None,
        gpus: Vec::new(),
        duplicate_rows: Vec::new(),
        later_samples: Vec::new(),
    };
    // identity → the first row seen with it.
    let mut first_rows: HashMap<String, &Vec<&str>> = HashMap::new();
    for row in &rows {
        let gpu = gpu_from_row(&header, row);
        let identity = identity_column.and_then(|column| meaningful(row[column]));
        let Some(identity) = identity else {
            snapshot.gpus.push(gpu);
            continue;
        };
        let Some(first) = first_rows.get(identity) else {
            first_rows.insert(identity.to_string(), row);
            snapshot.gpus.push(gpu);
            continue;
        };
        let same_except_index = first
            .iter()
            .zip(row.iter())
            .enumerate()
            .all(|(column, (a, b))| Some(column) == index_column || a == b);
        let index_differs = index_column.is_some_and(|column| first[column] != row[column]);
        if same_except_index && index_differs {
            snapshot.duplicate_rows.push(DuplicateRow {
                index: gpu.index,
                duplicate_of_index: index_column
                    .and_then(|column| leading_count(first[column]))
                    .and_then(|index| u32::try_from(index).ok()),
                pci_bus_id: gpu.pci_bus_id.clone(),
            });
        } else {
            snapshot.later_samples.push(gpu);
        }
    }
    snapshot.driver_version = snapshot
        .gpus
        .iter()
        .find_map(|gpu| gpu.driver_version.clone());
    Ok(snapshot)
}

/// Bits of `clocks_event_reasons.active` (nvml `nvmlClocksEventReason*`).
const REASON_BITS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

fn gpu_from_row(header: &[String], row: &[&str]) -> Gpu {
    let fields: BTreeMap<&str, &str> = header
        .iter()
        .map(String::as_str)
        .zip(row.iter().copied())
        .collect();
    let get = |name: &str| fields.get(name).copied().and_then(meaningful);
    let first = |names: &[&str]| names.iter().find_map(|name| get(name));
    let number = |names: &[&str]| first(names).and_then(leading_number);
    let count = |name: &str| get(name).and_then(leading_count);
    let small = |names: &[&str]| {
        first(names)
            .and_then(leading_count)
            .and_then(|value| u32::try_from(value).ok())
    };
    let owned = |name: &str| get(name).map(str::to_string);
    // A total when the output has one, else the largest part (a lower bound).
    let ecc = |prefix: &str| {
        get(&format!("{prefix}.total"))
            .and_then(leading_count)
            .or_else(|| {
                fields
                    .iter()
                    .filter(|(name, _)| {
                        name.strip_prefix(prefix)
                            .and_then(|rest| rest.strip_prefix('.'))
                            .is_some_and(|rest| !rest.contains('.'))
                    })
                    .filter_map(|(_, value)| meaningful(value).and_then(leading_count))
                    .max()
            })
    };

    let mut active = Vec::new();
    for (name, value) in &fields {
        let reason = name
            .strip_prefix("clocks_event_reasons.")
            .or_else(|| name.strip_prefix("clocks_throttle_reasons."));
        if let Some(reason) = reason
            && reason != "supported"
            && reason != "active"
            && value.trim().eq_ignore_ascii_case("active")
        {
            active.push(canonical_reason(reason));
        }
    }
    let mask = first(&[
        "clocks_event_reasons.active",
        "clocks_throttle_reasons.active",
    ])
    .and_then(|value| u64::from_str_radix(value.trim_start_matches("0x"), 16).ok());
    if let Some(mask) = mask {
        for (bit, reason) in REASON_BITS {
            if mask & bit != 0 && !active.iter().any(|seen| seen == reason) {
                active.push(reason.to_string());
            }
        }
    }
    let counters = fields
        .iter()
        .filter_map(|(name, value)| {
            let reason = name
                .strip_prefix("clocks_event_reasons_counters.")
                .or_else(|| name.strip_prefix("clocks_throttle_reasons_counters."))?;
            Some((
                canonical_reason(reason),
                meaningful(value).and_then(leading_count)?,
            ))
        })
        .collect();

    Gpu {
        index: small(&["index"]),
        name: owned("name"),
        serial: owned("serial"),
        uuid: owned("uuid"),
        pci_bus_id: owned("pci.bus_id"),
        memory_total_mib: count("memory.total"),
        driver_version: owned("driver_version"),
        driver_model: owned("driver_model.current"),
        performance_state: owned("pstate"),
        pcie: PcieLink {
            gen_current: small(&["pcie.link.gen.current", "pcie.link.gen.gpucurrent"]),
            gen_max: small(&["pcie.link.gen.max", "pcie.link.gen.gpumax"]),
            width_current: small(&["pcie.link.width.current"]),
            width_max: small(&["pcie.link.width.max"]),
        },
        temperature_c: number(&["temperature.gpu"]),
        temperature_slowdown_c: None,
        temperature_tlimit_margin_c: number(&["temperature.gpu.tlimit"]),
        power_draw_w: number(&["power.draw", "power.draw.instant", "power.draw.average"]),
        power_limit_w: number(&["enforced.power.limit", "power.limit"]),
        ecc_mode: owned("ecc.mode.current"),
        ecc_errors: EccErrors {
            corrected_volatile: ecc("ecc.errors.corrected.volatile"),
            corrected_aggregate: ecc("ecc.errors.corrected.aggregate"),
            uncorrected_volatile: ecc("ecc.errors.uncorrected.volatile"),
            uncorrected_aggregate: ecc("ecc.errors.uncorrected.aggregate"),
        },
        retired_pages: RetiredPageCounts {
            single_bit: count("retired_pages.single_bit_ecc.count"),
            double_bit: count("retired_pages.double_bit.count"),
            pending: any_flag([get("retired_pages.pending").and_then(yes_no)]),
        },
        remapped_rows: RemappedRows {
            correctable: count("remapped_rows.correctable"),
            uncorrectable: count("remapped_rows.uncorrectable"),
            pending: get("remapped_rows.pending").and_then(yes_no),
            failure: get("remapped_rows.failure").and_then(yes_no),
        },
        memory_repair: MemoryRepair::default(),
        clock_reasons_active: active,
        clock_reason_counters_us: counters,
        mig_mode: owned("mig.mode.current"),
        mig_devices: Vec::new(),
        recovery_action: owned("gpu_recovery_action"),
        timestamp: owned("timestamp"),
    }
}

/// Parses `--query-retired-pages` CSV: the real rows, and how many
/// placeholder rows (no address) there were.
pub(super) fn parse_retired_pages(body: &str) -> Result<(Vec<RetiredPage>, usize), ParseError> {
    let (header, rows) = table(body)?;
    let position = |name: &str| header.iter().position(|field| field == name);
    let address_column = position("retired_pages.address").ok_or_else(|| {
        ParseError::format(TOOL, "retired pages CSV without retired_pages.address")
    })?;
    let bus_column = position("gpu_bus_id");
    let cause_column = position("retired_pages.cause");
    let mut pages = Vec::new();
    let mut placeholders = 0;
    for row in rows {
        match meaningful(row[address_column]) {
            Some(address) => pages.push(RetiredPage {
                pci_bus_id: bus_column
                    .and_then(|column| meaningful(row[column]))
                    .map(str::to_string),
                address: address.to_string(),
                cause: cause_column
                    .and_then(|column| meaningful(row[column]))
                    .map(str::to_string),
            }),
            None => placeholders += 1,
        }
    }
    Ok((pages, placeholders))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_in_header_and_values() {
        let snapshot =
            parse_query_gpu("index, power.draw [W], timestamp\n0, 16.48 W, t1\n0, 27.32 W, t2\n")
                .unwrap();
        assert_eq!(snapshot.gpus.len(), 1);
        assert_eq!(snapshot.gpus[0].power_draw_w, Some(16.48));
        assert_eq!(snapshot.later_samples.len(), 1);
        assert!(snapshot.duplicate_rows.is_empty());
    }

    #[test]
    fn active_mask_is_decoded() {
        let snapshot =
            parse_query_gpu("index, clocks_event_reasons.active\n0, 0x0000000000000048\n").unwrap();
        assert_eq!(
            snapshot.gpus[0].clock_reasons_active,
            vec!["hw_slowdown".to_string(), "hw_thermal_slowdown".to_string()]
        );
    }

    #[test]
    fn short_row_is_an_error() {
        assert!(parse_query_gpu("index, name\n0\n").is_err());
    }

    #[test]
    fn placeholder_retired_pages_are_not_pages() {
        let (pages, placeholders) = parse_retired_pages(
            "timestamp, gpu_name, gpu_bus_id, gpu_serial, gpu_uuid, retired_pages.address, retired_pages.timestamp, retired_pages.cause\n\
             t, G, 00000000:00:09.0, 0, GPU-0, [N/A], [N/A], Single Bit ECC\n\
             t, G, 00000000:00:09.0, 0, GPU-0, 0x000000000001f2a0, 2024/01/01, Double Bit ECC\n",
        )
        .unwrap();
        assert_eq!(placeholders, 1);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].cause.as_deref(), Some("Double Bit ECC"));
    }
}
