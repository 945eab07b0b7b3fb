//! Kernel holds: an address stays its client's while the XDP program may
//! still answer for it.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{Lease, LeaseTable};

/// A binding the XDP program may still answer for. The address stays the
/// client's until the committer reports that the map holds no entry for
/// it any more, and the renewal ring has been read after that: a
/// renewal the kernel granted meanwhile is found and honoured, never lost
/// while another client gets the address.
#[derive(Debug, Clone)]
pub struct KernelHold {
    /// The binding as last handed to the map.
    pub lease: Lease,
    /// The commit that handed it over (`MapReport::seq` covers it).
    pub seq: u64,
    /// When (Unix nanoseconds) and how the control plane ended it, if it
    /// did.
    pub ended: Option<(u64, EndKind)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// Its time ran out (reclaim): any later end the kernel granted wins.
    Lapsed,
    /// Released, declined, deleted or moved: only a grant the kernel made
    /// after that (the client renewed anyway) brings it back.
    Ended,
}

impl LeaseTable {
    /// The kernel may answer for `lease` from commit `seq` on.
    pub fn hold_for_kernel(&mut self, lease: &Lease, seq: u64) {
        self.holds.insert(
            lease.ip,
            KernelHold {
                lease: lease.clone(),
                seq,
                ended: None,
            },
        );
    }

    /// The control plane ended the binding at `ip` at `at_ns` (Unix
    /// nanoseconds; once: the first end counts).
    pub fn hold_ended(&mut self, ip: Ipv4Addr, at_ns: u64, kind: EndKind) {
        if let Some(h) = self.holds.get_mut(&ip) {
            h.ended.get_or_insert((at_ns, kind));
        }
    }

    /// For a rebuilt table (reload): the holds move over.
    pub fn take_holds(&mut self) -> HashMap<Ipv4Addr, KernelHold> {
        std::mem::take(&mut self.holds)
    }

    pub fn set_holds(&mut self, holds: HashMap<Ipv4Addr, KernelHold>) {
        self.holds = holds;
    }

    pub fn hold(&self, ip: Ipv4Addr) -> Option<&KernelHold> {
        self.holds.get(&ip)
    }

    pub fn holds(&self) -> impl Iterator<Item = &KernelHold> {
        self.holds.values()
    }

    /// The map holds no entry for `ip` since commit `seq`: the hold ends
    /// (unless a later commit handed the address over again) and the
    /// address returns to its pool if nothing else holds it.
    pub fn release_hold(&mut self, ip: Ipv4Addr, seq: u64, now: u64) {
        if self.holds.get(&ip).is_some_and(|h| h.seq <= seq) {
            self.holds.remove(&ip);
            if !self.by_ip.get(&ip).is_some_and(|l| l.holds_address(now)) {
                self.free_address(ip);
            }
        }
    }
}
