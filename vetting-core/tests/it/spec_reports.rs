//! The expected-hardware spec (parsing, overrides, the diff engine and the
//! identity check on an inventory built from a real dmidecode capture of an
//! HP DL380p Gen8), SpecValidate through the orchestrator, and the reports
//! of a run walked to `Completed`, on SQLite and PostgreSQL.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use vetting_core::clock::ManualClock;
use vetting_core::error::OrchestratorError;
use vetting_core::machine::{Event, RunState};
use vetting_core::model::{Actor, NewHost};
use vetting_core::orchestrator::Orchestrator;
use vetting_core::reports::{build_report, write_reports};
use vetting_core::runs::EventContext;
use vetting_core::spec::{
    Severity, Spec, SpecDiff, diff, effective_spec, expected_disks, expected_parts, identity_diff,
    matched_disks, parse_spec,
};
use vetting_core::store::entities::{artifact, inventory, measurement, spec_diff};
use vetting_probes::inventory::{Disk, Inventory, LinkState, Nic, PowerSupply, apply_dmi};

use crate::support::{T0, config_for, open, operator, test_dbs};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

/// The DL380p Gen8 of the dmidecode capture (serial 4242, 2 × E5-2620,
/// 10 DIMMs, 64 GiB), plus two disks, two NICs and two PSUs given by hand.
pub(crate) fn dl380_inventory() -> Inventory {
    let text = std::fs::read(format!(
        "{FIXTURES}/dmidecode/netbox-agent-HP_DL380p_Gen8.txt"
    ))
    .unwrap();
    let dmi = vetting_probes::parsers::dmidecode::parse(&text).unwrap();
    let mut inventory = Inventory::empty(chrono::DateTime::from_timestamp_millis(T0).unwrap());
    apply_dmi(&mut inventory, &dmi);
    inventory.disks = vec![
        Disk {
            name: "sda".into(),
            model: Some("MZ7LH1T9HMLT-00005".into()),
            vendor: Some("SAMSUNG".into()),
            serial: Some("S455NY0M123456".into()),
            wwn: Some("0x5002538e4011aa01".into()),
            size_bytes: 1_920_383_410_176,
            rotational: Some(false),
            transport: Some("sata".into()),
            ..Disk::default()
        },
        Disk {
            name: "sdb".into(),
            model: Some("MZ7LH1T9HMLT-00005".into()),
            vendor: Some("SAMSUNG".into()),
            serial: Some("S455NY0M654321".into()),
            size_bytes: 1_920_383_410_176,
            rotational: Some(false),
            transport: Some("sata".into()),
            ..Disk::default()
        },
    ];
    inventory.nics = vec![
        // a 10G-capable NIC linked at 1G by the vetting switch
        Nic {
            name: "eno1".into(),
            mac: Some("52:54:00:00:00:01".into()),
            driver: Some("ixgbe".into()),
            supported_speeds_mbps: vec![1000, 10_000],
            link: LinkState::Up,
            speed_mbps: Some(1000),
            ..Nic::default()
        },
        Nic {
            name: "eno2".into(),
            mac: Some("52:54:00:00:00:02".into()),
            driver: Some("ixgbe".into()),
            supported_speeds_mbps: vec![1000, 10_000],
            link: LinkState::Down,
            ..Nic::default()
        },
    ];
    inventory.psus = vec![
        PowerSupply {
            name: "PSU 1".into(),
            status: Some("Present, OK".into()),
            ..PowerSupply::default()
        },
        PowerSupply {
            name: "PSU 2".into(),
            status: Some("Present, OK".into()),
            ..PowerSupply::default()
        },
    ];
    inventory
}

const DL380_SPEC: &str = r#"
# one per server model
schema_version: 1
system:
  product: "ProLiant DL380p*"
cpu:
  model: "*Xeon* E5-2620 0 *"
  sockets: 2
  cores: 12
memory:
  total: 64GiB
  dimm_count: 10
disks:
  exact_count: 2
  devices:
    - model: "MZ7LH1T9*"
      size: 1.92TB
      count: 2
nics:
  count: 2
  min_speed_mbps: 10000
psus:
  count: 2
"#;

fn dl380_spec() -> Spec {
    parse_spec(DL380_SPEC).unwrap()
}

fn critical(diffs: &[SpecDiff]) -> Vec<&SpecDiff> {
    diffs
        .iter()
        .filter(|diff| diff.severity == Severity::Critical)
        .collect()
}

fn with_severity<'a>(diffs: &'a [SpecDiff], severity: Severity, path: &str) -> Vec<&'a SpecDiff> {
    diffs
        .iter()
        .filter(|diff| diff.severity == severity && diff.path.starts_with(path))
        .collect()
}

