//! GPU parsers: `nvidia-smi` on every real fixture in
//! `../shared/fixtures/nvidia-smi` (XML of several driver generations,
//! `--query-gpu` CSV, and captures split by `####` banners), `dcgmi diag -j`
//! and `gpu_burn` on outputs written from their own source code (no GPU
//! here to run them), and the verdict rules of the design.

use vetting_probes::parsers::nvidia_smi::{self, NvidiaSmiOutput, SourceFormat};
use vetting_probes::parsers::{dcgmi, gpu_burn};
use vetting_probes::sections;
use vetting_probes::{Status, Thresholds, ToolReport, Verdict};

use crate::common::{fixture, fixture_names};

/// EXPECTED.md's nvidia-smi table, written down by hand (`n/a` → pass with
/// no warn or fail reason).
const EXPECTED: [(&str, Status); 14] = [
    (
        "nvidia_gpu_exporter-capture-linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt",
        Status::Pass,
    ),
    (
        "nvidia_gpu_exporter-capture-linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt",
        Status::Pass,
    ),
    (
        "nvidia_gpu_exporter-capture-linux-x86_64__nvidia-h100-mig__590.48.01.txt",
        Status::Pass,
    ),
    (
        "nvidia_gpu_exporter-capture-linux-x86_64__nvidia-l40s__595.80.txt",
        Status::Pass,
    ),
    (
        "nvidia_gpu_exporter-capture-windows-x86_64__nvidia-geforce-rtx-2080-super__610.62.txt",
        Status::Pass,
    ),
    ("nvidia_gpu_exporter-query.csv", Status::Pass),
    ("pkb-nvidia_power_output.csv", Status::Pass),
    ("telegraf-a100-sxm4-v12.xml", Status::Pass),
    ("telegraf-a10g.xml", Status::Warn),
    ("telegraf-quadro-p400.xml", Status::Pass),
    ("telegraf-rtx-3080-v12.xml", Status::Pass),
    ("telegraf-rtx-4000-sff-ada-v13.xml", Status::Pass),
    ("telegraf-tesla-t4.xml", Status::Warn),
    ("virtualclient-query-gpu-8xH100.csv", Status::Pass),
];

/// Files EXPECTED.md marks `n/a` (no health verdict).
const NOT_APPLICABLE: [&str; 2] = [
    "nvidia_gpu_exporter-query.csv",
    "pkb-nvidia_power_output.csv",
];

const CAPTURE_H100: &str =
    "nvidia-smi/nvidia_gpu_exporter-capture-linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt";
const CAPTURE_H100_MIG: &str =
    "nvidia-smi/nvidia_gpu_exporter-capture-linux-x86_64__nvidia-h100-mig__590.48.01.txt";
const CAPTURE_4080: &str = "nvidia-smi/nvidia_gpu_exporter-capture-linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt";
const CAPTURE_L40S: &str =
    "nvidia-smi/nvidia_gpu_exporter-capture-linux-x86_64__nvidia-l40s__595.80.txt";

