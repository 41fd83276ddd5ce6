//! smartctl and nvme-cli parsers on the real captures in
//! `../shared/fixtures/smartctl`: every file parses, gets the verdict that
//! EXPECTED.md gives it, names the right reasons, and keeps its key facts
//! (snapshots of a compact summary, not of the whole document).

use serde_json::{Value, json};
use vetting_probes::parsers::nvme::{self, NvmeHealth};
use vetting_probes::parsers::smartctl::{self, SelfTestOutcome, SmartDevice, SmartctlOutput};
use vetting_probes::{ParseError, Status, Thresholds, Tool, Verdict, parse_and_judge};

use crate::common::{fixture, fixture_names};

/// EXPECTED.md's smartctl table, written down by hand. `None` is `n/a`
/// (discovery output: a pass with no reasons).
const EXPECTED: [(&str, Option<Status>); 22] = [
    ("scrutiny-smart-ata-full.json", Some(Status::Pass)),
    ("scrutiny-smart-ata.json", Some(Status::Pass)),
    ("scrutiny-smart-fail.json", Some(Status::Skip)),
    ("scrutiny-smart-fail2.json", Some(Status::Fail)),
    ("scrutiny-smart-megaraid1.json", Some(Status::Fail)),
    ("scrutiny-smart-nvme-failed.json", Some(Status::Fail)),
    ("scrutiny-smart-nvme.json", Some(Status::Pass)),
    ("scrutiny-smart-scsi.json", Some(Status::Warn)),
    ("scrutiny-smartctl_scan_megaraid.json", None),
    ("scrutiny-smartctl_scan_simple.json", None),
    (
        "smartctl_exporter-HGST_HUS724020ALE640_28.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-HITACHI_H109060SESUN600G_10.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-SEAGATE_ST373453LC_26.json",
        Some(Status::Fail),
    ),
    ("smartctl_exporter-ST3500418AS_12.json", Some(Status::Fail)),
    (
        "smartctl_exporter-nvme-null-INTEL_SSDPE2KX020T7-nvme6.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-nvme-null-Micron_7400_MTFDKCB1T6TFC-nvme2.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-nvme-null-SAMSUNG_MZWLL3T2HAJQ-00005-nvme0.json",
        Some(Status::Fail),
    ),
    (
        "smartctl_exporter-nvme-null-Samsung_SSD_970_EVO_Plus_250GB-nvme0.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-sat-Phison_Driven_SSDs-KINGSTON_SA400M8120G-sda.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-sat-Samsung_based_SSDs-SAMSUNG_MZ7LH1T9HMLT-00005-sda.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-sat-TOSHIBA_MG09ACA18TE-sdd.json",
        Some(Status::Pass),
    ),
    (
        "smartctl_exporter-sat-Western_Digital_Ultrastar_DC_HC550-WDC__WUH721816ALE6L4-sdx.json",
        Some(Status::Pass),
    ),
];

fn judge(name: &str) -> (SmartctlOutput, Verdict) {
    let input = fixture(&format!("smartctl/{name}"));
    let output = smartctl::parse(&input).unwrap_or_else(|error| panic!("{name}: {error}"));
    let verdict = smartctl::verdict(&output, &Thresholds::default());
    (output, verdict)
}

fn load_device(name: &str) -> (SmartDevice, Verdict) {
    match judge(name) {
        (SmartctlOutput::Device(device), verdict) => (*device, verdict),
        (SmartctlOutput::Scan(_), _) => panic!("{name}: parsed as a scan"),
    }
}

fn has_reason(verdict: &Verdict, status: Status, needle: &str) -> bool {
    verdict
        .messages(status)
        .any(|message| message.contains(needle))
}

#[track_caller]
fn assert_reason(verdict: &Verdict, status: Status, needle: &str) {
    assert!(
        has_reason(verdict, status, needle),
        "no {status} reason containing {needle:?} in {:#?}",
        verdict.reasons
    );
}