#[test]
fn specs_parse_from_yaml_and_json_alike() {
    let from_yaml = dl380_spec();
    assert_eq!(
        from_yaml.memory.as_ref().unwrap().total_bytes,
        Some(68_719_476_736)
    );
    assert_eq!(
        from_yaml.disks.as_ref().unwrap().devices[0].size_bytes,
        Some(1_920_000_000_000)
    );
    let json = serde_json::to_string(&from_yaml).unwrap();
    assert_eq!(parse_spec(&json).unwrap(), from_yaml);
    let handwritten = r#"{"schema_version": 1, "memory": {"total_bytes": 68719476736},
        "gpus": {"count": 8, "model": "*H100*"}}"#;
    let spec = parse_spec(handwritten).unwrap();
    assert_eq!(spec.memory.as_ref().unwrap().total_bytes, Some(64 << 30));
    assert_eq!(expected_parts(&dl380_spec()).disks, 2);
    assert_eq!(expected_parts(&spec).gpus, 8);
}

#[test]
fn unknown_keys_bad_sizes_and_contradictions_are_named() {
    let unknown = parse_spec("schema_version: 1\ncpu:\n  modle: '*Xeon*'\n").unwrap_err();
    assert!(unknown.to_string().contains("modle"), "{unknown}");
    let nested =
        parse_spec("schema_version: 1\ndisks:\n  devices:\n    - serail: S1\n").unwrap_err();
    assert!(nested.to_string().contains("serail"), "{nested}");
    let top = parse_spec(r#"{"schema_version": 1, "gpu": {"count": 1}}"#).unwrap_err();
    assert!(top.to_string().contains("`gpu`"), "{top}");
    let size = parse_spec("schema_version: 1\nmemory:\n  total: 64 gigs\n").unwrap_err();
    assert!(size.to_string().contains("64 gigs"), "{size}");
    assert!(size.to_string().contains("memory"), "{size}");
    let ambiguous = parse_spec("schema_version: 1\nmemory:\n  total: 64G\n").unwrap_err();
    assert!(ambiguous.to_string().contains("ambiguous"), "{ambiguous}");
    let version = parse_spec("schema_version: 2\n").unwrap_err();
    assert!(
        version.to_string().contains("schema_version 2"),
        "{version}"
    );
    let missing = parse_spec("cpu:\n  sockets: 2\n").unwrap_err();
    assert!(missing.to_string().contains("schema_version"), "{missing}");
    let counted =
        parse_spec("schema_version: 1\ndisks:\n  devices:\n    - serial: S1\n      count: 2\n")
            .unwrap_err();
    assert!(
        counted.to_string().contains("disks.devices[0].count"),
        "{counted}"
    );
    let short = parse_spec(
        "schema_version: 1\ndisks:\n  exact_count: 1\n  devices:\n    - model: X\n      count: 2\n",
    )
    .unwrap_err();
    assert!(short.to_string().contains("disks.exact_count"), "{short}");
    assert!(parse_spec("").is_err());
}

#[test]
fn per_host_overrides_merge_over_the_profile() {
    let profile = dl380_spec();
    let overrides = serde_json::json!({
        "system": {"serial": "4242"},
        "disks": {"devices": [{"serial": "S455NY0M123456"}, {"serial": "S455NY0M654321"}]},
        "psus": null
    });
    let merged = effective_spec(Some(&profile), Some(&overrides))
        .unwrap()
        .unwrap();
    let system = merged.system.as_ref().unwrap();
    assert_eq!(system.serial.as_deref(), Some("4242"));
    assert_eq!(system.product.as_deref(), Some("ProLiant DL380p*"));
    let disks = merged.disks.as_ref().unwrap();
    assert_eq!(disks.exact_count, Some(2));
    assert_eq!(disks.devices.len(), 2);
    assert_eq!(disks.devices[1].serial.as_deref(), Some("S455NY0M654321"));
    assert!(merged.psus.is_none());
    assert_eq!(merged.cpu, profile.cpu);
    // the allowlist now names the serials
    let allow = expected_disks(&merged);
    assert_eq!(allow.len(), 2);
    assert!(
        allow
            .iter()
            .all(|disk| disk.serial.is_some() && disk.count.is_none())
    );

    assert_eq!(
        effective_spec(Some(&profile), None).unwrap(),
        Some(profile.clone())
    );
    assert_eq!(effective_spec(None, None).unwrap(), None);
    let alone = effective_spec(None, Some(&serde_json::json!({"system": {"serial": "X1"}})))
        .unwrap()
        .unwrap();
    assert_eq!(alone.system.unwrap().serial.as_deref(), Some("X1"));
    let bad = effective_spec(
        Some(&profile),
        Some(&serde_json::json!({"memory": {"totl": "64GiB"}})),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("totl"), "{bad}");
    assert!(effective_spec(Some(&profile), Some(&serde_json::json!([1]))).is_err());
}

/// One disk rule: the same inventory and spec go to the agent's allowlist
/// (what it may write) and to the spec diff (which expected disks are
/// present), and both find the same disks. A USB disk, a removable disk
/// and an MMC card never count, even when the spec names them or they fit
/// a group; a disk of unknown transport counts when named by serial, not
/// when it only fits a model/size group.
#[test]
fn the_agent_allowlist_and_the_spec_diff_match_the_same_disks() {
    let base = |name: &str, serial: &str, transport: Option<&str>| Disk {
        name: name.into(),
        model: Some("MZ7LH1T9HMLT-00005".into()),
        serial: Some(serial.into()),
        size_bytes: 1_920_383_410_176,
        transport: transport.map(Into::into),
        ..Disk::default()
    };
    let mut removable = base("sdd", "S4", Some("sata"));
    removable.removable = true;
    let mut unknown_hdd = base("sde", "H1", None);
    unknown_hdd.model = Some("HUH721212ALE600".into());
    unknown_hdd.size_bytes = 12_000_138_625_024;
    let mut inventory = dl380_inventory();
    inventory.disks = vec![
        base("sda", "S1", Some("sata")),
        base("sdb", "S2", Some("sata")),
        // fits the group, on USB (and not flagged removable)
        base("sdc", "S3", Some("usb")),
        // fits the group, removable
        removable,
        // named by serial, an MMC card
        base("mmcblk0", "MMC-1", Some("mmc")),
        // named by serial, a USB stick
        base("sdf", "USB-1", Some("usb")),
        // named by serial, transport unknown
        base("nvme0n1", "N1", None),
        // fits a model/size group only, transport unknown
        unknown_hdd,
    ];
    let spec = parse_spec(
        r#"
schema_version: 1
disks:
  devices:
    - model: "MZ7LH1T9*"
      size: 1.92TB
      count: 2
    - serial: N1
    - serial: MMC-1
    - serial: USB-1
    - model: "HUH721212*"
      size: 12TB
"#,
    )
    .unwrap();

    let allowlist =
        vetting_agent::stages::allowlist::decide(&inventory.disks, &expected_disks(&spec));
    let written: Vec<&str> = allowlist
        .candidates
        .iter()
        .map(|disk| disk.name.as_str())
        .collect();
    assert_eq!(written, ["sda", "sdb", "nvme0n1"], "{allowlist:#?}");
    assert_eq!(matched_disks(&spec, &inventory), written);

    let diffs = diff(&spec, &inventory);
    let entry = |index: usize| {
        let path = format!("disks.devices[{index}]");
        let found: Vec<&SpecDiff> = diffs.iter().filter(|diff| diff.path == path).collect();
        assert_eq!(found.len(), 1, "{path}: {diffs:#?}");
        found[0]
    };
    assert_eq!(entry(0).severity, Severity::Info, "{:?}", entry(0));
    assert!(
        entry(0).message.contains("sda, sdb"),
        "{}",
        entry(0).message
    );
    assert_eq!(entry(1).severity, Severity::Info, "{:?}", entry(1));
    // named, but only a card and a stick carry the serials: missing
    for (index, name, why) in [(2, "mmcblk0", "an MMC/SD card"), (3, "sdf", "on USB")] {
        let found = entry(index);
        assert_eq!(found.severity, Severity::Critical, "{found:?}");
        assert!(found.message.contains("missing disk"), "{}", found.message);
        assert!(
            found
                .message
                .contains(&format!("{name} is {why}: not counted")),
            "{}",
            found.message
        );
    }
    // a group that only a disk of unknown transport fits is missing
    let hdd = entry(4);
    assert_eq!(hdd.severity, Severity::Critical, "{hdd:?}");
    assert!(
        hdd.message.contains("found 0") && hdd.message.contains("sde is of unknown transport"),
        "{}",
        hdd.message
    );
    // the disks that never count are named as such
    for (name, why) in [
        ("sdc", "on USB"),
        ("sdd", "removable"),
        ("mmcblk0", "an MMC/SD card"),
        ("sdf", "on USB"),
    ] {
        assert!(
            diffs.iter().any(|diff| diff.path == "disks"
                && diff.severity == Severity::Info
                && diff.message.contains(&format!("disk {name} "))
                && diff.message.contains(&format!("is {why}: not counted"))),
            "{name}: {diffs:#?}"
        );
    }
}

/// More disks fit a group than its count, or two disks report one serial:
/// the agent writes none of them, so the diff counts none of them present
/// (critical, before anything destructive) instead of picking the first.
#[test]
fn too_many_disks_for_a_group_or_a_serial_are_ambiguous_on_both_sides() {
    let mut inventory = dl380_inventory();
    let mut third = inventory.disks[0].clone();
    third.name = "sdc".into();
    third.serial = Some("S455NY0M999999".into());
    inventory.disks.push(third);
    let mut twin = inventory.disks[0].clone();
    twin.name = "sdd".into();
    let named = parse_spec("schema_version: 1\ndisks:\n  devices:\n    - serial: S455NY0M123456\n")
        .unwrap();
    let mut twins = dl380_inventory();
    twins.disks.push(twin);
    for (spec, inventory, matching) in [
        (dl380_spec(), &inventory, "3 disks match (sda, sdb, sdc)"),
        (named, &twins, "2 disks match (sda, sdd)"),
    ] {
        let allowlist =
            vetting_agent::stages::allowlist::decide(&inventory.disks, &expected_disks(&spec));
        assert!(allowlist.candidates.is_empty(), "{allowlist:#?}");
        assert!(matched_disks(&spec, inventory).is_empty());
        let diffs = diff(&spec, inventory);
        let ambiguous = with_severity(&diffs, Severity::Critical, "disks.devices[0]");
        assert_eq!(ambiguous.len(), 1, "{diffs:#?}");
        assert!(
            ambiguous[0].message.contains("ambiguous disk")
                && ambiguous[0].message.contains(matching),
            "{}",
            ambiguous[0].message
        );
    }
}

#[test]
fn the_dl380_matches_its_spec_and_a_10g_nic_linked_at_1g_passes() {
    let inventory = dl380_inventory();
    assert_eq!(inventory.memory.total_bytes, 68_719_476_736);
    assert_eq!(inventory.cpus.sockets, 2);
    let diffs = diff(&dl380_spec(), &inventory);
    assert!(critical(&diffs).is_empty(), "{diffs:#?}");
    assert!(
        diffs.iter().all(|diff| diff.severity == Severity::Info),
        "{diffs:#?}"
    );
    // the negotiated 1G is noted, not held against the NIC
    assert!(
        diffs.iter().any(|diff| diff
            .message
            .contains("eno1 supports 10 Gb/s and is linked at 1 Gb/s")),
        "{diffs:#?}"
    );
}

#[test]
fn missing_parts_and_less_ram_are_critical_extras_are_warnings() {
    let spec = dl380_spec();

    let mut one_disk = dl380_inventory();
    one_disk.disks.pop();
    let diffs = diff(&spec, &one_disk);
    let missing = with_severity(&diffs, Severity::Critical, "disks");
    assert_eq!(missing.len(), 2, "{diffs:#?}");
    assert!(
        missing
            .iter()
            .any(|diff| diff.message.contains("missing disk"))
    );
    assert!(
        missing
            .iter()
            .any(|diff| diff.message.contains("fewer disks than expected: 1 of 2"))
    );

    let mut less_ram = dl380_inventory();
    less_ram.memory.total_bytes = 32 << 30;
    less_ram.memory.dimms.truncate(6);
    let diffs = diff(&spec, &less_ram);
    let ram = with_severity(&diffs, Severity::Critical, "memory.total_bytes");
    assert_eq!(ram.len(), 1, "{diffs:#?}");
    assert!(ram[0].message.contains("less memory"), "{}", ram[0].message);
    assert_eq!(
        with_severity(&diffs, Severity::Warning, "memory.dimm_count").len(),
        1
    );

    // within the default 5 % tolerance: fine
    let mut slightly_less = dl380_inventory();
    slightly_less.memory.total_bytes = (64u64 << 30) / 100 * 97;
    assert!(critical(&diff(&spec, &slightly_less)).is_empty());

    let mut more = dl380_inventory();
    more.memory.total_bytes = 128 << 30;
    let mut extra_disk = more.disks[0].clone();
    extra_disk.name = "sdc".into();
    extra_disk.serial = Some("EXTRA".into());
    extra_disk.model = Some("ST4000NM0035".into());
    more.disks.push(extra_disk);
    let mut usb = more.disks[0].clone();
    usb.name = "sdd".into();
    usb.removable = true;
    usb.transport = Some("usb".into());
    more.disks.push(usb);
    let mut third_nic = more.nics[0].clone();
    third_nic.name = "eno3".into();
    more.nics.push(third_nic);
    let diffs = diff(&spec, &more);
    assert!(critical(&diffs).is_empty(), "{diffs:#?}");
    assert_eq!(
        with_severity(&diffs, Severity::Warning, "memory.total_bytes").len(),
        1
    );
    let extra = with_severity(&diffs, Severity::Warning, "disks.exact_count");
    assert_eq!(extra.len(), 1, "{diffs:#?}");
    assert!(extra[0].message.contains("sdc"), "{}", extra[0].message);
    assert!(
        !extra[0].message.contains("sdd"),
        "removable disks are not counted"
    );
    assert_eq!(
        with_severity(&diffs, Severity::Warning, "nics.count").len(),
        1
    );

    // NIC capability: a 1G-only NIC fails a 10G spec, whatever its link
    let mut slow = dl380_inventory();
    slow.nics[1].supported_speeds_mbps = vec![100, 1000];
    let diffs = diff(&spec, &slow);
    let nic = with_severity(&diffs, Severity::Critical, "nics.min_speed_mbps");
    assert_eq!(nic.len(), 1, "{diffs:#?}");
    assert!(
        nic[0].message.contains("eno2 supports up to 1 Gb/s"),
        "{}",
        nic[0].message
    );

    let mut fewer = dl380_inventory();
    fewer.nics.pop();
    fewer.psus.pop();
    let diffs = diff(&spec, &fewer);
    assert_eq!(
        with_severity(&diffs, Severity::Critical, "nics.count").len(),
        1
    );
    assert_eq!(
        with_severity(&diffs, Severity::Critical, "psus.count").len(),
        1
    );

    let mut wrong_cpu = dl380_inventory();
    wrong_cpu.cpus.packages[1].model = Some("Intel(R) Xeon(R) CPU E5-2603 0 @ 1.80GHz".into());
    wrong_cpu.cpus.cores = 10;
    let diffs = diff(&spec, &wrong_cpu);
    assert_eq!(
        with_severity(&diffs, Severity::Critical, "cpu.model").len(),
        1
    );
    assert_eq!(
        with_severity(&diffs, Severity::Critical, "cpu.cores").len(),
        1
    );

    let gpus = parse_spec("schema_version: 1\ngpus:\n  count: 2\n  model: '*H100*'\n").unwrap();
    let diffs = diff(&gpus, &dl380_inventory());
    let gpu = with_severity(&diffs, Severity::Critical, "gpus");
    assert_eq!(gpu.len(), 1, "{diffs:#?}");
    assert!(gpu[0].message.contains("missing GPU"));

    // disks named by serial: the wrong one is missing
    let by_serial = parse_spec(
        "schema_version: 1\ndisks:\n  devices:\n    - serial: S455NY0M123456\n    - wwn: naa.5002538e4011aa01\n    - serial: NOPE\n",
    )
    .unwrap();
    let diffs = diff(&by_serial, &dl380_inventory());
    let missing = critical(&diffs);
    assert_eq!(missing.len(), 2, "{diffs:#?}");
    assert!(missing.iter().any(|diff| diff.path == "disks.devices[2]"));
    // the WWN entry could not reuse sda (taken by its serial)
    assert!(missing.iter().any(|diff| diff.path == "disks.devices[1]"));
}

#[test]
fn identity_mismatch_is_critical_before_anything_destructive() {
    let inventory = dl380_inventory();
    let same = identity_diff(Some("4242"), None, &inventory);
    assert_eq!(same.len(), 1);
    assert_eq!(same[0].severity, Severity::Info);

    let wrong = identity_diff(Some("CZ9999"), None, &inventory);
    assert_eq!(wrong.len(), 1);
    assert_eq!(wrong[0].severity, Severity::Critical);
    assert!(
        wrong[0]
            .message
            .contains("identity mismatch: host record says serial CZ9999, machine reports 4242"),
        "{}",
        wrong[0].message
    );
    assert!(wrong[0].message.contains("nothing destructive will run"));

    // the UUID in the other SMBIOS byte order is the same machine
    let swapped = identity_diff(
        None,
        Some("36363535-3533-435a-3232-343630335138"),
        &inventory,
    );
    assert_eq!(swapped[0].severity, Severity::Info, "{swapped:?}");
    let other = identity_diff(
        None,
        Some("00112233-4455-6677-8899-aabbccddeeff"),
        &inventory,
    );
    assert_eq!(other[0].severity, Severity::Critical);

    let mut blank = inventory.clone();
    blank.system.serial = None;
    blank.system.uuid = None;
    let unknown = identity_diff(Some("4242"), None, &blank);
    assert_eq!(unknown[0].severity, Severity::Critical);
    assert!(unknown[0].message.contains("cannot be confirmed"));
    assert!(identity_diff(None, None, &inventory).is_empty());

    // the spec's own identity (a per-host override) is checked the same way
    let spec = effective_spec(
        Some(&dl380_spec()),
        Some(&serde_json::json!({"system": {"serial": "CZ9999"}})),
    )
    .unwrap()
    .unwrap();
    let diffs = diff(&spec, &inventory);
    assert!(
        critical(&diffs)
            .iter()
            .any(|diff| diff.path == "system.serial" && diff.message.contains("wrong server")),
        "{diffs:#?}"
    );
}

// ------------------------------------------------------- through the orchestrator

pub(crate) async fn register(
    orchestrator: &Orchestrator,
    name: &str,
    index: u32,
    new: NewHost,
) -> i64 {
    orchestrator
        .operator()
        .register_host(
            NewHost {
                name: name.into(),
                macs: vec![format!("52:54:00:aa:00:{index:02x}")],
                ..new
            },
            &operator(),
        )
        .await
        .unwrap()
        .id
}

pub(crate) async fn store_inventory(
    orchestrator: &Orchestrator,
    run_id: &str,
    attempt: i32,
    json: String,
) {
    inventory::ActiveModel {
        run_id: Set(run_id.to_string()),
        attempt: Set(attempt),
        inventory: Set(json),
        created_at_ms: Set(T0),
    }
    .insert(orchestrator.store().db())
    .await
    .unwrap();
}

async fn stored_diff_count(orchestrator: &Orchestrator, run_id: &str) -> usize {
    spec_diff::Entity::find()
        .filter(spec_diff::Column::RunId.eq(run_id))
        .all(orchestrator.store().db())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn spec_profiles_are_validated_stored_and_audited() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let refused = orchestrator
            .operator()
            .put_spec_profile("dl380", "schema_version: 1\nram: 64GiB\n", &operator())
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, OrchestratorError::BadRequest(message) if message.contains("ram")),
            "{}: {refused}",
            db.name
        );
        assert!(
            orchestrator
                .operator()
                .list_spec_profiles()
                .await
                .unwrap()
                .is_empty()
        );
        let spec = orchestrator
            .operator()
            .put_spec_profile("dl380", DL380_SPEC, &operator())
            .await
            .unwrap();
        assert_eq!(spec, dl380_spec());
        // replacing keeps one row
        orchestrator
            .operator()
            .put_spec_profile("dl380", DL380_SPEC, &operator())
            .await
            .unwrap();
        let listed = orchestrator.operator().list_spec_profiles().await.unwrap();
        assert_eq!(listed.len(), 1, "{}", db.name);
        let stored = orchestrator
            .operator()
            .get_spec_profile("dl380")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.text, DL380_SPEC, "comments and all");
        assert_eq!(stored.spec().unwrap(), spec);
        assert!(
            orchestrator
                .operator()
                .get_spec_profile("nope")
                .await
                .unwrap()
                .is_none()
        );
        let audit = orchestrator.operator().audit_log(None).await.unwrap();
        let puts: Vec<_> = audit
            .iter()
            .filter(|record| record.action == "put_spec_profile")
            .collect();
        assert_eq!(puts.len(), 2, "{}", db.name);
        assert_eq!(puts[0].actor, operator().as_str());

        // a host that uses it keeps it from being deleted
        let host_id = register(
            &orchestrator,
            "uses-dl380",
            1,
            NewHost {
                spec_profile: Some("dl380".into()),
                spec_overrides: Some(serde_json::json!({"system": {"serial": "4242"}})),
                ..Default::default()
            },
        )
        .await;
        let host = orchestrator.operator().get_host(host_id).await.unwrap();
        let effective = orchestrator
            .operator()
            .host_spec(&host)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            effective.system.unwrap().serial.as_deref(),
            Some("4242"),
            "{}",
            db.name
        );
        assert!(
            orchestrator
                .operator()
                .delete_spec_profile("dl380", &operator())
                .await
                .is_err()
        );
        orchestrator
            .operator()
            .remove_host(host_id, &operator())
            .await
            .unwrap();
        orchestrator
            .operator()
            .delete_spec_profile("dl380", &operator())
            .await
            .unwrap();
        assert!(
            orchestrator
                .operator()
                .list_spec_profiles()
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn validate_spec_checks_the_latest_inventory_and_replaces_its_diffs() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        orchestrator
            .operator()
            .put_spec_profile("dl380", DL380_SPEC, &operator())
            .await
            .unwrap();
        let host_id = register(
            &orchestrator,
            "dl380-a",
            1,
            NewHost {
                serial: Some("4242".into()),
                spec_profile: Some("dl380".into()),
                ..Default::default()
            },
        )
        .await;
        let run = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();

        // no inventory yet: nothing can be confirmed
        let none = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(none.critical, "{}: {none:?}", db.name);

        let good = dl380_inventory();
        store_inventory(
            &orchestrator,
            &run.id,
            1,
            serde_json::to_string(&good).unwrap(),
        )
        .await;
        let outcome = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(!outcome.critical, "{}: {outcome:#?}", db.name);
        assert!(outcome.summary.contains("matches"), "{}", outcome.summary);
        assert!(
            outcome
                .diffs
                .iter()
                .any(|diff| diff.path == "identity.serial" && diff.severity == Severity::Info)
        );
        assert_eq!(
            stored_diff_count(&orchestrator, &run.id).await,
            outcome.diffs.len()
        );
        assert_eq!(
            orchestrator.operator().spec_diffs(&run.id).await.unwrap(),
            outcome.diffs
        );

        // a second InventoryCheck attempt with a disk gone: the latest counts
        let mut one_disk = good.clone();
        one_disk.disks.pop();
        store_inventory(
            &orchestrator,
            &run.id,
            2,
            serde_json::to_string(&one_disk).unwrap(),
        )
        .await;
        let outcome = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(outcome.critical, "{}", db.name);
        assert!(
            outcome.summary.contains("missing disk"),
            "{}",
            outcome.summary
        );
        assert_eq!(
            stored_diff_count(&orchestrator, &run.id).await,
            outcome.diffs.len(),
            "the earlier rows were replaced"
        );

        // an inventory that does not parse is critical
        store_inventory(&orchestrator, &run.id, 3, "{\"schema_version\": 1}".into()).await;
        let outcome = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(outcome.critical);
        assert!(
            outcome
                .diffs
                .iter()
                .any(|diff| diff.path == "inventory" && diff.message.contains("attempt 3"))
        );
    }
}

