//! The disk rule: which disks of an inventory the expected disks name. One
//! implementation for the agent's device allowlist (which disks may be
//! written) and the orchestrator's spec diff (which expected disks are
//! present), so that the two cannot disagree.
//!
//! An expected disk is a [`DiskRule`]: either named by serial and/or WWN
//! (one disk), or a group by model (a [glob](crate::glob)) and/or size
//! (within a tolerance) with an exact count. [`match_disks`] decides:
//!
//! - The serial/WWN rules first, each over the disks no earlier rule
//!   claimed: a rule is met when exactly `count` (one) disks carry that
//!   identity and every one of them counts (below). Two disks reporting the
//!   same serial are ambiguous: neither is claimed.
//! - Then the model/size groups, over the disks no rule claimed: a group is
//!   met when exactly `count` counting disks fit it; more or fewer, and it
//!   claims none of them.
//! - A disk that counts for a rule that is not met is refused: no later
//!   rule claims it.
//!
//! How a disk counts:
//!
//! - A removable disk, a disk on USB (many USB enclosures report
//!   `removable = 0`, so the transport counts on its own) and an MMC/SD
//!   card never count ([`never_counted`]): they are never written, and they
//!   never make an expected disk present. A spec disk matched only by a USB
//!   stick is missing, and the stick is reported as not counted.
//! - A disk whose transport is unknown counts only for a serial/WWN rule: a
//!   model/size group never claims it (it might be a USB disk that does not
//!   say so).
//!
//! A rule that is not met claims nothing: the agent writes none of its
//! disks and fails the Storage stage; the spec diff reports it critical
//! (missing, or ambiguous when too many disks fit). Disks no rule claims
//! are unexpected: never written, and extra for the diff.

use crate::glob::glob_matches;
use crate::inventory::Disk;
use crate::protocol::ExpectedDisk;

/// The default size tolerance of a model/size group, in percent of the
/// expected size (the spec's default; the wire's [`ExpectedDisk`] carries
/// none, so the agent always uses this one).
pub const DEFAULT_SIZE_TOLERANCE_PERCENT: f64 = 1.0;

/// One expected disk, or a group of identical ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskRule {
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// A glob pattern for the model (or `vendor model`).
    pub model: Option<String>,
    pub size_bytes: Option<u64>,
    pub size_tolerance_percent: f64,
    /// How many disks: exactly this many must match.
    pub count: u32,
}

impl DiskRule {
    /// Named by serial or WWN, rather than by model and size.
    pub fn is_identified(&self) -> bool {
        self.serial.is_some() || self.wwn.is_some()
    }

    /// Whether the rule can select any disk at all: one with no serial,
    /// WWN, model or size selects none.
    pub fn selects(&self) -> bool {
        self.is_identified() || self.model.is_some() || self.size_bytes.is_some()
    }

    /// Whether `disk` carries the serial and WWN the rule names (whether or
    /// not it counts).
    pub fn identifies(&self, disk: &Disk) -> bool {
        let serial_ok = match (&self.serial, &disk.serial) {
            (Some(expected), Some(actual)) => same_serial(expected, actual),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let wwn_ok = match (&self.wwn, &disk.wwn) {
            (Some(expected), Some(actual)) => normalize_wwn(expected) == normalize_wwn(actual),
            (Some(_), None) => false,
            (None, _) => true,
        };
        self.is_identified() && serial_ok && wwn_ok
    }

    /// Whether `disk` has the model and size of a group (whether or not it
    /// counts).
    pub fn fits(&self, disk: &Disk) -> bool {
        let model_ok = match (&self.model, &disk.model) {
            (Some(pattern), Some(model)) => {
                glob_matches(pattern, model)
                    || disk
                        .vendor
                        .as_ref()
                        .is_some_and(|vendor| glob_matches(pattern, &format!("{vendor} {model}")))
            }
            (Some(_), None) => false,
            (None, _) => true,
        };
        let size_ok = match self.size_bytes {
            Some(expected) => {
                (disk.size_bytes as f64 - expected as f64).abs()
                    <= expected as f64 * self.size_tolerance_percent / 100.0
            }
            None => true,
        };
        self.selects() && model_ok && size_ok
    }
}

impl From<&ExpectedDisk> for DiskRule {
    /// The agent's rule from the wire: the default tolerance, and a count
    /// of one where none is given.
    fn from(entry: &ExpectedDisk) -> Self {
        DiskRule {
            serial: entry.serial.clone(),
            wwn: entry.wwn.clone(),
            model: entry.model.clone(),
            size_bytes: entry.size_bytes,
            size_tolerance_percent: DEFAULT_SIZE_TOLERANCE_PERCENT,
            count: entry.count.unwrap_or(1),
        }
    }
}

/// Why a disk that fits a rule does not count for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCounted {
    Removable,
    Usb,
    Mmc,
    /// Only for model/size groups: the transport is unknown.
    TransportUnknown,
}

