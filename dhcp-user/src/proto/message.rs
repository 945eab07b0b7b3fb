//! Packet encode/decode, zero-copy in smoltcp's style: [`parse_frame`] and
//! [`parse_dhcp`] give views into the received bytes, every failure is a
//! [`Malformed`] reason (counted and dropped, never a panic), and
//! [`Reply`] / [`build_frame`] emit what goes out.
//!
//! Options are kept raw where they must be echoed byte for byte (client
//! identifier, RFC 6842; relay agent information, RFC 3046).

use std::net::Ipv4Addr;

use dhcp_common::{internet_checksum, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_QINQ_9100};

use dhcp_common::layout::{bootp, eth, ipv4, udp};
pub use dhcp_common::layout::{
    bootp::{
        FIXED_LEN as BOOTP_FIXED_LEN, MAGIC_COOKIE, MIN_LEN as BOOTP_MIN_PAYLOAD, MIN_MAX_MESSAGE,
    },
    msg, opt,
};

/// Why a received frame or message was dropped. Each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    Truncated,
    NotIpv4,
    NotUdp,
    Fragment,
    BadIpHeader,
    BadChecksum,
    BadUdpLength,
    TooShort,
    NotBootRequest,
    BadHardwareLength,
    NoMagicCookie,
    OptionOverrun,
    OptionOverload,
    BadOptionLength,
    NoMessageType,
    BadMessageType,
}

impl Malformed {
    pub const ALL: [Malformed; 16] = [
        Malformed::Truncated,
        Malformed::NotIpv4,
        Malformed::NotUdp,
        Malformed::Fragment,
        Malformed::BadIpHeader,
        Malformed::BadChecksum,
        Malformed::BadUdpLength,
        Malformed::TooShort,
        Malformed::NotBootRequest,
        Malformed::BadHardwareLength,
        Malformed::NoMagicCookie,
        Malformed::OptionOverrun,
        Malformed::OptionOverload,
        Malformed::BadOptionLength,
        Malformed::NoMessageType,
        Malformed::BadMessageType,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::NotIpv4 => "not_ipv4",
            Malformed::NotUdp => "not_udp",
            Malformed::Fragment => "fragment",
            Malformed::BadIpHeader => "bad_ip_header",
            Malformed::BadChecksum => "bad_checksum",
            Malformed::BadUdpLength => "bad_udp_length",
            Malformed::TooShort => "too_short",
            Malformed::NotBootRequest => "not_bootrequest",
            Malformed::BadHardwareLength => "bad_hardware_length",
            Malformed::NoMagicCookie => "no_magic_cookie",
            Malformed::OptionOverrun => "option_overrun",
            Malformed::OptionOverload => "option_overload",
            Malformed::BadOptionLength => "bad_option_length",
            Malformed::NoMessageType => "no_message_type",
            Malformed::BadMessageType => "bad_message_type",
        }
    }
}

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

fn be16(b: &[u8], at: usize) -> u16 {
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

/// A DHCP client message, borrowing the received bytes.
#[derive(Debug, Clone)]
pub struct DhcpRequest<'a> {
    pub raw: &'a [u8],
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub msg_type: u8,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub prl: Option<&'a [u8]>,
    pub max_message_size: Option<u16>,
    /// Option 61 payload (type byte included).
    pub client_id: Option<&'a [u8]>,
    pub rapid_commit: bool,
    /// Option 82 payload, exactly as received.
    pub relay_info: Option<&'a [u8]>,
    /// Option 82 sub-option 5 (RFC 3527).
    pub link_selection: Option<Ipv4Addr>,
    /// Option 118 (RFC 3011).
    pub subnet_selection: Option<Ipv4Addr>,
    pub hostname: Option<&'a [u8]>,
    /// Options 60 (vendor class), 77 (user class) and 93 (client system
    /// architectures), raw: client classes match on them.
    pub vendor_class: Option<&'a [u8]>,
    pub user_class: Option<&'a [u8]>,
    pub client_arch: Option<&'a [u8]>,
}

