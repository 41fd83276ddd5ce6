//! Every parser (every `Tool`) on hostile input: empty, whitespace,
//! non-UTF-8, truncations of a valid sample at many cut points, and
//! property-tested random bytes and strings. `parse_and_judge` may return
//! `Ok` or `Err` but never panics; empty and non-UTF-8 input is an error.
//!
//! Samples are the fixtures where the tool has a folder; the others are
//! small outputs written from the tools' documentation and source (nvme-cli,
//! badblocks, memtester, dcgmi, gpu_burn, wipefs, blkid, lsblk).

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use vetting_probes::{Thresholds, Tool, parse_and_judge};

use crate::common::{fixture, fixture_names};

/// The fixture folder of a tool, where there is one.
fn fixture_folder(tool: Tool) -> Option<&'static str> {
    match tool {
        Tool::Lshw => Some("lshw"),
        Tool::Dmidecode => Some("dmidecode"),
        Tool::Lspci => Some("lspci"),
        Tool::Smartctl => Some("smartctl"),
        Tool::Sensors => Some("sensors"),
        Tool::NvidiaSmi => Some("nvidia-smi"),
        Tool::Ipmitool => Some("ipmitool"),
        Tool::StressNg => Some("stress-ng"),
        Tool::Fio => Some("fio"),
        Tool::Iperf3 => Some("iperf3"),
        Tool::Nvme
        | Tool::Badblocks
        | Tool::Memtester
        | Tool::Dcgmi
        | Tool::GpuBurn
        | Tool::Wipefs
        | Tool::Blkid
        | Tool::Lsblk
        | Tool::Edac
        | Tool::CpuThrottle
        | Tool::ThermalSidecar
        | Tool::NetCounters
        | Tool::SmartGrowth => None,
    }
}

/// A small valid output for the tools without fixtures.
fn written_sample(tool: Tool) -> &'static str {
    match tool {
        Tool::Nvme => {
            r#"{"critical_warning":0,"temperature":305,"avail_spare":100,"spare_thresh":10,"percent_used":3,"endurance_grp_critical_warning_summary":0,"data_units_read":1234567,"data_units_written":7654321,"host_read_commands":111,"host_write_commands":222,"controller_busy_time":33,"power_cycles":44,"power_on_hours":5555,"unsafe_shutdowns":6,"media_errors":0,"num_err_log_entries":0,"warning_temp_time":0,"critical_comp_time":0}"#
        }
        Tool::Badblocks => {
            "Checking for bad blocks in read-write mode\nFrom block 0 to 16383\nTesting with pattern 0xaa: done                                                 \nReading and comparing: done                                                 \nPass completed, 0 bad blocks found. (0/0/0 errors)\n"
        }
        Tool::Memtester => {
            "memtester version 4.6.0 (64-bit)\nCopyright (C) 2001-2020 Charles Cazabon.\nLicensed under the GNU General Public License version 2 (only).\n\npagesize is 4096\npagesizemask is 0xfffffffffffff000\nwant 4MB (4194304 bytes)\ngot  4MB (4194304 bytes), trying mlock ...locked.\nLoop 1/1:\n  Stuck Address       : ok         \n  Random Value        : ok\n  Compare XOR         : ok\n  Compare SUB         : ok\n  Solid Bits          : ok         \n  8-bit Writes        : ok\n\nDone.\n"
        }
        Tool::Dcgmi => {
            r#"{"DCGM GPU Diagnostic":{"test_categories":[{"category":"Deployment","tests":[{"name":"Denylist","results":[{"status":"Pass"}]},{"name":"NVML Library","results":[{"status":"Pass"}]}]},{"category":"Hardware","tests":[{"name":"GPU Memory","results":[{"gpu_ids":"0","status":"Pass"}]}]}]},"version":"3.3.5","Driver Version Detected":"535.129.03","GPU Device IDs":["2330"]}"#
        }
        Tool::GpuBurn => {
            "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1c2b8e4a-0000-0000-0000-000000000000)\nInitialized device 0 with 81559 MB of memory (80646 MB available, using 72581 MB of it), using FLOATS\nResults are 268435456 bytes each, thus performing 268 iterations\n10.0%  proc'd: 3454 (51234 Gflop/s)   errors: 0   temps: 45 C \n100.0%  proc'd: 34540 (51290 Gflop/s)   errors: 0   temps: 59 C \nKilling processes.. Freed memory for dev 0\nUninitted cublas\ndone\n\nTested 1 GPUs:\n\tGPU 0: OK\n"
        }
        Tool::Wipefs => {
            r#"{"signatures": [{"device":"loop0","offset":"0x438","type":"ext4","uuid":"6f2a4c2e-5d5c-4f55-9a6c-0c1f5d2e8b11","label":null}]}"#
        }
        Tool::Blkid => {
            "DEVNAME=/dev/loop0\nUUID=6f2a4c2e-5d5c-4f55-9a6c-0c1f5d2e8b11\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n"
        }
        Tool::Lsblk => {
            r#"{"blockdevices": [{"name":"sda","size":500107862016,"rota":true,"tran":"sata","rm":false,"model":"ST500DM002-1BD142","serial":"Z3T5ABCD","wwn":"0x5000c5006b1e4d2f","type":"disk","fstype":null,"pttype":"gpt","children":[{"name":"sda1","size":536870912,"rota":true,"tran":null,"rm":false,"model":null,"serial":null,"wwn":"0x5000c5006b1e4d2f","type":"part","fstype":"vfat","pttype":"gpt"}]}]}"#
        }
        Tool::Edac => {
            r#"{"before": {"mc0": {"corrected": 3, "uncorrected": 0}, "mc1": {"corrected": 0, "uncorrected": 0}}, "after": {"mc0": {"corrected": 3, "uncorrected": 0}, "mc1": {"corrected": 0, "uncorrected": 0}}}"#
        }
        Tool::CpuThrottle => {
            r#"{"before": {"cpu0": 4, "cpu1": 0}, "after": {"cpu0": 4, "cpu1": 0}}"#
        }
        Tool::ThermalSidecar => {
            r#"{"rounds": 3, "samples": 6, "peaks": [{"chip": "coretemp-hwmon1", "driver": "coretemp", "label": "Package id 0", "input_name": "temp1", "kind": "temperature", "input": 61.0, "min": null, "max": 84.0, "crit": 100.0, "alarms": [], "unit": "°C"}]}"#
        }
        Tool::NetCounters => {
            r#"{"subject": "eth0", "before": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 2, "tx_dropped": 0}, "after": {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 2, "tx_dropped": 0}}"#
        }
        Tool::SmartGrowth => {
            r#"{"subject": "sda", "before": {"device": {"name": "/dev/sda", "type": "sat", "protocol": "ATA"}, "serial_number": "Z3T5ABCD", "smart_status": {"passed": true}, "ata_smart_attributes": {"table": [{"id": 5, "name": "Reallocated_Sector_Ct", "value": 100, "worst": 100, "thresh": 10, "raw": {"value": 0, "string": "0"}}]}}, "after": {"device": {"name": "/dev/sda", "type": "sat", "protocol": "ATA"}, "serial_number": "Z3T5ABCD", "smart_status": {"passed": true}, "ata_smart_attributes": {"table": [{"id": 5, "name": "Reallocated_Sector_Ct", "value": 100, "worst": 100, "thresh": 10, "raw": {"value": 0, "string": "0"}}]}}}"#
        }
        _ => "",
    }
}