/// The facts worth pinning per file: identity, health counters, verdict.
fn summary(output: &SmartctlOutput, verdict: &Verdict) -> Value {
    let reasons: Vec<String> = verdict
        .reasons
        .iter()
        .map(|reason| format!("{}: {}", reason.status, reason.message))
        .collect();
    match output {
        SmartctlOutput::Scan(scan) => json!({
            "kind": "scan",
            "status": verdict.status,
            "reasons": reasons,
            "devices": scan.devices.iter().map(|device| {
                format!("{} {} {}", device.name, device.device_type, device.protocol.as_deref().unwrap_or("?"))
            }).collect::<Vec<_>>(),
        }),
        SmartctlOutput::Device(device) => {
            let attributes: Vec<String> = device
                .ata
                .iter()
                .flat_map(|ata| ata.attributes.iter())
                .filter(|attribute| [5, 187, 188, 197, 198, 199].contains(&attribute.id))
                .map(|attribute| {
                    format!("{} {} raw {}", attribute.id, attribute.name, attribute.raw)
                })
                .collect();
            let tests = &device.self_tests;
            let count = |outcome: SelfTestOutcome| {
                tests
                    .log
                    .iter()
                    .filter(|entry| entry.outcome == outcome)
                    .count()
            };
            json!({
                "kind": "device",
                "status": verdict.status,
                "reasons": reasons,
                "identity": device.identity,
                "exit_status": device.run.exit_status,
                "health_passed": device.health_passed,
                "temperature_c": device.temperature_c,
                "power_on_hours": device.power_on_hours,
                "ata_attributes": attributes,
                "ata_error_log": device.ata.as_ref().and_then(|ata| ata.error_log.clone()),
                "nvme": device.nvme,
                "scsi": device.scsi,
                "self_tests": {
                    "entries": tests.log.len(),
                    "passed": count(SelfTestOutcome::Passed),
                    "failed": count(SelfTestOutcome::Failed),
                    "aborted": count(SelfTestOutcome::Aborted),
                    "in_progress": tests.in_progress,
                },
            })
        }
    }
}

#[test]
fn every_smartctl_fixture_gets_its_expected_verdict() {
    let names = fixture_names("smartctl");
    let listed: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, listed,
        "the fixture folder and the EXPECTED table differ"
    );
    let mut counts = std::collections::BTreeMap::new();
    for (name, expected) in EXPECTED {
        let (output, verdict) = judge(name);
        match expected {
            Some(status) => assert_eq!(verdict.status, status, "{name}: {:#?}", verdict.reasons),
            None => {
                assert!(
                    matches!(output, SmartctlOutput::Scan(_)),
                    "{name} is discovery output"
                );
                assert_eq!(
                    verdict,
                    Verdict::pass(),
                    "{name}: discovery has no health verdict"
                );
            }
        }
        *counts
            .entry(expected.map_or("n/a", Status::as_str))
            .or_insert(0) += 1;
        let stem = name.trim_end_matches(".json");
        insta::assert_json_snapshot!(stem, summary(&output, &verdict));
    }
    // EXPECTED.md: "smartctl 12 pass / 1 warn / 6 fail / 1 skip / 2 n/a".
    let expected_counts = [
        ("fail", 6),
        ("n/a", 2),
        ("pass", 12),
        ("skip", 1),
        ("warn", 1),
    ];
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), expected_counts);
}

#[test]
fn the_dispatch_gives_the_same_report() {
    let input = fixture("smartctl/scrutiny-smart-fail2.json");
    let report = parse_and_judge(Tool::Smartctl, &input, &Thresholds::default()).unwrap();
    assert_eq!(report.tool, Tool::Smartctl);
    assert_eq!(report.verdict.status, Status::Fail);
    assert_eq!(report.data["kind"], "device");
    assert_eq!(report.data["identity"]["serial"], "MSK423Y20S3HBC");
    let round_trip: SmartctlOutput = serde_json::from_value(report.data).unwrap();
    assert!(matches!(round_trip, SmartctlOutput::Device(_)));
}

