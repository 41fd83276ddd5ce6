//! dnsmasq's configuration for the vetting LAN: the config file for the two
//! modes (full DHCP, proxy DHCP), the `dhcp-hostsfile` allowlist written
//! from the host registry, the TFTP root holding the iPXE binaries, and the
//! lease file read back.
//!
//! Only registered MACs are answered (`dhcp-ignore=tag:!known`). Plain PXE
//! ROMs get an iPXE binary over TFTP chosen by DHCP option 93 (BIOS
//! `undionly.kpxe`, x86-64 UEFI `snponly.efi` or `ipxe.efi`); iPXE itself
//! (option 175, user class `iPXE`) gets the HTTP URL of `/ipxe/${mac}`.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mac::MacAddress;

/// Where Debian's `ipxe` package puts its binaries.
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";
/// iPXE for BIOS PXE ROMs, using the ROM's UNDI driver.
pub const BIOS_IPXE_BINARY: &str = "undionly.kpxe";

/// Which iPXE binary x86-64 UEFI PXE clients get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UefiIpxeBinary {
    /// `snponly.efi`: drives the NIC through the firmware's own network
    /// stack (SNP). Works with any NIC the firmware can PXE boot from.
    #[default]
    SnpOnly,
    /// `ipxe.efi`: iPXE's own drivers; for firmware whose SNP is broken.
    Full,
}

impl UefiIpxeBinary {
    /// The file name in the ipxe package and the TFTP root.
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::SnpOnly => "snponly.efi",
            Self::Full => "ipxe.efi",
        }
    }
}

/// How dnsmasq serves DHCP on the vetting LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum DhcpMode {
    /// dnsmasq is the DHCP server of an isolated vetting LAN: it hands out
    /// addresses from the range (registered hosts with a fixed address get
    /// that one). Refused when another DHCP server answers on the interface.
    Full {
        /// First address of the dynamic range.
        range_start: Ipv4Addr,
        /// Last address of the dynamic range.
        range_end: Ipv4Addr,
        /// The LAN's netmask.
        netmask: Ipv4Addr,
        /// Lease time in seconds (dnsmasq's minimum is 120).
        #[serde(default = "default_lease_seconds")]
        lease_seconds: u32,
        /// Announce the interface's IPv6 prefix with router advertisements
        /// (`enable-ra`). iPXE waits about 13 s for one after DHCPv4 when
        /// none comes; with this the wait ends at once. The interface needs
        /// an IPv6 address (a ULA such as `fd66::1/64` will do).
        #[serde(default)]
        router_advertisement: bool,
    },
    /// Beside an existing DHCP server that hands out the addresses:
    /// dnsmasq answers PXE and iPXE clients with boot information only
    /// (`dhcp-range=SUBNET,proxy`).
    Proxy {
        /// Any address of the LAN's subnet (usually its network address).
        subnet: Ipv4Addr,
    },
}

fn default_lease_seconds() -> u32 {
    600
}

/// Everything the PXE supervisor needs to run dnsmasq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PxeSettings {
    /// The network interface of the vetting LAN (never a default: DHCP is
    /// only served where the operator says so).
    pub interface: String,
    /// Full or proxy DHCP.
    pub dhcp: DhcpMode,
    /// The URL iPXE clients get; see [`super::ipxe::dhcp_boot_url`].
    pub boot_url: String,
    /// A folder of its own for dnsmasq's config, hostsfile, leases and TFTP
    /// root.
    pub state_dir: PathBuf,
    /// Where the iPXE binaries are taken from.
    #[serde(default = "default_ipxe_dir")]
    pub ipxe_dir: PathBuf,
    /// The iPXE binary UEFI clients get.
    #[serde(default)]
    pub uefi_binary: UefiIpxeBinary,
    /// The dnsmasq program.
    #[serde(default = "default_dnsmasq_program")]
    pub dnsmasq_program: PathBuf,
    /// Log every DHCP exchange in detail (`log-dhcp`).
    #[serde(default)]
    pub log_dhcp: bool,
    /// How long the check for another DHCP server listens for an answer
    /// (more than 3 s: dnsmasq, for one, pings an address that long before
    /// offering it).
    #[serde(default = "default_probe_seconds")]
    pub other_server_probe_seconds: u64,
    /// First pause before restarting a dnsmasq that died, doubled on each
    /// death in a row up to `restart_backoff_max_ms`.
    #[serde(default = "default_restart_backoff_initial_ms")]
    pub restart_backoff_initial_ms: u64,
    /// Longest pause between restarts.
    #[serde(default = "default_restart_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
}

