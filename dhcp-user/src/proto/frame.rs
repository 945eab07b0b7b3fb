//! The frame layers around a DHCP message: Ethernet, up to two VLAN tags,
//! IPv4 and UDP, parsed as views into the received bytes and built, with
//! checksums, around a reply.

use std::net::Ipv4Addr;

use dhcp_common::{internet_checksum, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_QINQ_9100};

use dhcp_common::layout::{bootp, eth, ipv4, udp};

use super::{message::ip4, Malformed};

/// A VLAN tag as received: TPID and the 12-bit VLAN ID plus priority bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// An IPv4/UDP frame as received, borrowing the payload.
#[derive(Debug, Clone)]
pub struct RxFrame<'a> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Outermost first; at most two.
    pub tags: Vec<Tag>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn is_tpid(t: u16) -> bool {
    t == ETH_P_8021Q || t == ETH_P_8021AD || t == ETH_P_QINQ_9100
}

/// Parses Ethernet (+ tags) / IPv4 / UDP. `stripped` is the outer tag the
/// kernel moved out of the frame (PACKET_AUXDATA), if any; `check_udp`
/// is false when the kernel already verified the UDP checksum or it was
/// never computed (offloaded on a local path).
pub fn parse_frame(
    buf: &[u8],
    stripped: Option<Tag>,
    check_udp: bool,
) -> Result<RxFrame<'_>, Malformed> {
    if buf.len() < eth::HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    let mut tags: Vec<Tag> = stripped.into_iter().collect();
    let mut off = eth::ETHERTYPE.start;
    let mut ethertype = be16(buf, off);
    while is_tpid(ethertype) {
        if tags.len() == 2 {
            return Err(Malformed::NotIpv4);
        }
        if buf.len() < off + 2 + eth::VLAN_TAG_LEN {
            return Err(Malformed::Truncated);
        }
        tags.push(Tag {
            tpid: ethertype,
            tci: be16(buf, off + 2),
        });
        off += eth::VLAN_TAG_LEN;
        ethertype = be16(buf, off);
    }
    if ethertype != ETH_P_IP {
        return Err(Malformed::NotIpv4);
    }
    let ip = off + 2;
    if buf.len() < ip + ipv4::MIN_HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    let ihl = usize::from(buf[ip + ipv4::VERSION_IHL] & 0x0f) * 4;
    if buf[ip + ipv4::VERSION_IHL] >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN {
        return Err(Malformed::BadIpHeader);
    }
    let tot_len = usize::from(be16(buf, ip + ipv4::TOTAL_LEN.start));
    if tot_len < ihl + udp::HEADER_LEN {
        return Err(Malformed::BadIpHeader);
    }
    if buf.len() < ip + tot_len {
        return Err(Malformed::Truncated);
    }
    if internet_checksum(&[&buf[ip..ip + ihl]]) != 0 {
        return Err(Malformed::BadChecksum);
    }
    if be16(buf, ip + ipv4::FLAGS_FRAGMENT.start) & 0x3fff != 0 {
        return Err(Malformed::Fragment);
    }
    if buf[ip + ipv4::PROTOCOL] != ipv4::PROTO_UDP {
        return Err(Malformed::NotUdp);
    }
    let udp = ip + ihl;
    let udp_len = usize::from(be16(buf, udp + udp::LEN.start));
    if udp_len < udp::HEADER_LEN || udp + udp_len > ip + tot_len {
        return Err(Malformed::BadUdpLength);
    }
    let src_ip = ip4(&buf[ip + ipv4::SRC.start..]);
    let dst_ip = ip4(&buf[ip + ipv4::DST.start..]);
    if check_udp && be16(buf, udp + udp::CHECKSUM.start) != 0 {
        let pseudo = [
            &src_ip.octets()[..],
            &dst_ip.octets()[..],
            &[0, ipv4::PROTO_UDP],
            &(udp_len as u16).to_be_bytes()[..],
        ]
        .concat();
        if internet_checksum(&[&pseudo, &buf[udp..udp + udp_len]]) != 0 {
            return Err(Malformed::BadChecksum);
        }
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&buf[eth::DST]);
    src_mac.copy_from_slice(&buf[eth::SRC]);
    Ok(RxFrame {
        dst_mac,
        src_mac,
        tags,
        src_ip,
        dst_ip,
        src_port: be16(buf, udp + udp::SRC_PORT.start),
        dst_port: be16(buf, udp + udp::DST_PORT.start),
        payload: &buf[udp + udp::HEADER_LEN..udp + udp_len],
    })
}

/// Where a frame goes at layer 2 and 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub tags: Vec<Tag>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The BOOTP xid of a payload (0 when too short to hold one).
pub(super) fn xid_of(payload: &[u8]) -> u32 {
    payload
        .get(bootp::XID)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Ethernet (+ tags) / IPv4 / UDP around `payload`, checksums computed.
/// The IPv4 header is [`dhcp_common::reply_ip::header`], the one the XDP
/// program writes too (its id derives from the payload's xid).
pub fn build_frame(h: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(
        eth::HEADER_LEN
            + eth::VLAN_TAG_LEN * h.tags.len()
            + ipv4::MIN_HEADER_LEN
            + udp::HEADER_LEN
            + payload.len(),
    );
    f.extend_from_slice(&h.dst_mac);
    f.extend_from_slice(&h.src_mac);
    for t in &h.tags {
        f.extend_from_slice(&t.tpid.to_be_bytes());
        f.extend_from_slice(&t.tci.to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let udp_len = (udp::HEADER_LEN + payload.len()) as u16;
    f.extend_from_slice(&dhcp_common::reply_ip::header(
        h.src_ip.octets(),
        h.dst_ip.octets(),
        udp_len,
        xid_of(payload),
    ));
    let udp = f.len();
    f.extend_from_slice(&h.src_port.to_be_bytes());
    f.extend_from_slice(&h.dst_port.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let pseudo = [
        &h.src_ip.octets()[..],
        &h.dst_ip.octets()[..],
        &[0, ipv4::PROTO_UDP],
        &udp_len.to_be_bytes()[..],
    ]
    .concat();
    let mut c = internet_checksum(&[&pseudo, &f[udp..]]);
    if c == 0 {
        c = 0xffff;
    }
    f[udp + udp::CHECKSUM.start..][..2].copy_from_slice(&c.to_be_bytes());
    f
}
