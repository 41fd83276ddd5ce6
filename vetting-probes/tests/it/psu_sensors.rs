//! PSU and sensor parsers: `ipmitool` (sdr, sdr elist, sensor, dcmi power
//! reading) and `sensors -j` on every real fixture in `../shared/fixtures`,
//! BMC outputs from public captures for the failure cases (no BMC here),
//! and the hwmon sysfs reader on a fake sysfs tree built in a tempdir (a
//! real one cannot be made here, and this machine has no hwmon).

use std::path::Path;

use vetting_probes::parsers::sensors::{self, SensorKind, SensorReading};
use vetting_probes::parsers::{hwmon, ipmitool};
use vetting_probes::{Status, Thresholds, Tool, Verdict, parse_and_judge};

use crate::common::{fixture, fixture_names};

/// EXPECTED.md's ipmitool table, by hand (`n/a` → pass, no warn/fail).
const IPMITOOL_EXPECTED: [(&str, Status); 6] = [
    (
        "redhat-cip-hardware-hp-proliant-ipmitool-sdr.txt",
        Status::Pass,
    ),
    ("telegraf-ipmitool-dcmi-power-reading.txt", Status::Pass),
    ("telegraf-ipmitool-sdr-elist-v2-curated.txt", Status::Pass),
    (
        "telegraf-ipmitool-sdr-elist-v2-with-errors.txt",
        Status::Pass,
    ),
    ("telegraf-ipmitool-sdr-v1-ibm.txt", Status::Pass),
    ("telegraf-ipmitool-sdr-v1-with-errors.txt", Status::Pass),
];

/// EXPECTED.md's sensors table, by hand.
const SENSORS_EXPECTED: [(&str, Status); 2] = [
    ("hjs-asrock-nct6798-sensors-j.json", Status::Pass),
    ("hjs-kfanfail-coretemp-nvme-sensors-j.json", Status::Pass),
];

fn problems(verdict: &Verdict) -> Vec<String> {
    verdict
        .reasons
        .iter()
        .filter(|reason| matches!(reason.status, Status::Warn | Status::Fail))
        .map(|reason| format!("{}: {}", reason.status, reason.message))
        .collect()
}

fn ipmi(name: &str) -> ipmitool::IpmitoolOutput {
    ipmitool::parse(&fixture(&format!("ipmitool/{name}")))
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn ipmi_verdict(input: &[u8]) -> Verdict {
    ipmitool::report(input, &Thresholds::default())
        .unwrap()
        .verdict
}

#[test]
fn every_ipmitool_fixture_gets_its_expected_verdict() {
    let names = fixture_names("ipmitool");
    let listed: Vec<&str> = IPMITOOL_EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, listed, "the table must list every fixture");
    for (name, expected) in IPMITOOL_EXPECTED {
        let verdict = ipmi_verdict(&fixture(&format!("ipmitool/{name}")));
        assert_eq!(verdict.status, expected, "{name}: {:?}", verdict.reasons);
        assert!(
            problems(&verdict).is_empty(),
            "{name}: {:?}",
            problems(&verdict)
        );
    }
}

#[test]
fn hp_sdr_psu_watts_with_ok_are_healthy_and_ns_is_no_reading() {
    let output = ipmi("redhat-cip-hardware-hp-proliant-ipmitool-sdr.txt");
    assert_eq!(output.format, ipmitool::IpmitoolFormat::Sdr);
    assert_eq!(output.sensors.len(), 52);
    assert_eq!(
        output
            .sensors
            .iter()
            .filter(|sensor| sensor.status == "ok")
            .count(),
        50
    );
    let no_reading: Vec<&str> = output
        .sensors
        .iter()
        .filter(|sensor| sensor.status == "ns")
        .map(|sensor| sensor.name.as_str())
        .collect();
    assert_eq!(no_reading, vec!["Temp 18", "Temp 27"]);
    let psu1 = output
        .psus
        .iter()
        .find(|psu| psu.name == "Power Supply 1")
        .unwrap();
    assert_eq!(psu1.reading_text, "90 Watts");
    assert!(psu1.faults.is_empty());
    let supply = output
        .sensors
        .iter()
        .find(|sensor| sensor.name == "Power Supply 2")
        .unwrap();
    assert_eq!(
        (supply.reading, supply.unit.as_deref()),
        (Some(65.0), Some("Watts"))
    );
    assert_eq!(output.power_watts, Some(170.0));
    assert!(output.has_psu_sensors());
    let verdict = ipmi_verdict(&fixture(
        "ipmitool/redhat-cip-hardware-hp-proliant-ipmitool-sdr.txt",
    ));
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message.contains("Temp 18, Temp 27"))
    );
}