fn default_ipxe_dir() -> PathBuf {
    PathBuf::from(DEBIAN_IPXE_DIR)
}
fn default_dnsmasq_program() -> PathBuf {
    PathBuf::from("dnsmasq")
}
fn default_probe_seconds() -> u64 {
    // dnsmasq pings an address for 3 s before offering it.
    5
}
fn default_restart_backoff_initial_ms() -> u64 {
    1_000
}
fn default_restart_backoff_max_ms() -> u64 {
    30_000
}

impl PxeSettings {
    /// Settings with the defaults for everything but the interface, the
    /// mode, the boot URL and the state folder.
    pub fn new(
        interface: impl Into<String>,
        dhcp: DhcpMode,
        boot_url: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            interface: interface.into(),
            dhcp,
            boot_url: boot_url.into(),
            state_dir: state_dir.into(),
            ipxe_dir: default_ipxe_dir(),
            uefi_binary: UefiIpxeBinary::default(),
            dnsmasq_program: default_dnsmasq_program(),
            log_dhcp: false,
            other_server_probe_seconds: default_probe_seconds(),
            restart_backoff_initial_ms: default_restart_backoff_initial_ms(),
            restart_backoff_max_ms: default_restart_backoff_max_ms(),
        }
    }

    /// The files dnsmasq uses, all under `state_dir`.
    pub fn paths(&self) -> DnsmasqPaths {
        DnsmasqPaths::under(&self.state_dir)
    }

    /// How long the other-DHCP-server check listens.
    pub fn other_server_probe_duration(&self) -> Duration {
        Duration::from_secs(self.other_server_probe_seconds.max(1))
    }

    /// Checks what dnsmasq would otherwise reject late or misread.
    pub fn validate(&self) -> Result<(), String> {
        let interface_ok = !self.interface.is_empty()
            && self.interface.len() <= 15
            && self.interface.chars().all(|character| {
                character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.' | '@')
            });
        if !interface_ok {
            return Err(format!(
                "pxe interface {:?} is not a network interface name",
                self.interface
            ));
        }
        if self.boot_url.is_empty() || self.boot_url.contains([',', '\n', ' ', '"']) {
            return Err(format!(
                "pxe boot_url {:?} must be a URL without commas, spaces or quotes",
                self.boot_url
            ));
        }
        if let DhcpMode::Full {
            range_start,
            range_end,
            lease_seconds,
            ..
        } = &self.dhcp
        {
            if range_start > range_end {
                return Err(format!(
                    "pxe DHCP range {range_start} – {range_end} is backwards"
                ));
            }
            if *lease_seconds < 120 {
                return Err(format!(
                    "pxe lease time {lease_seconds} s is under dnsmasq's minimum of 120 s"
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err("pxe state_dir is empty".to_owned());
        }
        for path in [&self.state_dir, &self.ipxe_dir] {
            if path.to_string_lossy().contains(['\n', ',']) {
                return Err(format!(
                    "pxe path {} must not contain commas or newlines",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// The files dnsmasq uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqPaths {
    /// The generated config file (`--conf-file`).
    pub config_file: PathBuf,
    /// The allowlist (`dhcp-hostsfile`).
    pub hosts_file: PathBuf,
    /// dnsmasq's lease database (`dhcp-leasefile`).
    pub lease_file: PathBuf,
    /// The TFTP root with the iPXE binaries.
    pub tftp_root: PathBuf,
}

impl DnsmasqPaths {
    /// The standard layout under a state folder.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            config_file: state_dir.join("dnsmasq.conf"),
            hosts_file: state_dir.join("dhcp-hosts"),
            lease_file: state_dir.join("dnsmasq.leases"),
            tftp_root: state_dir.join("tftp"),
        }
    }
}

/// One registered host in the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The MAC that PXE boots.
    pub mac: MacAddress,
    /// A fixed address for this host (full DHCP mode only).
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// The host's name, handed out as its DHCP host name (cleaned up to a
    /// valid host name; dropped when nothing valid is left).
    #[serde(default)]
    pub name: Option<String>,
}

impl HostEntry {
    /// An entry with only a MAC.
    pub fn new(mac: MacAddress) -> Self {
        Self {
            mac,
            ipv4: None,
            name: None,
        }
    }
}

/// A host name dnsmasq accepts: letters, digits and hyphens, at most 63,
/// not starting or ending with a hyphen. Other characters become hyphens.
fn clean_host_name(name: &str) -> Option<String> {
    let replaced: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed: String = replaced.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// The text of the `dhcp-hostsfile`: one `MAC[,IP][,NAME]` line per host,
/// sorted, duplicates (same MAC) dropped after the first. Fixed addresses
/// are left out in proxy mode, where the other server assigns addresses.
pub fn hosts_file_contents(entries: &[HostEntry], mode: &DhcpMode) -> String {
    let mut sorted: Vec<&HostEntry> = entries.iter().collect();
    sorted.sort_by_key(|entry| entry.mac);
    sorted.dedup_by_key(|entry| entry.mac);
    let mut text =
        String::from("# written by vetting from the host registry; rewritten on every change\n");
    for entry in sorted {
        let mut line = entry.mac.to_string();
        if let (Some(address), DhcpMode::Full { .. }) = (entry.ipv4, mode) {
            let _ = write!(line, ",{address}");
        }
        if let Some(name) = entry.name.as_deref().and_then(clean_host_name) {
            let _ = write!(line, ",{name}");
        }
        line.push('\n');
        text.push_str(&line);
    }
    text
}

/// Writes a file so that a reader sees either the old or the new contents,
/// never a half-written one: a temporary file in the same folder, synced,
/// then renamed over the target.
pub async fn write_file_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let folder = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent folder"))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temporary = folder.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = async {
        let mut file = tokio::fs::File::create(&temporary).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, contents).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&temporary, path).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    result
}

/// Writes the allowlist atomically.
pub async fn write_hosts_file(
    path: &Path,
    entries: &[HostEntry],
    mode: &DhcpMode,
) -> io::Result<()> {
    write_file_atomically(path, hosts_file_contents(entries, mode).as_bytes()).await
}

/// Copies the iPXE binaries that DHCP names into the TFTP root (copies,
/// not links: dnsmasq serves only what lies inside its root).
pub async fn prepare_tftp_root(ipxe_dir: &Path, tftp_root: &Path) -> io::Result<()> {
    tokio::fs::create_dir_all(tftp_root).await?;
    for file_name in [
        BIOS_IPXE_BINARY,
        UefiIpxeBinary::SnpOnly.file_name(),
        UefiIpxeBinary::Full.file_name(),
    ] {
        let source = ipxe_dir.join(file_name);
        let contents = tokio::fs::read(&source).await.map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", source.display()))
        })?;
        write_file_atomically(&tftp_root.join(file_name), &contents).await?;
    }
    Ok(())
}