#[test]
fn failing_ata_drive_names_reallocated_pending_and_self_test() {
    let (device, verdict) = load_device("scrutiny-smart-fail2.json");
    assert_reason(&verdict, Status::Fail, "smart_status.passed false");
    assert_reason(
        &verdict,
        Status::Fail,
        "attribute 5 Reallocated_Sector_Ct raw 1975 >= fail threshold 100",
    );
    assert_reason(
        &verdict,
        Status::Fail,
        "attribute 5 Reallocated_Sector_Ct normalized value 1 <= threshold 5 (when_failed now)",
    );
    assert_reason(
        &verdict,
        Status::Fail,
        "attribute 197 Current_Pending_Sector raw 8 > fail threshold 0",
    );
    assert_reason(&verdict, Status::Fail, "3 failed self-tests");
    assert_reason(
        &verdict,
        Status::Fail,
        "Extended offline \"Completed: read failure\"",
    );
    assert!(
        !has_reason(&verdict, Status::Fail, "attribute 198"),
        "198 raw is 0"
    );
    assert_eq!(device.identity.device_type.as_deref(), Some("usbjmicron"));
}

#[test]
fn seagate_with_reallocated_304_fails_although_health_passed() {
    let (device, verdict) = load_device("smartctl_exporter-ST3500418AS_12.json");
    assert_eq!(device.health_passed, Some(true));
    assert_eq!(
        verdict.messages(Status::Fail).collect::<Vec<_>>(),
        ["attribute 5 Reallocated_Sector_Ct raw 304 >= fail threshold 100"]
    );
}

#[test]
fn megaraid_disk_keeps_its_device_type_and_ignores_an_aborted_self_test() {
    let (device, verdict) = load_device("scrutiny-smart-megaraid1.json");
    assert_eq!(
        device.identity.device_type.as_deref(),
        Some("sat+megaraid,1")
    );
    assert_eq!(
        device.identity.raid_passthrough.as_deref(),
        Some("megaraid,1")
    );
    assert_eq!(device.run.exit_status, Some(4));
    assert_reason(
        &verdict,
        Status::Fail,
        "attribute 5 Reallocated_Sector_Ct raw 387 >= fail threshold 100",
    );
    // Exit bit 2 with device data is judged, not skipped, and says so.
    assert_reason(
        &verdict,
        Status::Pass,
        "Warning: This result is based on an Attribute check.",
    );
    let aborted = device
        .self_tests
        .log
        .iter()
        .filter(|entry| entry.outcome == SelfTestOutcome::Aborted)
        .count();
    assert_eq!(aborted, 1, "one \"Aborted by host\" entry");
    assert!(
        !has_reason(&verdict, Status::Fail, "self-test"),
        "{:#?}",
        verdict.reasons
    );
}

#[test]
fn open_failure_is_a_skip_with_smartctls_message() {
    let (device, verdict) = load_device("scrutiny-smart-fail.json");
    assert!(!device.has_health_data);
    assert_eq!(verdict.status, Status::Skip);
    assert_eq!(
        verdict.messages(Status::Skip).collect::<Vec<_>>(),
        [r"Smartctl open device: /dev/sda failed: \\.\PhysicalDrive0: Open failed, Error=5"]
    );
}

#[test]
fn exit_bit_2_without_device_data_and_without_messages_is_a_skip_naming_the_bits() {
    let input = br#"{"json_format_version":[1,0],"smartctl":{"version":[7,3],"exit_status":4}}"#;
    let verdict = smartctl::verdict(&smartctl::parse(input).unwrap(), &Thresholds::default());
    assert_eq!(verdict.status, Status::Skip);
    assert_reason(
        &verdict,
        Status::Skip,
        "exit status 4 (bit 2: some SMART or other command",
    );
}

#[test]
fn exit_bit_2_with_device_data_is_judged() {
    let (device, verdict) =
        load_device("smartctl_exporter-sat-Phison_Driven_SSDs-KINGSTON_SA400M8120G-sda.json");
    assert_eq!(device.run.exit_status, Some(4));
    assert!(device.has_health_data);
    assert_eq!(verdict.status, Status::Pass);
    assert_reason(&verdict, Status::Pass, "smartctl exit status 4");
}