/// The valid samples of a tool: its fixtures, or the written sample.
fn samples(tool: Tool) -> Vec<(String, Vec<u8>)> {
    match fixture_folder(tool) {
        Some(folder) => fixture_names(folder)
            .into_iter()
            .map(|name| {
                let bytes = fixture(&format!("{folder}/{name}"));
                (format!("{folder}/{name}"), bytes)
            })
            .collect(),
        None => vec![(
            format!("{tool} sample"),
            written_sample(tool).as_bytes().to_vec(),
        )],
    }
}

/// Runs the parser, turning a panic into a test failure that names the
/// tool and the input.
fn must_not_panic(tool: Tool, input: &[u8], what: &str) -> bool {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        parse_and_judge(tool, input, &Thresholds::default())
    }));
    match outcome {
        Ok(result) => result.is_ok(),
        Err(_) => panic!("{tool} panicked on {what}"),
    }
}

/// Cut points: every byte of the first 64, then 64 spread over the rest,
/// and the last 16.
fn cut_points(length: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..length.min(64)).collect();
    let step = (length / 64).max(1);
    cuts.extend((0..length).step_by(step));
    cuts.extend(length.saturating_sub(16)..length);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

#[test]
fn empty_input_is_an_error_for_every_tool() {
    for tool in Tool::ALL {
        assert!(
            !must_not_panic(tool, b"", "empty input"),
            "{tool} accepted empty input"
        );
    }
}

#[test]
fn whitespace_never_panics() {
    for tool in Tool::ALL {
        for input in [&b" "[..], b"\n", b"\r\n\t \n", b"\n\n\n\n"] {
            must_not_panic(tool, input, "whitespace");
        }
    }
}

#[test]
fn non_utf8_input_is_an_error_for_every_tool() {
    for tool in Tool::ALL {
        let garbage = [0xFF, 0xFE, 0x80, 0x00, 0xC3, 0x28, 0xA0, 0xA1];
        assert!(
            !must_not_panic(tool, &garbage, "non-UTF-8 bytes"),
            "{tool} accepted non-UTF-8 garbage"
        );
        for (name, sample) in samples(tool) {
            let mut broken = sample.clone();
            broken.insert(broken.len() / 2, 0xFF);
            assert!(
                !must_not_panic(
                    tool,
                    &broken,
                    &format!("{name} with a 0xFF byte in the middle")
                ),
                "{tool} accepted {name} with an invalid UTF-8 byte"
            );
        }
    }
}