#[test]
fn elist_with_tool_errors_reads_the_same_sensors_as_the_curated_one() {
    let curated = ipmi("telegraf-ipmitool-sdr-elist-v2-curated.txt");
    let noisy = ipmi("telegraf-ipmitool-sdr-elist-v2-with-errors.txt");
    assert_eq!(curated.format, ipmitool::IpmitoolFormat::SdrElist);
    assert_eq!(curated.sensors, noisy.sensors);
    assert_eq!(curated.sensors.len(), 7);
    assert!(curated.skipped_lines.is_empty());
    assert_eq!(
        noisy.skipped_lines,
        vec!["Unable to send command: Invalid argument"; 2]
    );
    let psu = curated
        .sensors
        .iter()
        .find(|sensor| sensor.name == "Power Supply 1")
        .unwrap();
    assert_eq!(psu.entity.as_deref(), Some("10.1"));
    assert_eq!(psu.reading, Some(110.0));
    assert_eq!(psu.states, vec!["Presence detected"]);
    // Entity 10.x marks a power-supply sensor even without the name.
    assert!(curated.psus.iter().any(|psu| psu.name == "Current 1"));
}

#[test]
fn ibm_sdr_and_a_file_without_psus() {
    let ibm = ipmi("telegraf-ipmitool-sdr-v1-ibm.txt");
    assert_eq!(ibm.sensors.len(), 133);
    assert_eq!(
        ibm.sensors
            .iter()
            .filter(|sensor| sensor.status == "ok")
            .count(),
        131
    );
    assert!(ibm.psus.iter().any(|psu| psu.name == "PS1 12V OV Fault"));
    assert!(ibm.psus.iter().all(|psu| psu.faults.is_empty()));
    assert_eq!(ibm.power_watts, Some(210.0));

    let bare = ipmi("telegraf-ipmitool-sdr-v1-with-errors.txt");
    assert_eq!(bare.sensors.len(), 9);
    assert_eq!(bare.skipped_lines.len(), 3);
    assert!(!bare.has_psu_sensors());
    assert!(!bare.psu_sensors_found);
    let verdict = ipmi_verdict(&fixture(
        "ipmitool/telegraf-ipmitool-sdr-v1-with-errors.txt",
    ));
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message == "no PSU sensors in this output")
    );
}

#[test]
fn dcmi_power_reading_is_measurement_only() {
    let output = ipmi("telegraf-ipmitool-dcmi-power-reading.txt");
    assert_eq!(output.format, ipmitool::IpmitoolFormat::DcmiPowerReading);
    let reading = output.power_reading.unwrap();
    assert_eq!(
        (
            reading.instantaneous_watts,
            reading.minimum_watts,
            reading.maximum_watts,
            reading.average_watts
        ),
        (Some(167.0), Some(124.0), Some(422.0), Some(156.0))
    );
    assert_eq!(reading.sampling_period_seconds, Some(699_043.0));
    assert_eq!(reading.state.as_deref(), Some("activated"));
    assert_eq!(output.power_watts, Some(167.0));
}