#[test]
fn nvme_with_media_errors_fails_and_error_log_entries_alone_do_not() {
    let (device, verdict) = load_device("scrutiny-smart-nvme-failed.json");
    let health = device.nvme.as_ref().unwrap();
    assert_eq!(health.media_errors, Some(7));
    assert_eq!(
        verdict.messages(Status::Fail).collect::<Vec<_>>(),
        ["NVMe media_errors 7 > fail threshold 0"]
    );
    assert_reason(
        &verdict,
        Status::Pass,
        "num_err_log_entries 62 (not a failure on its own)",
    );

    let (_, verdict) =
        load_device("smartctl_exporter-nvme-null-Micron_7400_MTFDKCB1T6TFC-nvme2.json");
    assert_eq!(verdict.status, Status::Pass);
    assert_reason(&verdict, Status::Pass, "num_err_log_entries 40");
}

#[test]
fn nvme_with_a_critical_warning_fails_naming_the_bit() {
    let (device, verdict) =
        load_device("smartctl_exporter-nvme-null-SAMSUNG_MZWLL3T2HAJQ-00005-nvme0.json");
    assert_eq!(device.nvme.as_ref().unwrap().critical_warning, 16);
    assert_reason(
        &verdict,
        Status::Fail,
        "NVMe critical_warning 16 (0x10: volatile memory backup failed) != 0",
    );
    assert_reason(&verdict, Status::Fail, "smart_status.passed false");
}

#[test]
fn worn_nvme_below_the_warn_threshold_passes_and_above_warns() {
    let (device, verdict) =
        load_device("smartctl_exporter-nvme-null-INTEL_SSDPE2KX020T7-nvme6.json");
    assert_eq!(device.nvme.as_ref().unwrap().percentage_used, Some(75));
    assert_eq!(verdict.status, Status::Pass);

    let mut thresholds = Thresholds::default();
    thresholds.nvme.percentage_used_warn = 70;
    let verdict = smartctl::judge_device(&device, &thresholds);
    assert_eq!(verdict.status, Status::Warn);
    assert_reason(
        &verdict,
        Status::Warn,
        "NVMe percentage_used 75% >= warn threshold 70%",
    );
}

#[test]
fn nvme_identity_has_capacity_and_eui64() {
    let (device, _) = load_device("scrutiny-smart-nvme-failed.json");
    assert_eq!(device.identity.capacity_bytes, Some(500_107_862_016));
    // eui64 oui 9528 (0x002538), ext_id 376106710327 (0x5791b4f537).
    assert_eq!(device.identity.wwn.as_deref(), Some("eui.0025385791b4f537"));
    assert_eq!(device.identity.protocol.as_deref(), Some("NVMe"));
    // Older JSON without user_capacity or namespaces: the total capacity.
    let (micron, _) =
        load_device("smartctl_exporter-nvme-null-Micron_7400_MTFDKCB1T6TFC-nvme2.json");
    assert_eq!(micron.identity.capacity_bytes, Some(1_600_321_314_816));
}

#[test]
fn scsi_partial_document_without_smartctl_object_warns_on_grown_defects() {
    let (device, verdict) = load_device("scrutiny-smart-scsi.json");
    assert_eq!(device.run.exit_status, None);
    assert_eq!(
        verdict.messages(Status::Warn).collect::<Vec<_>>(),
        ["SCSI scsi_grown_defect_list 56 >= warn threshold 1"]
    );
    assert_eq!(device.identity.capacity_bytes, Some(4_000_787_030_016));
    assert_eq!(device.identity.rotation_rate_rpm, Some(7200));
}

#[test]
fn scsi_uncorrected_errors_and_many_grown_defects_fail() {
    let (_, verdict) = load_device("smartctl_exporter-SEAGATE_ST373453LC_26.json");
    assert_reason(
        &verdict,
        Status::Fail,
        "SCSI total_uncorrected_errors 536 (read 1, write 535) > fail threshold 0",
    );
    assert_reason(
        &verdict,
        Status::Fail,
        "SCSI scsi_grown_defect_list 260 >= fail threshold 100",
    );
}

