//! Frame mutations for the differential fuzz of the XDP program
//! (tests/tests/xdp_fastpath.rs): flipped bytes, duplicated, injected,
//! removed and reordered options, lying IPv4 and UDP lengths, odd
//! htype/hlen, truncation, VLAN tags added, removed and changed, relay
//! fields and option 82, trailing bytes, IPv4 options, other ports.
//!
//! A frame is split into its parts, mutated, and laid out again. Lengths
//! and checksums are then made right unless a mutation lies about them on
//! purpose, so most mutated frames are ones a real (odd) client or relay
//! could send and get past the checksums: the part of the input space
//! where the two planes can disagree.

mod parts;

use dhcp_common::layout::{
    bootp, eth, ipv4, opt, udp, DHCP_SERVER_PORT, ETH_P_8021AD, ETH_P_8021Q, ETH_P_QINQ_9100,
};

pub use parts::{udp_checksum_ok, Fix, Parts, UdpSum};

/// xorshift64: the same frames for the same seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// A mutated frame and what was done to it.
#[derive(Clone, Debug)]
pub struct Mutated {
    pub frame: Vec<u8>,
    pub what: Vec<&'static str>,
}

/// Codes worth injecting: the ones either plane reads, PAD and END, and
/// a few nobody reads.
const CODES: &[u8] = &[
    0, 1, 3, 6, 12, 15, 50, 51, 52, 53, 54, 55, 57, 58, 61, 80, 82, 118, 121, 255, 43, 60, 77, 224,
];

/// Applies one to three mutations to `frame` (which must split).
pub fn mutate(rng: &mut Rng, frame: &[u8]) -> Mutated {
    let mut m = Mutation {
        p: Parts::split(frame).expect("generated frames split"),
        fix: Fix {
            ip_len: true,
            udp_len: true,
            ip_sum: !rng.chance(3),
            udp_sum: match rng.below(100) {
                0..=89 => UdpSum::Fix,
                90..=94 => UdpSum::Zero,
                _ => UdpSum::Keep,
            },
        },
        cut: None,
        payload_cut: None,
        flips: Vec::new(),
    };
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let w = match rng.below(20) {
            0..=2 => Some(m.flip_bytes(rng)),
            3 => m.duplicate_option(rng),
            4 | 5 => Some(m.inject_option(rng)),
            6 => m.remove_option(rng),
            7 => m.swap_options(rng),
            8 => Some(m.lie_ip_length(rng)),
            9 => Some(m.lie_udp_length(rng)),
            10 => Some(m.odd_hardware(rng)),
            11 => Some(m.truncate(rng)),
            12 | 13 => Some(m.retag(rng)),
            14 | 15 => Some(m.as_relayed(rng)),
            16 => Some(m.trailer(rng)),
            17 => Some(m.padding(rng)),
            18 => Some(m.header_field(rng)),
            _ => Some(m.ip_options_port_or_type(rng)),
        };
        // A mutation that found nothing to change is not counted.
        what.extend(w);
    }
    Mutated {
        frame: m.lay_out(rng),
        what,
    }
}

/// A frame being mutated: its parts, which lengths and checksums to make
/// right, and what is done after layout (cuts, flipped bytes).
struct Mutation {
    p: Parts,
    fix: Fix,
    cut: Option<usize>,
    payload_cut: Option<usize>,
    /// (where, xor mask), applied after layout.
    flips: Vec<(u64, u8)>,
}

