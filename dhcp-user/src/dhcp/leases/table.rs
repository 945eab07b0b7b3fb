//! The table's indexes (by address, by subnet and client) and the
//! changes that keep them right.

use std::net::Ipv4Addr;

use super::{Lease, LeaseState, LeaseTable};

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    /// The lease this client has (in any state) in this subnet.
    pub fn by_client(&self, subnet_id: u32, key: &[u8]) -> Option<&Lease> {
        let ip = self.by_client.get(&(subnet_id, Box::from(key)))?;
        self.by_ip.get(ip).filter(|l| l.is_client(key))
    }

    /// Whether `ip` could be given to `key` at `now`: nobody else holds it,
    /// in the store or in the kernel.
    pub fn available_to(&self, ip: Ipv4Addr, key: &[u8], now: u64) -> bool {
        if self.holds.get(&ip).is_some_and(|h| !h.lease.is_client(key)) {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(l) => l.is_client(key) && l.state != LeaseState::Declined || !self.held(l, now),
        }
    }

    /// Inserts or replaces the lease at `lease.ip`, keeping both indexes
    /// right (the previous holder, if another client, loses its index).
    /// A client has one address per subnet: its previous one is dropped (an
    /// offer) or released (a binding), and a released binding is returned
    /// so the caller can persist that change.
    pub fn put(&mut self, lease: Lease) -> Option<Lease> {
        self.foreign.remove(&lease.ip);
        // A lease that holds nothing for its client (released, expired)
        // never takes the client's index from the one it has now.
        if !matches!(lease.state, LeaseState::Offered | LeaseState::Bound) {
            if let Some(c) = lease.client.clone() {
                let k = (lease.subnet_id, c);
                let other_current = self
                    .by_client
                    .get(&k)
                    .filter(|ip| **ip != lease.ip)
                    .and_then(|ip| self.by_ip.get(ip))
                    .is_some_and(|o| {
                        o.client == lease.client
                            && matches!(o.state, LeaseState::Offered | LeaseState::Bound)
                    });
                if other_current {
                    self.unindex_other_holder(&lease);
                    self.by_ip.insert(lease.ip, lease);
                    return None;
                }
            }
        }
        let mut displaced = None;
        self.unindex_other_holder(&lease);
        if let Some(c) = lease.client.clone() {
            if let Some(prev) = self.by_client.insert((lease.subnet_id, c), lease.ip) {
                if prev != lease.ip {
                    if let Some(p) = self
                        .by_ip
                        .get_mut(&prev)
                        .filter(|p| p.client == lease.client)
                    {
                        match p.state {
                            LeaseState::Offered => {
                                self.by_ip.remove(&prev);
                                self.free_address(prev);
                            }
                            LeaseState::Bound => {
                                p.state = LeaseState::Released;
                                displaced = Some(p.clone());
                                self.free_address(prev);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        self.by_ip.insert(lease.ip, lease);
        displaced
    }

    /// Inserts a stored lease at start-up: unlike `put`, never changes
    /// another lease. A client with several leases in a subnet (a bound
    /// one and those it left) is indexed by its bound one, else by its
    /// latest, whatever order the store returns them in.
    pub fn insert_stored(&mut self, lease: Lease) {
        if let Some(c) = lease.client.clone() {
            let k = (lease.subnet_id, c);
            let rank = |l: &Lease| (l.state == LeaseState::Bound, l.expires);
            let better = match self.by_client.get(&k).and_then(|ip| self.by_ip.get(ip)) {
                Some(cur) => rank(&lease) > rank(cur),
                None => true,
            };
            if better {
                self.by_client.insert(k, lease.ip);
            }
        }
        self.by_ip.insert(lease.ip, lease);
    }

    /// The same lease (address, client, subnet) with other fields: the
    /// indexes stay as they are.
    pub fn replace(&mut self, lease: Lease) {
        self.foreign.remove(&lease.ip);
        debug_assert!(self
            .by_ip
            .get(&lease.ip)
            .is_some_and(|o| o.client == lease.client && o.subnet_id == lease.subnet_id));
        self.by_ip.insert(lease.ip, lease);
    }

    /// The previous holder of `lease.ip`, if another client, loses its
    /// index entry for that address.
    fn unindex_other_holder(&mut self, lease: &Lease) {
        if let Some(old) = self.by_ip.get(&lease.ip) {
            if old.client != lease.client || old.subnet_id != lease.subnet_id {
                if let Some(c) = old.client.clone() {
                    let k = (old.subnet_id, c);
                    if self.by_client.get(&k) == Some(&lease.ip) {
                        self.by_client.remove(&k);
                    }
                }
            }
        }
    }

    /// Removes the lease at `ip` entirely and frees the address.
    pub fn remove(&mut self, ip: Ipv4Addr) -> Option<Lease> {
        self.foreign.remove(&ip);
        let old = self.by_ip.remove(&ip)?;
        if let Some(c) = old.client.clone() {
            let k = (old.subnet_id, c);
            if self.by_client.get(&k) == Some(&ip) {
                self.by_client.remove(&k);
            }
        }
        self.free_address(ip);
        Some(old)
    }

    /// Changes the state of the lease at `ip` (e.g. to Released), returning
    /// the address to its pool when it no longer holds it.
    pub fn set_state(
        &mut self,
        ip: Ipv4Addr,
        state: LeaseState,
        expires: u64,
        now: u64,
    ) -> Option<&Lease> {
        let l = self.by_ip.get_mut(&ip)?;
        self.foreign.remove(&ip);
        l.state = state;
        l.expires = expires;
        let freed = !l.holds_address(now);
        if freed {
            self.free_address(ip);
        }
        self.by_ip.get(&ip)
    }
    /// Moves leases whose time ran out to Expired (offers are dropped, a
    /// declined address ends probation) and returns the bound ones that
    /// expired, for the store and the fast-path map, and the addresses of
    /// the offers that ran out.
    pub fn reclaim(&mut self, now: u64) -> (Vec<Lease>, Vec<Ipv4Addr>) {
        let due: Vec<Ipv4Addr> = self
            .by_ip
            .values()
            .filter(|l| {
                matches!(
                    l.state,
                    LeaseState::Offered | LeaseState::Bound | LeaseState::Declined
                ) && l.expires + self.lead(l) <= now
            })
            .map(|l| l.ip)
            .collect();
        let mut expired = Vec::new();
        let mut offers = Vec::new();
        for ip in due {
            let state = self.by_ip[&ip].state;
            match state {
                LeaseState::Offered | LeaseState::Declined => {
                    if state == LeaseState::Offered {
                        offers.push(ip);
                    }
                    self.remove(ip);
                }
                _ => {
                    if let Some(l) = self.set_state(ip, LeaseState::Expired, now, now) {
                        expired.push(l.clone());
                    }
                }
            }
        }
        (expired, offers)
    }
}