#[test]
fn interface_crc_errors_are_reported_and_warn_only_when_a_threshold_is_set() {
    let name = "smartctl_exporter-HGST_HUS724020ALE640_28.json";
    let (device, verdict) = load_device(name);
    assert_eq!(verdict.status, Status::Pass);
    assert_reason(
        &verdict,
        Status::Pass,
        "attribute 199 UDMA_CRC_Error_Count raw 12",
    );
    assert_reason(
        &verdict,
        Status::Pass,
        "12 errors over the drive's life, 5 logged, 5 of them ICRC",
    );

    let mut thresholds = Thresholds::default();
    thresholds.smart.crc_errors_warn_above = Some(10);
    let verdict = smartctl::judge_device(&device, &thresholds);
    assert_eq!(verdict.status, Status::Warn);
    assert_reason(
        &verdict,
        Status::Warn,
        "attribute 199 UDMA_CRC_Error_Count raw 12 > warn threshold 10",
    );
    thresholds.smart.crc_errors_warn_above = Some(12);
    assert_eq!(
        smartctl::judge_device(&device, &thresholds).status,
        Status::Pass
    );
}

#[test]
fn a_running_self_test_is_not_a_failure() {
    let (device, verdict) = load_device("scrutiny-smart-ata.json");
    let running = device
        .self_tests
        .in_progress
        .as_ref()
        .expect("a test is running");
    assert_eq!(running.remaining_percent, Some(10));
    assert_eq!(verdict.status, Status::Pass);
    assert_reason(&verdict, Status::Pass, "a self-test is in progress");
}

#[test]
fn the_extended_self_test_log_is_read() {
    let (device, _) = load_device("scrutiny-smart-ata-full.json");
    assert_eq!(device.self_tests.log.len(), 19);
    assert!(
        device
            .self_tests
            .log
            .iter()
            .all(|entry| entry.outcome == SelfTestOutcome::Passed)
    );
}

#[test]
fn ata_identity_has_a_stable_wwn_serial_and_capacity() {
    let (device, _) = load_device(
        "smartctl_exporter-sat-Western_Digital_Ultrastar_DC_HC550-WDC__WUH721816ALE6L4-sdx.json",
    );
    let identity = &device.identity;
    assert_eq!(
        identity.model.as_deref(),
        Some("WDC  WUH721816ALE6L4"),
        "double space kept"
    );
    // naa 5, oui 3274 (0x000cca), id 1234567890 (redacted upstream): the
    // 64-bit NAA name as lsblk prints it.
    assert_eq!(identity.wwn.as_deref(), Some("0x5000cca0499602d2"));
    assert_eq!(identity.rotation_rate_rpm, Some(7200));
    assert!(identity.capacity_bytes.unwrap() > 16_000_000_000_000);
}

#[test]
fn scan_output_is_keyed_by_name_and_type() {
    let (output, verdict) = judge("scrutiny-smartctl_scan_megaraid.json");
    let SmartctlOutput::Scan(scan) = output else {
        panic!("not a scan")
    };
    assert!(verdict.reasons.is_empty());
    let keys: Vec<(&str, &str)> = scan.devices.iter().map(|device| device.key()).collect();
    assert_eq!(
        keys,
        [("/dev/bus/0", "megaraid,0"), ("/dev/bus/0", "megaraid,1")]
    );

    let (output, _) = judge("scrutiny-smartctl_scan_simple.json");
    let SmartctlOutput::Scan(scan) = output else {
        panic!("not a scan")
    };
    assert_eq!(scan.devices.len(), 7);
    assert!(
        scan.devices
            .iter()
            .all(|device| device.device_type == "scsi")
    );
}

