//! The generator's clients (MAC, xid) and the requests they send.

use super::*;

/// Client `i`'s MAC in the packet engine: `client_mac(i + --mac-offset)`,
/// so a second generator's clients are other clients (xids still carry `i`).
pub fn mac_of(i: u32) -> [u8; 6] {
    client_mac(i.wrapping_add(MAC_OFFSET.load(std::sync::atomic::Ordering::Relaxed)))
}

/// `--shape`, set once per run like `--mac-offset`.
pub(crate) static SHAPE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

pub fn shape() -> Shape {
    Shape::ALL[SHAPE.load(std::sync::atomic::Ordering::Relaxed) as usize]
}

/// `--shape relayed`'s giaddr (high 32 bits) and server, set once per run.
pub(crate) static RELAY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The relay every relayed request comes through: (giaddr, server).
pub fn relay() -> (Ipv4Addr, Ipv4Addr) {
    let r = RELAY.load(std::sync::atomic::Ordering::Relaxed);
    (Ipv4Addr::from((r >> 32) as u32), Ipv4Addr::from(r as u32))
}

impl Shape {
    /// The VLAN tags (TPID, TCI) every frame of the shape carries.
    pub fn tags(self) -> Vec<proto::Tag> {
        let tag = |tpid, tci| proto::Tag { tpid, tci };
        match self {
            Shape::Dot1q => vec![tag(ETH_P_8021Q, 100)],
            Shape::Qinq => vec![tag(ETH_P_8021AD, 100), tag(ETH_P_8021Q, 200)],
            _ => Vec::new(),
        }
    }
}

pub fn xid(epoch: u32, i: u32) -> u32 {
    (epoch << 24) | (i & (MAX_CLIENTS - 1))
}

/// Parameter request list every emulated client sends (DORA and renewals
/// alike: the fast path answers requests shaped like the one it bound).
pub const PRL: [u8; 6] = [1, 3, 6, 15, 51, 54];

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// A client message as a frame. `ciaddr`, `requested` and `server_id`
/// go where RFC 2131 table 5 puts them for `msg_type` and `phase`.
pub struct RequestSpec {
    pub msg_type: u8,
    pub xid: u32,
    pub mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
}

/// Returns the frame and the offset of option 50's value (0 if absent),
/// shaped as `--shape` says.
pub fn build_request(r: &RequestSpec) -> (Vec<u8>, usize) {
    build_shaped(r, shape())
}

pub fn build_shaped(r: &RequestSpec, shape: Shape) -> (Vec<u8>, usize) {
    let mut p = vec![0u8; bootp::FIXED_LEN];
    p[bootp::OP] = bootp::BOOTREQUEST;
    p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
    p[bootp::HLEN] = 6;
    p[bootp::XID].copy_from_slice(&r.xid.to_be_bytes());
    p[bootp::CIADDR].copy_from_slice(&r.ciaddr.octets());
    p[bootp::CHADDR.start..bootp::CHADDR.start + 6].copy_from_slice(&r.mac);
    let relayed = shape == Shape::Relayed;
    let (giaddr, relay_server) = relay();
    if relayed {
        // One hop: the relay's, which sends every request to the server.
        p[bootp::HOPS] = 1;
        p[bootp::GIADDR].copy_from_slice(&giaddr.octets());
    }
    p.extend_from_slice(&bootp::MAGIC_COOKIE);
    p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, r.msg_type]);
    if shape == Shape::ClientId {
        let id = dhcp_common::gen::client_id(r.mac);
        p.extend_from_slice(&[opt::CLIENT_ID, id.len() as u8]);
        p.extend_from_slice(&id);
    }
    let mut requested_off = 0;
    if let Some(ip) = r.requested {
        p.extend_from_slice(&[opt::REQUESTED_IP, 4]);
        requested_off = p.len();
        p.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = r.server_id {
        p.extend_from_slice(&[opt::SERVER_ID, 4]);
        p.extend_from_slice(&ip.octets());
    }
    if matches!(r.msg_type, msg::DISCOVER | msg::REQUEST) {
        p.extend_from_slice(&[opt::PARAMETER_REQUEST_LIST, PRL.len() as u8]);
        p.extend_from_slice(&PRL);
    }
    if relayed {
        // Option 82 last, as relays add it (RFC 3046 §2.1); a circuit per
        // client, so each is its own line.
        let circuit = dhcp_common::gen::client_id(r.mac);
        p.extend_from_slice(&[
            opt::RELAY_AGENT_INFO,
            circuit.len() as u8 + 2,
            opt::RAI_CIRCUIT_ID,
            circuit.len() as u8,
        ]);
        p.extend_from_slice(&circuit);
    }
    p.push(opt::END);
    if shape != Shape::Unpadded {
        p.resize(bootp::MIN_LEN, 0);
    }
    let tags = shape.tags();
    let ip_at = eth::HEADER_LEN + tags.len() * eth::VLAN_TAG_LEN;
    let h = proto::FrameHeader {
        src_mac: r.mac,
        dst_mac: r.dst_mac,
        tags,
        src_ip: if relayed { giaddr } else { r.ciaddr },
        dst_ip: if relayed { relay_server } else { r.dst_ip },
        src_port: if relayed { 67 } else { 68 },
        dst_port: 67,
    };
    let udp_payload_at = ip_at + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
    let requested_off = if requested_off == 0 {
        0
    } else {
        udp_payload_at + requested_off
    };
    (proto::build_frame(&h, &p), requested_off)
}

/// Who the clients talk to, learned in DORA or given.
#[derive(Clone, Copy, Debug)]
pub struct ServerInfo {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    dhcp_common::hex::parse_mac(s)
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}