fn nvidia(relative: &str, thresholds: &Thresholds) -> ToolReport {
    nvidia_smi::report(&fixture(relative), thresholds)
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

fn parsed(relative: &str) -> NvidiaSmiOutput {
    nvidia_smi::parse(&fixture(relative)).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

fn problems(verdict: &Verdict) -> Vec<String> {
    verdict
        .reasons
        .iter()
        .filter(|reason| matches!(reason.status, Status::Warn | Status::Fail))
        .map(|reason| format!("{}: {}", reason.status, reason.message))
        .collect()
}

#[test]
fn every_nvidia_smi_fixture_gets_its_expected_verdict() {
    let names = fixture_names("nvidia-smi");
    let listed: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, listed, "the table must list every fixture");
    for (name, expected) in EXPECTED {
        let report = nvidia(&format!("nvidia-smi/{name}"), &Thresholds::default());
        assert_eq!(
            report.verdict.status, expected,
            "{name}: {:?}",
            report.verdict.reasons
        );
        if expected == Status::Pass {
            assert!(
                problems(&report.verdict).is_empty(),
                "{name}: {:?}",
                problems(&report.verdict)
            );
        }
        if NOT_APPLICABLE.contains(&name) {
            assert_eq!(report.verdict.status, Status::Pass, "{name} is n/a");
        }
    }
}

#[test]
fn narrow_links_warn_naming_width_8_of_16() {
    for name in ["telegraf-a10g.xml", "telegraf-tesla-t4.xml"] {
        let report = nvidia(&format!("nvidia-smi/{name}"), &Thresholds::default());
        let warnings: Vec<&str> = report.verdict.messages(Status::Warn).collect();
        assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
        assert!(
            warnings[0].contains("PCIe link width x8 below max x16")
                && warnings[0].contains("width 8 of 16"),
            "{name}: {}",
            warnings[0]
        );
        assert!(warnings[0].contains("00000000:00:1E.0"));
    }
}

#[test]
fn expected_width_turns_a_narrow_link_into_a_failure() {
    let mut thresholds = Thresholds::default();
    thresholds.gpu.expected_pcie_width = Some(16);
    let report = nvidia("nvidia-smi/telegraf-a10g.xml", &thresholds);
    assert_eq!(report.verdict.status, Status::Fail);
    assert!(
        report
            .verdict
            .messages(Status::Fail)
            .any(|message| message.contains("PCIe link width x8 below expected x16"))
    );
    // A full-width link meets the same expectation.
    let h100 = nvidia(CAPTURE_H100, &thresholds);
    assert_eq!(
        h100.verdict.status,
        Status::Pass,
        "{:?}",
        h100.verdict.reasons
    );
    // And a platform that wires x8 on purpose passes when the spec says x8.
    thresholds.gpu.expected_pcie_width = Some(8);
    let t4 = nvidia("nvidia-smi/telegraf-tesla-t4.xml", &thresholds);
    assert_eq!(t4.verdict.status, Status::Pass, "{:?}", t4.verdict.reasons);
}

#[test]
fn idle_generation_downshift_passes_and_is_judged_under_load() {
    for name in [
        "telegraf-quadro-p400.xml",
        "telegraf-rtx-4000-sff-ada-v13.xml",
    ] {
        let idle = nvidia(&format!("nvidia-smi/{name}"), &Thresholds::default());
        assert_eq!(idle.verdict.status, Status::Pass, "{name}");
        assert!(
            idle.verdict
                .messages(Status::Pass)
                .any(|message| message.contains("PCIe generation 1 of max")
                    && message.contains("not judged")),
            "{name}: {:?}",
            idle.verdict.reasons
        );

        let mut under_load = Thresholds::default();
        under_load.gpu.under_load = true;
        let loaded = nvidia(&format!("nvidia-smi/{name}"), &under_load);
        assert_eq!(loaded.verdict.status, Status::Fail, "{name}");
        assert!(
            loaded
                .verdict
                .messages(Status::Fail)
                .any(|message| message.contains("PCIe generation 1 below max")
                    && message.contains("under load")),
            "{name}: {:?}",
            loaded.verdict.reasons
        );
    }
}

#[test]
fn capture_phase_decides_idle_or_load_for_the_generation_rule() {
    // The 4080 runs gen 1 of 4 in its idle sections and 4 of 4 under load:
    // the capture says which is which, so `under_load` cannot fail the idle
    // sections.
    let mut under_load = Thresholds::default();
    under_load.gpu.under_load = true;
    let report = nvidia(CAPTURE_4080, &under_load);
    assert_eq!(
        report.verdict.status,
        Status::Pass,
        "{:?}",
        report.verdict.reasons
    );

    let output = parsed(CAPTURE_4080);
    let phases: Vec<(&str, SourceFormat, u32)> = output
        .snapshots
        .iter()
        .map(|snapshot| {
            (
                snapshot.phase.as_deref().unwrap_or("-"),
                snapshot.source,
                snapshot.gpus[0].pcie.gen_current.unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            ("idle", SourceFormat::QueryText, 1),
            ("idle", SourceFormat::QueryCsv, 1),
            ("load", SourceFormat::QueryText, 4),
            ("load", SourceFormat::QueryCsv, 4),
        ]
    );
}

#[test]
fn captures_are_split_by_banner_and_every_part_is_parsed() {
    for name in fixture_names("nvidia-smi")
        .into_iter()
        .filter(|name| name.contains("-capture-"))
    {
        let text = String::from_utf8(fixture(&format!("nvidia-smi/{name}"))).unwrap();
        let parts = sections::split(&text);
        assert!(parts.len() >= 27, "{name}: {} sections", parts.len());
        assert_eq!(parts[0].heading(), "nvidia_gpu_exporter GPU capture");
        let commands: Vec<&str> = parts.iter().filter_map(|part| part.command()).collect();
        assert!(commands.contains(&"nvidia-smi -q"), "{name}");
        // pmon/dmon bodies start with `# gpu ...` lines: they stay in the body.
        let pmon = parts
            .iter()
            .find(|part| part.heading() == "idle :: pmon (per-process monitor)")
            .unwrap();
        assert!(
            pmon.body.starts_with("# gpu"),
            "{name}: {:?}",
            &pmon.body[..20]
        );

        let output = parsed(&format!("nvidia-smi/{name}"));
        assert_eq!(output.format, SourceFormat::Capture);
        assert_eq!(
            output.snapshots.len(),
            4,
            "{name}: idle and load, -q and --query-gpu"
        );
        assert!(
            output
                .snapshots
                .iter()
                .all(|snapshot| snapshot.gpus.len() == 1)
        );
        // `--query-retired-pages` prints two placeholder rows per run on
        // GPUs that retire nothing: not retired pages.
        assert!(output.retired_pages.is_empty(), "{name}");
        assert_eq!(output.retired_page_placeholder_rows, 4, "{name}");
        assert!(
            output
                .unjudged_sections
                .iter()
                .any(|title| title.contains("help-query-gpu"))
        );
    }
}

#[test]
fn tlimit_values_are_margins_and_counters_are_not_active_reasons() {
    let h100 = parsed(CAPTURE_H100);
    let load = &h100.snapshots[2];
    assert_eq!(load.label, "load :: query (-q)");
    let gpu = &load.gpus[0];
    assert_eq!(gpu.temperature_c, Some(59.0));
    assert_eq!(gpu.temperature_tlimit_margin_c, Some(26.0));
    assert_eq!(gpu.temperature_slowdown_c, None);

    let l40s = parsed(CAPTURE_L40S);
    for snapshot in &l40s.snapshots {
        let gpu = &snapshot.gpus[0];
        assert!(
            gpu.clock_reason_counters_us["sw_power_cap"] > 200_000_000,
            "{}",
            snapshot.label
        );
        assert!(
            !gpu.clock_reasons_active
                .iter()
                .any(|reason| reason == "sw_power_cap")
        );
    }
    let report = nvidia(CAPTURE_L40S, &Thresholds::default());
    assert_eq!(report.verdict.status, Status::Pass);
}

#[test]
fn mig_devices_are_read_from_xml_and_from_query_text() {
    let a100 = parsed("nvidia-smi/telegraf-a100-sxm4-v12.xml");
    let snapshot = &a100.snapshots[0];
    assert_eq!(snapshot.attached_gpus, Some(4));
    assert_eq!(snapshot.gpus.len(), 1);
    let gpu = &snapshot.gpus[0];
    assert_eq!(gpu.mig_mode.as_deref(), Some("Enabled"));
    assert_eq!(gpu.mig_devices.len(), 4);
    assert!(
        gpu.mig_devices
            .iter()
            .all(|mig| mig.memory_total_mib == Some(19968) && mig.sram_uncorrectable == Some(0))
    );

    let h100 = parsed(CAPTURE_H100_MIG);
    let idle = &h100.snapshots[0];
    let instances: Vec<Option<u32>> = idle.gpus[0]
        .mig_devices
        .iter()
        .map(|mig| mig.gpu_instance_id)
        .collect();
    assert_eq!(instances, vec![Some(2), Some(3), Some(9), Some(10)]);
    // `Remapped Rows : N/A` is a scalar in MIG mode: nothing to judge.
    assert_eq!(idle.gpus[0].remapped_rows.pending, None);
}

#[test]
fn duplicated_csv_rows_count_once_and_still_pass() {
    let report = nvidia(
        "nvidia-smi/virtualclient-query-gpu-8xH100.csv",
        &Thresholds::default(),
    );
    assert_eq!(report.verdict.status, Status::Pass);
    let output = parsed("nvidia-smi/virtualclient-query-gpu-8xH100.csv");
    let snapshot = &output.snapshots[0];
    assert_eq!(snapshot.gpus.len(), 4);
    let duplicates: Vec<(Option<u32>, Option<u32>)> = snapshot
        .duplicate_rows
        .iter()
        .map(|row| (row.index, row.duplicate_of_index))
        .collect();
    assert_eq!(
        duplicates,
        vec![
            (Some(4), Some(0)),
            (Some(5), Some(1)),
            (Some(6), Some(2)),
            (Some(7), Some(3))
        ]
    );
    assert_eq!(
        report.data["snapshots"][0]["duplicate_rows"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // A measurement series (one GPU, 91 samples) is samples, not duplicates.
    let power = parsed("nvidia-smi/pkb-nvidia_power_output.csv");
    assert_eq!(power.snapshots[0].gpus.len(), 1);
    assert_eq!(power.snapshots[0].later_samples.len(), 90);
    assert!(power.snapshots[0].duplicate_rows.is_empty());
}

/// Replaces one exact snippet of a fixture, checking it was there.
fn edited(relative: &str, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture(relative)).unwrap();
    assert!(text.contains(from), "{relative} lacks {from}");
    text.replacen(from, to, 1).into_bytes()
}

fn judged(input: &[u8]) -> Verdict {
    nvidia_smi::report(input, &Thresholds::default())
        .unwrap()
        .verdict
}

#[test]
fn health_problems_fail_with_the_attribute_and_value() {
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "nvidia-smi/telegraf-rtx-4000-sff-ada-v13.xml",
            "<channel_repair_pending>No</channel_repair_pending>",
            "<channel_repair_pending>Yes</channel_repair_pending>",
            "ECC channel repair pending = Yes",
        ),
        (
            "nvidia-smi/telegraf-tesla-t4.xml",
            "<pending_retirement>No</pending_retirement>",
            "<pending_retirement>Yes</pending_retirement>",
            "retired pages pending = Yes",
        ),
        (
            "nvidia-smi/telegraf-a10g.xml",
            "<remapped_row_pending>No</remapped_row_pending>",
            "<remapped_row_pending>Yes</remapped_row_pending>",
            "remapped rows pending = Yes",
        ),
        (
            "nvidia-smi/telegraf-a10g.xml",
            "<remapped_row_failure>No</remapped_row_failure>",
            "<remapped_row_failure>Yes</remapped_row_failure>",
            "row remapping failure = Yes",
        ),
        (
            "nvidia-smi/telegraf-tesla-t4.xml",
            "<clocks_throttle_reason_hw_thermal_slowdown>Not Active</clocks_throttle_reason_hw_thermal_slowdown>",
            "<clocks_throttle_reason_hw_thermal_slowdown>Active</clocks_throttle_reason_hw_thermal_slowdown>",
            "clock event reason hw_thermal_slowdown is Active",
        ),
        (
            "nvidia-smi/telegraf-rtx-4000-sff-ada-v13.xml",
            "<clocks_event_reason_sw_thermal_slowdown>Not Active</clocks_event_reason_sw_thermal_slowdown>",
            "<clocks_event_reason_sw_thermal_slowdown>Active</clocks_event_reason_sw_thermal_slowdown>",
            "clock event reason sw_thermal_slowdown is Active",
        ),
        (
            "nvidia-smi/telegraf-tesla-t4.xml",
            "<dram_uncorrectable>0</dram_uncorrectable>\n            </volatile>",
            "<dram_uncorrectable>2</dram_uncorrectable>\n            </volatile>",
            "ECC uncorrected errors (volatile) 2 > 0",
        ),
    ];
    for (relative, from, to, expected) in cases {
        let verdict = judged(&edited(relative, from, to));
        assert_eq!(verdict.status, Status::Fail, "{expected}");
        assert!(
            verdict
                .messages(Status::Fail)
                .any(|message| message.contains(expected)),
            "{expected}: {:?}",
            verdict.reasons
        );
    }

    // Old single/double-bit layout (Quadro P400 era).
    let quadro = edited(
        "nvidia-smi/telegraf-quadro-p400.xml",
        "<double_bit>\n                                        <device_memory>N/A</device_memory>",
        "<double_bit>\n                                        <device_memory>1</device_memory>",
    );
    let quadro = String::from_utf8(quadro).unwrap().replacen(
        "<cbu>N/A</cbu>\n                                        <total>N/A</total>\n                                </double_bit>",
        "<cbu>N/A</cbu>\n                                        <total>1</total>\n                                </double_bit>",
        1,
    );
    let verdict = judged(quadro.as_bytes());
    assert!(
        verdict
            .messages(Status::Fail)
            .any(|message| message.contains("ECC uncorrected errors (volatile) 1 > 0")),
        "{:?}",
        verdict.reasons
    );
}

#[test]
fn csv_health_columns_and_active_mask_are_judged() {
    let csv = "index, pci.bus_id, pcie.link.width.current, pcie.link.width.max, remapped_rows.pending, \
               ecc.errors.uncorrected.aggregate.total, clocks_event_reasons.active\n\
               0, 00000000:3B:00.0, 16, 16, Yes, 0, 0x0000000000000001\n\
               1, 00000000:5E:00.0, 16, 16, No, 4, 0x0000000000000040\n";
    let verdict = judged(csv.as_bytes());
    let failures: Vec<&str> = verdict.messages(Status::Fail).collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].contains("GPU 0 (00000000:3B:00.0): remapped rows pending = Yes"));
    assert!(
        failures[1].contains("GPU 1 (00000000:5E:00.0): ECC uncorrected errors (aggregate) 4 > 0")
    );
    assert!(failures[2].contains("hw_thermal_slowdown is Active"));
}