impl NotCounted {
    /// `removable`, `on USB`, `an MMC/SD card`, `of unknown transport`.
    pub fn why(self) -> &'static str {
        match self {
            NotCounted::Removable => "removable",
            NotCounted::Usb => "on USB",
            NotCounted::Mmc => "an MMC/SD card",
            NotCounted::TransportUnknown => "of unknown transport",
        }
    }
}

/// Why a disk never counts, whatever the spec says: removable, on USB, or
/// an MMC/SD card.
pub fn never_counted(disk: &Disk) -> Option<NotCounted> {
    let transport = disk.transport.as_deref().map(str::to_ascii_lowercase);
    if disk.removable {
        Some(NotCounted::Removable)
    } else if transport.as_deref() == Some("usb") {
        Some(NotCounted::Usb)
    } else if transport.as_deref() == Some("mmc") || disk.name.starts_with("mmcblk") {
        Some(NotCounted::Mmc)
    } else {
        None
    }
}

/// What one rule found, as indices into the disks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleMatch {
    /// How many disks the rule wants.
    pub wanted: usize,
    /// The disks that fit the rule and count.
    pub counted: Vec<usize>,
    /// The disks that fit the rule but do not count, and why.
    pub not_counted: Vec<(usize, NotCounted)>,
    /// Exactly `wanted` counting disks, none ambiguous: `counted` are
    /// claimed.
    pub met: bool,
}

/// What [`match_disks`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskMatch {
    /// One per rule, in the rules' order.
    pub rules: Vec<RuleMatch>,
    /// One per disk: the rule that claimed it (a met rule).
    pub claimed_by: Vec<Option<usize>>,
    /// One per disk: the unmet rule it counted for. No later rule claims
    /// it: a disk of a wrong count is never matched.
    pub refused_by: Vec<Option<usize>>,
}

impl DiskMatch {
    /// The indices of the claimed disks (the matched set), in disk order.
    pub fn matched(&self) -> Vec<usize> {
        (0..self.claimed_by.len())
            .filter(|&at| self.claimed_by[at].is_some())
            .collect()
    }
}

/// Matches `disks` against `rules` (see the module docs).
pub fn match_disks(disks: &[Disk], rules: &[DiskRule]) -> DiskMatch {
    let mut result = DiskMatch {
        rules: vec![RuleMatch::default(); rules.len()],
        claimed_by: vec![None; disks.len()],
        refused_by: vec![None; disks.len()],
    };
    // the serial/WWN rules first, then the groups over what is left
    for identified in [true, false] {
        for (index, rule) in rules.iter().enumerate() {
            if rule.is_identified() != identified {
                continue;
            }
            let mut found = RuleMatch {
                wanted: rule.count as usize,
                ..RuleMatch::default()
            };
            for (at, disk) in disks.iter().enumerate() {
                let fits = if identified {
                    rule.identifies(disk)
                } else {
                    rule.fits(disk)
                };
                let taken = result.claimed_by[at].is_some() || result.refused_by[at].is_some();
                if !fits || taken {
                    continue;
                }
                let why = never_counted(disk).or_else(|| {
                    (!identified && disk.transport.is_none())
                        .then_some(NotCounted::TransportUnknown)
                });
                match why {
                    Some(why) => found.not_counted.push((at, why)),
                    None => found.counted.push(at),
                }
            }
            // a serial that a non-counting disk carries too is ambiguous
            found.met = found.counted.len() == found.wanted
                && (!identified || found.not_counted.is_empty());
            let mark = if found.met {
                &mut result.claimed_by
            } else {
                &mut result.refused_by
            };
            for &at in &found.counted {
                mark[at] = Some(index);
            }
            result.rules[index] = found;
        }
    }
    result
}

