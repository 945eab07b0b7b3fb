//! Crafting Ethernet frames for the lab: optional VLAN tags, IPv4 (with
//! options or fragment bits when a test wants them), UDP, and a minimal
//! BOOTP/DHCP request payload. Checksums are computed, so what leaves here
//! is what a real client would send unless a test breaks it on purpose.

use anyhow::{Context, Result};
use dhcp_common::layout::{ipv4, udp};

pub use dhcp_common::layout::{
    eth::BROADCAST as BROADCAST_MAC, ETH_P_8021AD as TPID_8021AD, ETH_P_8021Q as TPID_8021Q,
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
};

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    dhcp_common::hex::parse_mac(s).with_context(|| format!("bad MAC {s:?}"))
}

pub use dhcp_common::internet_checksum as checksum;

/// A frame description; `build` lays it out.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, VLAN ID), outermost first.
    pub tags: Vec<(u16, u16)>,
    /// Ethertype after the tags. Anything but IPv4 gets `payload` raw.
    pub ethertype: u16,
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    /// Raw IPv4 options (padded to 4 bytes by `build`).
    pub ip_options: Vec<u8>,
    /// The 16-bit flags+fragment offset field.
    pub frag: u16,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            dst_mac: BROADCAST_MAC,
            src_mac: [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01],
            tags: Vec::new(),
            ethertype: ETH_P_IP,
            src_ip: [0, 0, 0, 0],
            dst_ip: [255, 255, 255, 255],
            ip_options: Vec::new(),
            frag: 0,
            proto: ipv4::PROTO_UDP,
            src_port: dhcp_common::DHCP_CLIENT_PORT,
            dst_port: dhcp_common::DHCP_SERVER_PORT,
            payload: Vec::new(),
        }
    }
}

impl FrameSpec {
    /// A DHCP request from `mac` as a client in INIT would broadcast it.
    pub fn dhcp_request(mac: [u8; 6], msg_type: u8) -> FrameSpec {
        FrameSpec {
            src_mac: mac,
            payload: bootp_request(mac, 0x1234_5678, msg_type),
            ..Default::default()
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.payload.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        if self.ethertype != ETH_P_IP {
            f.extend_from_slice(&self.payload);
            return f;
        }
        let mut opts = self.ip_options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let ihl = ipv4::MIN_HEADER_LEN + opts.len();
        let l4 = if self.proto == ipv4::PROTO_UDP {
            let mut u = Vec::with_capacity(udp::HEADER_LEN + self.payload.len());
            let len = (udp::HEADER_LEN + self.payload.len()) as u16;
            u.extend_from_slice(&self.src_port.to_be_bytes());
            u.extend_from_slice(&self.dst_port.to_be_bytes());
            u.extend_from_slice(&len.to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(&self.payload);
            let pseudo = [
                &self.src_ip[..],
                &self.dst_ip[..],
                &[0, ipv4::PROTO_UDP],
                &len.to_be_bytes()[..],
            ]
            .concat();
            let mut c = checksum(&[&pseudo, &u]);
            if c == 0 {
                c = 0xffff;
            }
            u[udp::CHECKSUM].copy_from_slice(&c.to_be_bytes());
            u
        } else {
            self.payload.clone()
        };
        let tot_len = (ihl + l4.len()) as u16;
        let mut ip = Vec::with_capacity(ihl);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&tot_len.to_be_bytes());
        ip.extend_from_slice(&[0, 1]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(64);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src_ip);
        ip.extend_from_slice(&self.dst_ip);
        ip.extend_from_slice(&opts);
        let c = checksum(&[&ip]);
        ip[ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// A BOOTREQUEST with the magic cookie, option 53 and end, padded to the
/// 300-byte BOOTP minimum as real clients do, with the broadcast flag.
pub fn bootp_request(mac: [u8; 6], xid: u32, msg_type: u8) -> Vec<u8> {
    crate::dhcp::Msg {
        flags: dhcp_common::layout::bootp::FLAG_BROADCAST,
        ..crate::dhcp::Msg::new(msg_type, mac, xid)
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_verifies() {
        let f = FrameSpec::dhcp_request([2, 0, 0, 0, 0, 1], 1).build();
        let ip = &f[14..34];
        assert_eq!(checksum(&[ip]), 0);
    }

    #[test]
    fn udp_checksum_verifies() {
        let spec = FrameSpec {
            src_ip: [198, 18, 0, 2],
            dst_ip: [198, 18, 0, 1],
            ..FrameSpec::dhcp_request([2, 0, 0, 0, 0, 1], 3)
        };
        let f = spec.build();
        let udp = &f[34..];
        let pseudo = [
            &spec.src_ip[..],
            &spec.dst_ip[..],
            &[0, 17],
            &(udp.len() as u16).to_be_bytes()[..],
        ]
        .concat();
        assert_eq!(checksum(&[&pseudo, udp]), 0);
    }

    #[test]
    fn tags_and_options_shift_headers() {
        let spec = FrameSpec {
            tags: vec![(TPID_8021AD, 100), (TPID_8021Q, 200)],
            ip_options: vec![1, 1, 1],
            ..FrameSpec::dhcp_request([2, 0, 0, 0, 0, 1], 1)
        };
        let f = spec.build();
        assert_eq!(&f[12..14], &TPID_8021AD.to_be_bytes());
        assert_eq!(&f[14..16], &100u16.to_be_bytes());
        assert_eq!(&f[16..18], &TPID_8021Q.to_be_bytes());
        assert_eq!(&f[20..22], &ETH_P_IP.to_be_bytes());
        assert_eq!(f[22], 0x46);
        assert_eq!(f.len(), 14 + 8 + 24 + 8 + 300);
    }

    #[test]
    fn bootp_request_is_a_broadcast_bootrequest() {
        let mac = [2, 0, 0x5e, 0x10, 0, 1];
        let p = bootp_request(mac, 0x0102_0304, 3);
        let mut want = vec![0u8; 236];
        want[..4].copy_from_slice(&[1, 1, 6, 0]);
        want[4..8].copy_from_slice(&[1, 2, 3, 4]);
        want[10] = 0x80;
        want[28..34].copy_from_slice(&mac);
        want.extend_from_slice(&[99, 130, 83, 99, 53, 1, 3, 255]);
        want.resize(300, 0);
        assert_eq!(p, want);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:01").unwrap(),
            [2, 0, 0x5e, 0x10, 0, 1]
        );
        assert!(parse_mac("02:00").is_err());
    }
}