/// `ipmitool sdr elist full` on an HP ProLiant DL360 G7 with a failed power
/// supply, as published in CollegeBoreal/Laboratoires
/// (3202/proliant/IPMI/README.md). Every status column says `ok`: only the
/// reading text tells.
const HP_ELIST_FAILED_PSU: &str = "\
VRM 1            | 01h | ok  |  9.1 | Device Present
UID Light        | 03h | ok  | 23.1 |
Power Supply 1   | 06h | ok  | 10.1 | 0 Watts, Presence detected, Failure detected
Power Supply 2   | 07h | ok  | 10.2 | 95 Watts, Presence detected
Power Supplies   | 08h | ok  | 10.3 | Non-Redundant: Sufficient from Redundant
Fans             | 0Dh | ok  |  7.5 | 0 percent, Fully Redundant
Temp 4           | 11h | ns  |  8.1 | Disabled
Temp 12          | 19h | ok  | 10.4 | 32 degrees C
Power Meter      | 2Ah | ok  |  7.6 | 100 Watts, Device Enabled
";

#[test]
fn psu_failure_and_lost_redundancy_fail_whatever_the_status_column_says() {
    let verdict = ipmi_verdict(HP_ELIST_FAILED_PSU.as_bytes());
    assert_eq!(verdict.status, Status::Fail);
    let failures: Vec<&str> = verdict.messages(Status::Fail).collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].starts_with("power supply 'Power Supply 1' reading '0 Watts, Presence detected, Failure detected' (status ok): failure detected"));
    assert!(
        failures[1].contains("'Power Supplies'")
            && failures[1].contains("sufficient from redundant")
    );
    let output = ipmitool::parse(HP_ELIST_FAILED_PSU.as_bytes()).unwrap();
    assert_eq!(output.power_watts, Some(100.0));
    // A healthy PSU next to it has no fault.
    assert!(
        output
            .psus
            .iter()
            .find(|psu| psu.name == "Power Supply 2")
            .unwrap()
            .faults
            .is_empty()
    );
}

/// `ipmitool sensor` (10 columns). The layout and the discrete rows
/// (`PS1 Status | 0x1 | discrete | 0x0100`, presence detected) are those of
/// public captures (LibreNMS and Observium ipmitool parsers quote them);
/// the failing rows are written from the IPMI sensor-specific offsets
/// ipmitool decodes (type 08h: bit 1 failure, bit 3 AC lost → `0x0b00`).
const SENSOR_LIST: &str = "\
CPU1 Temp        | 45.000     | degrees C  | ok    | 0.000     | 0.000     | 0.000     | 95.000    | 99.000    | 105.000
Inlet Temp       | 78.000     | degrees C  | nc    | na        | na        | na        | 75.000    | 80.000    | 85.000
FAN2B            | 0.000      | RPM        | cr    | na        | 300.000   | 500.000   | na        | na        | na
12V              | na         | Volts      | na    | na        | na        | na        | na        | na        | na
PS1 Status       | 0x1        | discrete   | 0x0100| na        | na        | na        | na        | na        | na
PS2 Status       | 0x1        | discrete   | 0x0b00| na        | na        | na        | na        | na        | na
Pwr Consumption  | 410.000    | Watts      | ok    | na        | na        | na        | na        | na        | na
";

#[test]
fn sensor_list_statuses_thresholds_and_discrete_psu_states() {
    let output = ipmitool::parse(SENSOR_LIST.as_bytes()).unwrap();
    assert_eq!(output.format, ipmitool::IpmitoolFormat::Sensor);
    let inlet = &output.sensors[1];
    let thresholds = inlet.thresholds.unwrap();
    assert_eq!(
        (thresholds.upper_non_critical, thresholds.upper_critical),
        (Some(75.0), Some(80.0))
    );
    assert_eq!(output.power_watts, Some(410.0));
    let verdict = ipmi_verdict(SENSOR_LIST.as_bytes());
    assert_eq!(verdict.status, Status::Fail);
    let warnings: Vec<&str> = verdict.messages(Status::Warn).collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("sensor 'Inlet Temp' status nc (reading 78.000"));
    let failures: Vec<&str> = verdict.messages(Status::Fail).collect();
    assert!(
        failures
            .iter()
            .any(|message| message.contains("sensor 'FAN2B' status cr"))
    );
    assert!(failures.iter().any(|message| message.contains("'PS2 Status'") && message.contains("Failure detected")));
    assert!(failures.iter().any(
        |message| message.contains("'PS2 Status'") && message.contains("Power Supply AC lost")
    ));
    assert!(
        !failures
            .iter()
            .any(|message| message.contains("PS1 Status"))
    );
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message.contains("12V"))
    );
}

