//! Which addresses the store's side of a pass looks at, and which
//! addresses the map's side found covered.

use std::{collections::HashSet, net::Ipv4Addr};

use super::STEP;
use crate::lease::LeaseState;

/// Addresses whose lease's client has its entry there, one bit each over
/// the configured subnets (a set for any other address).
pub(super) struct Coverage {
    ranges: Vec<(u32, u32, Vec<u64>)>,
    other: HashSet<Ipv4Addr>,
}

impl Coverage {
    pub(super) fn new(ranges: &[(u32, u32)]) -> Coverage {
        Coverage {
            ranges: ranges
                .iter()
                .map(|&(a, b)| (a, b, vec![0u64; ((b - a) as usize) / 64 + 1]))
                .collect(),
            other: HashSet::new(),
        }
    }

    fn bit(&self, ip: Ipv4Addr) -> Option<(usize, usize, u64)> {
        let a = u32::from(ip);
        self.ranges
            .iter()
            .position(|(s, e, _)| a >= *s && a <= *e)
            .map(|r| {
                let i = (a - self.ranges[r].0) as usize;
                (r, i / 64, 1u64 << (i % 64))
            })
    }

    pub(super) fn insert(&mut self, ip: Ipv4Addr) {
        match self.bit(ip) {
            Some((r, w, m)) => self.ranges[r].2[w] |= m,
            None => {
                self.other.insert(ip);
            }
        }
    }

    pub(super) fn contains(&self, ip: Ipv4Addr) -> bool {
        match self.bit(ip) {
            Some((r, w, m)) => self.ranges[r].2[w] & m != 0,
            None => self.other.contains(&ip),
        }
    }
}

/// Leases at most this many are listed at once for the store's side;
/// more, and it walks the configured subnets' addresses instead, so no
/// single step goes through the whole table.
const LIST_MAX: usize = 32_768;

/// Where the store's side of a pass stands.
#[derive(Default)]
pub(super) enum Walk {
    List {
        ips: Vec<Ipv4Addr>,
        pos: usize,
    },
    Ranges {
        ranges: Vec<(u32, u32)>,
        i: usize,
        next: u64,
    },
    #[default]
    Done,
}

impl Walk {
    pub(super) fn over(server: &crate::dhcp::server::Server) -> Walk {
        if server.leases.len() <= LIST_MAX {
            Walk::List {
                ips: server
                    .leases
                    .iter()
                    .filter(|l| l.state == LeaseState::Bound && l.fast.is_some())
                    .map(|l| l.ip)
                    .collect(),
                pos: 0,
            }
        } else {
            let ranges = server.subnet_ranges();
            let next = ranges.first().map_or(0, |r| u64::from(r.0));
            Walk::Ranges { ranges, i: 0, next }
        }
    }

    pub(super) fn done(&self) -> bool {
        match self {
            Walk::List { ips, pos } => *pos >= ips.len(),
            Walk::Ranges { ranges, i, .. } => *i >= ranges.len(),
            Walk::Done => true,
        }
    }

    /// The next addresses to look at: `STEP` listed leases, or `4 * STEP`
    /// addresses of a subnet.
    pub(super) fn next(&mut self) -> Vec<Ipv4Addr> {
        match self {
            Walk::List { ips, pos } => {
                let end = (*pos + STEP).min(ips.len());
                let out = ips[*pos..end].to_vec();
                *pos = end;
                out
            }
            Walk::Ranges { ranges, i, next } => {
                let mut out = Vec::with_capacity(4 * STEP);
                while out.len() < 4 * STEP && *i < ranges.len() {
                    let end = u64::from(ranges[*i].1);
                    while out.len() < 4 * STEP && *next <= end {
                        out.push(Ipv4Addr::from(*next as u32));
                        *next += 1;
                    }
                    if *next > end {
                        *i += 1;
                        if let Some(r) = ranges.get(*i) {
                            *next = u64::from(r.0);
                        }
                    }
                }
                out
            }
            Walk::Done => Vec::new(),
        }
    }
}