#[test]
fn truncated_samples_never_panic() {
    for tool in Tool::ALL {
        for (name, sample) in samples(tool) {
            assert!(!sample.is_empty(), "{name}");
            for cut in cut_points(sample.len()) {
                must_not_panic(tool, &sample[..cut], &format!("{name} cut at byte {cut}"));
            }
            // The sample itself (whole) must not panic either.
            must_not_panic(tool, &sample, &name);
        }
    }
}

#[test]
fn samples_with_lines_dropped_or_duplicated_never_panic() {
    for tool in Tool::ALL {
        for (name, sample) in samples(tool) {
            let Ok(text) = std::str::from_utf8(&sample) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let step = (lines.len() / 16).max(1);
            for skip in (0..lines.len()).step_by(step) {
                let dropped: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| *index != skip)
                    .map(|(_, line)| *line)
                    .collect();
                must_not_panic(
                    tool,
                    dropped.join("\n").as_bytes(),
                    &format!("{name} without line {skip}"),
                );
                let mut doubled = lines.clone();
                doubled.insert(skip, lines[skip]);
                must_not_panic(
                    tool,
                    doubled.join("\n").as_bytes(),
                    &format!("{name} with line {skip} twice"),
                );
            }
        }
    }
}

/// Pieces of the formats the parsers read, for random inputs that get past
/// the first checks.
const TOKENS: &[&str] = &[
    "\n",
    "\t",
    " ",
    ":",
    ",",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "0",
    "1",
    "-1",
    "255",
    "1e308",
    "NaN",
    "0x7FFF",
    "18446744073709551616",
    "\u{8}",
    "...",
    "---\n",
    "Handle 0x0400, DMI type 4, 42 bytes\n",
    "Handle 0x1100, DMI type 17, 40 bytes\n",
    "Memory Device\n",
    "\tSize: 16384 MB\n",
    "\tStatus: Populated, Idle\n",
    "Slot:\t00:1f.2\n",
    "Class:\tSATA controller [0106]\n",
    "Vendor:\tIntel [8086]\n",
    "\"id\":\"x\",\"class\":\"disk\"",
    "\"children\":[",
    "\"logicalname\":",
    "\"size\":",
    "metrics:\n",
    "    - stressor: cpu\n",
    "      bogo-ops: ",
    "system-info:\n",
    "memtester version 4.6.0\n",
    "Loop 1/1:\n",
    "  Compare XOR         : ",
    "ok\n",
    "FAILURE: ",
    "Done.\n",
    "\"end\":{",
    "\"sum_received\":{\"bits_per_second\":",
    "\"error\":\"x\"",
    "\"start\":{",
    "\"smartctl\":{\"exit_status\":",
    "\"ata_smart_attributes\":{\"table\":[",
    "\"nvme_smart_health_information_log\":{",
    "<?xml version=\"1.0\" ?>\n<nvidia_smi_log>",
    "<gpu id=\"00000000:01:00.0\">",
    "</gpu>",
    "#### ",
    "index, name\n",
    "Power Supply 1   | 90 Watts          | ok\n",
    " | ",
    "ns\n",
    "cr\n",
    "\"jobs\":[{\"error\":",
    "\"coretemp-isa-0000\":{",
    "\"temp1_input\":",
    "Pass completed, 3 bad blocks found. (3/0/0 errors)\n",
    "\tGPU 0: FAULTY\n",
    "Tested 1 GPUs:\n",
    "\"test_categories\":[",
    "\"signatures\":[",
    "TYPE=ext4\n",
    "PTTYPE=gpt\n",
    "\"blockdevices\":[",
    "\"media_errors\":",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..48)
        .prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for tool in Tool::ALL {
            let _ = parse_and_judge(tool, &bytes, &Thresholds::default());
        }
    }

    #[test]
    fn random_strings_never_panic(text in "\\PC{0,256}") {
        for tool in Tool::ALL {
            let _ = parse_and_judge(tool, text.as_bytes(), &Thresholds::default());
        }
    }

    #[test]
    fn random_format_fragments_never_panic(text in token_soup()) {
        for tool in Tool::ALL {
            let _ = parse_and_judge(tool, text.as_bytes(), &Thresholds::default());
        }
    }

    #[test]
    fn random_edits_of_samples_never_panic(
        tool_index in 0..Tool::ALL.len(),
        position in any::<prop::sample::Index>(),
        insert in token_soup(),
        remove in 0usize..64,
    ) {
        let tool = Tool::ALL[tool_index];
        for (_, sample) in samples(tool).into_iter().take(3) {
            let at = position.index(sample.len() + 1);
            let mut edited = sample[..at].to_vec();
            edited.extend_from_slice(insert.as_bytes());
            edited.extend_from_slice(&sample[(at + remove).min(sample.len())..]);
            let _ = parse_and_judge(tool, &edited, &Thresholds::default());
        }
    }
}