#[test]
fn critical_and_non_recoverable_sdr_statuses_fail() {
    let text = String::from_utf8(fixture("ipmitool/telegraf-ipmitool-sdr-v1-ibm.txt")).unwrap();
    let edited = text
        .replacen(
            "Fan 1A Tach      | 2610 RPM          | ok",
            "Fan 1A Tach      | 0 RPM             | cr",
            1,
        )
        .replacen(
            "Planar 12V       | 12.04 Volts       | ok",
            "Planar 12V       | 10.98 Volts       | nc",
            1,
        )
        .replacen(
            "Power Supply 2   | 0x00              | ok",
            "Power Supply 2   | 0x00              | nr",
            1,
        );
    let verdict = ipmi_verdict(edited.as_bytes());
    assert_eq!(verdict.status, Status::Fail);
    assert_eq!(verdict.messages(Status::Fail).count(), 2);
    assert_eq!(verdict.messages(Status::Warn).count(), 1);
}

#[test]
fn ipmitool_garbage_and_truncation() {
    assert!(ipmitool::parse(b"").is_err());
    assert!(ipmitool::parse(b"Unable to send command: Invalid argument\n").is_err());
    assert!(ipmitool::parse(b"\xff\xfe").is_err());
    for name in fixture_names("ipmitool") {
        let input = fixture(&format!("ipmitool/{name}"));
        for cut in [1, input.len() / 2, input.len() - 3] {
            let _ = ipmitool::report(&input[..cut], &Thresholds::default());
        }
    }
}

// ---------------------------------------------------------------------------
// sensors -j
// ---------------------------------------------------------------------------

fn sensors_report(name: &str, thresholds: &Thresholds) -> vetting_probes::ToolReport {
    sensors::report(&fixture(&format!("sensors/{name}")), thresholds)
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn every_sensors_fixture_passes_with_noise_ignored() {
    let names = fixture_names("sensors");
    let listed: Vec<&str> = SENSORS_EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, listed, "the table must list every fixture");
    for (name, expected) in SENSORS_EXPECTED {
        let report = sensors_report(name, &Thresholds::default());
        assert_eq!(
            report.verdict.status, expected,
            "{name}: {:?}",
            report.verdict.reasons
        );
        assert!(
            problems(&report.verdict).is_empty(),
            "{name}: {:?}",
            problems(&report.verdict)
        );
    }
}

#[test]
fn unconnected_super_io_inputs_and_bogus_nvme_limits_are_listed_as_ignored() {
    let report = sensors_report("hjs-asrock-nct6798-sensors-j.json", &Thresholds::default());
    let implausible = report
        .verdict
        .messages(Status::Pass)
        .find(|message| message.contains("as implausible reading"))
        .unwrap();
    for expected in [
        "SYSTIN 120 °C",
        "AUXTIN0 111 °C",
        "AUXTIN1 115 °C",
        "AUXTIN2 115 °C",
        "AUXTIN4 108 °C",
        "AUXTIN3 -1 °C",
    ] {
        assert!(implausible.contains(expected), "{expected}: {implausible}");
    }
    assert!(
        report
            .verdict
            .messages(Status::Pass)
            .any(|message| message.contains("Sensor 1") && message.contains("65261.85"))
    );
    assert!(
        report
            .verdict
            .messages(Status::Pass)
            .any(|message| message.starts_with("ignored 13 reading(s) as alarm with min = max = 0"))
    );
    assert!(
        report
            .verdict
            .messages(Status::Pass)
            .any(|message| message.contains("chassis intrusion") && message.contains("intrusion1"))
    );
    let ignored = report.data["ignored"].as_array().unwrap();
    let systin = ignored
        .iter()
        .find(|reading| reading["label"] == "SYSTIN")
        .unwrap();
    assert_eq!(systin["category"], "implausible reading");
    assert_eq!(systin["input"], 120.0);
    let judged = report.data["judged"].as_array().unwrap();
    assert!(
        judged
            .iter()
            .any(|reading| reading["label"] == "Package id 0" && reading["input"] == 37.0)
    );
    assert!(
        judged
            .iter()
            .any(|reading| reading["chip"] == "nvme-pci-0200" && reading["label"] == "Composite")
    );
    assert!(!judged.iter().any(|reading| reading["label"] == "CPUTIN"));
    assert_eq!(
        judged
            .iter()
            .filter(|reading| reading["kind"] == "fan")
            .count(),
        6,
        "fans are judged: 0 RPM with min 0 and no alarm is an empty header"
    );
}

