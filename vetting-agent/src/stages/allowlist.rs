//! The device allowlist of the Storage stage: which disks may be written.
//!
//! The disks that the expected disks (StorageParams.expected_disks) match
//! under the disk rule of [`vetting_probes::disks`] (the one the
//! orchestrator's spec diff uses) are the candidates: by serial or WWN
//! where the entry gives one, otherwise by model (a glob, as in the spec)
//! and size (within 1 %, the spec's default tolerance) with the exact
//! count: when more or fewer disks match an entry than its `count`, all of
//! them are refused and the stage fails ("expected N, found M"). Removable,
//! USB and MMC/SD disks are never candidates, even when an entry names them
//! (many USB enclosures report `removable = 0`, so the transport counts on
//! its own); a disk whose transport is unknown is a candidate only when an
//! entry names it by serial or WWN; a disk that no entry names (an
//! unexpected disk) is never one. All of them are reported. With no
//! expected disks there are no candidates at all.

use std::path::Path;

use vetting_probes::disks::{DiskRule, match_disks, never_counted};
use vetting_probes::inventory::{Disk, read_block_device};
use vetting_probes::protocol::ExpectedDisk;

use crate::params::DiskSelection;

/// A disk that will not be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub disk: Disk,
    pub reason: String,
}

/// What the allowlist decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    /// Disks that may be tested (after the wipe probe).
    pub candidates: Vec<Disk>,
    /// Disks that will not be written: removable, unexpected, or refused
    /// because their entry's count did not match.
    pub refused: Vec<Refused>,
    /// Expectations not met (fail the stage): `expected 2 disks matching
    /// model X, size Y; found 1`.
    pub problems: Vec<String>,
}

/// Decides which of `disks` may be written, from the expected disks.
pub fn decide(disks: &[Disk], expected: &[ExpectedDisk]) -> Allowlist {
    let rules: Vec<DiskRule> = expected.iter().map(DiskRule::from).collect();
    let matched = match_disks(disks, &rules);
    let mut allowlist = Allowlist::default();
    // the serial/WWN entries' problems first, then the groups'
    for identified in [true, false] {
        for (index, rule) in rules.iter().enumerate() {
            if rule.is_identified() != identified {
                continue;
            }
            let found = &matched.rules[index];
            if !rule.selects() {
                allowlist.problems.push(
                    "an expected disk has no serial, WWN, model or size: it cannot select a disk"
                        .to_string(),
                );
                continue;
            }
            let entry = describe_entry(&expected[index]);
            if identified {
                for (at, why) in &found.not_counted {
                    allowlist.problems.push(format!(
                        "{} matches {entry} but is {}: it is not tested",
                        disks[*at].name,
                        why.why()
                    ));
                }
            }
            let seen = found.counted.len()
                + if identified {
                    found.not_counted.len()
                } else {
                    0
                };
            if seen != found.wanted {
                allowlist.problems.push(format!(
                    "expected {} disk(s) {entry}, found {seen}",
                    found.wanted
                ));
            }
        }
    }

    for (at, disk) in disks.iter().enumerate() {
        let reason = if let Some(why) = never_counted(disk) {
            Some(format!("{}: never written", why.why()))
        } else if let Some(index) = matched.refused_by[at] {
            let (entry, wanted) = (
                describe_entry(&expected[index]),
                matched.rules[index].wanted,
            );
            Some(if rules[index].is_identified() {
                format!("matches {entry} but the count is wrong (expected {wanted})")
            } else {
                format!(
                    "matches {entry} but expected {wanted} such disk(s), found another number: none is written"
                )
            })
        } else if matched.claimed_by[at].is_some() {
            None
        } else if disk.transport.is_none() {
            Some(
                "transport unknown: written only when the spec names it by serial or WWN"
                    .to_string(),
            )
        } else {
            Some("unexpected: no expected disk names it".to_string())
        };
        match reason {
            Some(reason) => allowlist.refused.push(Refused {
                disk: disk.clone(),
                reason,
            }),
            None => allowlist.candidates.push(disk.clone()),
        }
    }
    allowlist
}

/// `serial S1`, `model "X*", size 1920383410176 bytes`.
pub fn describe_entry(entry: &ExpectedDisk) -> String {
    let mut parts = Vec::new();
    if let Some(serial) = &entry.serial {
        parts.push(format!("serial {serial}"));
    }
    if let Some(wwn) = &entry.wwn {
        parts.push(format!("WWN {wwn}"));
    }
    if let Some(model) = &entry.model {
        parts.push(format!("model \"{model}\""));
    }
    if let Some(size) = entry.size_bytes {
        parts.push(format!("size {size} bytes"));
    }
    if parts.is_empty() {
        "with no identity".to_string()
    } else {
        format!("with {}", parts.join(", "))
    }
}

