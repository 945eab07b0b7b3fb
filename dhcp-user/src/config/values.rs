//! Values the configuration writes as text and the server needs as bytes:
//! prefixes, hex, option payloads. One parser each, run as the
//! configuration is read (`checked`, [`DomainList`]): what reads a parsed
//! configuration finds the bytes, never the text to parse again.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
};

use serde::Deserialize;

use super::OptionValue;

/// An IPv4 prefix "198.18.0.0/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    pub fn network(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }
    pub fn broadcast(&self) -> u32 {
        self.network() | !self.mask()
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length 0-32"))?;
        Ok(Ipv4Net { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses "aa:bb:cc", "aa-bb-cc" or "aabbcc" into bytes
/// ([`dhcp_common::hex`]).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    use dhcp_common::hex::{decode, HexError, SEPARATORS};
    decode(s, SEPARATORS).map_err(|e| match e {
        HexError::NotHex => format!("{s:?} is not hex"),
        HexError::OddOrEmpty => format!("{s:?} is not an even number of hex digits"),
    })
}

/// Encodes a configured option's value (its payload, without code/length).
pub fn encode_option_value(v: &OptionValue) -> Result<Vec<u8>, String> {
    Ok(match v {
        OptionValue::String(s) => s.as_bytes().to_vec(),
        OptionValue::Ip(ip) => ip.octets().to_vec(),
        OptionValue::Ips(ips) => ips.iter().flat_map(|i| i.octets()).collect(),
        OptionValue::U8(n) => vec![*n],
        OptionValue::U16(n) => n.to_be_bytes().to_vec(),
        OptionValue::U32(n) => n.to_be_bytes().to_vec(),
        OptionValue::Bool(b) => vec![u8::from(*b)],
        OptionValue::Hex(h) => parse_hex(h)?,
    })
}

/// RFC 1035 labels of a domain list (option 119, uncompressed).
pub fn encode_domain_list(names: &[String]) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    for n in names {
        let n = n.strip_suffix('.').unwrap_or(n);
        if n.is_empty() {
            return Err("domain_search has an empty name".into());
        }
        for label in n.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("domain_search {n:?}: labels must be 1-63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("domain_search {n:?}: not a domain name"));
            }
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
    }
    Ok(v)
}

/// `server.metrics_address`: where Prometheus metrics are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddress {
    /// "off"
    Off,
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for MetricsAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(MetricsAddress::Off);
        }
        s.parse().map(MetricsAddress::At).map_err(|_| {
            serde::de::Error::custom(format!(
                "metrics_address {s:?} is not an address:port (or \"off\")"
            ))
        })
    }
}

/// `domain_search`: names as written, with their option 119 encoding
/// (refused as it is read when a name does not encode).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct DomainList {
    names: Vec<String>,
    encoded: Vec<u8>,
}

impl DomainList {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The option's payload.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

impl TryFrom<Vec<String>> for DomainList {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<DomainList, String> {
        Ok(DomainList {
            encoded: encode_domain_list(&names)?,
            names,
        })
    }
}

/// As written: the reply fingerprint is computed over it (`checked`).
impl fmt::Debug for DomainList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.names.fmt(f)
    }
}