#[test]
fn the_fanless_capture_judges_cpu_and_nvme_only() {
    let output = sensors::parse(&fixture(
        "sensors/hjs-kfanfail-coretemp-nvme-sensors-j.json",
    ))
    .unwrap();
    assert_eq!(
        output.chips,
        vec![
            "nvme-pci-0500",
            "acpitz-acpi-0",
            "coretemp-isa-0000",
            "nvme-pci-0200"
        ]
    );
    assert!(
        !output
            .readings
            .iter()
            .any(|reading| reading.kind == SensorKind::Fan)
    );
    let composite = output
        .readings
        .iter()
        .find(|reading| reading.chip == "nvme-pci-0500" && reading.label == "Composite")
        .unwrap();
    assert_eq!(
        (composite.input, composite.max, composite.crit),
        (Some(32.85), Some(109.85), Some(114.85))
    );
    let verdict = sensors::verdict(&output, &Thresholds::default());
    assert!(
        verdict
            .messages(Status::Pass)
            .any(|message| message.contains("judged 19 temperature(s)"))
    );
}

#[test]
fn trusted_temperatures_warn_at_max_and_fail_at_crit() {
    let text =
        String::from_utf8(fixture("sensors/hjs-kfanfail-coretemp-nvme-sensors-j.json")).unwrap();
    let warm = text.replacen("\"temp2_input\": 24.000", "\"temp2_input\": 84.000", 1);
    let verdict = sensors::report(warm.as_bytes(), &Thresholds::default())
        .unwrap()
        .verdict;
    assert_eq!(verdict.status, Status::Warn);
    assert_eq!(
        verdict.messages(Status::Warn).collect::<Vec<_>>(),
        vec!["coretemp-isa-0000 Core 0: temperature 84 °C >= max 80 °C"]
    );
    let hot = text.replacen("\"temp2_input\": 24.000", "\"temp2_input\": 100.000", 1);
    let verdict = sensors::report(hot.as_bytes(), &Thresholds::default())
        .unwrap()
        .verdict;
    assert_eq!(
        verdict.messages(Status::Fail).collect::<Vec<_>>(),
        vec!["coretemp-isa-0000 Core 0: temperature 100 °C >= crit 100 °C"]
    );
    // The same 100 °C on an untrusted Super-I/O input is not judged.
    let asrock = String::from_utf8(fixture("sensors/hjs-asrock-nct6798-sensors-j.json")).unwrap();
    let noisy = asrock.replacen("\"temp2_input\": 37.000", "\"temp2_input\": 100.000", 1);
    assert_eq!(
        sensors::report(noisy.as_bytes(), &Thresholds::default())
            .unwrap()
            .verdict
            .status,
        Status::Pass
    );
}

#[test]
fn a_stopped_fan_with_a_minimum_fails() {
    let asrock = String::from_utf8(fixture("sensors/hjs-asrock-nct6798-sensors-j.json")).unwrap();
    let stopped = asrock.replacen(
        "\"fan1_input\": 1278.000,\n         \"fan1_min\": 0.000,\n         \"fan1_alarm\": 0.000",
        "\"fan1_input\": 0.000,\n         \"fan1_min\": 300.000,\n         \"fan1_alarm\": 1.000",
        1,
    );
    assert_ne!(stopped, asrock);
    let verdict = sensors::report(stopped.as_bytes(), &Thresholds::default())
        .unwrap()
        .verdict;
    assert_eq!(
        verdict.messages(Status::Fail).collect::<Vec<_>>(),
        vec!["nct6798-isa-02a0 fan1: fan at 0 RPM (min 300 RPM, alarm set)"]
    );
    let slow = asrock.replacen("\"fan2_min\": 0.000", "\"fan2_min\": 1500.000", 1);
    let verdict = sensors::report(slow.as_bytes(), &Thresholds::default())
        .unwrap()
        .verdict;
    assert_eq!(verdict.status, Status::Warn);
}