#[test]
fn scan_open_errors_are_kept() {
    // `smartctl --scan-open --json` adds `open_error` to a device it could
    // not open (smartctl.cpp, scan_devices()).
    let input = br#"{"json_format_version":[1,0],"smartctl":{"version":[7,3],"exit_status":0},
        "devices":[{"name":"/dev/sda","info_name":"/dev/sda","type":"sat","protocol":"ATA"},
                   {"name":"/dev/sdb","info_name":"/dev/sdb","type":"scsi","protocol":"SCSI",
                    "open_error":"/dev/sdb: No such device"}]}"#;
    let SmartctlOutput::Scan(scan) = smartctl::parse(input).unwrap() else {
        panic!("not a scan")
    };
    assert_eq!(
        scan.devices[1].open_error.as_deref(),
        Some("/dev/sdb: No such device")
    );
}

#[test]
fn non_smartctl_json_and_garbage_are_errors() {
    for input in [
        &b""[..],
        b"   \n",
        b"{}",
        b"[1,2,3]",
        b"{\"jobs\":[]}",
        b"\xff\xfe{",
        b"{\"device\": ",
    ] {
        let result = smartctl::report(input, &Thresholds::default());
        assert!(
            result.is_err(),
            "{:?} parsed",
            String::from_utf8_lossy(input)
        );
    }
    assert!(matches!(
        smartctl::parse(b""),
        Err(ParseError::Empty { .. })
    ));
}

fn smartctl_installed() -> bool {
    vetting_testkit::prerequisite(vetting_testkit::program("smartctl"))
}

fn run_smartctl(args: &[&str]) -> Vec<u8> {
    std::process::Command::new("smartctl")
        .args(args)
        .output()
        .expect("running smartctl")
        .stdout
}

#[test]
fn real_smartctl_scan_open_is_discovery_even_when_it_finds_nothing() {
    if !smartctl_installed() {
        return;
    }
    // On this VM the scan finds no disk and smartctl leaves `devices` out.
    let output = run_smartctl(&["--scan-open", "--json"]);
    let parsed = smartctl::parse(&output).unwrap();
    assert!(matches!(parsed, SmartctlOutput::Scan(_)), "{parsed:?}");
    assert_eq!(
        smartctl::verdict(&parsed, &Thresholds::default()),
        Verdict::pass()
    );
}

#[test]
fn real_smartctl_on_a_device_it_cannot_read_is_a_skip_with_its_message() {
    if !smartctl_installed() {
        return;
    }
    let output = run_smartctl(&["-a", "--json", "/dev/vetting-no-such-disk"]);
    let report = parse_and_judge(Tool::Smartctl, &output, &Thresholds::default()).unwrap();
    assert_eq!(report.verdict.status, Status::Skip);
    assert_reason(
        &report.verdict,
        Status::Skip,
        "/dev/vetting-no-such-disk: Unable to detect device type",
    );
    assert_eq!(report.data["run"]["exit_status"], 1);
}

#[test]
fn real_smartctl_forced_sat_on_a_loop_device_is_a_skip_naming_the_exit_bits() {
    if !vetting_testkit::prerequisite(vetting_testkit::all_of([
        vetting_testkit::program("smartctl"),
        vetting_testkit::loop_devices(),
    ])) {
        return;
    }
    let loop_device = crate::storage_tools::LoopDevice::new();
    // smartctl prints device data (name, type) but no SMART data, exit 2.
    let output = run_smartctl(&["-a", "--json", "-d", "sat", &loop_device.path]);
    let (device, verdict) = match smartctl::parse(&output).unwrap() {
        SmartctlOutput::Device(device) => {
            let verdict = smartctl::judge_device(&device, &Thresholds::default());
            (device, verdict)
        }
        other => panic!("not device output: {other:?}"),
    };
    assert_eq!(device.identity.device_type.as_deref(), Some("sat"));
    assert!(!device.has_health_data);
    assert_eq!(verdict.status, Status::Skip);
    assert_reason(
        &verdict,
        Status::Skip,
        "smartctl exit status 2 (bit 1: device open failed",
    );
}

// nvme-cli `nvme smart-log -o json`. No capture of it exists in the
// fixtures and this machine has no NVMe device, so the inputs below are
// written from nvme-cli's source (`json_smart_log()` in nvme-print-json.c):
// 1.x prints the 128-bit counters as floats, 2.0–2.3 as strings, later
// versions as plain numbers; `-H` makes critical_warning an object.

