//! The flood the XDP engine sends (`--phase flood`): SELECTING REQUESTs
//! and DISCOVERs, alternately, from random MACs, relayed as if through
//! one relay port (giaddr and option 82's circuit-id fixed), so the whole
//! flood is one subscriber line. It is what a broken or hostile access
//! port does; the server should spend one line's limit on it.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use dhcp_common::gen::FRAME_LEN;
use dhcp_common::layout::{bootp, msg, opt};

use super::{ServerInfo, PRL};
use xdhcp::proto;

/// The template and its offsets: (frame, option 50's value, option 53's
/// value, option 54).
pub fn template(
    server: ServerInfo,
    giaddr: Ipv4Addr,
    circuit: &[u8],
) -> Result<(Vec<u8>, usize, usize, usize)> {
    if circuit.is_empty() || circuit.len() > 32 {
        bail!("--flood-circuit must be 1 to 32 bytes");
    }
    let mut p = vec![0u8; bootp::FIXED_LEN];
    p[bootp::OP] = bootp::BOOTREQUEST;
    p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
    p[bootp::HLEN] = 6;
    // One hop: the relay's.
    p[bootp::HOPS] = 1;
    p[bootp::GIADDR].copy_from_slice(&giaddr.octets());
    p.extend_from_slice(&bootp::MAGIC_COOKIE);
    p.extend_from_slice(&[opt::MESSAGE_TYPE, 1]);
    let msg_type = p.len();
    p.push(msg::REQUEST);
    p.extend_from_slice(&[opt::REQUESTED_IP, 4]);
    let requested = p.len();
    p.extend_from_slice(&[0; 4]);
    let server_id = p.len();
    p.extend_from_slice(&[opt::SERVER_ID, 4]);
    p.extend_from_slice(&server.ip.octets());
    p.extend_from_slice(&[opt::PARAMETER_REQUEST_LIST, PRL.len() as u8]);
    p.extend_from_slice(&PRL);
    // Option 82 last, as relays add it (RFC 3046 §2.1).
    p.extend_from_slice(&[
        opt::RELAY_AGENT_INFO,
        circuit.len() as u8 + 2,
        opt::RAI_CIRCUIT_ID,
        circuit.len() as u8,
    ]);
    p.extend_from_slice(circuit);
    p.push(255);
    p.resize(300, 0);
    let h = proto::FrameHeader {
        src_mac: [0; 6],
        dst_mac: server.mac,
        tags: Vec::new(),
        src_ip: giaddr,
        dst_ip: server.ip,
        src_port: 67,
        dst_port: 67,
    };
    let frame = proto::build_frame(&h, &p);
    if frame.len() != FRAME_LEN {
        bail!("flood template is {} bytes, not {FRAME_LEN}", frame.len());
    }
    Ok((frame, 42 + requested, 42 + msg_type, 42 + server_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_relayed_selecting_request_with_its_offsets() {
        let server = ServerInfo {
            ip: Ipv4Addr::new(198, 18, 0, 1),
            mac: [2, 0, 0, 0, 0, 1],
        };
        let (f, req, mt, sid) =
            template(server, Ipv4Addr::new(198, 18, 0, 254), b"olt1/1").unwrap();
        assert_eq!(f[mt], 3);
        assert_eq!(&f[mt - 2..mt], &[53, 1]);
        assert_eq!(&f[req - 2..req], &[50, 4]);
        assert_eq!(&f[sid..sid + 6], &[54, 4, 198, 18, 0, 1]);
        assert_eq!(&f[42 + 24..42 + 28], &[198, 18, 0, 254]);
        // UDP from port 67 (a relay), no checksum.
        assert_eq!(&f[34..38], &[0, 67, 0, 67]);
    }
}