impl DhcpRequest<'_> {
    pub fn broadcast_flag(&self) -> bool {
        self.flags & bootp::FLAG_BROADCAST != 0
    }

    pub fn chaddr(&self) -> &[u8] {
        &self.chaddr[..usize::from(self.hlen.min(bootp::MAX_HLEN))]
    }

    pub fn requested(&self, code: u8) -> bool {
        self.prl.is_some_and(|p| p.contains(&code))
    }
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Parses a BOOTREQUEST carrying DHCP options. Unknown options are skipped;
/// known ones with an impossible length make the message malformed.
pub fn parse_dhcp(raw: &[u8]) -> Result<DhcpRequest<'_>, Malformed> {
    if raw.len() < bootp::OPTIONS {
        return Err(Malformed::TooShort);
    }
    if raw[bootp::OP] != bootp::BOOTREQUEST {
        return Err(Malformed::NotBootRequest);
    }
    if raw[bootp::HLEN] > bootp::MAX_HLEN {
        return Err(Malformed::BadHardwareLength);
    }
    if raw[bootp::COOKIE] != MAGIC_COOKIE {
        return Err(Malformed::NoMagicCookie);
    }
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&raw[bootp::CHADDR]);
    let mut r = DhcpRequest {
        raw,
        htype: raw[bootp::HTYPE],
        hlen: raw[bootp::HLEN],
        hops: raw[bootp::HOPS],
        xid: xid_of(raw),
        secs: be16(raw, bootp::SECS.start),
        flags: be16(raw, bootp::FLAGS.start),
        ciaddr: ip4(&raw[bootp::CIADDR]),
        giaddr: ip4(&raw[bootp::GIADDR]),
        chaddr,
        msg_type: 0,
        requested_ip: None,
        server_id: None,
        lease_time: None,
        prl: None,
        max_message_size: None,
        client_id: None,
        rapid_commit: false,
        relay_info: None,
        link_selection: None,
        subnet_selection: None,
        hostname: None,
        vendor_class: None,
        user_class: None,
        client_arch: None,
    };
    let mut i = bootp::OPTIONS;
    // Each step advances by at least one byte: the walk always ends.
    while i < raw.len() {
        let code = raw[i];
        if code == opt::PAD {
            i += 1;
            continue;
        }
        if code == opt::END {
            break;
        }
        if i + 1 >= raw.len() {
            return Err(Malformed::OptionOverrun);
        }
        let len = usize::from(raw[i + 1]);
        let start = i + 2;
        if start + len > raw.len() {
            return Err(Malformed::OptionOverrun);
        }
        let v = &raw[start..start + len];
        let exact = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(Malformed::BadOptionLength)
            }
        };
        // First instance wins for every option (RFC 3396 concatenation of
        // split options is not used by the clients we serve).
        match code {
            opt::MESSAGE_TYPE if r.msg_type == 0 => {
                exact(1)?;
                r.msg_type = v[0];
            }
            opt::REQUESTED_IP if r.requested_ip.is_none() => {
                exact(4)?;
                r.requested_ip = Some(ip4(v));
            }
            opt::SERVER_ID if r.server_id.is_none() => {
                exact(4)?;
                r.server_id = Some(ip4(v));
            }
            opt::LEASE_TIME if r.lease_time.is_none() => {
                exact(4)?;
                r.lease_time = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
            opt::MAX_MESSAGE_SIZE if r.max_message_size.is_none() => {
                exact(2)?;
                r.max_message_size = Some(be16(v, 0));
            }
            opt::PARAMETER_REQUEST_LIST if r.prl.is_none() => r.prl = Some(v),
            opt::CLIENT_ID if r.client_id.is_none() => {
                if len < 2 {
                    return Err(Malformed::BadOptionLength);
                }
                r.client_id = Some(v);
            }
            opt::RAPID_COMMIT => {
                exact(0)?;
                r.rapid_commit = true;
            }
            opt::RELAY_AGENT_INFO if r.relay_info.is_none() => {
                r.relay_info = Some(v);
                r.link_selection = rai_link_selection(v)?;
            }
            opt::SUBNET_SELECTION if r.subnet_selection.is_none() => {
                exact(4)?;
                r.subnet_selection = Some(ip4(v));
            }
            opt::HOSTNAME if r.hostname.is_none() => r.hostname = Some(v),
            opt::VENDOR_CLASS if r.vendor_class.is_none() => r.vendor_class = Some(v),
            opt::USER_CLASS if r.user_class.is_none() => r.user_class = Some(v),
            opt::CLIENT_ARCH if r.client_arch.is_none() => r.client_arch = Some(v),
            opt::OVERLOAD => return Err(Malformed::OptionOverload),
            _ => {}
        }
        i = start + len;
    }
    match r.msg_type {
        0 => Err(Malformed::NoMessageType),
        msg::DISCOVER | msg::REQUEST | msg::DECLINE | msg::RELEASE | msg::INFORM => Ok(r),
        _ => Err(Malformed::BadMessageType),
    }
}

