//! Where everything sits in a DHCPv4 frame: Ethernet, VLAN tags, IPv4,
//! UDP and the BOOTP message, with the DHCP option and message codes and
//! the client identity kinds. The XDP program, the control plane, the
//! load generator and the tests all read these, so a field has one offset
//! everywhere (smoltcp's `wire::*::field` style).
//!
//! Fields are ranges of byte offsets from the start of their header; the
//! BPF code takes `.start` of them, a constant the verifier follows like
//! a literal.

use core::ops::Range;

/// The bytes of a field, from the start of its header.
pub type Field = Range<usize>;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still emitted by some access gear.
pub const ETH_P_QINQ_9100: u16 = 0x9100;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;

pub mod eth {
    use super::Field;

    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    /// The ethertype, or the first tag's TPID.
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
    /// One 802.1Q / 802.1ad tag: TCI, then the next ethertype.
    pub const VLAN_TAG_LEN: usize = 4;
    pub const BROADCAST: [u8; 6] = [0xff; 6];

    /// The `i`th of a family of made-up client addresses (locally
    /// administered, unicast; `family` tells generators apart).
    #[inline(always)]
    pub const fn numbered_mac(family: u8, i: u32) -> [u8; 6] {
        [
            0x02,
            family,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]
    }
}

pub mod ipv4 {
    use super::Field;

    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const ID: Field = 4..6;
    pub const FLAGS_FRAGMENT: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
    /// Without options (IHL 5).
    pub const MIN_HEADER_LEN: usize = 20;
    pub const PROTO_UDP: u8 = 17;
}

pub mod udp {
    use super::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LEN: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
}

/// The BOOTP message (RFC 951, RFC 2131 §2): the fixed part, the magic
/// cookie, then the DHCP options.
pub mod bootp {
    use super::Field;

    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Field = 4..8;
    pub const SECS: Field = 8..10;
    pub const FLAGS: Field = 10..12;
    pub const CIADDR: Field = 12..16;
    pub const YIADDR: Field = 16..20;
    pub const SIADDR: Field = 20..24;
    pub const GIADDR: Field = 24..28;
    pub const CHADDR: Field = 28..44;
    pub const SNAME: Field = 44..108;
    pub const FILE: Field = 108..236;
    /// Everything before the cookie.
    pub const FIXED_LEN: usize = FILE.end;
    pub const COOKIE: Field = FIXED_LEN..FIXED_LEN + 4;
    pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
    /// Where the options start.
    pub const OPTIONS: usize = COOKIE.end;
    /// The BOOTP minimum (RFC 951's 64-byte vendor area): relays and old
    /// clients expect every message padded to it.
    pub const MIN_LEN: usize = 300;
    /// RFC 2131: every DHCP message must be accepted up to this size (IP
    /// and UDP headers included), and the smallest a client may ask
    /// replies to fit.
    pub const MIN_MAX_MESSAGE: usize = 576;

    pub const BOOTREQUEST: u8 = 1;
    pub const BOOTREPLY: u8 = 2;
    /// `htype` of Ethernet, whose `hlen` is 6.
    pub const HTYPE_ETHERNET: u8 = 1;
    /// Longest `hlen` that fits `chaddr`.
    pub const MAX_HLEN: u8 = 16;
    /// The broadcast bit of `flags` (host order).
    pub const FLAG_BROADCAST: u16 = 0x8000;
}

/// An Ethernet frame holding the smallest untagged DHCP message: the size
/// of every request the load generator and the benchmark send.
pub const MIN_FRAME_LEN: usize =
    eth::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + bootp::MIN_LEN;

/// DHCP message types (option 53, RFC 2132 §9.6).
pub mod msg {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;

    pub fn name(t: u8) -> &'static str {
        match t {
            DISCOVER => "DISCOVER",
            OFFER => "OFFER",
            REQUEST => "REQUEST",
            DECLINE => "DECLINE",
            ACK => "ACK",
            NAK => "NAK",
            RELEASE => "RELEASE",
            INFORM => "INFORM",
            _ => "UNKNOWN",
        }
    }
}

/// DHCP option codes (RFC 2132 and later).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const CLIENT_ARCH: u8 = 93;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const RAPID_COMMIT: u8 = 80;
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const SUBNET_SELECTION: u8 = 118;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
    /// Option 82 sub-option 1, agent circuit id (RFC 3046).
    pub const RAI_CIRCUIT_ID: u8 = 1;
    /// Option 82 sub-option 2, agent remote id (RFC 3046).
    pub const RAI_REMOTE_ID: u8 = 2;
    /// Option 82 sub-option 5, link selection (RFC 3527).
    pub const RAI_LINK_SELECTION: u8 = 5;
}

/// How a client is identified: the first byte of the lease store's client
/// keys and the `kind` of the lease map's keys.
pub mod id_kind {
    /// `id[0]` = htype, `id[1..len]` = chaddr (RFC 2131 default identity).
    pub const HWADDR: u8 = 1;
    /// `id[..len]` = option 61 payload (type byte included), RFC 2132 §9.14.
    pub const CLIENT_ID: u8 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootp_fields_tile_the_fixed_part() {
        // RFC 2131 figure 1, field by field: each starts where the last
        // ended, and the fixed part is 236 bytes.
        let fields = [
            bootp::OP..bootp::OP + 1,
            bootp::HTYPE..bootp::HTYPE + 1,
            bootp::HLEN..bootp::HLEN + 1,
            bootp::HOPS..bootp::HOPS + 1,
            bootp::XID,
            bootp::SECS,
            bootp::FLAGS,
            bootp::CIADDR,
            bootp::YIADDR,
            bootp::SIADDR,
            bootp::GIADDR,
            bootp::CHADDR,
            bootp::SNAME,
            bootp::FILE,
            bootp::COOKIE,
        ];
        let sizes = [1, 1, 1, 1, 4, 2, 2, 4, 4, 4, 4, 16, 64, 128, 4];
        let mut at = 0;
        for (f, n) in fields.iter().zip(sizes) {
            assert_eq!((f.start, f.len()), (at, n), "{f:?}");
            at = f.end;
        }
        assert_eq!(bootp::FIXED_LEN, 236);
        assert_eq!(bootp::OPTIONS, 240);
        assert_eq!(bootp::CHADDR.len(), usize::from(bootp::MAX_HLEN));
        assert_eq!(u32::from_be_bytes(bootp::MAGIC_COOKIE), 0x6382_5363);
    }

    #[test]
    fn headers_tile_theirs() {
        assert_eq!(eth::ETHERTYPE.end, eth::HEADER_LEN);
        assert_eq!(eth::SRC.start, eth::DST.end);
        assert_eq!(ipv4::DST.end, ipv4::MIN_HEADER_LEN);
        assert_eq!(ipv4::SRC.end, ipv4::DST.start);
        assert_eq!(ipv4::CHECKSUM.end, ipv4::SRC.start);
        assert_eq!(ipv4::TTL + 1, ipv4::PROTOCOL);
        assert_eq!(udp::CHECKSUM.end, udp::HEADER_LEN);
        assert_eq!(MIN_FRAME_LEN, 342);
    }

    #[test]
    fn message_names() {
        for t in msg::DISCOVER..=msg::INFORM {
            assert_ne!(msg::name(t), "UNKNOWN");
        }
        assert_eq!(msg::name(msg::ACK), "ACK");
        assert_eq!(msg::name(0), "UNKNOWN");
    }
}
