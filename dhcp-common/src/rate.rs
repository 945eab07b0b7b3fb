//! Rate limits in the XDP program: token buckets per client MAC and per
//! subscriber line, checked for every DHCP frame the fast path does not
//! answer and that no lease-map binding vouches for. A frame over either
//! bucket is dropped in the driver (`stat::RATE_LIMITED_MAC`,
//! `stat::RATE_LIMITED_LINE`).
//!
//! The buckets are GCRA ("virtual scheduling"): each holds the time at
//! which it would be empty again, so a check is a compare and an add, with
//! no division and no refill step in the kernel.

/// Global limits (array of one [`RateConf`]).
pub const MAP_RATE_GLOBAL: &str = "XDHCP_RATE_GLOBAL";
/// Per-subnet limits of directly connected clients, by [`ScopeKey`].
pub const MAP_RATE_DIRECT: &str = "XDHCP_RATE_DIRECT";
/// Per-subnet limits of relayed requests: an LPM trie over giaddr (the
/// subnet's prefix and each of its `relays` as a /32).
pub const MAP_RATE_RELAYED: &str = "XDHCP_RATE_RELAYED";
/// The buckets, LRU: a flood of new keys evicts idle ones, never fails.
pub const MAP_RATE_MACS: &str = "XDHCP_RATE_MACS";
pub const MAP_RATE_LINES: &str = "XDHCP_RATE_LINES";
/// The program that applies them, entered by tail call from the main
/// one through [`MAP_PROGRAMS`], slot 0.
pub const PROGRAM: &str = "xdhcp_limits";
pub const MAP_PROGRAMS: &str = "XDHCP_PROGS";
/// Entries of each bucket map.
pub const BUCKETS: u32 = 65_536;
/// Entries of each per-subnet limits map.
pub const SCOPES: u32 = 4096;

/// One scope's limits. An interval of 0 turns that bucket off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateConf {
    /// Per client MAC: one frame per `mac_interval_ns` on average...
    pub mac_interval_ns: u64,
    /// ...and at most this far ahead of that schedule (burst × interval).
    pub mac_burst_ns: u64,
    pub line_interval_ns: u64,
    pub line_burst_ns: u64,
}

impl RateConf {
    /// Limits of `per_sec` frames a second with bursts of `burst` (0 = off).
    pub fn bucket(per_sec: u32, burst: u32) -> (u64, u64) {
        if per_sec == 0 {
            return (0, 0);
        }
        let interval = 1_000_000_000 / u64::from(per_sec);
        (interval, interval * u64::from(burst.max(1)))
    }
}

/// Where a directly connected client's request arrived.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    pub ifindex: u32,
    pub outer_vlan: u16,
    pub inner_vlan: u16,
}

/// A client MAC: the Ethernet source of a direct client's frame, chaddr
/// of a relayed one (whose Ethernet source is the relay's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

pub mod line_kind {
    /// (ifindex, VLAN tags) of a directly connected client.
    pub const DIRECT: u32 = 1;
    /// (giaddr, hash of option 82's circuit-id and remote-id).
    pub const CIRCUIT: u32 = 2;
}

/// A subscriber line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineKey {
    pub kind: u32,
    /// 0 for [`line_kind::CIRCUIT`].
    pub ifindex: u32,
    /// Network order; 0 for [`line_kind::DIRECT`].
    pub giaddr: u32,
    pub outer_vlan: u16,
    pub inner_vlan: u16,
    /// [`circuit_hash`] for [`line_kind::CIRCUIT`], else 0.
    pub circuit: u64,
}

/// A bucket: the instant (`CLOCK_MONOTONIC`, ns) it is empty again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tat_ns: u64,
}

/// GCRA: Some(the bucket's new state) when a frame at `now` fits.
#[inline(always)]
pub fn admit(tat_ns: u64, now: u64, interval: u64, burst: u64) -> Option<u64> {
    let start = if tat_ns > now { tat_ns } else { now };
    let next = start + interval;
    if next - now > burst {
        None
    } else {
        Some(next)
    }
}

/// Option 82's circuit-id and remote-id as the line key holds them:
/// `shape_hash_more` over the circuit-id, then over the remote-id, from a
/// start that encodes both lengths (so the split is unambiguous).
pub fn circuit_hash(circuit: &[u8], remote: &[u8]) -> u64 {
    let h = crate::SHAPE_OFFSET ^ ((circuit.len() as u64) << 8 | remote.len() as u64);
    crate::shape_hash_more(crate::shape_hash_more(h, circuit), remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<RateConf>(), 32);
        assert_eq!(offset_of!(RateConf, line_interval_ns), 16);
        assert_eq!(size_of::<ScopeKey>(), 8);
        assert_eq!(offset_of!(ScopeKey, outer_vlan), 4);
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(align_of::<MacKey>(), 1);
        assert_eq!(size_of::<LineKey>(), 24);
        assert_eq!(align_of::<LineKey>(), 8);
        assert_eq!(offset_of!(LineKey, giaddr), 8);
        assert_eq!(offset_of!(LineKey, outer_vlan), 12);
        assert_eq!(offset_of!(LineKey, circuit), 16);
        assert_eq!(size_of::<Bucket>(), 8);
    }

    #[test]
    fn gcra_admits_a_burst_then_the_rate() {
        let (i, b) = RateConf::bucket(10, 3);
        assert_eq!((i, b), (100_000_000, 300_000_000));
        let mut tat = 0;
        let now = 1_000_000_000;
        for _ in 0..3 {
            tat = admit(tat, now, i, b).expect("within the burst");
        }
        assert!(admit(tat, now, i, b).is_none(), "burst spent");
        assert!(admit(tat, now + i - 1, i, b).is_none());
        assert!(admit(tat, now + i, i, b).is_some(), "one interval later");
        // An idle bucket is full again, never more.
        let later = now + 10 * b;
        let mut t = tat;
        for _ in 0..3 {
            t = admit(t, later, i, b).unwrap();
        }
        assert!(admit(t, later, i, b).is_none());
    }

    #[test]
    fn circuit_hash_tells_the_split_apart() {
        assert_ne!(circuit_hash(b"ab", b"c"), circuit_hash(b"a", b"bc"));
        assert_ne!(circuit_hash(b"ab", b""), circuit_hash(b"", b"ab"));
        assert_eq!(circuit_hash(b"port1", b"x"), circuit_hash(b"port1", b"x"));
    }
}