fn rai_link_selection(v: &[u8]) -> Result<Option<Ipv4Addr>, Malformed> {
    let mut i = 0;
    let mut found = None;
    while i < v.len() {
        if i + 2 > v.len() {
            return Err(Malformed::OptionOverrun);
        }
        let (code, len) = (v[i], usize::from(v[i + 1]));
        if i + 2 + len > v.len() {
            return Err(Malformed::OptionOverrun);
        }
        if code == opt::RAI_LINK_SELECTION && found.is_none() {
            if len != 4 {
                return Err(Malformed::BadOptionLength);
            }
            found = Some(ip4(&v[i + 2..i + 6]));
        }
        i += 2 + len;
    }
    Ok(found)
}

/// A BOOTREPLY being assembled: fixed header from the request, then options
/// in the order they are pushed.
pub struct Reply {
    buf: Vec<u8>,
}

impl Reply {
    /// Header copied from `req` per RFC 2131 table 3 (xid, flags, giaddr,
    /// chaddr, htype/hlen echoed; secs and hops zero).
    pub fn new(
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        siaddr: Ipv4Addr,
    ) -> Reply {
        let mut buf = Vec::with_capacity(BOOTP_MIN_PAYLOAD + 64);
        buf.resize(BOOTP_FIXED_LEN, 0);
        buf[bootp::OP] = bootp::BOOTREPLY;
        buf[bootp::HTYPE] = req.htype;
        buf[bootp::HLEN] = req.hlen;
        buf[bootp::XID].copy_from_slice(&req.xid.to_be_bytes());
        buf[bootp::FLAGS].copy_from_slice(&req.flags.to_be_bytes());
        buf[bootp::CIADDR].copy_from_slice(&ciaddr.octets());
        buf[bootp::YIADDR].copy_from_slice(&yiaddr.octets());
        buf[bootp::SIADDR].copy_from_slice(&siaddr.octets());
        buf[bootp::GIADDR].copy_from_slice(&req.giaddr.octets());
        buf[bootp::CHADDR].copy_from_slice(&req.chaddr);
        buf.extend_from_slice(&MAGIC_COOKIE);
        let mut r = Reply { buf };
        r.push(opt::MESSAGE_TYPE, &[msg_type]);
        r
    }

    pub fn push(&mut self, code: u8, value: &[u8]) {
        debug_assert!(value.len() <= 255);
        self.buf.push(code);
        self.buf.push(value.len() as u8);
        self.buf.extend_from_slice(value);
    }

    /// siaddr, sname and file of a network boot (NUL-terminated, checked
    /// to fit at load).
    pub fn set_boot(&mut self, b: &crate::dhcp::subscriber::Boot) {
        if let Some(a) = b.siaddr {
            self.buf[bootp::SIADDR].copy_from_slice(&a.octets());
        }
        if let Some(n) = &b.sname {
            let n = &n[..n.len().min(bootp::SNAME.len() - 1)];
            self.buf[bootp::SNAME.start..][..n.len()].copy_from_slice(n);
        }
        if let Some(f) = &b.file {
            let f = &f[..f.len().min(bootp::FILE.len() - 1)];
            self.buf[bootp::FILE.start..][..f.len()].copy_from_slice(f);
        }
    }