#[test]
fn xid_errors_in_a_capture_fail() {
    let mut text = String::from_utf8(fixture(CAPTURE_H100)).unwrap();
    text.push_str(
        "\n################################################################################\n\
         # kernel :: dmesg\n\
         # $ dmesg | grep NVRM\n\
         ################################################################################\n\
         [ 5123.447] NVRM: Xid (PCI:0000:00:09): 79, pid=11345, name=gpu_burn, GPU has fallen off the bus.\n",
    );
    let verdict = judged(text.as_bytes());
    assert_eq!(verdict.status, Status::Fail);
    assert!(
        verdict
            .messages(Status::Fail)
            .any(|message| message.contains("XID 79 on PCI 0000:00:09")
                && message.contains("fallen off the bus"))
    );
}

#[test]
fn truncated_and_foreign_inputs_are_errors_not_panics() {
    for name in fixture_names("nvidia-smi") {
        let input = fixture(&format!("nvidia-smi/{name}"));
        for cut in [1, input.len() / 3, input.len() / 2, input.len() - 10] {
            // Must return, whatever it returns.
            let _ = nvidia_smi::report(&input[..cut], &Thresholds::default());
        }
        if name.ends_with(".xml") {
            assert!(
                nvidia_smi::parse(&input[..input.len() / 2]).is_err(),
                "{name}: a truncated XML document must not parse"
            );
        }
    }
    let csv = fixture("nvidia-smi/virtualclient-query-gpu-8xH100.csv");
    let cut = csv.iter().position(|byte| *byte == b'\n').unwrap() + 40;
    assert!(
        nvidia_smi::parse(&csv[..cut]).is_err(),
        "a CSV row cut short must not parse"
    );
    assert!(nvidia_smi::parse(b"").is_err());
    assert!(nvidia_smi::parse(b"\xff\xfe<nvidia_smi_log>").is_err());
    assert!(nvidia_smi::parse(b"<html><body>not a GPU</body></html>").is_err());
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

/// One line per GPU with the key fields, then the warn/fail reasons.
fn summary(output: &NvidiaSmiOutput, verdict: &Verdict) -> String {
    let mut lines = vec![format!(
        "format {:?}, verdict {}",
        output.format, verdict.status
    )];
    for snapshot in &output.snapshots {
        lines.push(format!(
            "  [{}] driver {} attached {} gpus {} duplicates {} later samples {}",
            snapshot.label,
            show(snapshot.driver_version.as_deref()),
            show(snapshot.attached_gpus),
            snapshot.gpus.len(),
            snapshot.duplicate_rows.len(),
            snapshot.later_samples.len()
        ));
        for gpu in &snapshot.gpus {
            lines.push(format!(
                "    {} | {} | serial {} | uuid {} | {} MiB | model {} | {} | gen {}/{} width {}/{} | {} C (tlimit margin {}) | {}/{} W | ecc {} unc {}/{} | retired {}/{} pending {} | remap {}/{} pending {} failure {} | active {:?} | mig {} x{}",
                gpu.label(),
                show(gpu.name.as_deref()),
                show(gpu.serial.as_deref()),
                show(gpu.uuid.as_deref()),
                show(gpu.memory_total_mib),
                show(gpu.driver_model.as_deref()),
                show(gpu.performance_state.as_deref()),
                show(gpu.pcie.gen_current),
                show(gpu.pcie.gen_max),
                show(gpu.pcie.width_current),
                show(gpu.pcie.width_max),
                show(gpu.temperature_c),
                show(gpu.temperature_tlimit_margin_c),
                show(gpu.power_draw_w),
                show(gpu.power_limit_w),
                show(gpu.ecc_mode.as_deref()),
                show(gpu.ecc_errors.uncorrected_volatile),
                show(gpu.ecc_errors.uncorrected_aggregate),
                show(gpu.retired_pages.single_bit),
                show(gpu.retired_pages.double_bit),
                show(gpu.retired_pages.pending),
                show(gpu.remapped_rows.correctable),
                show(gpu.remapped_rows.uncorrectable),
                show(gpu.remapped_rows.pending),
                show(gpu.remapped_rows.failure),
                gpu.clock_reasons_active,
                show(gpu.mig_mode.as_deref()),
                gpu.mig_devices.len(),
            ));
        }
    }
    for problem in problems(verdict) {
        lines.push(format!("  {problem}"));
    }
    lines.join("\n")
}

#[test]
fn nvidia_smi_key_fields_snapshot() {
    let mut all = Vec::new();
    for name in fixture_names("nvidia-smi") {
        let output = parsed(&format!("nvidia-smi/{name}"));
        let verdict = nvidia_smi::verdict(&output, &Thresholds::default());
        all.push(format!("{name}\n{}", summary(&output, &verdict)));
    }
    insta::assert_snapshot!("nvidia_smi_fixtures", all.join("\n\n"));
}

// ---------------------------------------------------------------------------
// dcgmi diag -j
//
// No GPU here, so no real dcgmi output. These documents are written from
// NVIDIA/DCGM's own JSON writer: key names from nvvs/include/NvvsJsonStrings.h
// ("test_categories", "category", "tests", "name", "results", "status",
// "warnings"/"warning", "error_id", "error_category", "error_severity",
// "info", "gpu_id", "entity_group", "entity_group_id", "entity_id",
// "entity_groups", "entities", "serial_num", "device_id", "test_summary",
// "metadata", "runtime_error", "iterations", "Overall Result"), structure
// from dcgmi/Diag.cpp (3.x: HelperJsonBuildOutput over dcgmDiagResponse_v10,
// root "DCGM GPU Diagnostic", version and "Driver Version Detected" at the
// top; 4.x: HelperJsonBuildOutput over dcgmDiagResponse_v12, root "DCGM
// Diagnostic", "entity_groups" and "metadata"), status words from
// Diag::HelperDisplayDiagResult ("Pass", "Skip", "Warn", "Fail"), messages
// and codes from dcgmlib/dcgm_errors.h (DCGM_FR_FAULTY_MEMORY = 52 "Found %d
// faulty memory elements on GPU %u", category 10 hardware memory, severity
// 2 isolate; DCGM_FR_PCI_REPLAY_RATE = 3).
// ---------------------------------------------------------------------------

const DCGM3_PASS: &str = r#"{
   "DCGM GPU Diagnostic" : {
      "test_categories" : [
         {
            "category" : "Deployment",
            "tests" : [
               { "name" : "Denylist", "results" : [ { "status" : "Pass" } ] },
               { "name" : "NVML Library", "results" : [ { "status" : "Pass" } ] },
               { "name" : "CUDA Main Library", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Permissions and OS Blocks", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Persistence Mode", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Environment Variables", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Page Retirement/Row Remap", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Graphics Processes", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Inforom", "results" : [ { "status" : "Skip" } ] }
            ]
         },
         {
            "category" : "Integration",
            "tests" : [
               { "name" : "PCIe", "results" : [ { "gpu_id" : "0", "status" : "Pass" }, { "gpu_id" : "1", "status" : "Pass" } ] }
            ]
         },
         {
            "category" : "Hardware",
            "tests" : [
               { "name" : "GPU Memory", "results" : [ { "gpu_id" : "0", "status" : "Pass" }, { "gpu_id" : "1", "status" : "Pass" } ] }
            ]
         },
         {
            "category" : "Stress",
            "tests" : [
               { "name" : "Targeted Stress", "results" : [ { "gpu_id" : "0", "status" : "Pass", "info" : "GPU 0 relative stress level 0.97" }, { "gpu_id" : "1", "status" : "Pass" } ] }
            ]
         }
      ]
   },
   "Driver Version Detected" : "535.154.05",
   "GPU Device IDs" : [ "20b2", "20b2" ],
   "GPU Device Serials" : { "0" : "1650522003820", "1" : "1650522003821" },
   "version" : "3.3.5"
}
"#;

