//! Wake-on-LAN: the magic packet (6 × 0xFF, then the MAC 16 times, then the
//! 6-byte SecureOn password when one is set), sent several times by UDP to a
//! broadcast address.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::UdpSocket;

use super::{PowerDriver, PowerError, PowerLog, PowerLogLevel, PowerOutcome};
use crate::pxe::mac::MacAddress;

/// A SecureOn password: six bytes, written like a MAC (`aa:bb:cc:dd:ee:ff`),
/// as `ether-wake -p` takes it. Kept out of `Debug` output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecureOnPassword([u8; 6]);

impl SecureOnPassword {
    /// A password from its six bytes.
    pub const fn new(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// Its six bytes.
    pub const fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Debug for SecureOnPassword {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecureOnPassword(<redacted>)")
    }
}

impl Serialize for SecureOnPassword {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&MacAddress::new(self.0))
    }
}

impl<'de> Deserialize<'de> for SecureOnPassword {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<MacAddress>()
            .map(|bytes| Self(bytes.octets()))
            .map_err(|_| {
                serde::de::Error::custom(
                    "a SecureOn password is six hex bytes, e.g. 01:23:45:67:89:ab",
                )
            })
    }
}

/// Settings of the Wake-on-LAN driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WolSettings {
    /// The MAC of the network card to wake.
    pub mac: MacAddress,
    /// Where the packet goes: the vetting LAN's broadcast address (a
    /// directed broadcast such as `10.66.0.255` picks the LAN by route).
    #[serde(default = "default_broadcast")]
    pub broadcast: Ipv4Addr,
    /// The UDP port (9, discard, by convention; some cards want 7 or 0).
    #[serde(default = "default_port")]
    pub port: u16,
    /// How many packets to send.
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// The pause between packets, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// The card's SecureOn password, when it has one.
    #[serde(default)]
    pub secure_on: Option<SecureOnPassword>,
    /// Send through this interface only (`SO_BINDTODEVICE`), for an
    /// orchestrator with several networks.
    #[serde(default)]
    pub interface: Option<String>,
}

fn default_broadcast() -> Ipv4Addr {
    Ipv4Addr::BROADCAST
}
fn default_port() -> u16 {
    9
}
fn default_repeat() -> u32 {
    3
}
fn default_interval_ms() -> u64 {
    100
}

impl WolSettings {
    /// Settings with the defaults for a MAC.
    pub fn new(mac: MacAddress) -> Self {
        Self {
            mac,
            broadcast: default_broadcast(),
            port: default_port(),
            repeat: default_repeat(),
            interval_ms: default_interval_ms(),
            secure_on: None,
            interface: None,
        }
    }
}

/// The magic packet for `mac`, with the SecureOn password appended when given.
pub fn magic_packet(mac: MacAddress, secure_on: Option<&SecureOnPassword>) -> Vec<u8> {
    let mut packet = Vec::with_capacity(6 + 16 * 6 + 6);
    packet.extend_from_slice(&[0xff; 6]);
    for _ in 0..16 {
        packet.extend_from_slice(&mac.octets());
    }
    if let Some(password) = secure_on {
        packet.extend_from_slice(&password.0);
    }
    packet
}

/// Wakes a host with magic packets.
#[derive(Debug, Clone)]
pub struct WolDriver {
    settings: WolSettings,
}

impl WolDriver {
    /// The driver for these settings.
    pub fn new(settings: WolSettings) -> Result<Self, PowerError> {
        if settings.repeat == 0 {
            return Err(PowerError::InvalidSettings(
                "wol repeat must be at least 1".to_owned(),
            ));
        }
        Ok(Self { settings })
    }

    async fn send_all(
        &self,
        destination: SocketAddrV4,
        log: &dyn PowerLog,
    ) -> std::io::Result<u32> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
        socket.set_broadcast(true)?;
        if let Some(interface) = &self.settings.interface {
            socket.bind_device(Some(interface.as_bytes()))?;
        }
        let packet = magic_packet(self.settings.mac, self.settings.secure_on.as_ref());
        for attempt in 1..=self.settings.repeat {
            socket.send_to(&packet, destination).await?;
            if attempt < self.settings.repeat {
                tokio::time::sleep(Duration::from_millis(self.settings.interval_ms)).await;
            }
        }
        log.record(
            PowerLogLevel::Info,
            &format!(
                "sent {} magic packet(s) for {} to {destination}{}",
                self.settings.repeat,
                self.settings.mac,
                if self.settings.secure_on.is_some() {
                    " with its SecureOn password"
                } else {
                    ""
                }
            ),
        );
        Ok(self.settings.repeat)
    }
}

#[async_trait::async_trait]
impl PowerDriver for WolDriver {
    fn name(&self) -> &str {
        "wol"
    }

    async fn power_on_for_pxe(&self, log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        let destination = SocketAddrV4::new(self.settings.broadcast, self.settings.port);
        log.record(
            PowerLogLevel::Info,
            &format!(
                "Wake-on-LAN for {} to {destination}{}; the host must be set to boot from the network",
                self.settings.mac,
                self.settings
                    .interface
                    .as_deref()
                    .map(|interface| format!(" through {interface}"))
                    .unwrap_or_default()
            ),
        );
        let packets =
            self.send_all(destination, log)
                .await
                .map_err(|source| PowerError::WakeOnLan {
                    destination,
                    source,
                })?;
        Ok(PowerOutcome::WakeOnLanSent {
            packets,
            destination,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_packet_layout() {
        let mac = MacAddress::new([0x52, 0x54, 0, 1, 2, 3]);
        let packet = magic_packet(mac, None);
        assert_eq!(packet.len(), 102);
        assert_eq!(&packet[..6], &[0xff; 6]);
        for copy in 0..16 {
            assert_eq!(&packet[6 + copy * 6..12 + copy * 6], &mac.octets());
        }
        let with_password = magic_packet(mac, Some(&SecureOnPassword::new([1, 2, 3, 4, 5, 6])));
        assert_eq!(with_password.len(), 108);
        assert_eq!(&with_password[102..], &[1, 2, 3, 4, 5, 6]);
    }
}
