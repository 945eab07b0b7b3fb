//! Settings that bound what a hostile or broken access network can take:
//! lease and DECLINE caps, which relays are trusted, and how much work the
//! control plane queues.

use std::net::Ipv4Addr;

use serde::Deserialize;

/// Caps on leases and quarantines, globally (`[limits]`) or for one subnet
/// (`[subnet.limits]`, key by key over the global ones). 0: no cap.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Addresses held (offered or bound) per client hardware address.
    pub leases_per_mac: Option<u32>,
    /// Per relay and option 82 circuit-id (82.1).
    pub leases_per_circuit_id: Option<u32>,
    /// Per option 82 remote-id (82.2).
    pub leases_per_remote_id: Option<u32>,
    /// Per (interface, VLAN tags), for directly connected clients.
    pub leases_per_line: Option<u32>,
    /// Addresses one client may have in DECLINE quarantine at a time.
    pub declines_per_client: Option<u32>,
    /// Addresses one line (circuit/remote-id, or interface and VLANs) may
    /// have in DECLINE quarantine at a time.
    pub declines_per_line: Option<u32>,
}

/// Lease caps are off by default: a direct LAN segment or an unnamed
/// circuit carries any number of devices, and no default fits every
/// network. DECLINE caps are on with room to spare: a real client declines
/// an address only when it finds it in use, which does not happen dozens
/// of times at once on one client; without a cap one client quarantines a
/// pool for `decline_probation_secs`.
pub const DEFAULT_DECLINES_PER_CLIENT: u32 = 4;
pub const DEFAULT_DECLINES_PER_LINE: u32 = 64;

/// The caps one subnet applies, resolved (0: off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub per_mac: u32,
    pub per_circuit_id: u32,
    pub per_remote_id: u32,
    pub per_line: u32,
    pub declines_per_client: u32,
    pub declines_per_line: u32,
}

impl Caps {
    pub fn resolve(global: &Limits, subnet: &Limits) -> Caps {
        let pick = |f: fn(&Limits) -> Option<u32>, default: u32| {
            f(subnet).or(f(global)).unwrap_or(default)
        };
        Caps {
            per_mac: pick(|l| l.leases_per_mac, 0),
            per_circuit_id: pick(|l| l.leases_per_circuit_id, 0),
            per_remote_id: pick(|l| l.leases_per_remote_id, 0),
            per_line: pick(|l| l.leases_per_line, 0),
            declines_per_client: pick(|l| l.declines_per_client, DEFAULT_DECLINES_PER_CLIENT),
            declines_per_line: pick(|l| l.declines_per_line, DEFAULT_DECLINES_PER_LINE),
        }
    }

    pub fn any_lease_cap(&self) -> bool {
        self.per_mac + self.per_circuit_id + self.per_remote_id + self.per_line > 0
    }
}

/// Which relayed requests (giaddr set) are served.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelayTrust {
    /// Only listed relays (`[[relay]]` tables and subnets' `relays`) once
    /// a `[[relay]]` exists; without one, every relay, as before trust
    /// could be configured (the daemon warns at start).
    #[default]
    Auto,
    /// Only listed relays, `[[relay]]` or not: a server for directly
    /// connected clients only, listing none, drops every relayed request.
    Listed,
}

/// A relay agent the server trusts (`[[relay]]`). Its requests are those
/// whose IP source is `address`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    pub address: Ipv4Addr,
    /// Honour its option 118 (subnet selection, RFC 3011).
    #[serde(default)]
    pub trust_subnet_selection: bool,
    /// Honour its sub-option 82.5 (link selection, RFC 3527).
    #[serde(default)]
    pub trust_link_selection: bool,
}

pub fn default_request_queue() -> u32 {
    4096
}

pub fn default_commit_queue() -> u32 {
    1024
}

/// Queue bounds beyond which a setting is a typo, not a plan: each queued
/// request holds a frame (up to 1.5 KB), each commit a batch of changes.
pub const MAX_QUEUE: u32 = 1 << 20;

/// Checks `[[relay]]` tables and queue sizes; `line_of` finds where a key
/// or the `index`-th `[[relay]]` is.
pub fn check(
    relays: &[Relay],
    request_queue: u32,
    commit_queue: u32,
    relay_line: impl Fn(usize) -> usize,
    key_line: impl Fn(&str) -> usize,
) -> Result<(), (usize, String)> {
    for (i, r) in relays.iter().enumerate() {
        let a = r.address;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            return Err((relay_line(i), format!("relay {a} is not a unicast address")));
        }
        if relays[..i].iter().any(|o| o.address == a) {
            return Err((relay_line(i), format!("relay {a} listed twice")));
        }
    }
    for (key, v) in [
        ("request_queue", request_queue),
        ("commit_queue", commit_queue),
    ] {
        if v == 0 || v > MAX_QUEUE {
            return Err((key_line(key), format!("{key} {v} must be 1-{MAX_QUEUE}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!(
                "[server]\nserver_id = \"198.18.0.1\"\n{extra}[[interface]]\nname = \"srv0\"\n[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\ninterface = \"srv0\"\n[subnet.limits]\nleases_per_line = 1\ndeclines_per_line = 0\n"
            ),
            "x.toml",
        )
    }

    #[test]
    fn bad_limits_are_refused_with_file_line_and_reason() {
        let e = parse("request_queue = 0\n").unwrap_err();
        assert_eq!((e.source_name.as_str(), e.line), ("x.toml", 3), "{e}");
        assert!(e.reason.contains("request_queue 0 must be"), "{e}");
        let twice = "[[relay]]\naddress = \"198.18.1.2\"\n[[relay]]\naddress = \"198.18.1.2\"\n";
        let e = parse(twice).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("listed twice"), "{e}");
        let e = parse("[[relay]]\naddress = \"255.255.255.255\"\n").unwrap_err();
        assert!(e.reason.contains("not a unicast"), "{e}");
        let e = parse("[limits]\nleases_per_port = 1\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = parse("relay_trust = \"some\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn subnet_limits_override_global_ones_key_by_key() {
        let c = parse("[limits]\nleases_per_line = 3\nleases_per_mac = 2\n").unwrap();
        let caps = Caps::resolve(&c.limits, &c.subnets[0].limits);
        assert_eq!(
            caps,
            Caps {
                per_mac: 2,
                per_circuit_id: 0,
                per_remote_id: 0,
                per_line: 1,
                declines_per_client: DEFAULT_DECLINES_PER_CLIENT,
                declines_per_line: 0,
            }
        );
        assert_eq!(c.server.request_queue, 4096);
        assert_eq!(c.server.commit_queue, 1024);
        assert_eq!(c.server.relay_trust, RelayTrust::Auto);
    }
}