const DCGM3_FAIL: &str = r#"{
   "DCGM GPU Diagnostic" : {
      "test_categories" : [
         {
            "category" : "Deployment",
            "tests" : [
               { "name" : "Denylist", "results" : [ { "status" : "Pass" } ] },
               { "name" : "Persistence Mode", "results" : [ { "gpu_id" : 0, "status" : "Pass" } ] }
            ]
         },
         {
            "category" : "Hardware",
            "tests" : [
               {
                  "name" : "GPU Memory",
                  "results" : [
                     { "gpu_id" : "0", "status" : "Pass" },
                     {
                        "gpu_id" : "1",
                        "status" : "Fail",
                        "warnings" : [
                           { "error_category" : 10, "error_id" : 52, "error_severity" : 2, "warning" : "Found 2 faulty memory elements on GPU 1" }
                        ]
                     }
                  ]
               }
            ]
         }
      ]
   },
   "Driver Version Detected" : "535.154.05",
   "version" : "3.3.5"
}
"#;

const DCGM4_WARN_AND_FAIL: &str = r#"{
   "DCGM Diagnostic" : {
      "test_categories" : [
         {
            "category" : "Deployment",
            "tests" : [
               {
                  "name" : "software",
                  "results" : [
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass" },
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 1, "status" : "Pass" }
                  ],
                  "test_summary" : { "status" : "Pass" }
               }
            ]
         },
         {
            "category" : "Integration",
            "tests" : [
               {
                  "name" : "pcie",
                  "results" : [
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass" },
                     {
                        "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 1, "status" : "Warn",
                        "warnings" : [ { "error_category" : 13, "error_id" : 3, "error_severity" : 1, "warning" : "Detected more than 8 PCIe replays per minute for GPU 1 : 13" } ]
                     }
                  ],
                  "test_summary" : { "status" : "Warn" }
               }
            ]
         },
         {
            "category" : "Hardware",
            "tests" : [
               {
                  "name" : "memory",
                  "results" : [
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass", "info" : [ "Allocated 84630978560 bytes (98.9%)" ] },
                     {
                        "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 1, "status" : "Fail",
                        "warnings" : [ { "error_category" : 10, "error_id" : 52, "error_severity" : 2, "warning" : "Found 2 faulty memory elements on GPU 1" } ]
                     }
                  ],
                  "test_summary" : {
                     "status" : "Fail",
                     "warnings" : [ { "error_category" : 10, "error_id" : 52, "error_severity" : 2, "warning" : "Found 2 faulty memory elements on GPU 1" } ]
                  }
               },
               {
                  "name" : "diagnostic",
                  "results" : [
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Skip" },
                     { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 1, "status" : "Skip" }
                  ],
                  "test_summary" : { "status" : "Skip" }
               }
            ]
         }
      ]
   },
   "entity_groups" : [
      {
         "entities" : [
            { "device_id" : "2330", "entity_id" : 0, "serial_num" : "1652922001234" },
            { "device_id" : "2330", "entity_id" : 1, "serial_num" : "1652922001235" }
         ],
         "entity_group" : "GPU",
         "entity_group_id" : 1
      }
   ],
   "metadata" : {
      "Driver Version Detected" : "570.124.06",
      "version" : "4.2.3"
   }
}
"#;

