//! Pools: each one's free list, and allocation from them.

use std::{collections::VecDeque, net::Ipv4Addr};

use super::{foreign::foreign_lead, LeaseTable};

pub(super) struct Pool {
    start: u32,
    end: u32,
    /// Candidates, never-used first, then in the order they were freed.
    /// Entries may be stale (taken since): checked when popped.
    pub(super) free: VecDeque<u32>,
    /// Which addresses `free` holds, one bit each: an address is queued at
    /// most once, so no sequence of requests can grow the list.
    queued: Vec<u64>,
}

impl Pool {
    fn bit(&self, a: u32) -> (usize, u64) {
        let i = (a - self.start) as usize;
        (i / 64, 1 << (i % 64))
    }

    fn push(&mut self, a: u32) {
        let (w, m) = self.bit(a);
        if self.queued[w] & m == 0 {
            self.queued[w] |= m;
            self.free.push_back(a);
        }
    }

    fn pop(&mut self) -> Option<u32> {
        let a = self.free.pop_front()?;
        let (w, m) = self.bit(a);
        self.queued[w] &= !m;
        Some(a)
    }
}

impl LeaseTable {
    /// Declares a pool; call after loading stored leases so the free list
    /// starts with the addresses no lease ever used. `reserved` addresses
    /// are never allocated dynamically.
    pub fn add_pool(
        &mut self,
        subnet_id: u32,
        start: Ipv4Addr,
        end: Ipv4Addr,
        reserved: &dyn Fn(u32) -> bool,
    ) {
        let (s, e) = (u32::from(start), u32::from(end));
        let mut free: VecDeque<u32> = (s..=e)
            .filter(|a| !reserved(*a) && !self.by_ip.contains_key(&Ipv4Addr::from(*a)))
            .collect();
        // Released/expired addresses last, so a returning client likely
        // finds its old address still unused.
        let mut used: Vec<(u64, u32)> = self
            .by_ip
            .values()
            .filter(|l| {
                let a = u32::from(l.ip);
                a >= s && a <= e && !reserved(a)
            })
            .map(|l| (l.expires, u32::from(l.ip)))
            .collect();
        used.sort_unstable();
        free.extend(used.into_iter().map(|(_, a)| a));
        let mut pool = Pool {
            start: s,
            end: e,
            free: VecDeque::new(),
            queued: vec![0; ((e - s) as usize + 64) / 64],
        };
        for a in free {
            pool.push(a);
        }
        self.pools.entry(subnet_id).or_default().push(pool);
    }

    pub fn in_pool(&self, subnet_id: u32, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.pools
            .get(&subnet_id)
            .is_some_and(|ps| ps.iter().any(|p| a >= p.start && a <= p.end))
    }

    /// Pops a free address from the subnet's pools.
    pub fn allocate(&mut self, subnet_id: u32, now: u64) -> Option<Ipv4Addr> {
        self.allocate_in(subnet_id, now, &[])
    }

    /// Pops a free address from the subnet's pools in order, skipping
    /// those `open` says no to (by position; past its end: open).
    pub fn allocate_in(&mut self, subnet_id: u32, now: u64, open: &[bool]) -> Option<Ipv4Addr> {
        let pools = self.pools.get_mut(&subnet_id)?;
        for (i, pool) in pools.iter_mut().enumerate() {
            if !open.get(i).copied().unwrap_or(true) {
                continue;
            }
            while let Some(a) = pool.pop() {
                let ip = Ipv4Addr::from(a);
                // A held address comes back when its hold ends.
                if self.holds.contains_key(&ip) {
                    continue;
                }
                match self.by_ip.get(&ip) {
                    Some(l) if l.holds_address(now) => continue,
                    // Another node's binding, within its MCLT (see
                    // `LeaseTable::held`; the field borrow keeps `pools`).
                    Some(l) if l.expires + foreign_lead(&self.foreign, self.mclt_secs, l) > now => {
                        continue
                    }
                    _ => return Some(ip),
                }
            }
        }
        None
    }

    pub(super) fn free_address(&mut self, ip: Ipv4Addr) {
        let a = u32::from(ip);
        for pools in self.pools.values_mut() {
            if let Some(p) = pools.iter_mut().find(|p| a >= p.start && a <= p.end) {
                p.push(a);
                return;
            }
        }
    }

    /// (total pool addresses, addresses held now) for one subnet.
    pub fn utilisation(&self, subnet_id: u32, now: u64) -> (u64, u64) {
        let total = self.pools.get(&subnet_id).map_or(0, |ps| {
            ps.iter().map(|p| u64::from(p.end - p.start + 1)).sum()
        });
        let held = self
            .by_ip
            .values()
            .filter(|l| {
                l.subnet_id == subnet_id && l.holds_address(now) && self.in_pool(subnet_id, l.ip)
            })
            .count() as u64;
        (total, held)
    }
}