impl Mutation {
    /// Bytes flipped after layout, mostly in the payload.
    fn flip_bytes(&mut self, rng: &mut Rng) -> &'static str {
        for _ in 0..1 + rng.below(4) {
            self.flips.push((rng.next_u64(), rng.byte() | 1));
        }
        "flipped bytes"
    }

    fn duplicate_option(&mut self, rng: &mut Rng) -> Option<&'static str> {
        let p = &mut self.p;
        let o = p.options();
        if o.is_empty() {
            return None;
        }
        let (s, e) = rng.pick(&o);
        let copy = p.payload[s..e].to_vec();
        let at = p.boundary(rng);
        p.payload.splice(at..at, copy);
        Some("duplicated option")
    }

    fn inject_option(&mut self, rng: &mut Rng) -> &'static str {
        let code = rng.pick(CODES);
        let len = match rng.below(6) {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => 4,
            4 => rng.below(40) as usize,
            _ => rng.below(256) as usize,
        };
        let mut o = vec![code, len as u8];
        // Sometimes the value is shorter than the length says.
        let have = if rng.chance(15) {
            rng.below(len as u64 + 1) as usize
        } else {
            len
        };
        o.extend(rng.bytes(have));
        let at = self.p.boundary(rng);
        self.p.payload.splice(at..at, o);
        "injected option"
    }

    fn remove_option(&mut self, rng: &mut Rng) -> Option<&'static str> {
        let o = self.p.options();
        if o.is_empty() {
            return None;
        }
        let (s, e) = rng.pick(&o);
        self.p.payload.drain(s..e);
        Some("removed option")
    }

    fn swap_options(&mut self, rng: &mut Rng) -> Option<&'static str> {
        let p = &mut self.p;
        let o = p.options();
        if o.len() < 2 {
            return None;
        }
        let i = rng.below(o.len() as u64 - 1) as usize;
        let (a, b) = (o[i], o[i + 1]);
        let first = p.payload[a.0..a.1].to_vec();
        let second = p.payload[b.0..b.1].to_vec();
        p.payload.splice(a.0..b.1, [second, first].concat());
        Some("swapped options")
    }

    fn lie_ip_length(&mut self, rng: &mut Rng) -> &'static str {
        self.fix.ip_len = false;
        let p = &mut self.p;
        let n = u16::from_be_bytes(p.ip[ipv4::TOTAL_LEN].try_into().unwrap());
        let actual = (p.ip.len() + udp::HEADER_LEN + p.payload.len()) as u16;
        let lie = lie(rng, actual.max(n));
        p.ip[ipv4::TOTAL_LEN].copy_from_slice(&lie.to_be_bytes());
        if rng.chance(50) {
            // Bytes past the datagram the lie can claim.
            let n = rng.below(24) as usize;
            p.trailer.extend(rng.bytes(n));
        }
        "lying IPv4 length"
    }

    fn lie_udp_length(&mut self, rng: &mut Rng) -> &'static str {
        self.fix.udp_len = false;
        let p = &mut self.p;
        let actual = (udp::HEADER_LEN + p.payload.len()) as u16;
        let lie = lie(rng, actual);
        p.udp[udp::LEN].copy_from_slice(&lie.to_be_bytes());
        if rng.chance(50) {
            let n = rng.below(24) as usize;
            p.trailer.extend(rng.bytes(n));
        }
        "lying UDP length"
    }

    fn odd_hardware(&mut self, rng: &mut Rng) -> &'static str {
        if rng.chance(60) {
            let r = rng.byte();
            self.p.payload[bootp::HTYPE] = rng.pick(&[0, 1, 6, 8, 32, 255, r]);
        }
        if rng.chance(70) {
            let r = rng.byte();
            self.p.payload[bootp::HLEN] = rng.pick(&[0, 1, 5, 6, 7, 15, 16, 17, 255, r]);
        }
        "odd htype/hlen"
    }

    fn truncate(&mut self, rng: &mut Rng) -> &'static str {
        if rng.chance(50) {
            // Cut the payload (last, in `lay_out`), headers saying so.
            self.payload_cut = Some(rng.next_u64() as usize);
            "truncated payload"
        } else {
            self.cut = Some(rng.next_u64() as usize);
            "truncated frame"
        }
    }

    fn retag(&mut self, rng: &mut Rng) -> &'static str {
        let tags = &mut self.p.tags;
        match rng.below(4) {
            0 if !tags.is_empty() => {
                let i = rng.below(tags.len() as u64) as usize;
                tags.remove(i);
            }
            1 if !tags.is_empty() => {
                let i = rng.below(tags.len() as u64) as usize;
                let r = rng.next_u64() as u16;
                let vid: u16 = rng.pick(&[0, 1, 7, 100, 200, 4095, r]);
                tags[i][2..4].copy_from_slice(&vid.to_be_bytes());
            }
            _ => {
                let tpid: u16 = rng.pick(&[ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_9100]);
                let vid: u16 = rng.pick(&[100, 200, 7, 0, 4095]);
                let mut t = [0u8; eth::VLAN_TAG_LEN];
                t[..2].copy_from_slice(&tpid.to_be_bytes());
                t[2..].copy_from_slice(&vid.to_be_bytes());
                let at = rng.below(tags.len() as u64 + 1) as usize;
                tags.insert(at, t);
            }
        }
        "tags"
    }

    /// As a relay would forward it: giaddr, hops, option 82.
    fn as_relayed(&mut self, rng: &mut Rng) -> &'static str {
        let p = &mut self.p;
        if rng.chance(70) {
            let r = (rng.next_u64() as u32).to_be_bytes();
            let g: [u8; 4] = rng.pick(&[
                [198, 19, 10, 1],
                [198, 19, 99, 1],
                [198, 18, 0, 1],
                [0, 0, 0, 0],
                r,
            ]);
            p.payload[bootp::GIADDR].copy_from_slice(&g);
        }
        if rng.chance(40) {
            p.payload[bootp::HOPS] = rng.pick(&[0, 1, 2, 16, 255]);
        }
        if rng.chance(30) {
            p.udp[udp::SRC_PORT].copy_from_slice(&DHCP_SERVER_PORT.to_be_bytes());
        }
        if rng.chance(70) {
            let o = relay_agent_info(rng);
            let at = if rng.chance(70) {
                p.end_at()
            } else {
                p.boundary(rng)
            };
            p.payload.splice(at..at, o);
        }
        "relay"
    }

    fn trailer(&mut self, rng: &mut Rng) -> &'static str {
        let n = 1 + rng.below(32) as usize;
        self.p.trailer.extend(rng.bytes(n));
        "trailer"
    }

    fn padding(&mut self, rng: &mut Rng) -> &'static str {
        let p = &mut self.p;
        if rng.chance(50) {
            let n = p.payload.len() + 1 + rng.below(300) as usize;
            p.payload.resize(n, 0);
            "padded"
        } else {
            let end = p.end_at() + 1;
            p.payload.truncate(end.min(p.payload.len()));
            "padding removed"
        }
    }

    fn header_field(&mut self, rng: &mut Rng) -> &'static str {
        let field = rng.pick(&[
            bootp::OP,
            bootp::XID.start,
            bootp::SECS.start,
            bootp::FLAGS.start,
            bootp::CIADDR.start,
            bootp::YIADDR.start,
            bootp::SIADDR.start,
            bootp::SNAME.start,
            bootp::FILE.start,
        ]);
        let len = rng.pick(&[1usize, 2, 4]);
        for i in 0..len {
            self.p.payload[field + i] = rng.byte();
        }
        "header field"
    }

    fn ip_options_port_or_type(&mut self, rng: &mut Rng) -> &'static str {
        let p = &mut self.p;
        match rng.below(3) {
            0 => {
                // IPv4 options (the fast path passes them).
                let n = 4 * (1 + rng.below(10) as usize);
                let at = p.ip.len();
                let opts = rng.bytes(n);
                p.ip.splice(at..at, opts);
                p.ip[ipv4::VERSION_IHL] = 0x40 | (p.ip.len() / 4) as u8;
            }
            1 => {
                let r = rng.next_u64() as u16;
                let port: u16 = rng.pick(&[67, 68, 0, 547, r]);
                p.udp[udp::DST_PORT].copy_from_slice(&port.to_be_bytes());
            }
            _ => {
                let b = rng.pick(&[1u8, 2, 3, 4, 5, 7, 8, 9, 0, 255]);
                if let Some((s, _)) = p
                    .options()
                    .into_iter()
                    .find(|o| p.payload[o.0] == opt::MESSAGE_TYPE && o.1 > o.0 + 2)
                {
                    p.payload[s + 2] = b;
                }
            }
        }
        "ip options, port or message type"
    }

    /// The frame laid out, then what applies to the whole frame: the
    /// payload cut, flipped bytes (checksums sometimes repaired over
    /// them), the frame cut.
    fn lay_out(mut self, rng: &mut Rng) -> Vec<u8> {
        if let Some(c) = self.payload_cut {
            let n = self.p.payload.len();
            self.p.payload.truncate(c % n);
        }
        let mut f = self.p.assemble(self.fix);
        let head = eth::HEADER_LEN + eth::VLAN_TAG_LEN * self.p.tags.len();
        let datagram = head + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
        for &(at, x) in &self.flips {
            // Three in four in the payload, the rest anywhere.
            let i = if at % 4 != 0 && f.len() > datagram {
                datagram + (at >> 2) as usize % (f.len() - datagram)
            } else {
                (at >> 2) as usize % f.len()
            };
            f[i] ^= x;
        }
        if !self.flips.is_empty() && rng.chance(60) {
            // Checksums repaired over the flipped bytes (lengths as
            // flipped); otherwise a broken one, which both planes must drop.
            if let Some(mut q) = Parts::split(&f) {
                f = q.assemble(Fix {
                    ip_len: false,
                    udp_len: false,
                    ip_sum: self.fix.ip_sum,
                    udp_sum: self.fix.udp_sum,
                });
            }
        }
        if let Some(c) = self.cut {
            // BPF_PROG_TEST_RUN refuses frames under an Ethernet header.
            let n = eth::HEADER_LEN + c % (f.len() - (eth::HEADER_LEN - 1));
            f.truncate(n);
        }
        f
    }
}

