//! The XDP program's counters.

/// Indices into the per-CPU stats array (`MAP_STATS`).
pub mod stat {
    /// Every frame the program saw.
    pub const RX_FRAMES: u32 = 0;
    /// IPv4/UDP to port 67: a DHCP (or BOOTP) request.
    pub const DHCP_REQUESTS: u32 = 1;
    /// Frames carrying one 802.1Q tag.
    pub const VLAN_SINGLE: u32 = 2;
    /// Frames carrying two tags (802.1ad / QinQ).
    pub const VLAN_DOUBLE: u32 = 3;
    /// Not IPv4 (after tags), e.g. ARP, IPv6, or more than two tags.
    pub const NOT_IPV4: u32 = 4;
    /// IPv4 but not UDP.
    pub const NOT_UDP: u32 = 5;
    /// UDP to a port other than 67.
    pub const OTHER_UDP: u32 = 6;
    /// Frame ended before the headers it announced.
    pub const TRUNCATED: u32 = 7;
    /// IPv4 fragment (MF set or non-zero offset): never parsed further.
    pub const FRAGMENT: u32 = 8;
    /// IPv4 header with options (IHL > 5); still parsed.
    pub const IP_OPTIONS: u32 = 9;
    /// Malformed IPv4 header (bad version, IHL < 5, total length too short).
    pub const BAD_IPV4: u32 = 10;
    /// Fast-path ACKs by client state.
    pub const FP_ACK_RENEWING: u32 = 11;
    pub const FP_ACK_REBINDING: u32 = 12;
    pub const FP_ACK_INIT_REBOOT: u32 = 13;
    /// DHCP requests passed to the control plane, by reason.
    pub const PASS_NOT_REQUEST: u32 = 14;
    pub const PASS_MALFORMED: u32 = 15;
    pub const PASS_UNUSUAL: u32 = 16;
    pub const PASS_SELECTING: u32 = 17;
    pub const PASS_UNKNOWN_CLIENT: u32 = 18;
    pub const PASS_WRONG_ADDRESS: u32 = 19;
    pub const PASS_EXPIRED: u32 = 20;
    pub const PASS_WRONG_SCOPE: u32 = 21;
    pub const PASS_SHAPE_CHANGED: u32 = 22;
    pub const PASS_NO_TEMPLATE: u32 = 23;
    pub const PASS_TOO_BIG: u32 = 24;
    /// Renewal passed to the control plane: its event could not be queued
    /// (ring full), and the kernel answers only what the store will hear of.
    pub const EVENT_LOST: u32 = 25;
    /// Frames dropped because a helper failed halfway through a rewrite.
    pub const DROPPED: u32 = 26;
    /// A relayed request sent to an address other than the server
    /// identifier: the control plane answers it from that address
    /// ([`crate::reply_ip::reply_source`]).
    pub const PASS_OTHER_ADDRESS: u32 = 27;
    /// A reply longer than its request that the frame could not grow
    /// into, at the tail or (moving the request forward) at the head: a
    /// driver that gives XDP neither tailroom nor headroom.
    pub const PASS_NO_ROOM: u32 = 28;
    /// Renewals shorter than their reply, grown at the head because the
    /// driver left no tailroom (veth, for frames from the kernel's stack
    /// or a packet socket): answered, at the cost of a copy.
    pub const GREW_AT_HEAD: u32 = 29;
    /// A known client's DISCOVER, offered its binding.
    pub const FP_OFFER: u32 = 30;
    /// A known client's SELECTING REQUEST for its binding, ACKed.
    pub const FP_ACK_SELECTING: u32 = 31;
    /// A DISCOVER from a client whose binding the control plane would not
    /// offer it (a reservation of the client's elsewhere, or a binding
    /// stored by an older version).
    pub const PASS_NOT_OFFERABLE: u32 = 32;
    /// Dropped in the driver: the client MAC's bucket was empty
    /// ([`crate::rate`]).
    pub const RATE_LIMITED_MAC: u32 = 33;
    /// Dropped in the driver: the subscriber line's bucket was empty.
    pub const RATE_LIMITED_LINE: u32 = 34;
    /// A renewal (or SELECTING REQUEST) whose new end would pass the
    /// binding's MCLT cap (`LeaseValue::cap_mono_ns`): the store has not
    /// acknowledged enough of what the kernel granted (a database outage,
    /// or a lag), so the control plane answers it, storing it first.
    pub const PASS_MCLT_CAP: u32 = 35;
    /// A known client's DISCOVER with rapid commit (RFC 4039, option 80)
    /// where its subnet enables it: ACKed with its binding, reported like
    /// a renewal.
    pub const FP_ACK_RAPID: u32 = 36;
    pub const COUNT: u32 = 37;
}

/// The per-CPU value of `MAP_STATS` (its only entry): every counter,
/// indexed by [`stat`].
pub type Stats = [u64; stat::COUNT as usize];

/// Human names of the stats, indexed like [`stat`].
pub const STAT_NAMES: [&str; stat::COUNT as usize] = [
    "rx_frames",
    "dhcp_requests",
    "vlan_single",
    "vlan_double",
    "not_ipv4",
    "not_udp",
    "other_udp",
    "truncated",
    "fragment",
    "ip_options",
    "bad_ipv4",
    "fp_ack_renewing",
    "fp_ack_rebinding",
    "fp_ack_init_reboot",
    "pass_not_request",
    "pass_malformed",
    "pass_unusual",
    "pass_selecting",
    "pass_unknown_client",
    "pass_wrong_address",
    "pass_expired",
    "pass_wrong_scope",
    "pass_shape_changed",
    "pass_no_template",
    "pass_too_big",
    "event_lost",
    "dropped",
    "pass_other_address",
    "pass_no_room",
    "grew_at_head",
    "fp_offer",
    "fp_ack_selecting",
    "pass_not_offerable",
    "rate_limited_mac",
    "rate_limited_line",
    "pass_mclt_cap",
    "fp_ack_rapid",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_cover_every_index() {
        assert_eq!(STAT_NAMES.len(), stat::COUNT as usize);
        for (i, a) in STAT_NAMES.iter().enumerate() {
            for b in &STAT_NAMES[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
