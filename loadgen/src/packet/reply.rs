//! The replies the engine reads: a BOOTREPLY's fields and the options it
//! checks, by the layout in `dhcp_common::layout`.

use super::*;

/// A reply's fields the checks need.
pub(super) struct Reply {
    pub(super) xid: u32,
    pub(super) msg_type: u8,
    pub(super) yiaddr: Ipv4Addr,
    pub(super) chaddr: [u8; 6],
    pub(super) server_id: Option<Ipv4Addr>,
    pub(super) lease_time: Option<u32>,
    pub(super) src_mac: [u8; 6],
}

pub(super) fn parse_reply(f: &[u8]) -> Option<Reply> {
    // Ethernet, any tags the stack left in the frame, IPv4, UDP to 68
    // (or 67: a reply to the relay of the relayed shape),
    // BOOTREPLY with the magic cookie.
    let ethertype = |at: usize| f.get(at..at + 2).map(|t| u16::from_be_bytes([t[0], t[1]]));
    let mut at = eth::ETHERTYPE.start;
    while matches!(ethertype(at), Some(ETH_P_8021Q | ETH_P_8021AD)) {
        at += eth::VLAN_TAG_LEN;
    }
    let ip = at + 2;
    if f.len() < ip + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + bootp::OPTIONS
        || ethertype(at) != Some(ETH_P_IP)
        || f[ip + ipv4::VERSION_IHL] >> 4 != 4
        || f[ip + ipv4::PROTOCOL] != ipv4::PROTO_UDP
    {
        return None;
    }
    let ihl = ((f[ip + ipv4::VERSION_IHL] & 0xf) as usize) * 4;
    let u = ip + ihl;
    if f.len() < u + udp::HEADER_LEN + bootp::OPTIONS
        || ![DHCP_CLIENT_PORT, DHCP_SERVER_PORT]
            .map(u16::to_be_bytes)
            .contains(&[f[u + udp::DST_PORT.start], f[u + udp::DST_PORT.start + 1]])
    {
        return None;
    }
    let b = &f[u + udp::HEADER_LEN..];
    if b[bootp::OP] != bootp::BOOTREPLY || b[bootp::COOKIE] != bootp::MAGIC_COOKIE {
        return None;
    }
    let yiaddr: [u8; 4] = b[bootp::YIADDR].try_into().ok()?;
    let mut r = Reply {
        xid: u32::from_be_bytes(b[bootp::XID].try_into().ok()?),
        msg_type: 0,
        yiaddr: Ipv4Addr::from(yiaddr),
        chaddr: b[bootp::CHADDR.start..bootp::CHADDR.start + 6]
            .try_into()
            .ok()?,
        server_id: None,
        lease_time: None,
        src_mac: f[eth::SRC].try_into().ok()?,
    };
    let mut i = bootp::OPTIONS;
    while i < b.len() {
        let code = b[i];
        if code == opt::END {
            break;
        }
        if code == opt::PAD {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (opt::MESSAGE_TYPE, 1) => r.msg_type = v[0],
            (opt::SERVER_ID, 4) => r.server_id = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (opt::LEASE_TIME, 4) => r.lease_time = Some(u32::from_be_bytes(v.try_into().ok()?)),
            _ => {}
        }
        i += 2 + len;
    }
    Some(r)
}