/// An option 82 of up to three sub-options, some odd.
fn relay_agent_info(rng: &mut Rng) -> Vec<u8> {
    let mut rai = Vec::new();
    for _ in 0..rng.below(4) {
        let code = rng.pick(&[1, 2, 5, 9, 151]);
        let len = if code == 5 && rng.chance(70) {
            4
        } else {
            rng.below(12) as usize
        };
        rai.push(code);
        rai.push(len as u8);
        rai.extend(rng.bytes(len));
    }
    if rng.chance(10) && !rai.is_empty() {
        // A sub-option running past the option.
        rai.truncate(rai.len() - 1);
    }
    let mut o = vec![opt::RELAY_AGENT_INFO, rai.len() as u8];
    o.extend(rai);
    o
}

fn lie(rng: &mut Rng, actual: u16) -> u16 {
    match rng.below(6) {
        0 => actual.wrapping_add(1 + rng.below(16) as u16),
        1 => actual.saturating_sub(1 + rng.below(16) as u16),
        2 => 0,
        3 => u16::MAX,
        4 => rng.below(300) as u16,
        _ => rng.next_u64() as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameSpec;

    #[test]
    fn mutations_are_deterministic_and_never_panic() {
        let f = FrameSpec::dhcp_request([2, 0, 0, 0, 0, 1], 3).build();
        let mut a = Rng(7);
        let mut b = Rng(7);
        for _ in 0..20_000 {
            let (x, y) = (mutate(&mut a, &f), mutate(&mut b, &f));
            assert_eq!(x.frame, y.frame);
            assert!(x.frame.len() >= 14);
        }
    }
}
