//! The in-memory lease table: authoritative for every decision, indexed by
//! address and by (subnet, client), with a free list per pool.
//!
//! Memory: a bound lease costs one `by_ip` entry (key 4 B + `Lease` 64 B,
//! plus its boxed client and hardware keys, ~2×24 B with allocator
//! overhead) and one `by_client` entry (~40 B), about 200 B with hash-table
//! slack: ~200 MB for 1,000,000 leases. A never-used pool address costs 4 B
//! in its pool's free list.

use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::Arc,
};

/// Client identity: `[kind, bytes...]`, kind `KIND_HW` = htype+chaddr,
/// `KIND_CLIENT_ID` = option 61: the lease map's `id_kind`s, so a store
/// key and a map key name a client alike.
pub type ClientKey = Box<[u8]>;

pub use dhcp_common::id_kind::{CLIENT_ID as KIND_CLIENT_ID, HWADDR as KIND_HW};

pub fn hw_key(htype: u8, chaddr: &[u8]) -> ClientKey {
    let mut k = Vec::with_capacity(2 + chaddr.len());
    k.push(KIND_HW);
    k.push(htype);
    k.extend_from_slice(chaddr);
    k.into_boxed_slice()
}

pub fn client_id_key(id: &[u8]) -> ClientKey {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(KIND_CLIENT_ID);
    k.extend_from_slice(id);
    k.into_boxed_slice()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held for a client between OFFER and REQUEST (memory only).
    Offered,
    Bound,
    Released,
    Expired,
    /// DECLINEd: nobody gets it until `expires` (end of probation).
    Declined,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            LeaseState::Offered => 0,
            LeaseState::Bound => 1,
            LeaseState::Released => 2,
            LeaseState::Expired => 3,
            LeaseState::Declined => 4,
        }
    }

    pub fn from_code(c: i64) -> Option<LeaseState> {
        Some(match c {
            0 => LeaseState::Offered,
            1 => LeaseState::Bound,
            2 => LeaseState::Released,
            3 => LeaseState::Expired,
            4 => LeaseState::Declined,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// None only for declined addresses.
    pub client: Option<ClientKey>,
    /// htype followed by chaddr, for operators.
    pub hw: Box<[u8]>,
    pub subnet_id: u32,
    pub state: LeaseState,
    /// Unix seconds: end of lease, of offer hold, or of decline probation.
    pub expires: u64,
    pub lease_secs: u32,
    /// How the XDP program may renew this binding; None = never in the
    /// kernel (not bound by an ACK, or a shape it cannot reproduce).
    pub fast: Option<Arc<FastReply>>,
    /// giaddr and option 82 of the last relayed exchange that bound it,
    /// for classifying unicast renewals, which carry neither (stashed
    /// relay information).
    pub relay: Option<Box<[u8]>>,
}

/// What the XDP program needs to renew a binding exactly as the control
/// plane would: where the request came from, its shape, and the ACK's
/// options before the echoed 61/82. Kept with the lease (and in the store)
/// so the lease map can be rebuilt at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastReply {
    /// Arrival interface (directly connected clients).
    pub iface: Box<str>,
    pub outer_vlan: u16,
    pub inner_vlan: u16,
    /// Relay, unspecified for directly connected clients.
    pub giaddr: Ipv4Addr,
    /// Parameter request list length + 1 (0 = none).
    pub prl_len: u16,
    /// `dhcp_common::shape_hash` of PRL and relay agent information.
    pub shape_hash: u32,
    pub max_message_size: u16,
    pub client_id_len: u8,
    pub relay_info_len: u8,
    /// The control plane would OFFER this binding to a DISCOVER of the
    /// same shape (no reservation of the client's elsewhere): the kernel
    /// may then answer the DISCOVER, and the SELECTING REQUEST after it.
    pub offerable: bool,
    pub template: Arc<[u8]>,
}

impl FastReply {
    const VERSION: u8 = 2;

    /// Store encoding: version, fixed fields (big endian), interface name
    /// length and bytes, template bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.iface.len() + self.template.len());
        v.push(Self::VERSION);
        v.extend_from_slice(&self.outer_vlan.to_be_bytes());
        v.extend_from_slice(&self.inner_vlan.to_be_bytes());
        v.extend_from_slice(&self.giaddr.octets());
        v.extend_from_slice(&self.prl_len.to_be_bytes());
        v.extend_from_slice(&self.shape_hash.to_be_bytes());
        v.extend_from_slice(&self.max_message_size.to_be_bytes());
        v.push(self.client_id_len);
        v.push(self.relay_info_len);
        v.push(u8::from(self.offerable));
        v.push(self.iface.len() as u8);
        v.extend_from_slice(self.iface.as_bytes());
        v.extend_from_slice(&self.template);
        v
    }

    /// Version 1 (before `offerable`) decodes as not offerable.
    pub fn decode(v: &[u8]) -> Option<FastReply> {
        let (offerable, at) = match v.first()? {
            1 => (false, 19),
            2 => (*v.get(19)? == 1, 20),
            _ => return None,
        };
        if v.len() < at + 1 {
            return None;
        }
        let be16 = |i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
        let n = usize::from(v[at]);
        let iface = std::str::from_utf8(v.get(at + 1..at + 1 + n)?).ok()?;
        Some(FastReply {
            offerable,
            outer_vlan: be16(1),
            inner_vlan: be16(3),
            giaddr: Ipv4Addr::new(v[5], v[6], v[7], v[8]),
            prl_len: be16(9),
            shape_hash: u32::from_be_bytes([v[11], v[12], v[13], v[14]]),
            max_message_size: be16(15),
            client_id_len: v[17],
            relay_info_len: v[18],
            iface: iface.into(),
            template: v[at + 1 + n..].into(),
        })
    }
}