/// `sdb (MODEL, serial S1, 1920383410176 bytes, removable)`.
pub fn describe_disk(disk: &Disk) -> String {
    let mut parts = Vec::new();
    if let Some(model) = &disk.model {
        parts.push(model.clone());
    }
    if let Some(serial) = &disk.serial {
        parts.push(format!("serial {serial}"));
    }
    if let Some(wwn) = &disk.wwn {
        parts.push(format!("WWN {wwn}"));
    }
    parts.push(format!("{} bytes", disk.size_bytes));
    match &disk.transport {
        Some(transport) => parts.push(transport.clone()),
        None => parts.push("transport unknown".into()),
    }
    if disk.removable {
        parts.push("removable".into());
    }
    format!("{} ({})", disk.name, parts.join(", "))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The attached loop devices under `sys_root/block` that pass the
/// selection's filter, as disks, read like any other block device
/// ([`read_block_device`]). A real loop device has no `device` link: it is
/// `transport: loop`, virtual, without model, serial or WWN. An entry with
/// one (a sysfs tree that tests describe as USB, MMC or another serial)
/// keeps what its tree says. Empty unless loop devices are allowed.
pub fn loop_disks(sys_root: &Path, selection: &DiskSelection) -> Vec<Disk> {
    if !selection.allow_loop_devices {
        return Vec::new();
    }
    let root = sys_root.join("block");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix("loop").is_some_and(|number| {
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .filter(|name| selection.admits(name))
        .collect();
    names.sort_by_key(|name| name[4..].parse::<u64>().unwrap_or(u64::MAX));
    names
        .into_iter()
        .filter_map(|name| {
            let path = root.join(&name);
            // Only attached loop devices have a backing file.
            let backing = read_trimmed(&path.join("loop/backing_file"))?;
            let mut disk = read_block_device(&path, &name);
            if disk.size_bytes == 0 || backing.is_empty() {
                return None;
            }
            if !path.join("device").exists() {
                disk.transport = Some("loop".to_string());
                disk.is_virtual = true;
            }
            Some(disk)
        })
        .collect()
}

/// Whether a kernel block device name is never a disk the agent may write
/// unless loop devices are allowed (`loop*`), or never at all (`ram*`,
/// `zram*`).
pub fn never_candidate(name: &str, selection: &DiskSelection) -> bool {
    name.starts_with("ram")
        || name.starts_with("zram")
        || (name.starts_with("loop") && !selection.allow_loop_devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, model: Option<&str>, serial: Option<&str>, size: u64) -> Disk {
        Disk {
            name: name.into(),
            model: model.map(Into::into),
            serial: serial.map(Into::into),
            size_bytes: size,
            transport: Some("sata".into()),
            ..Disk::default()
        }
    }

    const TB: u64 = 1_920_383_410_176;

    #[test]
    fn a_removable_disk_is_never_a_candidate() {
        let mut usb = disk("sdc", Some("MZ7LH1T9"), Some("S3"), TB);
        usb.removable = true;
        let disks = vec![disk("sda", Some("MZ7LH1T9"), Some("S1"), TB), usb];
        // by model and size: the removable one does not count
        let by_group = decide(
            &disks,
            &[ExpectedDisk {
                model: Some("MZ7LH*".into()),
                size_bytes: Some(TB),
                count: Some(1),
                ..ExpectedDisk::default()
            }],
        );
        assert_eq!(by_group.candidates.len(), 1);
        assert_eq!(by_group.candidates[0].name, "sda");
        assert!(by_group.problems.is_empty(), "{:?}", by_group.problems);
        assert!(
            by_group
                .refused
                .iter()
                .any(|r| r.disk.name == "sdc" && r.reason.contains("removable"))
        );
        // even when its serial is expected
        let by_serial = decide(
            &disks,
            &[ExpectedDisk {
                serial: Some("S3".into()),
                ..ExpectedDisk::default()
            }],
        );
        assert!(by_serial.candidates.is_empty());
        assert!(
            by_serial.problems.iter().any(|p| p.contains("removable")),
            "{:?}",
            by_serial.problems
        );
    }

    /// Each reason alone keeps a disk out, by model/size and by serial.
    #[test]
    fn removable_usb_and_mmc_are_each_never_candidates() {
        let internal = disk("sda", Some("MZ7LH1T9"), Some("S1"), TB);
        let mut removable = disk("sdb", Some("MZ7LH1T9"), Some("S2"), TB);
        removable.removable = true;
        let mut usb = disk("sdc", Some("MZ7LH1T9"), Some("S3"), TB);
        usb.transport = Some("usb".into());
        let mut mmc = disk("mmcblk0", Some("MZ7LH1T9"), Some("S4"), TB);
        mmc.transport = Some("mmc".into());
        for (outsider, why) in [
            (removable, "removable"),
            (usb, "on USB"),
            (mmc, "an MMC/SD card"),
        ] {
            let disks = vec![internal.clone(), outsider.clone()];
            let by_group = decide(
                &disks,
                &[ExpectedDisk {
                    model: Some("MZ7LH*".into()),
                    size_bytes: Some(TB),
                    count: Some(2),
                    ..ExpectedDisk::default()
                }],
            );
            // the outsider does not count: one internal disk is missing
            assert!(by_group.candidates.is_empty(), "{why}: {by_group:?}");
            assert!(
                by_group.problems.iter().any(|p| p.contains("found 1")),
                "{why}: {:?}",
                by_group.problems
            );
            assert!(
                by_group
                    .refused
                    .iter()
                    .any(|r| r.disk.name == outsider.name && r.reason.contains(why)),
                "{why}: {:?}",
                by_group.refused
            );
            let by_serial = decide(
                &disks,
                &[ExpectedDisk {
                    serial: outsider.serial.clone(),
                    ..ExpectedDisk::default()
                }],
            );
            assert!(by_serial.candidates.is_empty(), "{why}: {by_serial:?}");
            assert!(
                by_serial.problems.iter().any(|p| p.contains(why)),
                "{why}: {:?}",
                by_serial.problems
            );
        }
    }

    #[test]
    fn an_unknown_transport_needs_a_serial_or_wwn() {
        let mut unknown = disk("sdd", Some("MZ7LH1T9"), Some("S5"), TB);
        unknown.transport = None;
        let by_group = decide(
            std::slice::from_ref(&unknown),
            &[ExpectedDisk {
                model: Some("MZ7LH*".into()),
                size_bytes: Some(TB),
                count: Some(1),
                ..ExpectedDisk::default()
            }],
        );
        assert!(by_group.candidates.is_empty());
        assert!(by_group.refused[0].reason.contains("transport unknown"));
        let by_serial = decide(
            std::slice::from_ref(&unknown),
            &[ExpectedDisk {
                serial: Some("S5".into()),
                ..ExpectedDisk::default()
            }],
        );
        assert_eq!(by_serial.candidates.len(), 1, "{by_serial:?}");
    }

    #[test]
    fn a_wrong_count_refuses_every_matching_disk() {
        let disks = vec![
            disk("sda", Some("HUH721212ALE600"), None, 12_000_138_625_024),
            disk("sdb", Some("HUH721212ALE600"), None, 12_000_138_625_024),
            disk("sdc", Some("HUH721212ALE600"), None, 12_000_138_625_024),
        ];
        let allowlist = decide(
            &disks,
            &[ExpectedDisk {
                model: Some("HUH721212*".into()),
                size_bytes: Some(12_000_000_000_000),
                count: Some(2),
                ..ExpectedDisk::default()
            }],
        );
        assert!(allowlist.candidates.is_empty());
        assert_eq!(allowlist.refused.len(), 3);
        assert!(
            allowlist.problems[0].contains("expected 2"),
            "{:?}",
            allowlist.problems
        );
        assert!(
            allowlist.problems[0].contains("found 3"),
            "{:?}",
            allowlist.problems
        );
    }

    #[test]
    fn serials_and_wwns_name_disks_and_the_rest_is_unexpected() {
        let mut named = disk("nvme0n1", None, Some("SN-1"), TB);
        named.wwn = Some("eui.0025388b91b1f2a1".into());
        let disks = vec![named, disk("sda", Some("X"), Some("OTHER"), TB)];
        let allowlist = decide(
            &disks,
            &[ExpectedDisk {
                wwn: Some("0x0025388B91B1F2A1".into()),
                ..ExpectedDisk::default()
            }],
        );
        assert_eq!(allowlist.candidates.len(), 1);
        assert_eq!(allowlist.candidates[0].name, "nvme0n1");
        assert!(allowlist.refused[0].reason.contains("unexpected"));
        assert!(allowlist.problems.is_empty());
        let missing = decide(
            &disks,
            &[ExpectedDisk {
                serial: Some("NOPE".into()),
                ..ExpectedDisk::default()
            }],
        );
        assert!(missing.candidates.is_empty());
        assert!(missing.problems[0].contains("found 0"));
    }

    #[test]
    fn no_expected_disks_allow_nothing() {
        let disks = vec![disk("sda", Some("X"), Some("S"), TB)];
        let allowlist = decide(&disks, &[]);
        assert!(allowlist.candidates.is_empty());
        assert_eq!(allowlist.refused.len(), 1);
        // an entry without identity selects nothing either
        let vague = decide(&disks, &[ExpectedDisk::default()]);
        assert!(vague.candidates.is_empty());
        assert_eq!(vague.problems.len(), 1);
    }

    #[test]
    fn sizes_match_within_one_percent() {
        let disks = vec![disk("loop3", None, None, 20 * 1024 * 1024)];
        let near = decide(
            &disks,
            &[ExpectedDisk {
                size_bytes: Some(20 * 1024 * 1024 + 100_000),
                count: Some(1),
                ..ExpectedDisk::default()
            }],
        );
        assert_eq!(near.candidates.len(), 1);
        let far = decide(
            &disks,
            &[ExpectedDisk {
                size_bytes: Some(22 * 1024 * 1024),
                count: Some(1),
                ..ExpectedDisk::default()
            }],
        );
        assert!(far.candidates.is_empty());
    }

    #[test]
    fn ram_and_zram_are_never_candidates() {
        let default = DiskSelection::default();
        assert!(never_candidate("zram0", &default));
        assert!(never_candidate("ram1", &default));
        assert!(never_candidate("loop0", &default));
        let loops = DiskSelection {
            allow_loop_devices: true,
            ..DiskSelection::default()
        };
        assert!(!never_candidate("loop0", &loops));
        assert!(never_candidate("zram0", &loops));
    }
}
