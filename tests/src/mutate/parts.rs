//! A frame split into its parts and laid out again, lengths and
//! checksums made right as asked.

use super::Rng;
use crate::frame::checksum;

/// An Ethernet/VLAN/IPv4/UDP frame in parts.
#[derive(Clone, Debug)]
pub struct Parts {
    /// Destination and source MAC.
    pub eth: [u8; 12],
    /// TPID + TCI each, outermost first.
    pub tags: Vec<[u8; 4]>,
    pub ethertype: [u8; 2],
    /// The IPv4 header, options included.
    pub ip: Vec<u8>,
    pub udp: [u8; 8],
    /// The UDP payload (BOOTP).
    pub payload: Vec<u8>,
    /// Bytes after the IPv4 datagram (Ethernet padding, junk).
    pub trailer: Vec<u8>,
}

fn is_tpid(t: u16) -> bool {
    matches!(t, 0x8100 | 0x88a8 | 0x9100)
}

impl Parts {
    /// Splits a well-formed frame (as `FrameSpec::build` makes them).
    pub fn split(f: &[u8]) -> Option<Parts> {
        let mut off = 12;
        let mut tags = Vec::new();
        while f.len() >= off + 4 && is_tpid(u16::from_be_bytes([f[off], f[off + 1]])) {
            tags.push(f[off..off + 4].try_into().ok()?);
            off += 4;
        }
        let ethertype: [u8; 2] = f.get(off..off + 2)?.try_into().ok()?;
        let ip_at = off + 2;
        let ihl = usize::from(*f.get(ip_at)? & 0x0f) * 4;
        let tot_len = usize::from(u16::from_be_bytes([*f.get(ip_at + 2)?, *f.get(ip_at + 3)?]));
        let udp_at = ip_at + ihl;
        if ihl < 20 || tot_len < ihl + 8 || f.len() < ip_at + tot_len {
            return None;
        }
        Some(Parts {
            eth: f[..12].try_into().ok()?,
            tags,
            ethertype,
            ip: f[ip_at..udp_at].to_vec(),
            udp: f[udp_at..udp_at + 8].try_into().ok()?,
            payload: f[udp_at + 8..ip_at + tot_len].to_vec(),
            trailer: f[ip_at + tot_len..].to_vec(),
        })
    }

    /// Lays the frame out; `fix` says which lengths and checksums are
    /// made right first.
    pub fn assemble(&mut self, fix: Fix) -> Vec<u8> {
        if fix.ip_len {
            let n = (self.ip.len() + 8 + self.payload.len()) as u16;
            self.ip[2..4].copy_from_slice(&n.to_be_bytes());
        }
        if fix.udp_len {
            let n = (8 + self.payload.len()) as u16;
            self.udp[4..6].copy_from_slice(&n.to_be_bytes());
        }
        if fix.ip_sum {
            self.ip[10..12].fill(0);
            let c = checksum(&[&self.ip]);
            self.ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        match fix.udp_sum {
            UdpSum::Fix => {
                let c = self.udp_sum();
                self.udp[6..8].copy_from_slice(&c.to_be_bytes());
            }
            UdpSum::Zero => self.udp[6..8].fill(0),
            UdpSum::Keep => {}
        }
        let mut f = Vec::with_capacity(64 + self.payload.len() + self.trailer.len());
        f.extend_from_slice(&self.eth);
        for t in &self.tags {
            f.extend_from_slice(t);
        }
        f.extend_from_slice(&self.ethertype);
        f.extend_from_slice(&self.ip);
        f.extend_from_slice(&self.udp);
        f.extend_from_slice(&self.payload);
        f.extend_from_slice(&self.trailer);
        f
    }

    /// The UDP checksum over the header as it stands and the payload.
    fn udp_sum(&self) -> u16 {
        let mut udp = self.udp;
        udp[6..8].fill(0);
        let len = (8 + self.payload.len()) as u16;
        let pseudo = [&self.ip[12..20], &[0, 17], &len.to_be_bytes()[..]].concat();
        match checksum(&[&pseudo, &udp, &self.payload]) {
            0 => 0xffff,
            c => c,
        }
    }

    /// (start, end) of each option before END in the payload.
    pub fn options(&self) -> Vec<(usize, usize)> {
        let p = &self.payload;
        let mut out = Vec::new();
        let mut i = 240;
        while i < p.len() {
            match p[i] {
                0 => i += 1,
                255 => break,
                _ => {
                    if i + 2 > p.len() || i + 2 + usize::from(p[i + 1]) > p.len() {
                        break;
                    }
                    let end = i + 2 + usize::from(p[i + 1]);
                    out.push((i, end));
                    i = end;
                }
            }
        }
        out
    }

    /// Where END is (or the payload's end).
    pub(super) fn end_at(&self) -> usize {
        self.options()
            .last()
            .map_or(240, |o| o.1)
            .min(self.payload.len())
    }

    /// An option boundary at or before END.
    pub(super) fn boundary(&self, rng: &mut Rng) -> usize {
        let mut b: Vec<usize> = self.options().iter().map(|o| o.0).collect();
        b.push(self.end_at());
        rng.pick(&b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpSum {
    Fix,
    /// No checksum (legal for UDP over IPv4).
    Zero,
    /// Whatever the mutations left.
    Keep,
}

#[derive(Clone, Copy, Debug)]
pub struct Fix {
    pub ip_len: bool,
    pub udp_len: bool,
    pub ip_sum: bool,
    pub udp_sum: UdpSum,
}

/// Whether a frame's UDP checksum holds (zero: none, which holds).
pub fn udp_checksum_ok(f: &[u8]) -> bool {
    let Some(p) = Parts::split(f) else {
        return false;
    };
    let sum = u16::from_be_bytes([p.udp[6], p.udp[7]]);
    let len = u16::from_be_bytes([p.udp[4], p.udp[5]]);
    if sum == 0 {
        return true;
    }
    if usize::from(len) < 8 || usize::from(len) > 8 + p.payload.len() {
        return false;
    }
    let pseudo = [&p.ip[12..20], &[0, 17], &len.to_be_bytes()[..]].concat();
    checksum(&[&pseudo, &p.udp, &p.payload[..usize::from(len) - 8]]) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameSpec;

    #[test]
    fn split_and_assemble_round_trip() {
        let mut spec = FrameSpec::dhcp_request([2, 0, 0, 0, 0, 1], 3);
        spec.tags = vec![(0x88a8, 100), (0x8100, 200)];
        spec.src_ip = [198, 18, 0, 9];
        let f = spec.build();
        let mut p = Parts::split(&f).unwrap();
        assert_eq!(p.tags.len(), 2);
        assert_eq!(p.payload.len(), 300);
        let fix = Fix {
            ip_len: true,
            udp_len: true,
            ip_sum: true,
            udp_sum: UdpSum::Fix,
        };
        assert_eq!(p.assemble(fix), f);
        assert!(udp_checksum_ok(&f));
    }
}