impl Lease {
    /// Whether the address is spoken for at `now`.
    pub fn holds_address(&self, now: u64) -> bool {
        match self.state {
            LeaseState::Offered | LeaseState::Bound | LeaseState::Declined => self.expires > now,
            LeaseState::Released | LeaseState::Expired => false,
        }
    }

    pub fn is_client(&self, key: &[u8]) -> bool {
        self.client.as_deref() == Some(key)
    }
}

struct Pool {
    start: u32,
    end: u32,
    /// Candidates, never-used first, then in the order they were freed.
    /// Entries may be stale (taken since): checked when popped.
    free: VecDeque<u32>,
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

#[derive(Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<(u32, ClientKey), Ipv4Addr>,
    pools: HashMap<u32, Vec<Pool>>,
    holds: HashMap<Ipv4Addr, KernelHold>,
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

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
            Some(l) => l.is_client(key) && l.state != LeaseState::Declined || !l.holds_address(now),
        }
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
                    _ => return Some(ip),
                }
            }
        }
        None
    }

    /// Inserts or replaces the lease at `lease.ip`, keeping both indexes
    /// right (the previous holder, if another client, loses its index).
    /// A client has one address per subnet: its previous one is dropped (an
    /// offer) or released (a binding), and a released binding is returned
    /// so the caller can persist that change.
    pub fn put(&mut self, lease: Lease) -> Option<Lease> {
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
        l.state = state;
        l.expires = expires;
        let freed = !l.holds_address(now);
        if freed {
            self.free_address(ip);
        }
        self.by_ip.get(&ip)
    }

    fn free_address(&mut self, ip: Ipv4Addr) {
        let a = u32::from(ip);
        for pools in self.pools.values_mut() {
            if let Some(p) = pools.iter_mut().find(|p| a >= p.start && a <= p.end) {
                p.push(a);
                return;
            }
        }
    }

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
                ) && l.expires <= now
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], client: &[u8], state: LeaseState, expires: u64) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            client: Some(client_id_key(client)),
            hw: Box::new([1, 2, 0, 0, 0, 0, 1]),
            subnet_id: 1,
            state,
            expires,
            lease_secs: 100,
            fast: None,
            relay: None,
        }
    }

    #[test]
    fn allocation_prefers_unused_then_oldest_freed_and_skips_held() {
        let mut t = LeaseTable::new();
        t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Released, 50));
        t.put(lease([198, 18, 0, 11], b"bb", LeaseState::Bound, 1000));
        t.add_pool(
            1,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 12),
            &|_| false,
        );
        assert_eq!(t.allocate(1, 100), Some(Ipv4Addr::new(198, 18, 0, 12)));
        assert_eq!(t.allocate(1, 100), Some(Ipv4Addr::new(198, 18, 0, 10)));
        // .11 is bound until 1000: never handed out.
        assert_eq!(t.allocate(1, 100), None);
    }

    #[test]
    fn reserved_addresses_are_not_in_the_pool() {
        let mut t = LeaseTable::new();
        t.add_pool(
            1,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 11),
            &|a| a == u32::from(Ipv4Addr::new(198, 18, 0, 10)),
        );
        assert_eq!(t.allocate(1, 0), Some(Ipv4Addr::new(198, 18, 0, 11)));
        assert_eq!(t.allocate(1, 0), None);
    }

    #[test]
    fn one_address_per_client_per_subnet() {
        let mut t = LeaseTable::new();
        t.add_pool(
            1,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 20),
            &|_| false,
        );
        t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Offered, 100));
        t.put(lease([198, 18, 0, 11], b"aa", LeaseState::Bound, 100));
        assert!(
            t.get(Ipv4Addr::new(198, 18, 0, 10)).is_none(),
            "the superseded offer is dropped"
        );
        assert_eq!(
            t.by_client(1, &client_id_key(b"aa")).unwrap().ip,
            Ipv4Addr::new(198, 18, 0, 11)
        );
    }

    #[test]
    fn reclaim_expires_bound_and_drops_offers_and_probation() {
        let mut t = LeaseTable::new();
        t.add_pool(
            1,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 12),
            &|_| false,
        );
        for _ in 0..3 {
            t.allocate(1, 0);
        }
        t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 10));
        t.put(lease([198, 18, 0, 11], b"bb", LeaseState::Offered, 10));
        let mut d = lease([198, 18, 0, 12], b"", LeaseState::Declined, 10);
        d.client = None;
        t.put(d);
        assert_eq!(t.allocate(1, 5), None);
        let (expired, offers) = t.reclaim(10);
        assert_eq!(offers, vec![Ipv4Addr::new(198, 18, 0, 11)]);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            t.get(Ipv4Addr::new(198, 18, 0, 10)).unwrap().state,
            LeaseState::Expired
        );
        assert!(t.get(Ipv4Addr::new(198, 18, 0, 11)).is_none());
        let mut got: Vec<_> = std::iter::from_fn(|| t.allocate(1, 10)).collect();
        got.sort();
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn availability() {
        let mut t = LeaseTable::new();
        t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 100));
        let ip = Ipv4Addr::new(198, 18, 0, 10);
        assert!(t.available_to(ip, &client_id_key(b"aa"), 50));
        assert!(!t.available_to(ip, &client_id_key(b"bb"), 50));
        assert!(t.available_to(ip, &client_id_key(b"bb"), 100));
    }
}

#[cfg(test)]
mod free_list {
    use super::*;

    /// Issue 12, item 11: DISCOVER with option 50 for a free address, then
    /// a REQUEST naming another server, pushed the address onto the free
    /// list again each time: it grew without bound from network input.
    #[test]
    fn the_free_list_never_holds_an_address_twice() {
        let mut t = LeaseTable::new();
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 13));
        t.add_pool(1, a, b, &|_| false);
        for i in 0..10_000u32 {
            // Offered at a requested (still queued) address, then dropped.
            t.put(Lease {
                ip: a,
                client: Some(client_id_key(&i.to_be_bytes())),
                hw: Box::new([1]),
                subnet_id: 1,
                state: LeaseState::Offered,
                expires: 100,
                lease_secs: 0,
                fast: None,
                relay: None,
            });
            t.remove(a);
        }
        let queued: usize = t.pools[&1].iter().map(|p| p.free.len()).sum();
        assert_eq!(queued, 4);
    }
}
