//! Identity before destruction, at the device: the allowlist decided on a
//! snapshot (the InventoryCheck's, possibly hours old, before a hold and an
//! override), so right before the wipe probe and again right before the
//! first write the Storage stage opens the device, checks that the open
//! file is the block device sysfs lists under that name, and reads the
//! disk's serial, WWN and size again: a disk that is not the allowlisted
//! one any more is refused. The file stays open while the disk is probed
//! or written (the kernel does not give an open disk's name to another
//! one), and the tools are given a `/dev/disk/by-id` link that names the
//! disk's serial or WWN where udev made one, so a swap under the tool's
//! feet makes it fail to open rather than open another disk.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use vetting_probes::inventory::{Disk, read_block_device};

/// A disk whose identity was just checked, held open.
#[derive(Debug)]
pub struct PinnedDisk {
    /// What the tools are given: a `by-id` link naming the disk, else
    /// `DEV_ROOT/NAME`.
    pub path: PathBuf,
    /// Held open until the probe or the surface test is over.
    _open: File,
}

/// Why a disk is refused at the device.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{device} cannot be opened")]
    Open {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{device} is not a block device")]
    NotBlockDevice { device: String },
    #[error("{name} is no longer listed in {sysfs}")]
    Gone { name: String, sysfs: String },
    #[error("{device} is device {opened}, but sysfs lists {name} as {listed}")]
    OtherDevice {
        device: String,
        name: String,
        opened: String,
        listed: String,
    },
    #[error("{name} is not the allowlisted disk any more: {changes}")]
    Changed { name: String, changes: String },
}

/// Opens `dev_root/NAME` (`/dev` in the Storage stage) and checks it is
/// still the allowlisted disk (see the module documentation); the by-id
/// links are looked for in `dev_root/disk/by-id`.
pub fn pin(disk: &Disk, sys_root: &Path, dev_root: &Path) -> Result<PinnedDisk, IdentityError> {
    let device = dev_root.join(&disk.name);
    let device_text = device.display().to_string();
    // open first, then read sysfs: what sysfs says afterwards is about the
    // device this file is
    let file = File::open(&device).map_err(|source| IdentityError::Open {
        device: device_text.clone(),
        source,
    })?;
    let metadata = file.metadata().map_err(|source| IdentityError::Open {
        device: device_text.clone(),
        source,
    })?;
    if !metadata.file_type().is_block_device() {
        return Err(IdentityError::NotBlockDevice {
            device: device_text,
        });
    }
    let opened = major_minor(metadata.rdev());
    let block = sys_root.join("block").join(&disk.name);
    let gone = || IdentityError::Gone {
        name: disk.name.clone(),
        sysfs: sys_root.join("block").display().to_string(),
    };
    let listed = std::fs::read_to_string(block.join("dev"))
        .map(|text| text.trim().to_string())
        .map_err(|_| gone())?;
    if listed != opened {
        return Err(IdentityError::OtherDevice {
            device: device_text,
            name: disk.name.clone(),
            opened,
            listed,
        });
    }
    let now = read_block_device(&block, &disk.name);
    let changes = differences(disk, &now);
    if !changes.is_empty() {
        return Err(IdentityError::Changed {
            name: disk.name.clone(),
            changes: changes.join(", "),
        });
    }
    let path = by_id_link(dev_root, disk, metadata.rdev()).unwrap_or(device);
    Ok(PinnedDisk { path, _open: file })
}

/// `major:minor` of a Linux device number, as sysfs' `dev` file shows it.
pub fn major_minor(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major}:{minor}")
}

/// What differs between the allowlisted disk and what sysfs says now:
/// `serial S1 → S9`, `WWN … → none`, `size 100 → 200 bytes`.
pub fn differences(allowlisted: &Disk, now: &Disk) -> Vec<String> {
    let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "none".to_string());
    let mut changes = Vec::new();
    let same_serial = match (&allowlisted.serial, &now.serial) {
        (Some(old), Some(new)) => old.trim().eq_ignore_ascii_case(new.trim()),
        (None, None) => true,
        _ => false,
    };
    if !same_serial {
        changes.push(format!(
            "serial {} → {}",
            shown(&allowlisted.serial),
            shown(&now.serial)
        ));
    }
    let normalized =
        |wwn: &Option<String>| wwn.as_deref().map(vetting_probes::disks::normalize_wwn);
    if normalized(&allowlisted.wwn) != normalized(&now.wwn) {
        changes.push(format!(
            "WWN {} → {}",
            shown(&allowlisted.wwn),
            shown(&now.wwn)
        ));
    }
    if allowlisted.size_bytes != now.size_bytes {
        changes.push(format!(
            "size {} → {} bytes",
            allowlisted.size_bytes, now.size_bytes
        ));
    }
    changes
}

/// A `DEV_ROOT/disk/by-id` link to device `rdev` whose name carries the
/// disk's serial or WWN (udev's `ata-MODEL_SERIAL`, `nvme-…`, `wwn-0x…`),
/// the first in name order.
fn by_id_link(dev_root: &Path, disk: &Disk, rdev: u64) -> Option<PathBuf> {
    let mut marks: Vec<String> = Vec::new();
    if let Some(serial) = disk.serial.as_deref().map(str::trim)
        && !serial.is_empty()
    {
        marks.push(serial.replace(' ', "_").to_ascii_lowercase());
    }
    if let Some(wwn) = &disk.wwn {
        let wwn = vetting_probes::disks::normalize_wwn(wwn);
        if !wwn.is_empty() {
            marks.push(wwn);
        }
    }
    if marks.is_empty() {
        return None;
    }
    let mut links: Vec<PathBuf> = std::fs::read_dir(dev_root.join("disk/by-id"))
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    links.sort();
    links.into_iter().find(|link| {
        let name = link
            .file_name()
            .map(|name| name.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        marks.iter().any(|mark| name.contains(mark.as_str()))
            && std::fs::metadata(link)
                .is_ok_and(|target| target.file_type().is_block_device() && target.rdev() == rdev)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_read_as_sysfs_writes_them() {
        // loop3: 7:3; sdb: 8:16; an NVMe namespace: 259:0; a large minor
        assert_eq!(major_minor(0x703), "7:3");
        assert_eq!(major_minor(0x810), "8:16");
        assert_eq!(major_minor(259 << 8), "259:0");
        assert_eq!(major_minor((7 << 8) | 0x10_0000 | 0x34), "7:308");
    }

    #[test]
    fn serial_wwn_and_size_changes_are_named() {
        let old = Disk {
            name: "sdb".into(),
            serial: Some("S1".into()),
            wwn: Some("naa.5000c500a1b2c3d4".into()),
            size_bytes: 100,
            ..Disk::default()
        };
        let mut same = old.clone();
        same.serial = Some(" s1 ".into());
        same.wwn = Some("0x5000C500A1B2C3D4".into());
        assert!(differences(&old, &same).is_empty());
        let swapped = Disk {
            name: "sdb".into(),
            serial: Some("S9".into()),
            size_bytes: 200,
            ..Disk::default()
        };
        let changes = differences(&old, &swapped).join(", ");
        assert!(changes.contains("serial S1 → S9"), "{changes}");
        assert!(changes.contains("→ none"), "{changes}");
        assert!(changes.contains("size 100 → 200 bytes"), "{changes}");
    }
}