#[tokio::test]
async fn the_first_inventory_is_recorded_as_identity_and_a_later_mismatch_is_critical() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let host_id = register(&orchestrator, "new-box", 2, NewHost::default()).await;
        let run = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        store_inventory(
            &orchestrator,
            &run.id,
            1,
            serde_json::to_string(&dl380_inventory()).unwrap(),
        )
        .await;
        let outcome = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(!outcome.critical, "{}: {outcome:#?}", db.name);
        // no spec at all: one info line saying so
        let no_spec: Vec<_> = outcome
            .diffs
            .iter()
            .filter(|diff| diff.path == "spec")
            .collect();
        assert_eq!(no_spec.len(), 1);
        assert_eq!(no_spec[0].severity, Severity::Info);
        assert_eq!(
            no_spec[0].message,
            "no expected spec: nothing to compare; Storage will not run destructive tests"
        );
        assert!(outcome.summary.contains("no expected spec"));
        let host = orchestrator.operator().get_host(host_id).await.unwrap();
        assert_eq!(host.serial.as_deref(), Some("4242"), "{}", db.name);
        assert_eq!(
            host.system_uuid.as_deref(),
            Some("35353636-3335-5A43-3232-343630335138")
        );
        let recorded: Vec<_> = orchestrator
            .operator()
            .audit_log(Some(&run.id))
            .await
            .unwrap()
            .into_iter()
            .filter(|record| record.action == "record_identity")
            .collect();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].actor, Actor::orchestrator().as_str());
        assert_eq!(recorded[0].host_id, Some(host_id));

        // the next run reports another machine behind the same MAC
        orchestrator
            .operator()
            .cancel(&run.id, &operator(), None)
            .await
            .unwrap();
        let next = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        let mut other = dl380_inventory();
        other.system.serial = Some("CZ0000".into());
        other.system.uuid = Some("00112233-4455-6677-8899-aabbccddeeff".into());
        store_inventory(
            &orchestrator,
            &next.id,
            1,
            serde_json::to_string(&other).unwrap(),
        )
        .await;
        let outcome = orchestrator.runs().validate_spec(&next.id).await.unwrap();
        assert!(outcome.critical, "{}", db.name);
        assert!(
            outcome.summary.contains("identity mismatch"),
            "{}",
            outcome.summary
        );
        assert_eq!(
            orchestrator
                .operator()
                .get_host(host_id)
                .await
                .unwrap()
                .serial
                .as_deref(),
            Some("4242"),
            "a recorded identity is never overwritten"
        );
    }
}

