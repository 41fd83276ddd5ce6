//! MAC addresses as hosts are registered and as iPXE and DHCP name them.
//!
//! Parsing accepts the usual notations (`aa:bb:cc:dd:ee:ff`,
//! `aa-bb-cc-dd-ee-ff`, Cisco's `aabb.ccdd.eeff`, bare `aabbccddeeff`, any
//! case) and the URL-encoded colons that iPXE sends in `/ipxe/${mac}`
//! (`52%3A54%3A00%3A66%3A00%3A01`). The canonical form is lower-case with
//! colons, which is also what dnsmasq's `dhcp-hostsfile` wants.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

/// The input was not a MAC address in any notation we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: {input:?} (expected e.g. 52:54:00:12:34:56)")]
pub struct MacParseError {
    /// The offending input, cut to a sane length.
    pub input: String,
}

/// The longest input quoted back in an error, so that a hostile request
/// cannot make the log line huge.
const MAX_QUOTED_INPUT: usize = 64;

impl MacAddress {
    /// A MAC address from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is a group (multicast or broadcast) address, which no
    /// network card has as its own.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The hyphenated lower-case form (`52-54-00-12-34-56`), as iPXE's
    /// `${mac:hexhyp}` prints it.
    pub fn to_hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }

    fn parse_error(input: &str) -> MacParseError {
        let mut quoted: String = input.chars().take(MAX_QUOTED_INPUT).collect();
        if input.chars().count() > MAX_QUOTED_INPUT {
            quoted.push('…');
        }
        MacParseError { input: quoted }
    }
}

/// Replaces the percent-escapes a MAC can legitimately carry in a URL path
/// (`%3A` for `:`, `%2D` for `-`, `%2E` for `.`). Any other escape, or a
/// malformed one, makes the whole input invalid.
fn decode_percent_escapes(input: &str) -> Option<String> {
    if !input.contains('%') {
        return Some(input.to_owned());
    }
    let mut decoded = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(position) = rest.find('%') {
        decoded.push_str(&rest[..position]);
        let escape = rest.get(position + 1..position + 3)?;
        let separator = match escape.to_ascii_uppercase().as_str() {
            "3A" => ':',
            "2D" => '-',
            "2E" => '.',
            _ => return None,
        };
        decoded.push(separator);
        rest = &rest[position + 3..];
    }
    decoded.push_str(rest);
    Some(decoded)
}

fn hex_digits_to_octets(hex_digits: &str) -> Option<[u8; 6]> {
    if hex_digits.len() != 12 || !hex_digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let mut octets = [0u8; 6];
    for (index, octet) in octets.iter_mut().enumerate() {
        *octet = u8::from_str_radix(&hex_digits[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(octets)
}

fn parse_octets(text: &str) -> Option<[u8; 6]> {
    // aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff: six groups of two digits,
    // one separator kind throughout.
    for separator in [':', '-'] {
        if text.contains(separator) {
            let groups: Vec<&str> = text.split(separator).collect();
            if groups.len() != 6 || groups.iter().any(|group| group.len() != 2) {
                return None;
            }
            return hex_digits_to_octets(&groups.concat());
        }
    }
    // aabb.ccdd.eeff: three groups of four digits.
    if text.contains('.') {
        let groups: Vec<&str> = text.split('.').collect();
        if groups.len() != 3 || groups.iter().any(|group| group.len() != 4) {
            return None;
        }
        return hex_digits_to_octets(&groups.concat());
    }
    hex_digits_to_octets(text)
}

impl FromStr for MacAddress {
    type Err = MacParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let decoded =
            decode_percent_escapes(input.trim()).ok_or_else(|| Self::parse_error(input))?;
        parse_octets(&decoded)
            .map(MacAddress)
            .ok_or_else(|| Self::parse_error(input))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "MacAddress({self})")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_notations_give_the_same_address() {
        let expected = MacAddress::new([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for notation in [
            "52:54:00:ab:cd:ef",
            "52:54:00:AB:CD:EF",
            "52-54-00-ab-cd-ef",
            "5254.00ab.cdef",
            "525400abcdef",
            "525400ABCDEF",
            "52%3A54%3A00%3Aab%3Acd%3Aef",
            "52%3a54%3a00%3aab%3acd%3aef",
            " 52:54:00:ab:cd:ef\n",
        ] {
            assert_eq!(notation.parse::<MacAddress>(), Ok(expected), "{notation}");
        }
        assert_eq!(expected.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(expected.to_hyphenated(), "52-54-00-ab-cd-ef");
    }

    #[test]
    fn malformed_input_is_refused_and_named() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00-ab:cd:ef",
            "5:254:00:ab:cd:ef",
            "52:54:00:ab:cd:eg",
            "52%3Z54%3A00%3Aab%3Acd%3Aef",
            "52%2F54",
            "5254.00ab.cde",
            "525400abcdef0",
            "../../etc/passwd",
        ] {
            let error = bad.parse::<MacAddress>().expect_err(bad);
            assert_eq!(error.input, bad);
            assert!(error.to_string().contains("not a MAC address"));
        }
        let long = "x".repeat(1000);
        let error = long.parse::<MacAddress>().expect_err("long");
        assert!(error.input.chars().count() <= MAX_QUOTED_INPUT + 1);
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let mac: MacAddress = serde_json::from_str("\"52-54-00-AB-CD-EF\"").expect("parse");
        assert_eq!(
            serde_json::to_string(&mac).expect("json"),
            "\"52:54:00:ab:cd:ef\""
        );
        assert!(serde_json::from_str::<MacAddress>("\"nope\"").is_err());
    }
}
