//! The state machine's subscriber-aware parts (see `crate::dhcp::subscriber`):
//! classification, relay-identity reservations and their hand-over to a
//! replaced CPE, class options and pools, boot fields, and which bindings
//! the XDP program may renew.

use super::*;
use crate::{dhcp::classes::Facts, dhcp::subscriber::relay_identities};

/// Options 12, 66, 67 and 119 of a resolved level.
pub(super) fn resolve_more(o: &OptionSet, options: &mut BTreeMap<u8, Vec<u8>>) {
    if let Some(h) = &o.hostname {
        options.insert(opt::HOSTNAME, h.as_bytes().to_vec());
    }
    if let Some(d) = &o.domain_search {
        options.insert(opt::DOMAIN_SEARCH, d.encoded().to_vec());
    }
    if let Some(t) = &o.tftp_server {
        options.insert(opt::TFTP_SERVER, t.as_bytes().to_vec());
    }
    if let Some(f) = &o.boot_file_name {
        options.insert(opt::BOOTFILE, f.as_bytes().to_vec());
    }
}

/// Options that did not fit go to the file and then the sname field, where
/// no boot field uses them, with option 52 saying which (RFC 2132 9.3),
/// each field ending with END. Options that fit nowhere are left out, as
/// before.
pub(super) fn overload(
    r: &mut Reply,
    left: &[(u8, &[u8])],
    boot: &Boot,
    limit: usize,
    echo_len: usize,
) {
    if left.is_empty() || r.len_with_end() + 3 + echo_len > limit {
        return;
    }
    let mut fields = Vec::new();
    if boot.file.is_none() {
        fields.push((108usize, 128usize, 1u8));
    }
    if boot.sname.is_none() {
        fields.push((44, 64, 2));
    }
    let mut which = 0u8;
    let mut rest = left.iter().peekable();
    for (at, size, bit) in fields {
        let mut buf = Vec::new();
        while let Some((code, v)) = rest.peek() {
            if buf.len() + 2 + v.len() + 1 > size {
                break;
            }
            buf.push(*code);
            buf.push(v.len() as u8);
            buf.extend_from_slice(v);
            rest.next();
        }
        if !buf.is_empty() {
            buf.push(opt::END);
            r.set_fixed(at, &buf);
            which |= bit;
        }
    }
    if which != 0 {
        r.push(opt::OVERLOAD, &[which]);
    }
}

/// The XDP program writes siaddr, sname and file as zeros.
pub(super) fn fixed_fields_clear(payload: &[u8]) -> bool {
    use dhcp_common::layout::bootp;
    payload[bootp::SIADDR] == [0; 4]
        && payload[bootp::SNAME.start..bootp::FILE.end]
            .iter()
            .all(|b| *b == 0)
}

/// A class's options over `base`. A class that sets the lease time brings
/// its own T1 and T2 (or their defaults): inherited ones could exceed it.
fn class_overlay(base: &OptionSet, class: &OptionSet) -> OptionSet {
    let mut o = overlay(base, class);
    if class.lease_time.is_some() {
        o.renewal_time = class.renewal_time;
        o.rebinding_time = class.rebinding_time;
    }
    o
}

