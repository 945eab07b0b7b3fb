//! Lease and DECLINE caps: how many addresses one MAC, circuit-id,
//! remote-id or direct line may hold, and how many one client or line may
//! have in DECLINE quarantine.
//!
//! Each capped key indexes the addresses recorded against it, so a check
//! costs O(1) below the cap and O(cap) at it, never a scan of the lease
//! table. Entries are checked
//! against the lease table when counted (the address still held by the
//! recorded client, the quarantine still the recorded one), so no path
//! that ends a lease (release, reclaim, reload, the kernel's grants) has
//! to tell the index: a stale entry is dropped when next counted, and
//! each address sits under one set of keys at a time, so the index never
//! outgrows the pools.
//!
//! The index is not persisted but rebuilt whenever the state machine is
//! built around stored leases (start, reload): every offered or bound
//! lease counts from the start against the keys it carries, so bindings
//! the XDP program renews, which may not reach the control plane for a
//! long time, hold their place under the caps across a restart. A lease
//! counts against its MAC (its hardware address), its relay's circuit-id
//! and remote-id (the giaddr and option 82 it stashed) and its direct line
//! (the interface and VLAN tags of its kernel reply). A lease without what
//! a key needs does not count against that key until its client's next
//! request reaches the control plane; for the line that is a direct
//! binding without a kernel reply, whose renewals come to the control
//! plane anyway. Quarantines count from the DECLINEs after the start.

use std::{collections::HashMap, net::Ipv4Addr};

use crate::{
    config::Caps,
    dhcp::leases::LeaseTable,
    dhcp::subscriber::relay_identities,
    lease::{hw_key, ClientKey, Lease, LeaseState},
};

use super::{
    direct_line, hw_of, relay_ids, relayed_line, unstash, Arrival, LineId, Server, SubnetRt,
};
use crate::proto::DhcpRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Mac,
    CircuitId,
    RemoteId,
    Line,
    DeclineClient,
    DeclineLine,
}

impl Kind {
    /// The counted reason a request is refused for.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::Mac => "cap_mac",
            Kind::CircuitId => "cap_circuit_id",
            Kind::RemoteId => "cap_remote_id",
            Kind::Line => "cap_line",
            Kind::DeclineClient => "decline_cap_client",
            Kind::DeclineLine => "decline_cap_line",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapKey {
    subnet: u32,
    kind: Kind,
    id: u64,
}

/// The keys a request counts against, each with its cap (none at 0).
#[derive(Debug, Default)]
pub struct Keys(Vec<(CapKey, u32)>);

/// Where a request came from, as the caps see it.
pub struct Origin<'a> {
    pub hw: &'a [u8],
    /// For relayed requests: giaddr, circuit-id, remote-id.
    pub relay: Option<(Ipv4Addr, &'a [u8], &'a [u8])>,
    /// The line (`Server::line_of`), for direct clients; None when not
    /// known (a stored lease without a kernel reply).
    pub line: Option<LineId>,
}

impl Keys {
    pub fn leases(subnet: u32, caps: &Caps, o: &Origin<'_>) -> Keys {
        let mut k = Vec::new();
        let mut add = |kind, cap: u32, id: u64| {
            if cap > 0 {
                k.push((CapKey { subnet, kind, id }, cap));
            }
        };
        add(Kind::Mac, caps.per_mac, LineId::of(&[b"mac", o.hw]).0);
        match o.relay {
            Some((giaddr, circuit, remote)) => {
                // Circuit-ids name a port of one relay ("1/1/3"); remote-ids
                // (a modem's serial) are unique across relays.
                if !circuit.is_empty() {
                    let id = LineId::of(&[b"circuit", &giaddr.octets(), circuit]).0;
                    add(Kind::CircuitId, caps.per_circuit_id, id);
                }
                if !remote.is_empty() {
                    add(
                        Kind::RemoteId,
                        caps.per_remote_id,
                        LineId::of(&[b"remote", remote]).0,
                    );
                }
            }
            None => {
                if let Some(line) = o.line {
                    add(Kind::Line, caps.per_line, line.0);
                }
            }
        }
        Keys(k)
    }

