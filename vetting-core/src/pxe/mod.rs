//! PXE: how a bare server reaches the agent. dnsmasq (supervised) answers
//! registered MACs only, plain PXE ROMs get iPXE over TFTP, and iPXE fetches
//! `/ipxe/{mac}`, whose script this module writes.
//!
//! - [`mac`]: MAC addresses in every usual notation;
//! - [`ipxe`]: the boot and exit-to-disk scripts, the DHCP boot URL;
//! - [`dnsmasq`]: settings, config file, hostsfile, TFTP root, leases;
//! - [`supervisor`]: dnsmasq as a supervised child process;
//! - [`dhcp_probe`]: the check for another DHCP server;
//! - [`process`]: child processes tied to the orchestrator's life.

pub mod dhcp_probe;
pub mod dnsmasq;
pub mod ipxe;
pub mod mac;
pub mod process;
pub mod supervisor;

pub use dnsmasq::{DhcpLease, DhcpMode, HostEntry, PxeSettings, UefiIpxeBinary};
pub use ipxe::{BootParams, Firmware, boot_script, dhcp_boot_url, exit_script};
pub use mac::{MacAddress, MacParseError};
pub use supervisor::{PxeError, PxeSupervisor};