/// The dnsmasq config file for these settings.
///
/// DNS is off (`port=0`); dnsmasq reads no system file (`no-hosts`,
/// `no-resolv`, `conf-file` only this one) and keeps running as root (user and group),
/// because a change of user would clear the parent-death signal that ties
/// it to the orchestrator.
pub fn render_config(settings: &PxeSettings) -> String {
    let paths = settings.paths();
    let interface = &settings.interface;
    let uefi_binary = settings.uefi_binary.file_name();
    let boot_url = &settings.boot_url;
    let mut config = String::new();
    let _ = writeln!(config, "# written by vetting; changes are lost on restart");
    for line in [
        "port=0".to_owned(),
        "no-hosts".to_owned(),
        "no-resolv".to_owned(),
        "user=root".to_owned(),
        "group=root".to_owned(),
        format!("interface={interface}"),
        "bind-interfaces".to_owned(),
        "except-interface=lo".to_owned(),
        format!("dhcp-hostsfile={}", paths.hosts_file.display()),
        format!("dhcp-leasefile={}", paths.lease_file.display()),
        "# unknown MACs get no answer at all".to_owned(),
        "dhcp-ignore=tag:!known".to_owned(),
        "dhcp-match=set:ipxe,175".to_owned(),
        "dhcp-userclass=set:ipxe,iPXE".to_owned(),
        "dhcp-match=set:efi64,option:client-arch,7".to_owned(),
        "dhcp-match=set:efi64,option:client-arch,9".to_owned(),
        "enable-tftp".to_owned(),
        format!("tftp-root={}", paths.tftp_root.display()),
        "tftp-secure".to_owned(),
    ] {
        let _ = writeln!(config, "{line}");
    }
    match &settings.dhcp {
        DhcpMode::Full {
            range_start,
            range_end,
            netmask,
            lease_seconds,
            router_advertisement,
        } => {
            let _ = writeln!(
                config,
                "dhcp-range={range_start},{range_end},{netmask},{lease_seconds}s"
            );
            let _ = writeln!(
                config,
                "# plain PXE ROMs chainload iPXE over TFTP; iPXE fetches its script over HTTP"
            );
            let _ = writeln!(config, "dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_IPXE_BINARY}");
            let _ = writeln!(config, "dhcp-boot=tag:!ipxe,tag:efi64,{uefi_binary}");
            let _ = writeln!(config, "dhcp-boot=tag:ipxe,{boot_url}");
            if *router_advertisement {
                let _ = writeln!(config, "enable-ra");
                let _ = writeln!(config, "dhcp-range=::,constructor:{interface},ra-only");
            }
        }
        DhcpMode::Proxy { subnet } => {
            let _ = writeln!(config, "dhcp-range={subnet},proxy");
            let _ = writeln!(config, "# PXE ROMs: boot the first menu entry at once");
            let _ = writeln!(config, "pxe-prompt=\"vetting\",0");
            let _ = writeln!(
                config,
                "pxe-service=tag:!ipxe,x86PC,\"vetting: chainload iPXE\",{BIOS_IPXE_BINARY}"
            );
            let _ = writeln!(
                config,
                "pxe-service=tag:!ipxe,X86-64_EFI,\"vetting: chainload iPXE\",{uefi_binary}"
            );
            let _ = writeln!(
                config,
                "pxe-service=tag:!ipxe,BC_EFI,\"vetting: chainload iPXE\",{uefi_binary}"
            );
            // iPXE in proxy mode takes its script URL from the PXE menu
            // (boot server discovery), not from a plain boot file name.
            let _ = writeln!(config, "# iPXE: the script URL");
            for architecture in ["x86PC", "X86-64_EFI", "BC_EFI"] {
                let _ = writeln!(
                    config,
                    "pxe-service=tag:ipxe,{architecture},\"vetting: boot script\",{boot_url}"
                );
            }
        }
    }
    if settings.log_dhcp {
        let _ = writeln!(config, "log-dhcp");
    }
    config
}

