//! iPXE scripts: the one that boots the live image with a run's parameters,
//! and the one that leaves the network boot for the local disk.
//!
//! iPXE reaches these through the URL that DHCP hands it
//! ([`dhcp_boot_url`]): `http://HOST:PORT/ipxe/${mac}?platform=${platform}`.
//! iPXE expands `${mac}` (URL-encoding its colons) and `${platform}`
//! (`pcbios` or `efi`) itself, so the HTTP handler learns both the MAC and
//! the firmware from the request.
//!
//! Kernel command line parameters read by the agent (documented once here):
//!
//! | parameter | value |
//! |---|---|
//! | `vetting.url=` | the orchestrator's base URL, e.g. `http://10.66.0.1:8080` |
//! | `vetting.run=` | the run id |
//! | `vetting.token=` | the run's bearer token |

use std::fmt;

/// The firmware a host booted with; it decides how to leave the network
/// boot for the local disk and which iPXE binary a plain PXE ROM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// Legacy BIOS (iPXE platform `pcbios`, DHCP client architecture 0).
    Bios,
    /// UEFI (iPXE platform `efi`, DHCP client architecture 6, 7 or 9 on x86).
    Uefi,
}

impl Firmware {
    /// The firmware from iPXE's `${platform}` setting (`pcbios`, `efi`);
    /// `None` for anything else (a missing or unknown value).
    pub fn from_ipxe_platform(platform: &str) -> Option<Self> {
        match platform.trim().to_ascii_lowercase().as_str() {
            "pcbios" => Some(Self::Bios),
            "efi" => Some(Self::Uefi),
            _ => None,
        }
    }

    /// The firmware from DHCP option 93 (client system architecture,
    /// RFC 4578 and the IANA registry): 0 is BIOS, 6/7/9 are x86 UEFI,
    /// 10/11 are ARM UEFI. `None` for the rest.
    pub fn from_dhcp_client_architecture(architecture: u16) -> Option<Self> {
        match architecture {
            0 => Some(Self::Bios),
            6 | 7 | 9 | 10 | 11 => Some(Self::Uefi),
            _ => None,
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        })
    }
}

/// The path part of the URL that iPXE requests, with the iPXE settings it
/// expands itself.
pub const IPXE_REQUEST_PATH_TEMPLATE: &str = "/ipxe/${mac}?platform=${platform}";

/// The URL DHCP hands to iPXE clients: `{orchestrator_base_url}/ipxe/${mac}?platform=${platform}`.
///
/// `orchestrator_base_url` is how the hosts reach the orchestrator's HTTP
/// listener on the vetting LAN, e.g. `http://10.66.0.1:8080` (a trailing
/// slash is dropped).
pub fn dhcp_boot_url(orchestrator_base_url: &str) -> String {
    format!(
        "{}{IPXE_REQUEST_PATH_TEMPLATE}",
        orchestrator_base_url.trim_end_matches('/')
    )
}

/// Everything the boot script needs for one run.
#[derive(Clone)]
pub struct BootParams<'a> {
    /// Where iPXE fetches the live image's kernel.
    pub kernel_url: &'a str,
    /// Where iPXE fetches the live image's initrd.
    pub initrd_url: &'a str,
    /// The orchestrator's base URL as the agent reaches it (`vetting.url=`).
    pub orchestrator_url: &'a str,
    /// The run id (`vetting.run=`).
    pub run_id: &'a str,
    /// The run's bearer token (`vetting.token=`).
    pub token: &'a str,
    /// More kernel parameters, each one word (e.g. `quiet`, `vetting.debug=1`).
    pub extra_cmdline: &'a [String],
    /// How often each download is tried before the script gives up.
    pub download_attempts: u32,
}

impl fmt::Debug for BootParams<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BootParams")
            .field("kernel_url", &self.kernel_url)
            .field("initrd_url", &self.initrd_url)
            .field("orchestrator_url", &self.orchestrator_url)
            .field("run_id", &self.run_id)
            .field("token", &"<redacted>")
            .field("extra_cmdline", &self.extra_cmdline)
            .field("download_attempts", &self.download_attempts)
            .finish()
    }
}

/// The default number of tries per download.
pub const DEFAULT_DOWNLOAD_ATTEMPTS: u32 = 5;