impl Server {
    /// The relay a request came through and its option 82: as received,
    /// or for a unicast renewal (no relay, no option 82), as stashed with
    /// the client's binding at its last relayed exchange.
    pub(super) fn relay_of<'r>(&'r self, req: &DhcpRequest<'r>) -> Option<(Ipv4Addr, &'r [u8])> {
        if let Some(rai) = req.relay_info {
            return Some((req.giaddr, rai));
        }
        if !req.giaddr.is_unspecified() || req.ciaddr.is_unspecified() {
            return None;
        }
        let l = self.leases.get(req.ciaddr)?;
        if !l.is_client(&Self::identity(req)) {
            return None;
        }
        unstash(l.relay.as_deref()?)
    }

    /// What a lease keeps of the request's relay (see `relay_of`).
    pub(super) fn stash_of(&self, req: &DhcpRequest<'_>) -> Option<Box<[u8]>> {
        let (g, rai) = self.relay_of(req)?;
        let mut v = g.octets().to_vec();
        v.extend_from_slice(rai);
        Some(v.into_boxed_slice())
    }

    pub(super) fn classify(&self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> u64 {
        if self.subs.classes.is_empty() {
            return 0;
        }
        let relay = self.relay_of(req);
        // The arrival is a relayed client's link only as far as its relay
        // goes, and the XDP program does not compare it for relayed
        // bindings: interface and VLAN tests see directly connected
        // clients only.
        let direct = relay.is_none() && req.giaddr.is_unspecified();
        let f = Facts {
            vendor_class: req.vendor_class,
            user_class: req.user_class,
            client_arch: req.client_arch,
            relay_info: relay.map(|r| r.1),
            htype: req.htype,
            chaddr: req.chaddr(),
            iface: if direct { arrival.iface } else { "" },
            vlan: if direct {
                arrival.tags.first().map_or(0, Tag::vid)
            } else {
                0
            },
            inner_vlan: if direct {
                arrival.tags.get(1).map_or(0, Tag::vid)
            } else {
                0
            },
            giaddr: relay.map_or(req.giaddr, |r| r.0),
        };
        self.subs.classify(&f)
    }

    /// The names of the classes of the request being handled.
    pub fn class_names(&self) -> Vec<&str> {
        self.subs
            .members(self.cls)
            .map(|k| k.name.as_str())
            .collect()
    }

    pub(super) fn relay_reservation<'s>(
        &self,
        sn: &'s SubnetRt,
        req: &DhcpRequest<'_>,
    ) -> Option<&'s ReservationRt> {
        if sn.relay_reservations.is_empty() {
            return None;
        }
        let (g, rai) = self.relay_of(req)?;
        relay_identities(g, rai)
            .iter()
            .find_map(|id| sn.relay_reservations.get(id))
    }

    /// A line's reserved address held by another device (its CPE was
    /// replaced): that device's offer or binding ends, so the line's
    /// current device gets it once nothing, the kernel included, holds it
    /// for the old one. The store changes for it.
    pub(super) fn hand_over(
        &mut self,
        si: usize,
        req: &DhcpRequest<'_>,
        key: &[u8],
        now: u64,
    ) -> Vec<StoreOp> {
        let sn = &self.subnets[si];
        let by_client = req
            .client_id
            .and_then(|id| sn.reservations.get(&client_id_key(id)))
            .or_else(|| sn.reservations.get(&hw_key(req.htype, req.chaddr())));
        if by_client.is_some() {
            return Vec::new();
        }
        let Some(ip) = self.relay_reservation(sn, req).map(|r| r.ip) else {
            return Vec::new();
        };
        let Some(l) = self.leases.get(ip) else {
            return Vec::new();
        };
        if l.is_client(key) || !l.holds_address(now) {
            return Vec::new();
        }
        match l.state {
            LeaseState::Offered => {
                self.leases.remove(ip);
                self.offers.gone(ip);
                Vec::new()
            }
            LeaseState::Bound => {
                tracing::info!(%ip, "reserved line's address taken from its previous device (CPE replaced)");
                *self.counters.dropped.entry("line_hand_over").or_default() += 1;
                let ended = self
                    .leases
                    .set_state(ip, LeaseState::Released, now, now)
                    .cloned();
                ended.into_iter().map(StoreOp::Put).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn resolved_with_classes(
        &self,
        sn: &SubnetRt,
        reserved: Option<&ReservationRt>,
        ip: Ipv4Addr,
    ) -> Resolved {
        let mut o = match reserved {
            Some(_) => sn.opts.clone(),
            None => sn
                .pools
                .iter()
                .find(|p| ip_in(p, ip))
                .map_or_else(|| sn.opts.clone(), |p| p.opts.clone()),
        };
        let classes: Vec<_> = self.subs.members(self.cls).collect();
        for k in classes.into_iter().rev() {
            o = class_overlay(&o, &k.options);
        }
        if let Some(r) = reserved {
            o = overlay(&o, &r.own);
        }
        resolve(&o, &sn.net)
    }

    /// Whether the request being handled may take addresses from `p`.
    pub(super) fn pool_open(&self, p: &PoolRt) -> bool {
        p.classes == 0 || p.classes & self.cls != 0
    }

    pub(super) fn open_pools(&self, si: usize) -> Vec<bool> {
        self.subnets[si]
            .pools
            .iter()
            .map(|p| self.pool_open(p))
            .collect()
    }

    /// Whether the XDP program would build this ACK for the client's next
    /// renewal of the same shape. It writes no boot fields, and it does
    /// not see the chaddr of a client keyed by its identifier.
    pub(super) fn kernel_can_answer(&self, req: &DhcpRequest<'_>, res: &Resolved) -> bool {
        res.boot.is_empty()
            && !(self.subs.reads_chaddr && req.client_id.is_some())
            && !self.subs.reads_unhashed
    }

    /// The subnets of `si`'s shared network, in order (`si` alone if none).
    fn shared_with(&self, si: usize) -> Vec<usize> {
        match &self.subnets[si].shared {
            None => vec![si],
            Some(name) => (0..self.subnets.len())
                .filter(|&i| self.subnets[i].shared.as_ref() == Some(name))
                .collect(),
        }
    }

    /// Where a DISCOVER is served in a shared network: the subnet the
    /// client is known in (a binding or offer, or a reservation), else the
    /// first.
    pub(super) fn shared_home(&self, si: usize, req: &DhcpRequest<'_>) -> usize {
        if self.subnets[si].shared.is_none() {
            return si;
        }
        let key = Self::identity(req);
        let all = self.shared_with(si);
        all.iter()
            .copied()
            .find(|&c| {
                let sn = &self.subnets[c];
                self.reservation(sn, req).is_some()
                    || self
                        .leases
                        .by_client(sn.id, &key)
                        .is_some_and(|l| l.state != LeaseState::Declined)
            })
            .unwrap_or(all[0])
    }

    /// The subnet of `si`'s shared network that holds `ip`, else `si`.
    pub(super) fn shared_containing(&self, si: usize, ip: Option<Ipv4Addr>) -> usize {
        let Some(ip) = ip.filter(|_| self.subnets[si].shared.is_some()) else {
            return si;
        };
        self.shared_with(si)
            .into_iter()
            .find(|&c| self.subnets[c].net.contains(ip))
            .unwrap_or(si)
    }

    /// A free address in the subnets of `si`'s shared network after `si`.
    pub(super) fn allocate_shared(&mut self, si: usize, now: u64) -> Option<(usize, Ipv4Addr)> {
        for c in self.shared_with(si).into_iter().filter(|&c| c != si) {
            let open = self.open_pools(c);
            let id = self.subnets[c].id;
            if let Some(a) = self.leases.allocate_in(id, now, &open) {
                return Some((c, a));
            }
        }
        None
    }
}