#[test]
fn sensors_garbage_and_truncation() {
    assert!(sensors::parse(b"").is_err());
    assert!(sensors::parse(b"[]").is_err());
    assert!(sensors::parse(b"\xff").is_err());
    let input = fixture("sensors/hjs-asrock-nct6798-sensors-j.json");
    assert!(sensors::parse(&input[..input.len() / 2]).is_err());
    let empty = sensors::report(b"{}", &Thresholds::default()).unwrap();
    assert_eq!(empty.verdict.status, Status::Skip);
}

fn sensor_summary(readings: &[SensorReading]) -> String {
    let thresholds = Thresholds::default().sensors;
    readings
        .iter()
        .map(|reading| {
            let assessment = match sensors::assess(reading, &thresholds) {
                sensors::Assessment::Judged => "judged".to_string(),
                sensors::Assessment::Ignored { category, .. } => format!("ignored: {category}"),
            };
            format!(
                "{} | {} | {:?} | input {:?} min {:?} max {:?} crit {:?} | alarms {:?} | {assessment}",
                reading.chip, reading.label, reading.kind, reading.input, reading.min, reading.max, reading.crit, reading.alarms
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn psu_and_sensor_key_fields_snapshot() {
    let mut all = Vec::new();
    for name in fixture_names("ipmitool") {
        let output = ipmi(&name);
        let verdict = ipmitool::verdict(&output, &Thresholds::default());
        let mut lines = vec![format!(
            "{name}: {:?}, {} sensors, power {:?} W, verdict {}",
            output.format,
            output.sensors.len(),
            output.power_watts,
            verdict.status
        )];
        for psu in &output.psus {
            lines.push(format!(
                "  psu {} | {} | {} | faults {:?}",
                psu.name, psu.reading_text, psu.status, psu.faults
            ));
        }
        let statuses: Vec<String> = output
            .sensors
            .iter()
            .filter(|sensor| sensor.status != "ok")
            .map(|sensor| format!("{}={}", sensor.name, sensor.status))
            .collect();
        lines.push(format!("  not ok: {statuses:?}"));
        all.push(lines.join("\n"));
    }
    for name in fixture_names("sensors") {
        let output = sensors::parse(&fixture(&format!("sensors/{name}"))).unwrap();
        let verdict = sensors::verdict(&output, &Thresholds::default());
        all.push(format!(
            "{name}: verdict {}\n{}",
            verdict.status,
            sensor_summary(&output.readings)
        ));
    }
    insta::assert_snapshot!("psu_and_sensor_fixtures", all.join("\n\n"));
}

// ---------------------------------------------------------------------------
// hwmon sysfs
// ---------------------------------------------------------------------------

fn write(dir: &Path, file: &str, content: &str) {
    std::fs::write(dir.join(file), format!("{content}\n")).unwrap();
}

/// A fake `/sys/class/hwmon` with a CPU, a Super-I/O chip with floating
/// inputs, an NVMe drive with a bogus `Sensor 1`, and a device reached
/// through a symlink as on real sysfs.
fn fake_sysfs(root: &Path) {
    let cpu = root.join("hwmon0");
    std::fs::create_dir_all(&cpu).unwrap();
    write(&cpu, "name", "coretemp");
    write(&cpu, "temp1_label", "Package id 0");
    write(&cpu, "temp1_input", "45000");
    write(&cpu, "temp1_max", "80000");
    write(&cpu, "temp1_crit", "100000");
    write(&cpu, "temp1_crit_alarm", "0");
    write(&cpu, "temp2_label", "Core 0");
    write(&cpu, "temp2_input", "82000");
    write(&cpu, "temp2_max", "80000");
    write(&cpu, "temp2_crit", "100000");
    // A sensor that cannot be read (EIO on real hardware): skipped.
    std::fs::create_dir_all(cpu.join("temp3_input")).unwrap();
    write(&cpu, "uevent", "");

    let superio = root.join("hwmon1");
    std::fs::create_dir_all(&superio).unwrap();
    write(&superio, "name", "nct6798");
    write(&superio, "temp1_label", "SYSTIN");
    write(&superio, "temp1_input", "120000");
    write(&superio, "temp1_max", "80000");
    write(&superio, "temp1_crit", "100000");
    write(&superio, "fan1_input", "0");
    write(&superio, "fan1_min", "300");
    write(&superio, "fan1_alarm", "1");
    write(&superio, "fan2_input", "1278");
    write(&superio, "fan2_min", "0");
    write(&superio, "in1_input", "1016");
    write(&superio, "in1_min", "0");
    write(&superio, "in1_max", "0");
    write(&superio, "in1_alarm", "1");
    write(&superio, "intrusion0_alarm", "1");

    let device = root.join("devices").join("nvme0");
    std::fs::create_dir_all(&device).unwrap();
    write(&device, "name", "nvme");
    write(&device, "temp1_label", "Composite");
    write(&device, "temp1_input", "34850");
    write(&device, "temp1_max", "82850");
    write(&device, "temp1_crit", "84850");
    write(&device, "temp2_label", "Sensor 1");
    write(&device, "temp2_input", "34850");
    write(&device, "temp2_max", "65261850");
    write(&device, "temp2_min", "-273150");
    std::os::unix::fs::symlink(&device, root.join("hwmon2")).unwrap();
}

#[test]
fn hwmon_reads_a_sysfs_tree_into_the_sensors_reading_type() {
    let temp = tempfile::tempdir().unwrap();
    fake_sysfs(temp.path());
    let readings = hwmon::read_hwmon(temp.path()).unwrap();
    let summary: Vec<(String, String, SensorKind, Option<f64>)> = readings
        .iter()
        .map(|reading| {
            (
                reading.chip.clone(),
                reading.label.clone(),
                reading.kind,
                reading.input,
            )
        })
        .collect();
    let row =
        |chip: &str, label: &str, kind, input| (chip.to_string(), label.to_string(), kind, input);
    assert_eq!(
        summary,
        vec![
            row(
                "coretemp-hwmon0",
                "Package id 0",
                SensorKind::Temperature,
                Some(45.0)
            ),
            row(
                "coretemp-hwmon0",
                "Core 0",
                SensorKind::Temperature,
                Some(82.0)
            ),
            row("nct6798-hwmon1", "fan1", SensorKind::Fan, Some(0.0)),
            row("nct6798-hwmon1", "fan2", SensorKind::Fan, Some(1278.0)),
            row("nct6798-hwmon1", "in1", SensorKind::Voltage, Some(1.016)),
            row("nct6798-hwmon1", "intrusion0", SensorKind::Intrusion, None),
            row(
                "nct6798-hwmon1",
                "SYSTIN",
                SensorKind::Temperature,
                Some(120.0)
            ),
            row(
                "nvme-hwmon2",
                "Composite",
                SensorKind::Temperature,
                Some(34.85)
            ),
            row(
                "nvme-hwmon2",
                "Sensor 1",
                SensorKind::Temperature,
                Some(34.85)
            ),
        ]
    );
    let package = &readings[0];
    assert_eq!((package.max, package.crit), (Some(80.0), Some(100.0)));
    assert_eq!(package.driver, "coretemp");
    assert_eq!(readings[2].alarms, vec!["alarm"]);

    // Same rules as `sensors -j`.
    let verdict = hwmon::verdict(&readings, &Thresholds::default().sensors);
    assert_eq!(verdict.status, Status::Fail);
    assert_eq!(
        verdict.messages(Status::Fail).collect::<Vec<_>>(),
        vec!["nct6798-hwmon1 fan1: fan at 0 RPM (min 300 RPM, alarm set)"]
    );
    assert_eq!(
        verdict.messages(Status::Warn).collect::<Vec<_>>(),
        vec!["coretemp-hwmon0 Core 0: temperature 82 °C >= max 80 °C"]
    );
    let ignored: Vec<&str> = verdict.messages(Status::Pass).collect();
    assert!(
        ignored
            .iter()
            .any(|message| message.contains("nct6798-hwmon1 SYSTIN 120 °C")),
        "{ignored:?}"
    );
    assert!(
        ignored
            .iter()
            .any(|message| message.contains("nvme-hwmon2 Sensor 1")),
        "{ignored:?}"
    );
    assert!(
        ignored
            .iter()
            .any(|message| message.contains("nct6798-hwmon1 in1 1.016 V")),
        "{ignored:?}"
    );
}

#[test]
fn hwmon_and_sensors_j_give_the_same_reading_for_the_same_sensor() {
    let temp = tempfile::tempdir().unwrap();
    fake_sysfs(temp.path());
    let from_sysfs = hwmon::read_hwmon(temp.path()).unwrap();
    let json = br#"{"coretemp-isa-0000":{"Adapter":"ISA adapter","Package id 0":{"temp1_input":45.000,"temp1_max":80.000,"temp1_crit":100.000,"temp1_crit_alarm":0.000}}}"#;
    let from_json = sensors::parse(json).unwrap().readings;
    let normalize = |reading: &SensorReading| SensorReading {
        chip: String::new(),
        ..reading.clone()
    };
    assert_eq!(normalize(&from_sysfs[0]), normalize(&from_json[0]));
}

#[test]
fn no_hwmon_means_an_empty_list_not_an_error() {
    let temp = tempfile::tempdir().unwrap();
    assert!(
        hwmon::read_hwmon(&temp.path().join("missing"))
            .unwrap()
            .is_empty()
    );
    assert!(hwmon::read_hwmon(temp.path()).unwrap().is_empty());
    assert_eq!(
        hwmon::verdict(&[], &Thresholds::default().sensors).status,
        Status::Skip
    );
    // This machine (a VM) has no hwmon devices, or only a few: it must read.
    assert!(hwmon::read_hwmon(Path::new(hwmon::SYS_CLASS_HWMON)).is_ok());
}

// ------------------------------------ the thermal sidecar during CPUStress

#[test]
fn the_sidecar_judges_real_peaks_against_the_stress_limit() {
    use vetting_probes::verdicts::cpu::SidecarSummary;
    let readings = vetting_probes::parsers::sensors::parse(&fixture(
        "sensors/hjs-kfanfail-coretemp-nvme-sensors-j.json",
    ))
    .unwrap()
    .readings;
    let summary = SidecarSummary {
        rounds: 1,
        samples: readings.len() as u64,
        peaks: readings,
    };
    let document = summary.to_json().unwrap();
    let mut thresholds = Thresholds::default();
    let cool = parse_and_judge(Tool::ThermalSidecar, &document, &thresholds).unwrap();
    assert_eq!(cool.verdict.status, Status::Pass, "{:?}", cool.verdict);
    assert!(
        cool.verdict
            .messages(Status::Pass)
            .any(|message| message.contains("Package id 0 peaked at 27.0 °C")),
        "{:?}",
        cool.verdict
    );
    // the same peaks under a stress limit of 25 °C: the package and the
    // cores over it fail, the NVMe drives (not CPUs) do not
    thresholds.stress.max_cpu_temp_c = 25.0;
    let hot = parse_and_judge(Tool::ThermalSidecar, &document, &thresholds).unwrap();
    assert_eq!(hot.verdict.status, Status::Fail);
    let failed: Vec<&str> = hot.verdict.messages(Status::Fail).collect();
    assert!(
        failed.iter().all(|message| message.starts_with("coretemp")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|message| message
            .contains("Package id 0 peaked at 27.0 °C under stress >= limit 25.0 °C")),
        "{failed:?}"
    );
}
