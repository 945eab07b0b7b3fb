//! Other nodes' leases in a shared store: known here (so their addresses
//! are not offered and their clients are ACKed when they come here), but
//! never this node's to end early. Another node's binding is held past
//! its end by the store's MCLT, as the database holds it for that node
//! (`crate::store::postgres`: a claim on it is refused until then), so
//! this node neither offers the address nor expires it before the
//! database would let it.

use std::{collections::HashMap, net::Ipv4Addr, sync::Arc};

use super::{Lease, LeaseState, LeaseTable};

/// How long past its end `l` is still held: the MCLT for another node's
/// binding, nothing for this node's own leases.
pub(super) fn foreign_lead(foreign: &HashMap<Ipv4Addr, Arc<str>>, mclt: u64, l: &Lease) -> u64 {
    if l.state == LeaseState::Bound && foreign.contains_key(&l.ip) {
        mclt
    } else {
        0
    }
}

impl LeaseTable {
    /// A shared store: this node's name, the MCLT, and the leases of the
    /// table other nodes wrote (after `insert_stored`).
    pub fn set_shared(
        &mut self,
        own: &str,
        mclt_secs: u64,
        others: impl IntoIterator<Item = (Ipv4Addr, String)>,
    ) {
        self.own_node = Some(Arc::from(own));
        self.mclt_secs = mclt_secs;
        for (ip, node) in others {
            if self.by_ip.contains_key(&ip) {
                self.foreign.insert(ip, Arc::from(node));
            }
        }
    }

    /// Another node's lease as the store holds it now, in place of what
    /// the table had (see `put` for the client's other address, returned
    /// if it was a binding this node now releases).
    pub fn put_foreign(&mut self, lease: Lease, node: &str, now: u64) -> Option<Lease> {
        let ip = lease.ip;
        let displaced = self.put(lease);
        self.foreign.insert(ip, Arc::from(node));
        if !self.held(&self.by_ip[&ip], now) && !self.holds.contains_key(&ip) {
            self.free_address(ip);
        }
        displaced
    }

    /// The other nodes alive now.
    pub fn set_alive_peers(&mut self, alive: impl IntoIterator<Item = String>) {
        self.alive_peers = alive.into_iter().map(Arc::from).collect();
    }

    /// Whether the client's binding in `subnet_id` is a live peer's: that
    /// peer answers it (every node may see the request), this one stays
    /// silent, as a failover partner does while its peer is up.
    pub fn live_peers_binding(&self, subnet_id: u32, key: &[u8], now: u64) -> bool {
        self.by_client(subnet_id, key).is_some_and(|l| {
            l.state == LeaseState::Bound
                && l.expires > now
                && self
                    .foreign
                    .get(&l.ip)
                    .is_some_and(|n| self.alive_peers.contains(n))
        })
    }

    /// This node's name in a shared store.
    pub fn own_node(&self) -> Option<&str> {
        self.own_node.as_deref()
    }

    /// Whether the lease at `ip` is another node's.
    pub fn is_foreign(&self, ip: Ipv4Addr) -> bool {
        self.foreign.contains_key(&ip)
    }

    /// The addresses of other nodes' leases.
    pub fn foreign_ips(&self) -> Vec<Ipv4Addr> {
        self.foreign.keys().copied().collect()
    }

    /// The node that granted the lease at `ip` (None: the store is not
    /// shared).
    pub fn granted_by(&self, ip: Ipv4Addr) -> Option<&str> {
        self.foreign
            .get(&ip)
            .or(self.own_node.as_ref())
            .map(|n| &**n)
    }

    /// Whether `l` keeps its address from others at `now`: while it holds
    /// it, and another node's binding for the MCLT after.
    pub fn held(&self, l: &Lease, now: u64) -> bool {
        l.holds_address(now) || l.expires + self.lead(l) > now && l.state == LeaseState::Bound
    }

    pub(super) fn lead(&self, l: &Lease) -> u64 {
        foreign_lead(&self.foreign, self.mclt_secs, l)
    }
}