/// Serials compare trimmed and case-insensitively.
pub fn same_serial(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// A WWN without its notation (`0x`, `naa.`, `eui.`, `wwn-`), lower-case.
pub fn normalize_wwn(wwn: &str) -> String {
    let lower = wwn.trim().to_ascii_lowercase();
    let stripped = ["wwn-", "0x", "naa.", "eui.", "nguid."]
        .iter()
        .fold(lower.as_str(), |text, prefix| {
            text.strip_prefix(prefix).unwrap_or(text)
        })
        .to_string();
    let stripped = stripped.strip_prefix("0x").unwrap_or(&stripped).to_string();
    stripped
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u64 = 1_920_383_410_176;

    fn disk(name: &str, serial: &str, transport: Option<&str>) -> Disk {
        Disk {
            name: name.into(),
            model: Some("MZ7LH1T9HMLT-00005".into()),
            serial: Some(serial.into()),
            size_bytes: TB,
            transport: transport.map(Into::into),
            ..Disk::default()
        }
    }

    fn group(count: u32) -> DiskRule {
        DiskRule {
            model: Some("MZ7LH1T9*".into()),
            size_bytes: Some(1_920_000_000_000),
            size_tolerance_percent: DEFAULT_SIZE_TOLERANCE_PERCENT,
            count,
            ..DiskRule::default()
        }
    }

    fn by_serial(serial: &str) -> DiskRule {
        DiskRule {
            serial: Some(serial.into()),
            count: 1,
            ..DiskRule::default()
        }
    }

    #[test]
    fn wwns_compare_without_notation() {
        assert_eq!(normalize_wwn("0x5000C500A1B2C3D4"), "5000c500a1b2c3d4");
        assert_eq!(normalize_wwn("naa.5000c500a1b2c3d4"), "5000c500a1b2c3d4");
        assert_eq!(normalize_wwn("wwn-0x5000c500a1b2c3d4"), "5000c500a1b2c3d4");
    }

    #[test]
    fn removable_usb_and_mmc_never_count_and_unknown_transport_needs_a_serial() {
        let mut removable = disk("sdb", "S2", Some("sata"));
        removable.removable = true;
        let disks = vec![
            disk("sda", "S1", Some("sata")),
            removable,
            disk("sdc", "S3", Some("usb")),
            disk("mmcblk0", "S4", None),
            disk("sdd", "S5", None),
        ];
        let result = match_disks(&disks, &[group(1)]);
        assert!(result.rules[0].met);
        assert_eq!(result.matched(), vec![0]);
        assert_eq!(
            result.rules[0].not_counted,
            vec![
                (1, NotCounted::Removable),
                (2, NotCounted::Usb),
                (3, NotCounted::Mmc),
                (4, NotCounted::TransportUnknown)
            ]
        );
        // named by serial: the unknown transport counts, the others do not
        let named = ["S2", "S3", "S4", "S5"].map(by_serial);
        let result = match_disks(&disks, &named);
        assert_eq!(result.matched(), vec![4]);
        assert_eq!(
            result.rules.iter().map(|rule| rule.met).collect::<Vec<_>>(),
            vec![false, false, false, true]
        );
    }

    #[test]
    fn counts_are_exact_and_a_shared_serial_is_ambiguous() {
        let disks = vec![
            disk("sda", "S1", Some("sata")),
            disk("sdb", "S2", Some("sata")),
            disk("sdc", "S3", Some("sata")),
        ];
        let too_many = match_disks(&disks, &[group(2)]);
        assert!(!too_many.rules[0].met);
        assert_eq!(too_many.rules[0].counted.len(), 3);
        assert!(too_many.matched().is_empty());
        assert_eq!(too_many.refused_by, vec![Some(0); 3]);
        // a disk of a wrong count is not matched by a later rule either
        let later = match_disks(&disks, &[group(2), group(3)]);
        assert!(later.rules[0].counted.len() == 3 && later.rules[1].counted.is_empty());
        assert!(later.matched().is_empty());
        // a serial rule claims its disk first; the group takes the rest
        let both = match_disks(&disks, &[group(2), by_serial("s1 ")]);
        assert!(both.rules.iter().all(|rule| rule.met));
        assert_eq!(both.claimed_by, vec![Some(1), Some(0), Some(0)]);
        let mut twin = disk("sdd", "S1", Some("usb"));
        twin.wwn = None;
        let shared = [disks[0].clone(), twin];
        let ambiguous = match_disks(&shared, &[by_serial("S1")]);
        assert!(!ambiguous.rules[0].met);
        assert!(ambiguous.matched().is_empty());
        // a rule that names nothing selects nothing
        let vague = match_disks(
            &disks,
            &[DiskRule {
                count: 1,
                ..DiskRule::default()
            }],
        );
        assert!(vague.rules[0].counted.is_empty() && !vague.rules[0].met);
    }

    #[test]
    fn sizes_match_within_the_tolerance() {
        let disks = vec![disk("sda", "S1", Some("sata"))];
        let mut near = group(1);
        near.size_bytes = Some(TB + TB / 200);
        assert!(match_disks(&disks, &[near.clone()]).rules[0].met);
        near.size_bytes = Some(TB + TB / 50);
        assert!(!match_disks(&disks, &[near.clone()]).rules[0].met);
        near.size_tolerance_percent = 5.0;
        assert!(match_disks(&disks, &[near]).rules[0].met);
    }
}