const DCGM4_PASS: &str = r#"{
   "DCGM Diagnostic" : {
      "test_categories" : [
         {
            "category" : "Deployment",
            "tests" : [
               { "name" : "software", "results" : [ { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass" } ], "test_summary" : { "status" : "Pass" } }
            ]
         },
         {
            "category" : "Hardware",
            "tests" : [
               { "name" : "memory", "results" : [ { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass" } ], "test_summary" : { "status" : "Pass" } }
            ]
         }
      ]
   },
   "entity_groups" : [ { "entities" : [ { "device_id" : "2330", "entity_id" : 0, "serial_num" : "1652922001234" } ], "entity_group" : "GPU", "entity_group_id" : 1 } ],
   "metadata" : { "Driver Version Detected" : "570.124.06", "version" : "4.2.3" }
}
"#;

/// Diag::HelperDisplayFailureMessage in JSON mode.
const DCGM_RUNTIME_ERROR: &str = r#"{
   "DCGM Diagnostic" : {
      "runtime_error" : "Error: Diagnostic could not be run while DCGM is paused.",
      "version" : "4.2.3"
   }
}
"#;

#[test]
fn dcgmi_3x_documents_pass_and_fail_with_the_test_and_message() {
    let pass = dcgmi::report(DCGM3_PASS.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(
        pass.verdict.status,
        Status::Pass,
        "{:?}",
        pass.verdict.reasons
    );
    assert!(
        pass.verdict
            .messages(Status::Pass)
            .any(|message| message.contains("Inforom"))
    );
    let diag = dcgmi::parse(DCGM3_PASS.as_bytes()).unwrap();
    assert_eq!(diag.schema, dcgmi::DcgmSchema::V3);
    assert_eq!(diag.version.as_deref(), Some("3.3.5"));
    assert_eq!(diag.driver_version.as_deref(), Some("535.154.05"));
    assert_eq!(diag.tests.len(), 12);

    let fail = dcgmi::report(DCGM3_FAIL.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(fail.verdict.status, Status::Fail);
    let failures: Vec<&str> = fail.verdict.messages(Status::Fail).collect();
    assert_eq!(
        failures,
        vec!["test 'GPU Memory' GPU 1 status Fail: Found 2 faulty memory elements on GPU 1"]
    );
}

#[test]
fn dcgmi_4x_documents_judge_entities_and_summaries() {
    let report = dcgmi::report(DCGM4_WARN_AND_FAIL.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert_eq!(
        report.verdict.messages(Status::Fail).collect::<Vec<_>>(),
        vec!["test 'memory' GPU 1 status Fail: Found 2 faulty memory elements on GPU 1"]
    );
    assert_eq!(
        report.verdict.messages(Status::Warn).collect::<Vec<_>>(),
        vec![
            "test 'pcie' GPU 1 status Warn: Detected more than 8 PCIe replays per minute for GPU 1 : 13"
        ]
    );
    assert!(
        report
            .verdict
            .messages(Status::Pass)
            .any(|message| message.contains("diagnostic"))
    );

    let diag = dcgmi::parse(DCGM4_WARN_AND_FAIL.as_bytes()).unwrap();
    assert_eq!(diag.schema, dcgmi::DcgmSchema::V4);
    assert_eq!(diag.version.as_deref(), Some("4.2.3"));
    assert_eq!(diag.driver_version.as_deref(), Some("570.124.06"));
    assert_eq!(diag.entities.len(), 2);
    assert_eq!(diag.entities[1].serial.as_deref(), Some("1652922001235"));
    assert_eq!(diag.tests[2].results[1].error_ids, vec![52]);

    let pass = dcgmi::report(DCGM4_PASS.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(
        pass.verdict.status,
        Status::Pass,
        "{:?}",
        pass.verdict.reasons
    );
}

#[test]
fn dcgmi_runtime_errors_iterations_and_garbage() {
    let error = dcgmi::report(DCGM_RUNTIME_ERROR.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(error.verdict.status, Status::Fail);
    assert!(
        error
            .verdict
            .messages(Status::Fail)
            .next()
            .unwrap()
            .contains("paused")
    );

    // Diag::RunStartDiag with --iterations wraps each run.
    let iterations = format!(
        r#"{{ "iterations" : [ {DCGM4_PASS}, {DCGM4_WARN_AND_FAIL} ], "Overall Result" : "Fail", "warning" : "Error in the NVVS diagnostic" }}"#
    );
    let report = dcgmi::report(iterations.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    assert!(
        report
            .verdict
            .messages(Status::Fail)
            .any(|message| message.contains("(iteration 2)"))
    );
    assert!(
        report
            .verdict
            .messages(Status::Fail)
            .any(|message| message.contains("Overall Result Fail"))
    );

    // Text around the JSON (a banner line, a trailing newline) is tolerated.
    let wrapped = format!("Successfully ran diagnostic for group.\n{DCGM3_PASS}\n");
    assert_eq!(
        dcgmi::report(wrapped.as_bytes(), &Thresholds::default())
            .unwrap()
            .verdict
            .status,
        Status::Pass
    );

    for bad in ["", "{}", "[1, 2]", "{\"DCGM Diagnostic\": ", "not json"] {
        assert!(dcgmi::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
    let cut = &DCGM4_WARN_AND_FAIL.as_bytes()[..DCGM4_WARN_AND_FAIL.len() / 2];
    assert!(dcgmi::parse(cut).is_err());
}

// ---------------------------------------------------------------------------
// gpu_burn
//
// No GPU here, so no real gpu_burn run. These outputs follow wilicc/gpu-burn
// gpu_burn-drv.cpp: `nvidia-smi -L` lines first, "Initialized device %d with
// %lu MB of memory (%lu MB available, using %lu MB of it), using FLOATS",
// progress printed as "\r%.1f%%  proc'd: %d (%.0f Gflop/s) - ...   errors:
// %d  (WARNING!) - ...   temps: %d C - ...   power: %d W - ...", "\n\tSummary
// at:   " + date every 10 %, "Killing processes with SIGTERM (soft kill)",
// "done", "\nTested %d GPUs:\n" and "\tGPU %d: OK|FAULTY". gpu_burn exits 0
// either way.
// ---------------------------------------------------------------------------

const BURN_HEAD: &str = "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-513536b6-7d19-9063-b049-1e69664bb298)\n\
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-513536b6-7d19-9063-b049-1e69664bb299)\n\
Initialized device 0 with 81037 MB of memory (80590 MB available, using 72531 MB of it), using FLOATS\n\
Results are 268435456 bytes each, thus performing 268 iterations\n\
Initialized device 1 with 81037 MB of memory (80590 MB available, using 72531 MB of it), using FLOATS\n\
Results are 268435456 bytes each, thus performing 268 iterations\n";

/// One progress line, byte for byte as gpu_burn prints it: each error
/// count is `printf("%d ")`, or `"%d  (WARNING!)"` with no trailing space,
/// followed by `"- "` between GPUs.
fn burn_progress(percent: f32, errors: [&str; 2], temps: [u32; 2]) -> String {
    format!(
        "\r{percent:.1}%  proc'd: 3216 (18220 Gflop/s) - 3216 (18190 Gflop/s)   errors: {}- {}  temps: {} C - {} C   power: 390 W - 385 W ",
        errors[0], errors[1], temps[0], temps[1]
    )
}

const BURN_TAIL_OK: &str = "\nKilling processes with SIGTERM (soft kill)\nFreed memory for dev 0\nUninitted cublas\n\
Freed memory for dev 1\nUninitted cublas\ndone\n\nTested 2 GPUs:\n\tGPU 0: OK\n\tGPU 1: OK\n";

#[test]
fn gpu_burn_healthy_run_passes() {
    let mut output = BURN_HEAD.to_string();
    for step in 1..=10 {
        output.push_str(&burn_progress(
            step as f32 * 10.0,
            ["0 ", "0 "],
            [55 + step, 54 + step],
        ));
        if step < 10 {
            output.push_str("\n\tSummary at:   Mon Jan  8 10:00:10 UTC 2024\n\n");
        }
    }
    output.push_str(BURN_TAIL_OK);
    let report = gpu_burn::report(output.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(
        report.verdict.status,
        Status::Pass,
        "{:?}",
        report.verdict.reasons
    );
    let parsed = gpu_burn::parse(output.as_bytes()).unwrap();
    assert!(parsed.finished);
    assert_eq!(parsed.tested_gpus, Some(2));
    assert_eq!(parsed.progress_samples, 10);
    assert_eq!(parsed.initialized_devices.len(), 2);
    assert_eq!(parsed.gpus[0].max_temperature_c, Some(65.0));
    assert_eq!(parsed.gpus[1].last_gflops, Some(18190.0));
}

#[test]
fn gpu_burn_faulty_gpu_fails_although_the_exit_code_is_zero() {
    let mut output = BURN_HEAD.to_string();
    output.push_str(&burn_progress(50.0, ["0 ", "1420  (WARNING!)"], [60, 61]));
    output.push_str(&burn_progress(100.0, ["0 ", "0 "], [60, 61]));
    output.push_str(
        "\nKilling processes with SIGTERM (soft kill)\ndone\n\nTested 2 GPUs:\n\tGPU 0: OK\n\tGPU 1: FAULTY\n",
    );
    let report = gpu_burn::report(output.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Fail);
    let failures: Vec<&str> = report.verdict.messages(Status::Fail).collect();
    assert!(
        failures
            .iter()
            .any(|message| message.starts_with("GPU 1: FAULTY")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|message| message.contains("GPU 1: 1420 computation error(s)"))
    );
    assert!(!failures.iter().any(|message| message.starts_with("GPU 0")));
}

#[test]
fn gpu_burn_errors_without_a_faulty_line_dead_workers_and_truncation_fail() {
    // Errors counted in progress but the run cut off before the result.
    let mut truncated = BURN_HEAD.to_string();
    truncated.push_str(&burn_progress(30.0, ["0 ", "0 "], [60, 61]));
    truncated.push_str(&burn_progress(40.0, ["2  (WARNING!)", "0 "], [60, 61]));
    let report = gpu_burn::report(truncated.as_bytes(), &Thresholds::default()).unwrap();
    let failures: Vec<&str> = report.verdict.messages(Status::Fail).collect();
    assert!(
        failures
            .iter()
            .any(|message| message.contains("gpu_burn did not finish"))
    );
    assert!(
        failures
            .iter()
            .any(|message| message.contains("GPU 0: 2 computation error(s)"))
    );

    // A worker that died (processed -1).
    let mut died = BURN_HEAD.to_string();
    died.push_str("\r10.0%  proc'd: -1 (0 Gflop/s) - 3216 (18190 Gflop/s)   errors: -1  (DIED!)- 0   temps: -- - 61 C ");
    died.push_str("\n\nNo clients are alive!  Aborting\n");
    let report = gpu_burn::report(died.as_bytes(), &Thresholds::default()).unwrap();
    let failures: Vec<&str> = report.verdict.messages(Status::Fail).collect();
    assert!(
        failures
            .iter()
            .any(|message| message.contains("GPU 0: its gpu_burn worker DIED")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|message| message.contains("No clients are alive"))
    );

    // Hot but healthy warns.
    let mut hot = BURN_HEAD.to_string();
    hot.push_str(&burn_progress(100.0, ["0 ", "0 "], [89, 70]));
    hot.push_str(BURN_TAIL_OK);
    let report = gpu_burn::report(hot.as_bytes(), &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Warn);
    assert!(
        report
            .verdict
            .messages(Status::Warn)
            .next()
            .unwrap()
            .contains("89 °C >= 87 °C")
    );

    for bad in ["", "random words\nnothing here\n"] {
        assert!(gpu_burn::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn hostile_nesting_is_bounded() {
    let deep_xml = format!("{}{}", "<a>".repeat(20_000), "</a>".repeat(20_000));
    assert!(nvidia_smi::parse(deep_xml.as_bytes()).is_err());
    let mut deep_text = String::from(
        "==============NVSMI LOG==============\nAttached GPUs : 1\nGPU 00000000:01:00.0\n",
    );
    for depth in 1..2_000 {
        deep_text.push_str(&" ".repeat(depth));
        deep_text.push_str("Key : 1\n");
    }
    let output = nvidia_smi::parse(deep_text.as_bytes()).unwrap();
    assert_eq!(output.snapshots[0].gpus.len(), 1);
}

proptest::proptest! {
    /// Random text built from the characters these formats are made of
    /// never panics any GPU/PSU/sensor parser or the section splitter.
    #[test]
    fn random_input_never_panics(text in "[#<>/a-zA-Z0-9 :|,.%\\[\\]{}\"\\r\\n\\t_-]{0,400}") {
        let thresholds = Thresholds::default();
        let _ = sections::split(&text);
        let _ = nvidia_smi::report(text.as_bytes(), &thresholds);
        let _ = dcgmi::report(text.as_bytes(), &thresholds);
        let _ = gpu_burn::report(text.as_bytes(), &thresholds);
        let _ = vetting_probes::parsers::ipmitool::report(text.as_bytes(), &thresholds);
        let _ = vetting_probes::parsers::sensors::report(text.as_bytes(), &thresholds);
    }

    /// Random bytes (often not UTF-8) give errors, never panics.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let thresholds = Thresholds::default();
        let _ = nvidia_smi::report(&bytes, &thresholds);
        let _ = dcgmi::report(&bytes, &thresholds);
        let _ = gpu_burn::report(&bytes, &thresholds);
        let _ = vetting_probes::parsers::ipmitool::report(&bytes, &thresholds);
        let _ = vetting_probes::parsers::sensors::report(&bytes, &thresholds);
    }
}

/// `nvidia-smi -q -i 1` of a Tesla V100 on driver 470.129.06, as published
/// in a public nvidia-smi tutorial (bsyonline, "nvidia-smi 命令使用"),
/// shortened: the older text layout with `Clocks Throttle Reasons`,
/// `Ecc Mode`, single/double-bit ECC blocks, `Power Readings` and one GPU
/// block although 8 GPUs are attached.
const V100_QUERY_TEXT_470: &str = "
==============NVSMI LOG==============

Timestamp                                 : Fri Nov  3 11:39:46 2023
Driver Version                            : 470.129.06
CUDA Version                              : 11.4

Attached GPUs                             : 8
GPU 00000000:1C:00.0
    Product Name                          : Tesla V100-PCIE-32GB
    Serial Number                         : 1560221003078
    GPU UUID                              : GPU-06e3d8e6-3f54-374a-8142-9752ca1f2316
    PCI
        Bus Id                            : 00000000:1C:00.0
        GPU Link Info
            PCIe Generation
                Max                       : 3
                Current                   : 3
            Link Width
                Max                       : 16x
                Current                   : 16x
    Performance State                     : P0
    Clocks Throttle Reasons
        Idle                              : Active
        SW Power Cap                      : Not Active
        HW Slowdown                       : Not Active
            HW Thermal Slowdown           : Not Active
            HW Power Brake Slowdown       : Not Active
        SW Thermal Slowdown               : Not Active
    FB Memory Usage
        Total                             : 32510 MiB
    Ecc Mode
        Current                           : Enabled
    ECC Errors
        Volatile
            Single Bit            
                Device Memory             : 0
                Total                     : 0
            Double Bit            
                Device Memory             : 0
                Total                     : 0
        Aggregate
            Single Bit            
                Device Memory             : 3
                Total                     : 3
            Double Bit            
                Device Memory             : 0
                Total                     : 0
    Retired Pages
        Single Bit ECC                    : 1
        Double Bit ECC                    : 0
        Pending Page Blacklist            : No
    Remapped Rows                         : N/A
    Temperature
        GPU Current Temp                  : 29 C
        GPU Slowdown Temp                 : 87 C
    Power Readings
        Power Draw                        : 25.13 W
        Power Limit                       : 250.00 W
        Enforced Power Limit              : 250.00 W
    Processes                             : None
";

#[test]
fn older_query_text_layout_is_read() {
    let output = nvidia_smi::parse(V100_QUERY_TEXT_470.as_bytes()).unwrap();
    assert_eq!(output.format, SourceFormat::QueryText);
    let snapshot = &output.snapshots[0];
    assert_eq!(snapshot.attached_gpus, Some(8));
    assert_eq!(snapshot.driver_version.as_deref(), Some("470.129.06"));
    let gpu = &snapshot.gpus[0];
    assert_eq!(gpu.name.as_deref(), Some("Tesla V100-PCIE-32GB"));
    assert_eq!(gpu.ecc_mode.as_deref(), Some("Enabled"));
    assert_eq!(gpu.ecc_errors.corrected_aggregate, Some(3));
    assert_eq!(gpu.ecc_errors.uncorrected_aggregate, Some(0));
    assert_eq!(
        (gpu.retired_pages.single_bit, gpu.retired_pages.pending),
        (Some(1), Some(false))
    );
    assert_eq!(gpu.clock_reasons_active, vec!["gpu_idle"]);
    assert_eq!(
        (gpu.power_draw_w, gpu.power_limit_w),
        (Some(25.13), Some(250.0))
    );
    assert_eq!(gpu.temperature_slowdown_c, Some(87.0));
    let verdict = nvidia_smi::verdict(&output, &Thresholds::default());
    assert_eq!(verdict.status, Status::Pass);
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message.contains("1 retired page(s)"))
    );
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message.contains("attached_gpus 8 but 1"))
    );
}

/// Real output captured for this test on the device machine (one NVIDIA
/// H100 80GB HBM3, driver 580.159.04, idle): `nvidia-smi --query-gpu=...
/// --format=csv` and `--query-retired-pages` (its two placeholder rows).
/// The same run's `-q -x` and `-q` were checked to parse to the same GPU.
const H100_QUERY_GPU_CAPTURED: &str = "\
timestamp, index, name, serial, uuid, pci.bus_id, driver_version, pstate, pcie.link.gen.current, pcie.link.gen.max, pcie.link.width.current, pcie.link.width.max, temperature.gpu, temperature.gpu.tlimit, power.draw [W], enforced.power.limit [W], memory.total [MiB], ecc.mode.current, ecc.errors.uncorrected.volatile.total, ecc.errors.uncorrected.aggregate.total, retired_pages.pending, remapped_rows.pending, remapped_rows.failure, remapped_rows.uncorrectable, clocks_event_reasons.active, clocks_event_reasons.hw_slowdown, clocks_event_reasons.sw_thermal_slowdown, mig.mode.current, gpu_recovery_action
2026/11/28 01:45:17.596, 0, NVIDIA H100 80GB HBM3, 1752724031784, GPU-87cae255-3635-960b-0cf2-bb68090e74e9, 00000000:00:06.0, 580.159.04, P0, 5, 5, 16, 16, 33, 54, 102.55 W, 700.00 W, 81559 MiB, Enabled, 0, 0, [N/A], No, No, 0, 0x0000000000000001, Not Active, Not Active, Disabled, None
";

const H100_RETIRED_PAGES_CAPTURED: &str = "\
timestamp, gpu_name, gpu_bus_id, gpu_serial, gpu_uuid, retired_pages.address, retired_pages.timestamp, retired_pages.cause
2026/11/28 01:45:17.638, NVIDIA H100 80GB HBM3, 00000000:00:06.0, 1752724031784, GPU-87cae255-3635-960b-0cf2-bb68090e74e9, [N/A], [N/A], Single Bit ECC
2026/11/28 01:45:17.638, NVIDIA H100 80GB HBM3, 00000000:00:06.0, 1752724031784, GPU-87cae255-3635-960b-0cf2-bb68090e74e9, [N/A], [N/A], Double Bit ECC
";

#[test]
fn real_h100_outputs_captured_on_the_device() {
    let output = nvidia_smi::parse(H100_QUERY_GPU_CAPTURED.as_bytes()).unwrap();
    let gpu = &output.snapshots[0].gpus[0];
    assert_eq!(gpu.serial.as_deref(), Some("1752724031784"));
    assert_eq!(
        gpu.pcie,
        nvidia_smi::PcieLink {
            gen_current: Some(5),
            gen_max: Some(5),
            width_current: Some(16),
            width_max: Some(16)
        }
    );
    assert_eq!(gpu.temperature_tlimit_margin_c, Some(54.0));
    assert_eq!(
        (gpu.power_draw_w, gpu.power_limit_w),
        (Some(102.55), Some(700.0))
    );
    assert_eq!(gpu.remapped_rows.pending, Some(false));
    assert_eq!(gpu.retired_pages.pending, None);
    assert_eq!(gpu.clock_reasons_active, vec!["gpu_idle"]);
    assert_eq!(gpu.recovery_action, None);
    let verdict = nvidia_smi::verdict(&output, &Thresholds::default());
    assert_eq!(verdict.status, Status::Pass);
    assert!(verdict.reasons.is_empty(), "{:?}", verdict.reasons);

    let pages = nvidia_smi::parse(H100_RETIRED_PAGES_CAPTURED.as_bytes()).unwrap();
    assert_eq!(pages.format, SourceFormat::RetiredPagesCsv);
    assert!(pages.retired_pages.is_empty());
    assert_eq!(pages.retired_page_placeholder_rows, 2);
}
