//! The load generator's XDP side (`xdhcp-loadgen --engine xdp`): a sender
//! run by `BPF_PROG_TEST_RUN` in live-frames mode, and a receiver attached
//! to the generator's interface that matches and checks every reply.

pub const MAP_CONFIG: &str = "XDHCP_GEN_CONFIG";
pub const MAP_CLIENTS: &str = "XDHCP_GEN_CLIENTS";
pub const MAP_SENT: &str = "XDHCP_GEN_SENT";
pub const MAP_STATS: &str = "XDHCP_GEN_STATS";
pub const MAP_LATENCY: &str = "XDHCP_GEN_LATENCY";
pub const TX_PROGRAM: &str = "xdhcp_gen";
pub const RX_PROGRAM: &str = "xdhcp_gen_rx";

/// An untagged request padded to a 300-byte BOOTP payload (Ethernet +
/// IPv4 + UDP + BOOTP). Live-frames mode wants one size per run: each
/// shape's template has its own ([`GenConfig::frame_len`]), at most
/// [`MAX_FRAME_LEN`].
pub const FRAME_LEN: usize = crate::layout::MIN_FRAME_LEN;
/// The longest template: a padded request under two VLAN tags.
pub const MAX_FRAME_LEN: usize = FRAME_LEN + 2 * crate::layout::eth::VLAN_TAG_LEN;
/// The shortest template the sender accepts: Ethernet, IPv4, UDP and
/// BOOTP up to its options (an unpadded request is longer).
pub const MIN_TEMPLATE_LEN: usize = 14 + 20 + 8 + crate::layout::bootp::OPTIONS;
/// Client index in the low 24 bits of the xid, the run's epoch above.
pub const MAX_CLIENTS: u32 = 1 << 24;

/// What the receiver expects back.
pub mod expect {
    /// A DHCPACK for the client's address (type, yiaddr, chaddr,
    /// server identifier and lease time checked).
    pub const ACK: u32 = 0;
    /// The request itself, bounced (the ceiling's bare program).
    pub const BOUNCE: u32 = 1;
    /// A DHCPOFFER of the client's address, checked as an ACK is.
    pub const OFFER: u32 = 2;
}

/// Counters (per CPU).
pub mod stat {
    pub const SENT: u32 = 0;
    /// Replies that matched an outstanding request and passed the checks.
    pub const OK: u32 = 1;
    pub const NAK: u32 = 2;
    /// Matched by xid, but wrong type, address, chaddr or options.
    pub const WRONG: u32 = 3;
    /// A second reply to one request.
    pub const DUPLICATE: u32 = 4;
    /// Another run's xid, or an index out of range.
    pub const STRAY: u32 = 5;
    /// Matched, but after the run's timeout (also counted in OK/NAK).
    pub const LATE: u32 = 6;
    /// Sender could not build a frame (helper failed).
    pub const SEND_FAILED: u32 = 7;
    pub const COUNT: u32 = 8;
}
pub const STAT_NAMES: [&str; stat::COUNT as usize] = [
    "sent",
    "ok",
    "nak",
    "wrong",
    "duplicate",
    "stray",
    "late",
    "send_failed",
];

/// Client `i`'s hardware address (sender, receiver and userspace).
#[inline(always)]
pub fn client_mac(i: u32) -> [u8; 6] {
    crate::layout::eth::numbered_mac(0x44, i)
}

/// Latency histogram: exact below 8 ns, then four buckets per power of
/// two (`4 * log2(ns) + the next two bits - 4`), up to ~18 minutes.
pub const LATENCY_BUCKETS: u32 = 4 * 40;

/// Lower bound, in ns, of a latency bucket.
pub const fn bucket_floor_ns(b: u32) -> u64 {
    if b < 8 {
        return b as u64;
    }
    let e = (b + 4) / 4;
    let m = ((b + 4) % 4) as u64;
    (1u64 << e) + (m << (e - 2))
}

#[inline(always)]
pub fn bucket_of(ns: u64) -> u32 {
    if ns < 8 {
        return ns as u32;
    }
    let e = 63 - ns.leading_zeros();
    let m = ((ns >> (e - 2)) & 3) as u32;
    let b = e * 4 + m - 4;
    if b >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        b
    }
}