#[tokio::test]
async fn a_host_naming_a_missing_profile_fails_spec_validation() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let host_id = register(
            &orchestrator,
            "typo",
            3,
            NewHost {
                spec_profile: Some("dl38O".into()),
                ..Default::default()
            },
        )
        .await;
        let host = orchestrator.operator().get_host(host_id).await.unwrap();
        let error = orchestrator.operator().host_spec(&host).await.unwrap_err();
        assert!(error.to_string().contains("dl38O"), "{error}");
        let run = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        store_inventory(
            &orchestrator,
            &run.id,
            1,
            serde_json::to_string(&dl380_inventory()).unwrap(),
        )
        .await;
        let outcome = orchestrator.runs().validate_spec(&run.id).await.unwrap();
        assert!(outcome.critical, "{}", db.name);
        assert!(outcome.summary.contains("dl38O"), "{}", outcome.summary);
    }
}

// ------------------------------------------------------------------ reports

pub(crate) fn agent(verdict: Option<serde_json::Value>) -> EventContext {
    EventContext {
        actor: Some(Actor::agent()),
        verdict_json: verdict.map(|value| value.to_string()),
        ..Default::default()
    }
}

#[tokio::test]
async fn reports_of_a_completed_run_are_self_contained_and_escaped() {
    for db in test_dbs().await {
        let clock = ManualClock::new(T0);
        let orchestrator = open(config_for(&db), &clock).await;
        let hostile = "rack-7 <script>alert('x')</script> https://evil.example/a.js";
        let host_id = register(&orchestrator, hostile, 4, NewHost::default()).await;
        let run = orchestrator
            .operator()
            .start_run(host_id, &operator())
            .await
            .unwrap();
        let run_id = run.id.clone();
        assert_eq!(
            orchestrator.runs().dispatch().await.unwrap(),
            vec![run_id.clone()]
        );
        for event in [Event::PowerOnSent, Event::Hello, Event::Claim] {
            orchestrator
                .runs()
                .apply(&run_id, event, agent(None))
                .await
                .unwrap();
        }
        store_inventory(
            &orchestrator,
            &run_id,
            1,
            serde_json::to_string(&dl380_inventory()).unwrap(),
        )
        .await;
        let verdict = serde_json::json!({"status": "pass", "reasons": [
            {"status": "pass", "message": "lshw <b>ok</b>"}]});
        let mut state = orchestrator
            .runs()
            .apply(&run_id, Event::StagePassed, agent(Some(verdict)))
            .await
            .unwrap()
            .to;
        assert_eq!(state, RunState::SpecValidate);
        let outcome = orchestrator.runs().validate_spec(&run_id).await.unwrap();
        assert!(!outcome.critical);
        state = orchestrator
            .runs()
            .apply(
                &run_id,
                Event::SpecPassed,
                EventContext {
                    reason: Some(outcome.summary.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .to;
        // sensor readings during the stress stage, a summary measurement
        let readings = (0..60).flat_map(|second| {
            [
                ("coretemp/Package id 0", 40.0 + f64::from(second) / 3.0),
                ("coretemp/Package id 1", 38.0 + f64::from(second) / 4.0),
            ]
            .map(|(name, value)| (second, name, value))
        });
        let rows: Vec<measurement::ActiveModel> = readings
            .enumerate()
            .map(|(seq, (second, name, value))| measurement::ActiveModel {
                run_id: Set(run_id.clone()),
                stage: Set(Some("CPUStress".into())),
                attempt: Set(Some(1)),
                seq: Set(Some(seq as i64)),
                name: Set(name.to_string()),
                value: Set(value),
                unit: Set("°C".into()),
                at_ms: Set(T0 + i64::from(second) * 1000),
                ..Default::default()
            })
            .collect();
        measurement::Entity::insert_many(rows)
            .exec(orchestrator.store().db())
            .await
            .unwrap();
        measurement::ActiveModel {
            run_id: Set(run_id.clone()),
            stage: Set(Some("Network".into())),
            attempt: Set(Some(1)),
            seq: Set(None),
            name: Set("iperf3.rx_bps".into()),
            value: Set(9.4e9),
            unit: Set("bit/s".into()),
            at_ms: Set(T0 + 90_000),
            ..Default::default()
        }
        .insert(orchestrator.store().db())
        .await
        .unwrap();
        artifact::ActiveModel {
            run_id: Set(run_id.clone()),
            stage: Set(Some("InventoryCheck".into())),
            attempt: Set(Some(1)),
            name: Set("dmidecode.txt".into()),
            tool: Set(Some("dmidecode".into())),
            path: Set("/nonexistent/dmidecode.txt".into()),
            size_bytes: Set(12_345),
            sha256: Set("ab".repeat(32)),
            created_at_ms: Set(T0),
            ..Default::default()
        }
        .insert(orchestrator.store().db())
        .await
        .unwrap();
        while state != RunState::Reporting {
            clock.advance_secs(30);
            let event = if state == RunState::Gpu || state == RunState::Psu {
                Event::StageSkipped
            } else {
                Event::StagePassed
            };
            state = orchestrator
                .runs()
                .apply(&run_id, event, agent(None))
                .await
                .unwrap()
                .to;
        }
        // entering Reporting queued the report worker (the transition's
        // effect): it writes the report, then the run completes
        let mut completed = false;
        for _ in 0..200 {
            let run = orchestrator.operator().get_run(&run_id).await.unwrap();
            if run.state == RunState::Completed {
                completed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(
            completed,
            "{}: the report worker did not complete the run",
            db.name
        );
        let walked = orchestrator
            .operator()
            .transitions(Some(&run_id))
            .await
            .unwrap();
        assert_eq!(
            walked.last().map(|t| (t.from.as_str(), t.event.as_str())),
            Some(("Reporting", "report_written"))
        );
        let paths = write_reports(&orchestrator, &run_id).await.unwrap();

        assert_eq!(
            paths.json,
            db.dir.path().join("reports").join(format!("{run_id}.json"))
        );
        assert!(paths.html.exists() && paths.json.exists(), "{}", db.name);
        let leftovers: Vec<_> = std::fs::read_dir(db.dir.path().join("reports"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // the JSON document
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&paths.json).unwrap()).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["run"]["state"], "Completed");
        assert_eq!(json["host"]["name"], hostile);
        let stages: Vec<&str> = json["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|stage| stage["stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "InventoryCheck",
                "SpecValidate",
                "SMART",
                "CPUStress",
                "Storage",
                "Network",
                "GPU",
                "PSU"
            ],
            "{}",
            db.name
        );
        assert_eq!(json["stages"][0]["verdict"]["status"], "pass");
        assert_eq!(json["stages"][6]["outcome"], "skipped");
        assert!(!json["spec_diffs"].as_array().unwrap().is_empty());
        assert_eq!(
            json["inventory"]["memory"]["total_bytes"],
            68_719_476_736u64
        );
        let temperature = json["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "coretemp/Package id 0")
            .unwrap();
        assert_eq!(temperature["count"], 60);
        assert_eq!(temperature["min"], 40.0);
        assert!((temperature["max"].as_f64().unwrap() - (40.0 + 59.0 / 3.0)).abs() < 1e-9);
        assert_eq!(json["artifacts"][0]["sha256"], "ab".repeat(32));
        assert_eq!(
            json["transitions"].as_array().unwrap().last().unwrap()["to"],
            "Completed"
        );
        assert_eq!(
            build_report(&orchestrator, &run_id).await.unwrap().run.id,
            run_id
        );

        // the HTML page: self-contained, charted, escaped
        let html = std::fs::read_to_string(&paths.html).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"), "{}", db.name);
        assert!(html.contains("<polyline"));
        assert!(
            html.contains("coretemp&#x2f;Package id 1"),
            "names are escaped, slash and all"
        );
        assert!(
            !html.to_lowercase().contains("<script"),
            "the injected script is escaped"
        );
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("lshw <b>ok</b>"));
        assert!(
            html.contains("lshw &lt;b&gt;ok&lt;&#x2f;b&gt;")
                || html.contains("lshw &lt;b&gt;ok&lt;/b&gt;")
        );
        assert!(!html.contains("<link"));
        assert!(!html.contains("url(http"));
        assert!(!html.contains(" src="));
        // the only URL is the escaped host name, as text
        let without_host = html
            .replace("https:&#x2f;&#x2f;evil.example&#x2f;a.js", "")
            .replace("https://evil.example/a.js", "");
        assert!(!without_host.contains("http://"), "{}", db.name);
        assert!(!without_host.contains("https://"), "{}", db.name);
        for stage in stages {
            assert!(html.contains(stage), "{stage}");
        }
        assert!(html.contains("dmidecode.txt"));
    }
}

#[tokio::test]
async fn reports_refuse_a_run_id_that_is_not_a_file_name() {
    let db = crate::support::sqlite_db();
    let clock = ManualClock::new(T0);
    let orchestrator = open(config_for(&db), &clock).await;
    let error = write_reports(&orchestrator, "../escape").await.unwrap_err();
    assert!(error.to_string().contains("../escape"), "{error}");
    assert!(write_reports(&orchestrator, "no-such-run").await.is_err());
}