/// A value would break the iPXE script or the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} cannot go into an iPXE script: {reason}")]
pub struct ScriptError {
    /// Which boot parameter.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks that a value is a single word that iPXE passes through unchanged:
/// no whitespace or control characters (they split words and lines), no `$`
/// (iPXE expands `${...}`), no quotes or backslashes, not empty.
fn check_script_word(field: &'static str, value: &str) -> Result<(), ScriptError> {
    if value.is_empty() {
        return Err(ScriptError {
            field,
            reason: "it is empty",
        });
    }
    if value.len() > 1024 {
        return Err(ScriptError {
            field,
            reason: "it is longer than 1024 bytes",
        });
    }
    if value.chars().any(|character| {
        !character.is_ascii_graphic() || matches!(character, '$' | '"' | '\'' | '\\' | '`')
    }) {
        return Err(ScriptError {
            field,
            reason: "it must be printable ASCII without spaces, quotes, backslashes or '$'",
        });
    }
    Ok(())
}

/// The kernel command line the boot script passes, without the initrd name.
pub fn kernel_cmdline(params: &BootParams<'_>) -> Result<String, ScriptError> {
    check_script_word("orchestrator_url", params.orchestrator_url)?;
    check_script_word("run_id", params.run_id)?;
    check_script_word("token", params.token)?;
    let mut words = vec![
        format!("vetting.url={}", params.orchestrator_url),
        format!("vetting.run={}", params.run_id),
        format!("vetting.token={}", params.token),
        "console=tty0".to_owned(),
        "console=ttyS0,115200n8".to_owned(),
    ];
    for extra in params.extra_cmdline {
        check_script_word("extra_cmdline", extra)?;
        words.push(extra.clone());
    }
    Ok(words.join(" "))
}

/// The iPXE script that boots the live image for a run.
///
/// Each download is retried up to `download_attempts` times with a pause;
/// after that the script says why and reboots, so the host comes back
/// through DHCP and asks `/ipxe/{mac}` again (by then the orchestrator may
/// answer with the exit script).
pub fn boot_script(params: &BootParams<'_>) -> Result<String, ScriptError> {
    check_script_word("kernel_url", params.kernel_url)?;
    check_script_word("initrd_url", params.initrd_url)?;
    let cmdline = kernel_cmdline(params)?;
    let attempts = params.download_attempts.max(1);
    let run_id = params.run_id;
    let kernel_url = params.kernel_url;
    let initrd_url = params.initrd_url;
    Ok(format!(
        "#!ipxe
# vetting: boot the live image for run {run_id}
echo vetting: booting the live image for run {run_id}
set vetting_attempt:int32 0
:vetting_kernel
imgfree
kernel --name vmlinuz {kernel_url} initrd=initrd {cmdline} && goto vetting_initrd ||
inc vetting_attempt
iseq ${{vetting_attempt}} {attempts} && goto vetting_failed ||
echo vetting: kernel download failed (attempt ${{vetting_attempt}} of {attempts}), retrying
sleep 3
goto vetting_kernel
:vetting_initrd
set vetting_attempt:int32 0
:vetting_initrd_retry
initrd --name initrd {initrd_url} && goto vetting_boot ||
inc vetting_attempt
iseq ${{vetting_attempt}} {attempts} && goto vetting_failed ||
echo vetting: initrd download failed (attempt ${{vetting_attempt}} of {attempts}), retrying
sleep 3
goto vetting_initrd_retry
:vetting_boot
boot ||
:vetting_failed
echo vetting: could not download or boot the live image after {attempts} attempts; rebooting in 30 s
sleep 30
reboot
"
    ))
}

/// The iPXE script that leaves the network boot and boots the local disk,
/// fitted to the firmware: BIOS boots the first disk through INT 13h
/// (`sanboot --no-describe --drive 0x80`, falling back to `exit`); UEFI
/// returns to the firmware's boot manager with an error (`exit 1`), so that
/// it goes on with the next boot entry: a boot entry that returns success
/// sends EDK2-based firmware (OVMF among them) to its setup menu instead.
pub fn exit_script(firmware: Firmware) -> String {
    let action = match firmware {
        Firmware::Bios => "sanboot --no-describe --drive 0x80 || exit",
        Firmware::Uefi => "exit 1",
    };
    format!(
        "#!ipxe
# vetting: nothing to boot from the network for this host
echo vetting: no run is waiting to boot on this host; booting from the local disk
{action}
"
    )
}

/// The exit script for a request that did not say its firmware: iPXE picks
/// the right way itself from `${platform}`.
pub fn exit_script_any_firmware() -> String {
    "#!ipxe
# vetting: nothing to boot from the network for this host
echo vetting: no run is waiting to boot on this host; booting from the local disk
iseq ${platform} efi && exit 1 ||
sanboot --no-describe --drive 0x80 || exit
"
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_and_client_architecture_map_to_firmware() {
        assert_eq!(Firmware::from_ipxe_platform("pcbios"), Some(Firmware::Bios));
        assert_eq!(Firmware::from_ipxe_platform("efi"), Some(Firmware::Uefi));
        assert_eq!(Firmware::from_ipxe_platform("${platform}"), None);
        assert_eq!(
            Firmware::from_dhcp_client_architecture(0),
            Some(Firmware::Bios)
        );
        assert_eq!(
            Firmware::from_dhcp_client_architecture(7),
            Some(Firmware::Uefi)
        );
        assert_eq!(
            Firmware::from_dhcp_client_architecture(9),
            Some(Firmware::Uefi)
        );
        assert_eq!(Firmware::from_dhcp_client_architecture(16), None);
    }

    #[test]
    fn boot_url_carries_mac_and_platform() {
        assert_eq!(
            dhcp_boot_url("http://10.66.0.1:8080/"),
            "http://10.66.0.1:8080/ipxe/${mac}?platform=${platform}"
        );
    }
}