/// The sender's configuration (array of one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// A reply later than this after its request counts as late.
    pub timeout_ns: u64,
    pub clients: u32,
    /// Clients are cycled by `cursor * stride + cpu % stride`, so each
    /// sending thread (one per CPU) walks its own share.
    pub stride: u32,
    pub epoch: u32,
    /// `kind::*`.
    pub kind: u32,
    /// `expect::*`.
    pub expect: u32,
    /// Offset of option 50's value in `frame` (INIT-REBOOT, SELECTING,
    /// FLOOD), else 0.
    pub requested_ip_off: u32,
    /// Network byte order.
    pub server_ip: u32,
    /// Client `i`'s MAC is `client_mac(i + mac_offset)` (its xid still
    /// carries `i`): generators sharing one store emulate other clients.
    pub mac_offset: u32,
    /// The request with every per-client field zero (the 4 bytes past
    /// [`MAX_FRAME_LEN`] keep the struct free of tail padding).
    pub frame: [u8; MAX_FRAME_LEN + 4],
    /// [`kind::FLOOD`]: offsets in `frame` of option 53's value and of
    /// option 54, which every other frame turns into a DISCOVER (53 =
    /// 1, 54 padded out).
    pub msg_type_off: u16,
    pub server_id_off: u16,
    /// How many bytes of `frame` are the request
    /// ([`MIN_TEMPLATE_LEN`]..=[`MAX_FRAME_LEN`]).
    pub frame_len: u16,
    /// Where the IPv4 header starts: 14 untagged, 18 under one VLAN tag,
    /// 22 under two (UDP and BOOTP follow at fixed distances).
    pub ip_off: u16,
    /// Offset of option 61's value, whose bytes 3..9 are the client's MAC
    /// (`[0, 'l', 'g', mac]`), else 0.
    pub client_id_off: u16,
    /// The relayed shape: offset of option 82's circuit-id value, laid
    /// out as [`client_id`] (one line per client), else 0. Nonzero also
    /// means the IPv4 source is the relay's giaddr, which the sender
    /// leaves as the template has it.
    pub circuit_id_off: u16,
    /// Keeps the struct free of tail padding.
    pub _pad: [u8; 2],
}

/// The client identifier (option 61) client `mac` sends in the
/// client-id shape (and the circuit-id its relay adds in the relayed one): type 0 (not a hardware address, RFC 2132 9.14), so
/// the server keys the binding on it rather than on chaddr.
pub fn client_id(mac: [u8; 6]) -> [u8; 9] {
    [
        0, b'l', b'g', mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
    ]
}
/// Where the MAC sits in [`client_id`].
pub const CLIENT_ID_MAC_AT: usize = 3;

pub mod kind {
    /// Unicast to the server, ciaddr set (RFC 2131 RENEWING).
    pub const RENEWING: u32 = 0;
    /// Broadcast, ciaddr set.
    pub const REBINDING: u32 = 1;
    /// Broadcast, ciaddr 0, option 50.
    pub const INIT_REBOOT: u32 = 2;
    /// A flood from random MACs: SELECTING REQUESTs (50 = the client's
    /// address, 54 the server) and DISCOVERs, alternately.
    pub const FLOOD: u32 = 3;
    /// A known client's DISCOVER (broadcast, ciaddr 0, no 50 or 54).
    pub const DISCOVER: u32 = 4;
    /// A known client's SELECTING REQUEST: broadcast, ciaddr 0, 50 = its
    /// address, 54 = the server.
    pub const SELECTING: u32 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn gen_config() {
        assert_eq!(size_of::<GenConfig>(), 408);
        no_hidden_padding!(GenConfig, timeout_ns: u64, clients: u32, stride: u32, epoch: u32,
            kind: u32, expect: u32, requested_ip_off: u32, server_ip: u32, mac_offset: u32,
            frame: [u8; MAX_FRAME_LEN + 4], msg_type_off: u16, server_id_off: u16,
            frame_len: u16, ip_off: u16, client_id_off: u16, circuit_id_off: u16,
            _pad: [u8; 2]);
    }

    #[test]
    fn latency_buckets() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            65_535,
            (1 << 39) + 5,
        ] {
            let b = bucket_of(ns);
            assert!(b < LATENCY_BUCKETS, "{ns}");
            assert!(bucket_floor_ns(b) <= ns, "{ns}");
            assert!(bucket_floor_ns(b + 1) > ns, "{ns}");
        }
    }
}
