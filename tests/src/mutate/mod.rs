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
    let mut p = Parts::split(frame).expect("generated frames split");
    let mut fix = Fix {
        ip_len: true,
        udp_len: true,
        ip_sum: !rng.chance(3),
        udp_sum: match rng.below(100) {
            0..=89 => UdpSum::Fix,
            90..=94 => UdpSum::Zero,
            _ => UdpSum::Keep,
        },
    };
    let mut what = Vec::new();
    let mut cut: Option<usize> = None;
    let mut payload_cut: Option<usize> = None;
    let mut flips = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let w = match rng.below(20) {
            0..=2 => {
                // Bytes flipped after layout, mostly in the payload.
                for _ in 0..1 + rng.below(4) {
                    flips.push((rng.next_u64(), rng.byte() | 1));
                }
                "flipped bytes"
            }
            3 => {
                let o = p.options();
                if o.is_empty() {
                    continue;
                }
                let (s, e) = rng.pick(&o);
                let copy = p.payload[s..e].to_vec();
                let at = p.boundary(rng);
                p.payload.splice(at..at, copy);
                "duplicated option"
            }
            4 | 5 => {
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
                let at = p.boundary(rng);
                p.payload.splice(at..at, o);
                "injected option"
            }
            6 => {
                let o = p.options();
                if o.is_empty() {
                    continue;
                }
                let (s, e) = rng.pick(&o);
                p.payload.drain(s..e);
                "removed option"
            }
            7 => {
                let o = p.options();
                if o.len() < 2 {
                    continue;
                }
                let i = rng.below(o.len() as u64 - 1) as usize;
                let (a, b) = (o[i], o[i + 1]);
                let first = p.payload[a.0..a.1].to_vec();
                let second = p.payload[b.0..b.1].to_vec();
                p.payload.splice(a.0..b.1, [second, first].concat());
                "swapped options"
            }
            8 => {
                fix.ip_len = false;
                let n = u16::from_be_bytes([p.ip[2], p.ip[3]]);
                let actual = (p.ip.len() + 8 + p.payload.len()) as u16;
                let lie = lie(rng, actual.max(n));
                p.ip[2..4].copy_from_slice(&lie.to_be_bytes());
                if rng.chance(50) {
                    // Bytes past the datagram the lie can claim.
                    let n = rng.below(24) as usize;
                    p.trailer.extend(rng.bytes(n));
                }
                "lying IPv4 length"
            }
            9 => {
                fix.udp_len = false;
                let actual = (8 + p.payload.len()) as u16;
                let lie = lie(rng, actual);
                p.udp[4..6].copy_from_slice(&lie.to_be_bytes());
                if rng.chance(50) {
                    let n = rng.below(24) as usize;
                    p.trailer.extend(rng.bytes(n));
                }
                "lying UDP length"
            }
            10 => {
                if rng.chance(60) {
                    let r = rng.byte();
                    p.payload[1] = rng.pick(&[0, 1, 6, 8, 32, 255, r]);
                }
                if rng.chance(70) {
                    let r = rng.byte();
                    p.payload[2] = rng.pick(&[0, 1, 5, 6, 7, 15, 16, 17, 255, r]);
                }
                "odd htype/hlen"
            }
            11 => {
                if rng.chance(50) {
                    // Cut the payload (last, below), headers saying so.
                    payload_cut = Some(rng.next_u64() as usize);
                    "truncated payload"
                } else {
                    cut = Some(rng.next_u64() as usize);
                    "truncated frame"
                }
            }
            12 | 13 => {
                match rng.below(4) {
                    0 if !p.tags.is_empty() => {
                        let i = rng.below(p.tags.len() as u64) as usize;
                        p.tags.remove(i);
                    }
                    1 if !p.tags.is_empty() => {
                        let i = rng.below(p.tags.len() as u64) as usize;
                        let r = rng.next_u64() as u16;
                        let vid: u16 = rng.pick(&[0, 1, 7, 100, 200, 4095, r]);
                        p.tags[i][2..4].copy_from_slice(&vid.to_be_bytes());
                    }
                    _ => {
                        let tpid: u16 = rng.pick(&[0x8100, 0x88a8, 0x9100]);
                        let vid: u16 = rng.pick(&[100, 200, 7, 0, 4095]);
                        let mut t = [0u8; 4];
                        t[..2].copy_from_slice(&tpid.to_be_bytes());
                        t[2..].copy_from_slice(&vid.to_be_bytes());
                        let at = rng.below(p.tags.len() as u64 + 1) as usize;
                        p.tags.insert(at, t);
                    }
                }
                "tags"
            }
            14 | 15 => {
                // As a relay would forward it: giaddr, hops, option 82.
                if rng.chance(70) {
                    let r = (rng.next_u64() as u32).to_be_bytes();
                    let g: [u8; 4] = rng.pick(&[
                        [198, 19, 10, 1],
                        [198, 19, 99, 1],
                        [198, 18, 0, 1],
                        [0, 0, 0, 0],
                        r,
                    ]);
                    p.payload[24..28].copy_from_slice(&g);
                }
                if rng.chance(40) {
                    p.payload[3] = rng.pick(&[0, 1, 2, 16, 255]);
                }
                if rng.chance(30) {
                    p.udp[0..2].copy_from_slice(&67u16.to_be_bytes());
                }
                if rng.chance(70) {
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
                    let mut o = vec![82, rai.len() as u8];
                    o.extend(rai);
                    let at = if rng.chance(70) {
                        p.end_at()
                    } else {
                        p.boundary(rng)
                    };
                    p.payload.splice(at..at, o);
                }
                "relay"
            }
            16 => {
                let n = 1 + rng.below(32) as usize;
                p.trailer.extend(rng.bytes(n));
                "trailer"
            }
            17 => {
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
            18 => {
                let field = rng.pick(&[0usize, 4, 8, 10, 12, 16, 20, 44, 108]);
                let len = rng.pick(&[1usize, 2, 4]);
                for i in 0..len {
                    p.payload[field + i] = rng.byte();
                }
                "header field"
            }
            _ => {
                match rng.below(3) {
                    0 => {
                        // IPv4 options (the fast path passes them).
                        let n = 4 * (1 + rng.below(10) as usize);
                        let at = p.ip.len();
                        let opts = rng.bytes(n);
                        p.ip.splice(at..at, opts);
                        p.ip[0] = 0x40 | (p.ip.len() / 4) as u8;
                    }
                    1 => {
                        let r = rng.next_u64() as u16;
                        let port: u16 = rng.pick(&[67, 68, 0, 547, r]);
                        p.udp[2..4].copy_from_slice(&port.to_be_bytes());
                    }
                    _ => {
                        let b = rng.pick(&[1u8, 2, 3, 4, 5, 7, 8, 9, 0, 255]);
                        if let Some((s, _)) = p
                            .options()
                            .into_iter()
                            .find(|o| p.payload[o.0] == 53 && o.1 > o.0 + 2)
                        {
                            p.payload[s + 2] = b;
                        }
                    }
                }
                "ip options, port or message type"
            }
        };
        what.push(w);
    }
    if let Some(c) = payload_cut {
        let n = p.payload.len();
        p.payload.truncate(c % n);
    }
    let mut f = p.assemble(fix);
    let head = 14 + 4 * p.tags.len();
    for &(at, x) in &flips {
        // Three in four in the payload, the rest anywhere.
        let i = if at % 4 != 0 && f.len() > head + 28 {
            head + 28 + (at >> 2) as usize % (f.len() - head - 28)
        } else {
            (at >> 2) as usize % f.len()
        };
        f[i] ^= x;
    }
    if !flips.is_empty() && rng.chance(60) {
        // Checksums repaired over the flipped bytes (lengths as flipped);
        // otherwise a broken one, which both planes must drop.
        if let Some(mut q) = Parts::split(&f) {
            f = q.assemble(Fix {
                ip_len: false,
                udp_len: false,
                ip_sum: fix.ip_sum,
                udp_sum: fix.udp_sum,
            });
        }
    }
    if let Some(c) = cut {
        // BPF_PROG_TEST_RUN refuses frames under an Ethernet header.
        let n = 14 + c % (f.len() - 13);
        f.truncate(n);
    }
    Mutated { frame: f, what }
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