    /// Writes `bytes` into the fixed part at `at` (option overload).
    pub fn set_fixed(&mut self, at: usize, bytes: &[u8]) {
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// RFC 2131 §4.3.2: a NAK through a relay asks it to broadcast.
    pub fn set_broadcast(&mut self) {
        self.buf[bootp::FLAGS.start] |= (bootp::FLAG_BROADCAST >> 8) as u8;
    }

    /// Bytes so far (header, cookie, options).
    pub fn written(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of options so far plus the END byte.
    pub fn len_with_end(&self) -> usize {
        self.buf.len() + 1
    }

    /// Adds END and pads to the BOOTP minimum, as relays and old clients
    /// expect.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(opt::END);
        if self.buf.len() < BOOTP_MIN_PAYLOAD {
            self.buf.resize(BOOTP_MIN_PAYLOAD, 0);
        }
        self.buf
    }
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
fn xid_of(payload: &[u8]) -> u32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opts: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; BOOTP_FIXED_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(opts);
        p
    }

    #[test]
    fn parses_the_options_the_server_uses() {
        let raw = request(&[
            53, 1, 3, 50, 4, 198, 18, 0, 10, 54, 4, 198, 18, 0, 1, 55, 3, 1, 3, 6, 57, 2, 5, 220,
            61, 7, 1, 2, 0, 0, 0, 0, 1, 80, 0, 0, 0, 118, 4, 198, 18, 9, 0, 82, 12, 1, 4, b'p',
            b'o', b'r', b't', 5, 4, 198, 18, 7, 0, 255,
        ]);
        let r = parse_dhcp(&raw).unwrap();
        assert_eq!(r.msg_type, msg::REQUEST);
        assert_eq!(r.xid, 0xdeadbeef);
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(198, 18, 0, 10)));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(r.prl, Some(&[1u8, 3, 6][..]));
        assert_eq!(r.max_message_size, Some(1500));
        assert_eq!(r.client_id, Some(&[1u8, 2, 0, 0, 0, 0, 1][..]));
        assert!(r.rapid_commit);
        assert_eq!(r.subnet_selection, Some(Ipv4Addr::new(198, 18, 9, 0)));
        assert_eq!(r.relay_info.unwrap().len(), 12);
        assert_eq!(r.link_selection, Some(Ipv4Addr::new(198, 18, 7, 0)));
        assert_eq!(r.chaddr(), &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn malformed_messages_have_reasons() {
        let cases: Vec<(Vec<u8>, Malformed)> = vec![
            (vec![1; 100], Malformed::TooShort),
            (
                {
                    let mut r = request(&[53, 1, 1, 255]);
                    r[0] = 2;
                    r
                },
                Malformed::NotBootRequest,
            ),
            (
                {
                    let mut r = request(&[53, 1, 1, 255]);
                    r[2] = 17;
                    r
                },
                Malformed::BadHardwareLength,
            ),
            (
                {
                    let mut r = request(&[53, 1, 1, 255]);
                    r[236] = 0;
                    r
                },
                Malformed::NoMagicCookie,
            ),
            (
                request(&[53, 1, 1, 12, 200, b'x']),
                Malformed::OptionOverrun,
            ),
            (request(&[53, 1, 1, 12]), Malformed::OptionOverrun),
            (
                request(&[53, 1, 1, 52, 1, 3, 255]),
                Malformed::OptionOverload,
            ),
            (request(&[53, 2, 1, 1, 255]), Malformed::BadOptionLength),
            (
                request(&[53, 1, 1, 50, 3, 1, 2, 3, 255]),
                Malformed::BadOptionLength,
            ),
            (
                request(&[53, 1, 1, 82, 4, 5, 4, 1, 2, 255]),
                Malformed::OptionOverrun,
            ),
            // RFC 2132 9.14: a client identifier has at least 2 bytes (the
            // XDP program passes these here: issue 12, item 9).
            (request(&[53, 1, 3, 61, 0, 255]), Malformed::BadOptionLength),
            (
                request(&[53, 1, 3, 61, 1, 1, 255]),
                Malformed::BadOptionLength,
            ),
            (request(&[12, 1, b'x', 255]), Malformed::NoMessageType),
            (request(&[53, 1, 2, 255]), Malformed::BadMessageType),
            (request(&[53, 1, 9, 255]), Malformed::BadMessageType),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_dhcp(&raw).unwrap_err(), want, "{raw:?}");
        }
    }

    #[test]
    fn options_after_end_are_ignored_and_missing_end_is_tolerated() {
        let raw = request(&[53, 1, 1, 255, 52, 1, 3]);
        assert_eq!(parse_dhcp(&raw).unwrap().msg_type, msg::DISCOVER);
        let raw = request(&[0, 0, 53, 1, 1]);
        assert_eq!(parse_dhcp(&raw).unwrap().msg_type, msg::DISCOVER);
    }

    #[test]
    fn an_empty_relay_agent_information_option_is_kept_to_be_echoed() {
        // RFC 3046 2.2: the server echoes the option's entire contents; an
        // empty one is echoed empty (the XDP program passes it here).
        let raw = request(&[53, 1, 3, 82, 0, 255]);
        let r = parse_dhcp(&raw).unwrap();
        assert_eq!(r.relay_info, Some(&[][..]));
        assert_eq!(r.link_selection, None);
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_an_error_or_a_valid_parse() {
        let raw = request(&[
            53, 1, 3, 50, 4, 198, 18, 0, 10, 61, 7, 1, 2, 0, 0, 0, 0, 1, 82, 6, 5, 4, 198, 18, 7,
            0, 255,
        ]);
        for n in 0..raw.len() {
            let _ = parse_dhcp(&raw[..n]);
        }
        // Every single-byte corruption, too: never a panic.
        for i in 0..raw.len() {
            for b in [0u8, 1, 4, 52, 53, 82, 255] {
                let mut r = raw.clone();
                r[i] = b;
                let _ = parse_dhcp(&r);
            }
        }
    }

    #[test]
    fn frame_round_trip_with_tags() {
        let h = FrameHeader {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [0xff; 6],
            tags: vec![
                Tag {
                    tpid: ETH_P_8021AD,
                    tci: 100,
                },
                Tag {
                    tpid: ETH_P_8021Q,
                    tci: 200,
                },
            ],
            src_ip: Ipv4Addr::new(198, 18, 0, 1),
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 67,
            dst_port: 68,
        };
        let payload = vec![7u8; 300];
        let f = build_frame(&h, &payload);
        let rx = parse_frame(&f, None, true).unwrap();
        assert_eq!(rx.tags, h.tags);
        assert_eq!(rx.payload, &payload[..]);
        assert_eq!((rx.src_port, rx.dst_port), (67, 68));
        // The kernel may strip the outer tag into metadata.
        let stripped = [&f[..12], &f[16..]].concat();
        let rx = parse_frame(&stripped, Some(h.tags[0]), true).unwrap();
        assert_eq!(rx.tags, h.tags);
    }

    #[test]
    fn frame_errors() {
        let h = FrameHeader {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [0xff; 6],
            tags: vec![],
            src_ip: Ipv4Addr::new(198, 18, 0, 2),
            dst_ip: Ipv4Addr::new(198, 18, 0, 1),
            src_port: 68,
            dst_port: 67,
        };
        let f = build_frame(&h, &[1, 2, 3, 4]);
        assert_eq!(
            parse_frame(&f[..20], None, true).unwrap_err(),
            Malformed::Truncated
        );
        assert_eq!(
            parse_frame(&f[..40], None, true).unwrap_err(),
            Malformed::Truncated
        );
        let mut bad = f.clone();
        bad[14 + 8] ^= 1; // TTL: header checksum breaks
        assert_eq!(
            parse_frame(&bad, None, true).unwrap_err(),
            Malformed::BadChecksum
        );
        // A UDP length past the IPv4 total length, even with bytes in the
        // frame to back it (the XDP program agrees: issue 12, item 9).
        let mut bad = f.clone();
        bad[38..40].copy_from_slice(&(8u16 + 4 + 2).to_be_bytes());
        bad.extend_from_slice(&[0, 0]);
        assert_eq!(
            parse_frame(&bad, None, false).unwrap_err(),
            Malformed::BadUdpLength
        );
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 0xff; // payload: UDP checksum breaks
        assert_eq!(
            parse_frame(&bad, None, true).unwrap_err(),
            Malformed::BadChecksum
        );
        for i in 0..f.len() {
            for b in [0u8, 0x45, 0xff] {
                let mut r = f.clone();
                r[i] = b;
                let _ = parse_frame(&r, None, true);
            }
            let _ = parse_frame(&f[..i], None, true);
        }
    }
}