    pub fn declines(subnet: u32, caps: &Caps, client: &[u8], line: LineId) -> Keys {
        let mut k = Vec::new();
        for (kind, cap, id) in [
            (
                Kind::DeclineClient,
                caps.declines_per_client,
                LineId::of(&[b"client", client]).0,
            ),
            (Kind::DeclineLine, caps.declines_per_line, line.0),
        ] {
            if cap > 0 {
                k.push((CapKey { subnet, kind, id }, cap));
            }
        }
        Keys(k)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Addresses recorded per key, each with what makes its entry still
/// count (`V`).
#[derive(Debug)]
struct Holders<V> {
    sets: HashMap<CapKey, HashMap<Ipv4Addr, V>>,
    by_ip: HashMap<Ipv4Addr, Vec<CapKey>>,
}

impl<V> Default for Holders<V> {
    fn default() -> Self {
        Holders {
            sets: HashMap::new(),
            by_ip: HashMap::new(),
        }
    }
}

impl<V: Clone> Holders<V> {
    /// The first key whose live entries, other than those `mine` accepts,
    /// reach its cap. Entries `live` refuses are dropped.
    fn over(
        &mut self,
        keys: &Keys,
        live: impl Fn(Ipv4Addr, &V) -> bool,
        mine: impl Fn(&V) -> bool,
    ) -> Option<Kind> {
        for (k, cap) in &keys.0 {
            let Some(set) = self.sets.get_mut(k) else {
                continue;
            };
            // Fewer entries than the cap, live or stale: under it, at O(1).
            // Only a key at its cap is checked entry by entry.
            if set.len() < *cap as usize {
                continue;
            }
            let mut gone = Vec::new();
            set.retain(|ip, v| {
                let keep = live(*ip, v);
                if !keep {
                    gone.push(*ip);
                }
                keep
            });
            let others = set.values().filter(|v| !mine(v)).count();
            if set.is_empty() {
                self.sets.remove(k);
            }
            for ip in gone {
                if let Some(ks) = self.by_ip.get_mut(&ip) {
                    ks.retain(|x| x != k);
                    if ks.is_empty() {
                        self.by_ip.remove(&ip);
                    }
                }
            }
            if others >= *cap as usize {
                return Some(k.kind);
            }
        }
        None
    }

    fn record(&mut self, keys: &Keys, ip: Ipv4Addr, v: V) {
        if let Some(old) = self.by_ip.remove(&ip) {
            for k in old {
                if let Some(set) = self.sets.get_mut(&k) {
                    set.remove(&ip);
                    if set.is_empty() {
                        self.sets.remove(&k);
                    }
                }
            }
        }
        if keys.is_empty() {
            return;
        }
        for (k, _) in &keys.0 {
            self.sets.entry(*k).or_default().insert(ip, v.clone());
        }
        self.by_ip
            .insert(ip, keys.0.iter().map(|(k, _)| *k).collect());
    }

    fn len(&self) -> usize {
        self.by_ip.len()
    }
}

#[derive(Debug, Default)]
pub struct CapIndex {
    held: Holders<ClientKey>,
    /// The end of the quarantine each DECLINE started.
    declined: Holders<u64>,
}

impl CapIndex {
    /// Whether `client` may take one more address under `keys`: the cap
    /// reached, if not. Its own addresses do not count (a client renewing
    /// or coming back is never refused).
    pub fn lease_refused(
        &mut self,
        keys: &Keys,
        client: &[u8],
        leases: &LeaseTable,
        now: u64,
    ) -> Option<Kind> {
        if keys.is_empty() {
            return None;
        }
        self.held.over(
            keys,
            |ip, c| {
                leases.get(ip).is_some_and(|l| {
                    l.is_client(c)
                        && matches!(l.state, LeaseState::Offered | LeaseState::Bound)
                        && l.expires > now
                })
            },
            |c| c[..] == *client,
        )
    }

    /// `client` was offered or bound `ip` under `keys`.
    pub fn leased(&mut self, keys: &Keys, ip: Ipv4Addr, client: &ClientKey) {
        if keys.is_empty() && !self.held.by_ip.contains_key(&ip) {
            return;
        }
        self.held.record(keys, ip, client.clone());
    }

    /// Whether one more DECLINE under `keys` may quarantine an address.
    pub fn decline_refused(&mut self, keys: &Keys, leases: &LeaseTable) -> Option<Kind> {
        if keys.is_empty() {
            return None;
        }
        self.declined.over(
            keys,
            |ip, until| {
                leases
                    .get(ip)
                    .is_some_and(|l| l.state == LeaseState::Declined && l.expires == *until)
            },
            |_| false,
        )
    }

    /// `ip` is quarantined until `until` by a DECLINE under `keys`.
    pub fn declined(&mut self, keys: &Keys, ip: Ipv4Addr, until: u64) {
        self.declined.record(keys, ip, until);
    }

    /// Addresses indexed (leases, quarantines).
    pub fn sizes(&self) -> (usize, usize) {
        (self.held.len(), self.declined.len())
    }
}

impl Server {
    /// The caps `req` counts against in subnet `si`; none for a client
    /// with a reservation there (the operator's word beats a cap).
    pub(super) fn cap_keys(&self, si: usize, req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> Keys {
        let sn = &self.subnets[si];
        if !sn.caps.any_lease_cap() || self.reservation(sn, req).is_some() {
            return Keys::default();
        }
        let hw = hw_of(req);
        // A unicast renewal of a relayed binding (no giaddr, no option 82)
        // counts on the circuit its stashed relay information names, as
        // the binding did: recorded as a direct client's, it would leave
        // the circuit's count.
        let (giaddr, rai) = self
            .relay_of(req)
            .filter(|(g, _)| !g.is_unspecified())
            .unwrap_or((req.giaddr, req.relay_info.unwrap_or(&[])));
        let (circuit, remote) = relay_ids(rai);
        let relayed = !giaddr.is_unspecified();
        Keys::leases(
            sn.id,
            &sn.caps,
            &Origin {
                hw: &hw,
                relay: relayed.then_some((giaddr, circuit, remote)),
                line: Some(if relayed {
                    relayed_line(giaddr, circuit, remote)
                } else {
                    Self::line_of(req, arrival)
                }),
            },
        )
    }

    /// The reason `key` may not take one more address in `si`, counted.
    pub(super) fn cap_refusal(
        &mut self,
        si: usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: &[u8],
        now: u64,
    ) -> Option<&'static str> {
        let keys = self.cap_keys(si, req, arrival);
        let why = self
            .caps
            .lease_refused(&keys, key, &self.leases, now)?
            .reason();
        *self.counters.limited.entry(why).or_default() += 1;
        Some(why)
    }

    /// Records every stored lease that holds an address against its caps
    /// (`Server::new`), as the request that made it would have.
    pub(super) fn count_stored(&mut self) {
        let capped: HashMap<u32, &SubnetRt> = self
            .subnets
            .iter()
            .filter(|s| s.caps.any_lease_cap())
            .map(|s| (s.id, s))
            .collect();
        if capped.is_empty() {
            return;
        }
        for l in self.leases.iter() {
            if !matches!(l.state, LeaseState::Offered | LeaseState::Bound) {
                continue;
            }
            let (Some(client), Some(sn)) = (&l.client, capped.get(&l.subnet_id)) else {
                continue;
            };
            self.caps.leased(&stored_keys(sn, l), l.ip, client);
        }
    }
}

/// The caps a stored lease counts against (see the module doc); none for
/// a reserved client, as for its requests (`Server::cap_keys`).
fn stored_keys(sn: &SubnetRt, l: &Lease) -> Keys {
    let stash = l.relay.as_deref().and_then(unstash);
    if stored_reserved(sn, l, stash) {
        return Keys::default();
    }
    let fast = l.fast.as_deref();
    // Relayed as its request was: a giaddr, stashed with option 82 or kept
    // in the kernel's reply (a relay that added no option 82).
    let giaddr = stash
        .map(|s| s.0)
        .filter(|g| !g.is_unspecified())
        .or_else(|| fast.map(|f| f.giaddr).filter(|g| !g.is_unspecified()));
    let (circuit, remote) = stash.map_or((&[][..], &[][..]), |(_, rai)| relay_ids(rai));
    Keys::leases(
        sn.id,
        &sn.caps,
        &Origin {
            hw: &l.hw,
            relay: giaddr.map(|g| (g, circuit, remote)),
            line: fast
                .filter(|_| giaddr.is_none())
                .map(|f| direct_line(&f.iface, f.outer_vlan, f.inner_vlan)),
        },
    )
}

/// `Server::reservation` for a stored lease: by its address, client key,
/// hardware address or stashed relay identities.
fn stored_reserved(sn: &SubnetRt, l: &Lease, stash: Option<(Ipv4Addr, &[u8])>) -> bool {
    sn.reserved_ips.contains_key(&l.ip)
        || l.client
            .as_ref()
            .is_some_and(|c| sn.reservations.contains_key(c))
        || l.hw
            .split_first()
            .is_some_and(|(t, ch)| sn.reservations.contains_key(&hw_key(*t, ch)))
        || stash.is_some_and(|(g, rai)| {
            !sn.relay_reservations.is_empty()
                && relay_identities(g, rai)
                    .iter()
                    .any(|id| sn.relay_reservations.contains_key(id))
        })
}

#[cfg(test)]
mod tests;
