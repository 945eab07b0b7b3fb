//! The IPv4 header of every reply, written by the XDP program
//! (`dhcp-ebpf/src/fast.rs`) and by the control plane
//! (`dhcp-user/src/wire.rs`, `build_frame`) alike, so both planes put the
//! same frame on the wire (README, "Reply addressing").
//!
//! - Version 4, no options, TOS 0, TTL 64, protocol UDP.
//! - **DF clear.** Neither plane can learn a path MTU: the XDP program sees
//!   no ICMP, and frames from a packet socket bypass the kernel's PMTU
//!   cache. A reply too big for a link on the way to a relay is better
//!   fragmented by that link than dropped there for good (DHCP retries the
//!   same size). Replies fit the client's maximum message size (at least
//!   576) anyway.
//! - **Identification: the request's xid folded to 16 bits** ([`id`]). A
//!   datagram that may be fragmented needs an id that differs from other
//!   datagrams between the same addresses (RFC 6864 §4.2); one derived from
//!   the transaction differs per transaction, costs the kernel no shared
//!   counter, and is the same on both planes. Retransmissions of one
//!   transaction share it, which only matters if two different replies
//!   to the same request are fragmented and in flight at once.
//! - Source: [`reply_source`].

/// Version 4, IHL 5.
pub const VERSION_IHL: u8 = 0x45;
pub const TOS: u8 = 0;
pub const TTL: u8 = 64;
pub const PROTO_UDP: u8 = 17;
/// See the module documentation.
pub const DONT_FRAGMENT: bool = false;
/// Flags and fragment offset (host order): DF or nothing.
pub const FLAGS_FRAGMENT: u16 = if DONT_FRAGMENT { 0x4000 } else { 0 };
/// The header's first and fifth 16-bit words (host order), as written
/// and as summed for the checksum.
pub const VERSION_IHL_TOS: u16 = (VERSION_IHL as u16) << 8 | TOS as u16;
pub const TTL_PROTO: u16 = (TTL as u16) << 8 | PROTO_UDP as u16;

/// Identification of the reply to the request with `xid` (as a number,
/// the field read big-endian).
#[inline(always)]
pub const fn id(xid: u32) -> u16 {
    (xid >> 16) as u16 ^ xid as u16
}

/// Where a reply leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The server identifier: replies to directly connected clients
    /// (RFC 2131 §4.1, whatever address they sent to), and replies to
    /// relays that sent to it.
    ServerId,
    /// The address the relay sent its request to, another address of
    /// this host.
    RequestDestination,
    /// The relay sent to an address that is not this host's (a
    /// broadcast, an address since removed): the server identifier.
    ServerIdNotLocal,
}

/// The source of a reply: a reply to a relay leaves from the address
/// the relay sent the request to, so relays (and firewalls in front of
/// them) that accept replies only from the server address they are
/// configured with accept it, whatever the route back to giaddr. The
/// XDP program answers relayed requests only when that address is the
/// server identifier (`stat::PASS_OTHER_ADDRESS` otherwise), so it
/// always gets [`Source::ServerId`]; `is_local` is asked only when the
/// request went elsewhere.
pub fn reply_source(
    relayed: bool,
    request_dst: [u8; 4],
    server_id: [u8; 4],
    is_local: impl FnOnce([u8; 4]) -> bool,
) -> Source {
    if !relayed || request_dst == server_id {
        Source::ServerId
    } else if is_local(request_dst) {
        Source::RequestDestination
    } else {
        Source::ServerIdNotLocal
    }
}

/// The 20 bytes of a reply's header, checksum included. `udp_len` is
/// the UDP header plus payload.
pub fn header(src: [u8; 4], dst: [u8; 4], udp_len: u16, xid: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = VERSION_IHL;
    h[1] = TOS;
    h[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    h[4..6].copy_from_slice(&id(xid).to_be_bytes());
    h[6..8].copy_from_slice(&FLAGS_FRAGMENT.to_be_bytes());
    h[8] = TTL;
    h[9] = PROTO_UDP;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = crate::internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_header_words_are_the_ones_the_xdp_program_sums() {
        let h = header([198, 18, 0, 1], [198, 18, 2, 1], 308, 0x1234_abcd);
        assert_eq!(crate::internet_checksum(&[&h]), 0);
        assert_eq!(u16::from_be_bytes([h[0], h[1]]), VERSION_IHL_TOS);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 328);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0x1234 ^ 0xabcd);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), FLAGS_FRAGMENT);
        assert_eq!(h[6] & 0x40 != 0, DONT_FRAGMENT);
        assert_eq!(u16::from_be_bytes([h[8], h[9]]), TTL_PROTO);
        // The fast path's checksum: the constant words plus length, id
        // and addresses, folded.
        let words: u32 = u32::from(VERSION_IHL_TOS)
            + 328
            + u32::from(id(0x1234_abcd))
            + u32::from(FLAGS_FRAGMENT)
            + u32::from(TTL_PROTO)
            + 0xc612
            + 0x0001
            + 0xc612
            + 0x0201;
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(!(folded as u16), u16::from_be_bytes([h[10], h[11]]));
    }

    #[test]
    fn reply_sources() {
        let sid = [198, 18, 0, 1];
        let other = [198, 18, 1, 1];
        let never = |_: [u8; 4]| -> bool { panic!("locality asked needlessly") };
        assert_eq!(reply_source(false, other, sid, never), Source::ServerId);
        assert_eq!(reply_source(true, sid, sid, never), Source::ServerId);
        assert_eq!(
            reply_source(true, other, sid, |a| a == other),
            Source::RequestDestination
        );
        assert_eq!(
            reply_source(true, [255; 4], sid, |_| false),
            Source::ServerIdNotLocal
        );
    }
}