const NVME_CLI_1X: &str = r#"{
  "critical_warning" : 0, "temperature" : 310, "avail_spare" : 100, "spare_thresh" : 10,
  "percent_used" : 2, "endurance_grp_critical_warning_summary" : 0,
  "data_units_read" : 3519394.0, "data_units_written" : 7048361.0,
  "host_read_commands" : 58107547.0, "host_write_commands" : 116236426.0,
  "controller_busy_time" : 412.0, "power_cycles" : 1224.0, "power_on_hours" : 2937.0,
  "unsafe_shutdowns" : 71.0, "media_errors" : 0.0, "num_err_log_entries" : 3213.0,
  "warning_temp_time" : 0, "critical_comp_time" : 0,
  "temperature_sensor_1" : 310, "temperature_sensor_2" : 316,
  "thm_temp1_trans_count" : 0, "thm_temp2_trans_count" : 0,
  "thm_temp1_total_time" : 0, "thm_temp2_total_time" : 0
}"#;

const NVME_CLI_2_3_FAILING: &str = r#"{
  "critical_warning":4, "temperature":318, "avail_spare":3, "spare_thresh":10,
  "percent_used":85, "endurance_grp_critical_warning_summary":0,
  "data_units_read":"123456789", "data_units_written":"98765432",
  "host_read_commands":"1", "host_write_commands":"2", "controller_busy_time":"3",
  "power_cycles":"40", "power_on_hours":"43000", "unsafe_shutdowns":"12",
  "media_errors":"2", "num_err_log_entries":"9",
  "warning_temp_time":0, "critical_comp_time":0
}"#;

const NVME_CLI_VERBOSE: &str = r#"{
  "critical_warning":{"value":1,"available_spare":1,"temp_threshold":0,"reliability_degraded":0,
                      "ro":0,"vmbu_failed":0,"pmr_ro":0},
  "temperature":300, "avail_spare":5, "spare_thresh":10, "percent_used":1,
  "media_errors":0, "num_err_log_entries":0
}"#;

#[test]
fn nvme_cli_1x_floats_parse_and_pass() {
    let health = nvme::parse(NVME_CLI_1X.as_bytes()).unwrap();
    assert_eq!(
        health,
        NvmeHealth {
            critical_warning: 0,
            temperature_c: Some(37),
            available_spare: Some(100),
            available_spare_threshold: Some(10),
            percentage_used: Some(2),
            media_errors: Some(0),
            num_err_log_entries: Some(3213),
            power_on_hours: Some(2937),
            power_cycles: Some(1224),
            unsafe_shutdowns: Some(71),
            data_units_read: Some(3_519_394),
            data_units_written: Some(7_048_361),
            warning_temp_time: Some(0),
            critical_comp_time: Some(0),
        }
    );
    let verdict = nvme::verdict(&health, &Thresholds::default().nvme);
    assert_eq!(
        verdict.status,
        Status::Pass,
        "num_err_log_entries alone is not a failure"
    );
    assert_reason(&verdict, Status::Pass, "num_err_log_entries 3213");
}

#[test]
fn nvme_cli_2x_strings_fail_on_every_rule() {
    let report = parse_and_judge(
        Tool::Nvme,
        NVME_CLI_2_3_FAILING.as_bytes(),
        &Thresholds::default(),
    )
    .unwrap();
    let verdict = &report.verdict;
    assert_eq!(verdict.status, Status::Fail);
    assert_reason(
        verdict,
        Status::Fail,
        "NVMe critical_warning 4 (0x04: NVM subsystem reliability degraded) != 0",
    );
    assert_reason(
        verdict,
        Status::Fail,
        "NVMe media_errors 2 > fail threshold 0",
    );
    assert_reason(
        verdict,
        Status::Fail,
        "NVMe available_spare 3% < available_spare_threshold 10%",
    );
    assert_reason(
        verdict,
        Status::Warn,
        "NVMe percentage_used 85% >= warn threshold 80%",
    );
    assert_eq!(report.data["temperature_c"], 45);
    assert_eq!(report.data["power_on_hours"], 43000);
}

