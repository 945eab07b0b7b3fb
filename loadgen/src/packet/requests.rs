//! The request each phase sends for client `i`.

use super::*;

/// The request a bound client sends in `phase` (also the XDP engine's
/// template, with `i` and `ip` zero).
pub fn request_spec(
    phase: Phase,
    epoch: u32,
    i: u32,
    ip: Ipv4Addr,
    server: Ipv4Addr,
    server_mac: [u8; 6],
) -> RequestSpec {
    let zero = Ipv4Addr::UNSPECIFIED;
    let base = RequestSpec {
        msg_type: 3,
        xid: xid(epoch, i),
        mac: mac_of(i),
        ciaddr: ip,
        requested: None,
        server_id: None,
        dst_mac: server_mac,
        dst_ip: server,
    };
    match phase {
        Phase::Rebind => RequestSpec {
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::InitReboot => RequestSpec {
            ciaddr: zero,
            requested: Some(ip),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::DiscoverKnown => RequestSpec {
            msg_type: 1,
            ciaddr: zero,
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::Selecting => RequestSpec {
            ciaddr: zero,
            requested: Some(ip),
            server_id: Some(server),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::Release => RequestSpec {
            msg_type: 7,
            server_id: Some(server),
            ..base
        },
        Phase::Decline => RequestSpec {
            msg_type: 4,
            ciaddr: zero,
            requested: Some(ip),
            server_id: Some(server),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        _ => base,
    }
}

impl PacketEngine {
    pub(super) fn request_frame(
        &self,
        phase: Phase,
        epoch: u32,
        i: u32,
        ip: Option<Ipv4Addr>,
        server: Option<ServerInfo>,
    ) -> Vec<u8> {
        let zero = Ipv4Addr::UNSPECIFIED;
        let ip = ip.unwrap_or(zero);
        let (sip, smac) = server.map_or((zero, BROADCAST_MAC), |s| (s.ip, s.mac));
        let spec = match phase {
            Phase::Reconnect if i % 2 == 1 => {
                request_spec(Phase::InitReboot, epoch, i, ip, sip, smac)
            }
            Phase::Dora | Phase::Discover | Phase::Reconnect => RequestSpec {
                msg_type: 1,
                xid: xid(epoch, i),
                mac: mac_of(i),
                ciaddr: zero,
                requested: None,
                server_id: None,
                dst_mac: BROADCAST_MAC,
                dst_ip: Ipv4Addr::BROADCAST,
            },
            _ => request_spec(phase, epoch, i, ip, sip, smac),
        };
        build_request(&spec).0
    }
}
