//! What the fuzz targets share: the configuration the `server` target
//! serves, the record format of its inputs, and the checks every reply
//! must pass. The seed writer in tests/tests/xdp_fastpath.rs writes
//! inputs in the same format (`encode_record` there is this one's twin).

use std::{net::Ipv4Addr, sync::OnceLock};

use dhcp_common::layout::bootp;

use xdhcp::{
    config::Config,
    dhcp::server::{Dest, Outgoing},
    proto::{self, DhcpRequest, Tag},
};

/// fuzz/server.toml.
pub const SERVER_CONFIG: &str = include_str!("../server.toml");

/// Unix time the `server` target starts at (fixed: a crash reproduces).
pub const START: u64 = 1_800_000_000;

pub fn server_config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(SERVER_CONFIG, "fuzz/server.toml").expect("fuzz/server.toml"))
}

/// One message of a `server` input: a selector byte, a big-endian 16-bit
/// length, then that many bytes of BOOTP payload (the last record may be
/// cut short: it takes what is left).
pub struct Record<'a> {
    pub sel: u8,
    pub payload: &'a [u8],
}

pub fn records(mut data: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let sel = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let n = len.min(rest.len());
        let (payload, tail) = rest.split_at(n);
        data = tail;
        Some(Record { sel, payload })
    })
}

pub fn encode_record(sel: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![sel];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// Bits 0-1 of the selector: the VLAN tags the message arrived with.
pub fn tags(sel: u8) -> Vec<Tag> {
    let t = |tpid, tci| Tag { tpid, tci };
    match sel & 3 {
        0 => vec![],
        1 => vec![t(0x8100, 100)],
        2 => vec![t(0x88a8, 100), t(0x8100, 200)],
        _ => vec![t(0x8100, 7)],
    }
}

/// Bit 2: the configured interface, or one the config does not name.
pub fn iface(sel: u8) -> &'static str {
    if sel & 4 == 0 {
        "lo"
    } else {
        "eth9"
    }
}

/// Bits 3-7: seconds that pass before the message (up to an hour, past
/// offer holds, probation and lease ends).
pub fn advance(sel: u8) -> u64 {
    let k = u64::from(sel >> 3);
    k * k * 4
}

/// What every reply must be: a BOOTREPLY to the request's xid and
/// chaddr, of a type the request can get, with well-formed options ending
/// in END, at least the BOOTP minimum and within the client's limit, and
/// a frame that parses back to the same payload.
pub fn check_reply(req: &DhcpRequest<'_>, r: &Outgoing, tags: &[Tag]) {
    let p = &r.payload;
    assert!(
        p.len() >= proto::BOOTP_MIN_PAYLOAD,
        "reply of {} bytes",
        p.len()
    );
    let limit = usize::from(req.max_message_size.unwrap_or(0)).max(proto::MIN_MAX_MESSAGE) - 28;
    assert!(
        p.len() <= limit.max(proto::BOOTP_MIN_PAYLOAD),
        "reply of {} bytes over {limit}",
        p.len()
    );
    assert_eq!(p[bootp::OP], bootp::BOOTREPLY, "not a BOOTREPLY");
    assert_eq!(&p[bootp::XID], &req.xid.to_be_bytes(), "xid");
    assert_eq!(&p[bootp::CHADDR], &req.chaddr, "chaddr");
    assert_eq!(&p[bootp::COOKIE], &proto::MAGIC_COOKIE, "cookie");
    let mut i = bootp::OPTIONS;
    let mut msg_type = None;
    loop {
        assert!(i < p.len(), "options without END");
        match p[i] {
            0 => i += 1,
            255 => break,
            code => {
                assert!(i + 2 <= p.len(), "option {code} cut");
                let len = usize::from(p[i + 1]);
                assert!(i + 2 + len <= p.len(), "option {code} overruns");
                if code == 53 {
                    assert_eq!(len, 1);
                    msg_type.get_or_insert(p[i + 2]);
                }
                i += 2 + len;
            }
        }
    }
    let t = msg_type.expect("no message type");
    assert!(
        matches!(
            (req.msg_type, t),
            (proto::msg::DISCOVER, proto::msg::OFFER | proto::msg::ACK)
                | (proto::msg::REQUEST, proto::msg::ACK | proto::msg::NAK)
                | (proto::msg::INFORM, proto::msg::ACK)
        ),
        "{} answered with {}",
        proto::msg::name(req.msg_type),
        proto::msg::name(t)
    );
    assert_eq!(t, r.msg_type);
    let server_id = server_config().server.server_id;
    // The request as it arrived: to the server identifier (relayed) or
    // broadcast, from a relay or the client.
    let relayed = matches!(r.dest, Dest::Relay(_));
    let request = proto::RxFrame {
        dst_mac: [2, 0, 0x5e, 0, 0, 1],
        src_mac: [2, 0, 0x5e, 0, 0, 0xfe],
        tags: tags.to_vec(),
        src_ip: req.giaddr,
        dst_ip: if relayed {
            server_id
        } else {
            Ipv4Addr::BROADCAST
        },
        src_port: if relayed { 67 } else { 68 },
        dst_port: 67,
        payload: &[],
    };
    let mut egress =
        xdhcp::daemon::transmit::Egress::with_locality(server_id, move |a| a == server_id);
    let xdhcp::daemon::transmit::Wire::Frame { bytes, .. } =
        egress.frame_for(&r.dest, &request, [2, 0, 0x5e, 0, 0, 1], p.clone(), 0);
    let f = proto::parse_frame(&bytes, None, true).expect("the reply's frame parses");
    assert_eq!(f.payload, &p[..]);
    assert_eq!(f.tags, tags);
    assert_eq!(f.src_ip, server_id);
    assert_ne!(f.dst_ip, Ipv4Addr::UNSPECIFIED);
    if let Dest::Relay(giaddr) = r.dest {
        assert_eq!((f.dst_ip, f.dst_port), (giaddr, 67));
    }
}
