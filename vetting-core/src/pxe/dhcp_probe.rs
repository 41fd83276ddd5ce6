//! Finds out whether another DHCP server answers on an interface, before
//! full-DHCP mode starts one there.
//!
//! A DHCPDISCOVER is broadcast from a UDP socket bound to the interface
//! (`SO_BINDTODEVICE`, client port 68, broadcast flag set so that servers
//! answer by broadcast) and any DHCPOFFER within the listening time counts.
//! The discover is sent for a random locally administered MAC and for the
//! registered MACs too, so that a server that answers only known hosts is
//! found as well. Nothing is requested, so no lease is taken.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::mac::MacAddress;

const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const MESSAGE_TYPE_OPTION: u8 = 53;
const SERVER_IDENTIFIER_OPTION: u8 = 54;
const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
/// How many registered MACs the probe speaks for at most.
const MAX_PROBED_MACS: usize = 8;

/// A DHCP server that answered the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpServerAnswer {
    /// The server's identifier (option 54), or the packet's source address.
    pub server: Ipv4Addr,
    /// The address it offered.
    pub offered: Ipv4Addr,
}

/// Builds a DHCPDISCOVER for `mac` with transaction id `xid`.
pub fn discover_packet(mac: MacAddress, xid: u32) -> Vec<u8> {
    let mut packet = vec![0u8; 240];
    packet[0] = 1; // BOOTREQUEST
    packet[1] = 1; // Ethernet
    packet[2] = 6; // hardware address length
    packet[4..8].copy_from_slice(&xid.to_be_bytes());
    packet[10] = 0x80; // broadcast flag: answer by broadcast
    packet[28..34].copy_from_slice(&mac.octets());
    packet[236..240].copy_from_slice(&DHCP_MAGIC_COOKIE);
    packet.extend_from_slice(&[MESSAGE_TYPE_OPTION, 1, DHCPDISCOVER]);
    packet.extend_from_slice(&[55, 3, 1, 3, 54]); // parameter request list
    packet.extend_from_slice(&[60, 13]);
    packet.extend_from_slice(b"vetting-probe");
    packet.push(255);
    packet.resize(300, 0); // BOOTP minimum size
    packet
}

/// Reads a DHCPOFFER answering one of `xids`; `None` for anything else.
pub fn parse_offer(packet: &[u8], xids: &[u32], source: Ipv4Addr) -> Option<DhcpServerAnswer> {
    if packet.len() < 240 || packet[0] != 2 || packet[236..240] != DHCP_MAGIC_COOKIE {
        return None;
    }
    let xid = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    if !xids.contains(&xid) {
        return None;
    }
    let offered = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let mut message_type = None;
    let mut server = None;
    let mut options = &packet[240..];
    while let Some((&code, rest)) = options.split_first() {
        match code {
            0 => options = rest,
            255 => break,
            _ => {
                let (&length, rest) = rest.split_first()?;
                let value = rest.get(..usize::from(length))?;
                match (code, value) {
                    (MESSAGE_TYPE_OPTION, [kind]) => message_type = Some(*kind),
                    (SERVER_IDENTIFIER_OPTION, [a, b, c, d]) => {
                        server = Some(Ipv4Addr::new(*a, *b, *c, *d))
                    }
                    _ => {}
                }
                options = &rest[usize::from(length)..];
            }
        }
    }
    (message_type == Some(DHCPOFFER)).then(|| DhcpServerAnswer {
        server: server.unwrap_or(source),
        offered,
    })
}

fn bound_client_socket(interface: &str) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT)).into())?;
    UdpSocket::from_std(socket.into())
}

fn random_local_mac() -> MacAddress {
    let mut octets: [u8; 6] = rand::random();
    octets[0] = (octets[0] & 0xfe) | 0x02; // unicast, locally administered
    MacAddress::new(octets)
}

/// Broadcasts DHCPDISCOVERs on `interface` and returns the first server that
/// offers an address within `listen_for`, or `None` when none answers.
pub async fn find_other_dhcp_server(
    interface: &str,
    registered_macs: &[MacAddress],
    listen_for: Duration,
) -> io::Result<Option<DhcpServerAnswer>> {
    let socket = bound_client_socket(interface)?;
    let mut macs = vec![random_local_mac()];
    macs.extend(registered_macs.iter().take(MAX_PROBED_MACS).copied());
    let xids: Vec<u32> = macs.iter().map(|_| rand::random()).collect();
    let destination = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
    let deadline = tokio::time::Instant::now() + listen_for;
    // Send twice, half the listening time apart, in case the first is lost
    // while the link comes up.
    let resend_at = tokio::time::Instant::now() + listen_for / 2;
    let mut resent = false;
    for (mac, xid) in macs.iter().zip(&xids) {
        socket
            .send_to(&discover_packet(*mac, *xid), destination)
            .await?;
    }
    let mut buffer = vec![0u8; 1500];
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wake_at = if resent {
            deadline
        } else {
            resend_at.min(deadline)
        };
        match tokio::time::timeout_at(wake_at, socket.recv_from(&mut buffer)).await {
            Ok(Ok((length, SocketAddr::V4(source)))) => {
                if let Some(answer) = parse_offer(&buffer[..length], &xids, *source.ip()) {
                    return Ok(Some(answer));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_elapsed) => {
                if !resent {
                    resent = true;
                    for (mac, xid) in macs.iter().zip(&xids) {
                        socket
                            .send_to(&discover_packet(*mac, *xid), destination)
                            .await?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_round_trips_through_the_offer_parser() {
        let mac = MacAddress::new([2, 0, 0, 0, 0, 1]);
        let discover = discover_packet(mac, 0xdead_beef);
        assert_eq!(discover.len(), 300);
        assert_eq!(&discover[28..34], &mac.octets());
        // A discover is not an offer.
        assert_eq!(
            parse_offer(&discover, &[0xdead_beef], Ipv4Addr::LOCALHOST),
            None
        );
        let mut offer = discover.clone();
        offer[0] = 2;
        offer[16..20].copy_from_slice(&[10, 0, 0, 50]);
        offer.truncate(240);
        offer.extend_from_slice(&[
            MESSAGE_TYPE_OPTION,
            1,
            DHCPOFFER,
            SERVER_IDENTIFIER_OPTION,
            4,
            10,
            0,
            0,
            1,
            255,
        ]);
        assert_eq!(
            parse_offer(&offer, &[0xdead_beef], Ipv4Addr::LOCALHOST),
            Some(DhcpServerAnswer {
                server: Ipv4Addr::new(10, 0, 0, 1),
                offered: Ipv4Addr::new(10, 0, 0, 50)
            })
        );
        assert_eq!(parse_offer(&offer, &[1], Ipv4Addr::LOCALHOST), None);
        // A truncated option list is not read past its end.
        offer.truncate(offer.len() - 4);
        assert_eq!(
            parse_offer(&offer, &[0xdead_beef], Ipv4Addr::LOCALHOST),
            None
        );
    }
}