/// One lease from dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    /// When the lease ends, seconds since the Unix epoch (0: never).
    pub expires_unix: u64,
    /// The client's MAC.
    pub mac: MacAddress,
    /// The leased address.
    pub address: Ipv4Addr,
    /// The client's host name, when it sent or got one.
    pub host_name: Option<String>,
}

/// Parses dnsmasq's lease file (`EXPIRY MAC IP NAME CLIENT-ID` per line);
/// lines that are not IPv4 Ethernet leases (DHCPv6 `duid` lines and the
/// like) are skipped.
pub fn parse_leases(text: &str) -> Vec<DhcpLease> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let expires_unix = fields.next()?.parse().ok()?;
            let mac = fields.next()?.parse().ok()?;
            let address = fields.next()?.parse().ok()?;
            let host_name = fields.next().filter(|name| *name != "*").map(str::to_owned);
            Some(DhcpLease {
                expires_unix,
                mac,
                address,
                host_name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> MacAddress {
        text.parse().expect("mac")
    }

    fn full_mode() -> DhcpMode {
        DhcpMode::Full {
            range_start: Ipv4Addr::new(10, 66, 0, 100),
            range_end: Ipv4Addr::new(10, 66, 0, 150),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            lease_seconds: 600,
            router_advertisement: true,
        }
    }

    #[test]
    fn hosts_file_lists_each_mac_once_with_address_and_clean_name() {
        let entries = vec![
            HostEntry {
                mac: mac("52:54:00:00:00:02"),
                ipv4: None,
                name: Some("Rack 4 / node_2".to_owned()),
            },
            HostEntry {
                mac: mac("52:54:00:00:00:01"),
                ipv4: Some(Ipv4Addr::new(10, 66, 0, 11)),
                name: Some("vm1".to_owned()),
            },
            HostEntry::new(mac("52:54:00:00:00:01")),
            HostEntry {
                mac: mac("52:54:00:00:00:03"),
                ipv4: None,
                name: Some("///".to_owned()),
            },
        ];
        let text = hosts_file_contents(&entries, &full_mode());
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "52:54:00:00:00:01,10.66.0.11,vm1",
                "52:54:00:00:00:02,rack-4---node-2",
                "52:54:00:00:00:03"
            ]
        );
        let proxy = hosts_file_contents(
            &entries,
            &DhcpMode::Proxy {
                subnet: Ipv4Addr::new(10, 66, 0, 0),
            },
        );
        assert!(proxy.contains("52:54:00:00:00:01,vm1\n"), "{proxy}");
    }

    #[test]
    fn full_mode_config_serves_registered_macs_by_architecture() {
        let settings = PxeSettings::new(
            "br0",
            full_mode(),
            "http://10.66.0.1:8080/ipxe/${mac}?platform=${platform}",
            "/var/lib/vetting/pxe",
        );
        let config = render_config(&settings);
        for expected in [
            "port=0\n",
            "interface=br0\n",
            "bind-interfaces\n",
            "dhcp-ignore=tag:!known\n",
            "dhcp-hostsfile=/var/lib/vetting/pxe/dhcp-hosts\n",
            "dhcp-range=10.66.0.100,10.66.0.150,255.255.255.0,600s\n",
            "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe\n",
            "dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi\n",
            "dhcp-boot=tag:ipxe,http://10.66.0.1:8080/ipxe/${mac}?platform=${platform}\n",
            "enable-ra\n",
            "dhcp-range=::,constructor:br0,ra-only\n",
            "tftp-root=/var/lib/vetting/pxe/tftp\n",
        ] {
            assert!(
                config.contains(expected),
                "missing {expected:?} in\n{config}"
            );
        }
        assert!(!config.contains("proxy"));
    }

    #[test]
    fn proxy_mode_config_answers_pxe_only() {
        let mut settings = PxeSettings::new(
            "eth1",
            DhcpMode::Proxy {
                subnet: Ipv4Addr::new(192, 0, 2, 0),
            },
            "http://192.0.2.5:8080/ipxe/${mac}?platform=${platform}",
            "/tmp/pxe",
        );
        settings.uefi_binary = UefiIpxeBinary::Full;
        let config = render_config(&settings);
        assert!(config.contains("dhcp-range=192.0.2.0,proxy\n"), "{config}");
        assert!(
            config.contains(
                "pxe-service=tag:!ipxe,x86PC,\"vetting: chainload iPXE\",undionly.kpxe\n"
            )
        );
        assert!(
            config.contains(
                "pxe-service=tag:!ipxe,X86-64_EFI,\"vetting: chainload iPXE\",ipxe.efi\n"
            )
        );
        assert!(config.contains(
            "pxe-service=tag:ipxe,x86PC,\"vetting: boot script\",http://192.0.2.5:8080/ipxe/${mac}?platform=${platform}\n"
        ));
        assert!(config.contains("dhcp-ignore=tag:!known\n"));
        assert!(!config.contains("enable-ra"));
    }

    #[test]
    fn settings_validation_names_the_problem() {
        let mut settings = PxeSettings::new("br0", full_mode(), "http://x/ipxe/${mac}", "/tmp/p");
        assert!(settings.validate().is_ok());
        settings.interface = "br0; rm".to_owned();
        assert!(settings.validate().unwrap_err().contains("br0; rm"));
        settings.interface = "br0".to_owned();
        settings.boot_url = "http://a,b".to_owned();
        assert!(settings.validate().unwrap_err().contains("boot_url"));
    }

    #[test]
    fn lease_file_is_parsed() {
        let text = "1700000600 52:54:00:00:00:01 10.66.0.11 vm1 01:52:54:00:00:00:01\n\
                    1700000700 52:54:00:00:00:02 10.66.0.101 * *\n\
                    duid 00:01:00:01:2c:11:22:33\n";
        let leases = parse_leases(text);
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].address, Ipv4Addr::new(10, 66, 0, 11));
        assert_eq!(leases[0].host_name.as_deref(), Some("vm1"));
        assert_eq!(leases[1].host_name, None);
    }
}