#[test]
fn nvme_cli_verbose_critical_warning_object_is_read() {
    let health = nvme::parse(NVME_CLI_VERBOSE.as_bytes()).unwrap();
    assert_eq!(health.critical_warning, 1);
    let verdict = nvme::verdict(&health, &Thresholds::default().nvme);
    assert_reason(
        &verdict,
        Status::Fail,
        "0x01: available spare below threshold",
    );
    assert_reason(
        &verdict,
        Status::Fail,
        "available_spare 5% < available_spare_threshold 10%",
    );
}

#[test]
fn nvme_cli_rejects_what_is_not_a_smart_log() {
    for input in [
        &b""[..],
        b"{}",
        b"{\"critical_warning\": 0}",
        b"[]",
        b"{\"critical_warning\":",
        b"\xc3\x28",
    ] {
        assert!(
            nvme::report(input, &Thresholds::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn truncated_smartctl_documents_are_errors_never_verdicts() {
    for name in fixture_names("smartctl") {
        let input = fixture(&format!("smartctl/{name}"));
        let end = input.iter().rposition(|byte| *byte == b'}').unwrap();
        for cut in (1..end).step_by(end / 16 + 1) {
            assert!(
                smartctl::report(&input[..cut], &Thresholds::default()).is_err(),
                "{name} cut at {cut} parsed"
            );
        }
    }
}

// ------------------------------------------- SMART growth during Storage

/// The verdict on a `smart-growth` document of two smartctl outputs.
fn judge_growth(before: &Value, after: &Value) -> Verdict {
    let document =
        vetting_probes::verdicts::BeforeAfter::new(Some("sda"), before.clone(), after.clone())
            .to_json()
            .unwrap();
    parse_and_judge(Tool::SmartGrowth, &document, &Thresholds::default())
        .unwrap()
        .verdict
}

#[test]
fn smart_counters_that_grew_on_a_real_drive_fail() {
    let before: Value =
        serde_json::from_slice(&fixture("smartctl/scrutiny-smart-ata-full.json")).unwrap();
    let same = judge_growth(&before, &before);
    assert_eq!(same.status, Status::Pass, "{:?}", same);
    assert_reason(&same, Status::Pass, "did not grow");
    // the same drive after the test: attribute 5 raw 0 → 3 (a reallocation
    // the SMART stage's thresholds would only warn about)
    let mut after = before.clone();
    let table = after["ata_smart_attributes"]["table"]
        .as_array_mut()
        .unwrap();
    let reallocated = table.iter_mut().find(|row| row["id"] == 5).unwrap();
    reallocated["raw"]["value"] = json!(3);
    reallocated["raw"]["string"] = json!("3");
    let grown = judge_growth(&before, &after);
    assert_eq!(grown.status, Status::Fail, "{:?}", grown);
    assert_reason(
        &grown,
        Status::Fail,
        "attribute 5 Reallocated_Sector_Ct grew",
    );
    assert_reason(&grown, Status::Fail, "0 → 3");
    // another drive's output says nothing of this one's growth
    let other: Value =
        serde_json::from_slice(&fixture("smartctl/scrutiny-smart-ata.json")).unwrap();
    let swapped = judge_growth(&before, &other);
    assert_eq!(swapped.status, Status::Fail);
    assert_reason(&swapped, Status::Fail, "different disks");
}

#[test]
fn nvme_media_errors_that_grew_fail() {
    let before: Value = serde_json::from_slice(&fixture(
        "smartctl/smartctl_exporter-nvme-null-Micron_7400_MTFDKCB1T6TFC-nvme2.json",
    ))
    .unwrap();
    let mut after = before.clone();
    let log = &mut after["nvme_smart_health_information_log"];
    let media_errors = log["media_errors"].as_u64().unwrap();
    log["media_errors"] = json!(media_errors + 2);
    let grown = judge_growth(&before, &after);
    assert_eq!(grown.status, Status::Fail, "{:?}", grown);
    assert_reason(&grown, Status::Fail, "NVMe media_errors grew");
}
