//! Where a request comes from and who sends it: its line (relay
//! identity or interface and tags), its subnet, the client's key, and
//! where the reply goes.

use super::*;

/// Circuit-id (82.1) and remote-id (82.2) of relay agent information.
pub(super) fn relay_ids(rai: &[u8]) -> (&[u8], &[u8]) {
    let (mut circuit, mut remote): (&[u8], &[u8]) = (&[], &[]);
    let mut i = 0;
    while i + 2 <= rai.len() {
        let n = usize::from(rai[i + 1]);
        let Some(v) = rai.get(i + 2..i + 2 + n) else {
            break;
        };
        match rai[i] {
            1 => circuit = v,
            2 => remote = v,
            _ => {}
        }
        i += 2 + n;
    }
    (circuit, remote)
}

/// The line of a relayed client: its relay and the relay's names for it.
pub(super) fn relayed_line(giaddr: Ipv4Addr, circuit: &[u8], remote: &[u8]) -> LineId {
    LineId::of(&[b"relay", &giaddr.octets(), circuit, remote])
}

/// The line of a directly connected client: interface and VLAN tags
/// (0 for none). One rule for requests (`Server::line_of`) and stored
/// leases (the caps count a lease's kernel reply).
pub(super) fn direct_line(iface: &str, outer: u16, inner: u16) -> LineId {
    LineId::of(&[
        b"direct",
        iface.as_bytes(),
        &outer.to_be_bytes(),
        &inner.to_be_bytes(),
    ])
}

/// The relay a lease keeps (`Lease::relay`: giaddr, then option 82).
pub(super) fn unstash(s: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (g, rai) = s.split_at_checked(4)?;
    Some((Ipv4Addr::new(g[0], g[1], g[2], g[3]), rai))
}

pub(super) fn hw_of(req: &DhcpRequest<'_>) -> Box<[u8]> {
    let mut v = Vec::with_capacity(1 + req.chaddr().len());
    v.push(req.htype);
    v.extend_from_slice(req.chaddr());
    v.into_boxed_slice()
}

/// RFC 2131 §4.1 reply addressing.
pub(super) fn dest(
    req: &DhcpRequest<'_>,
    arrival: &Arrival<'_>,
    msg_type: u8,
    yiaddr: Ipv4Addr,
) -> Dest {
    if !req.giaddr.is_unspecified() {
        return Dest::Relay(req.giaddr);
    }
    if msg_type == msg::NAK {
        return Dest::Broadcast;
    }
    if !req.ciaddr.is_unspecified() {
        return Dest::Direct {
            ip: req.ciaddr,
            mac: arrival.src_mac,
        };
    }
    if msg_type == msg::INFORM || req.broadcast_flag() || req.htype != 1 || req.hlen != 6 {
        return Dest::Broadcast;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.chaddr[..6]);
    Dest::Direct { ip: yiaddr, mac }
}

impl Server {
    /// The subscriber line a request came from (see `offers`).
    pub(super) fn line_of(req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> LineId {
        if !req.giaddr.is_unspecified() {
            let (circuit, remote) = relay_ids(req.relay_info.unwrap_or(&[]));
            relayed_line(req.giaddr, circuit, remote)
        } else {
            let outer = arrival.tags.first().map_or(0, Tag::vid);
            let inner = arrival.tags.get(1).map_or(0, Tag::vid);
            direct_line(arrival.iface, outer, inner)
        }
    }

    pub(super) fn line_label(req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> String {
        if !req.giaddr.is_unspecified() {
            let (circuit, remote) = relay_ids(req.relay_info.unwrap_or(&[]));
            format!(
                "relay {} circuit-id {} remote-id {}",
                req.giaddr,
                String::from_utf8_lossy(circuit),
                String::from_utf8_lossy(remote)
            )
        } else {
            let tags: Vec<String> = arrival.tags.iter().map(|t| t.vid().to_string()).collect();
            if tags.is_empty() {
                arrival.iface.to_string()
            } else {
                format!("{} vlan {}", arrival.iface, tags.join("."))
            }
        }
    }

    pub(super) fn subnet_for_link(
        &self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
    ) -> Option<usize> {
        if !req.giaddr.is_unspecified() {
            // An explicit selector (RFC 3011, RFC 3527) first, then the
            // relays an operator listed, then the subnet holding giaddr.
            if let Some(sel) = req.subnet_selection.or(req.link_selection) {
                return self.subnet_containing(sel);
            }
            return self
                .subnets
                .iter()
                .position(|s| s.relays.contains(&req.giaddr))
                .or_else(|| self.subnet_containing(req.giaddr));
        }
        let outer = arrival.tags.first().map_or(0, Tag::vid);
        let inner = arrival.tags.get(1).map_or(0, Tag::vid);
        self.subnets
            .iter()
            .position(|s| s.iface.as_deref() == Some(arrival.iface) && s.vlan == (outer, inner))
    }

    pub(super) fn subnet_containing(&self, ip: Ipv4Addr) -> Option<usize> {
        self.subnets.iter().position(|s| s.net.contains(ip))
    }

    pub(super) fn identity(req: &DhcpRequest<'_>) -> ClientKey {
        match req.client_id {
            Some(id) => client_id_key(id),
            None => hw_key(req.htype, req.chaddr()),
        }
    }

    /// Whether `req` comes from a client the lease table knows at the
    /// address it names (a renewal, a REQUEST for its offer or binding,
    /// its RELEASE, DECLINE or INFORM): under overload those go first
    /// (`backlog`).
    pub fn from_bound_client(&self, req: &DhcpRequest<'_>, _arrival: &Arrival<'_>) -> bool {
        if req.msg_type == msg::DISCOVER {
            return false;
        }
        let key = Self::identity(req);
        let holds = |ip: Ipv4Addr| self.leases.get(ip).is_some_and(|l| l.is_client(&key));
        (!req.ciaddr.is_unspecified() && holds(req.ciaddr)) || req.requested_ip.is_some_and(holds)
    }

    /// May `key` have `ip` in `sn` at `now`?
    pub(super) fn acceptable(
        &self,
        sn: &SubnetRt,
        req: &DhcpRequest<'_>,
        key: &[u8],
        ip: Ipv4Addr,
        now: u64,
    ) -> bool {
        if !sn.net.contains(ip) || !self.leases.available_to(ip, key, now) {
            return false;
        }
        if let Some(r) = self.reservation(sn, req) {
            if r.ip == ip {
                return true;
            }
        }
        if sn.reserved_ips.contains_key(&ip) {
            return false;
        }
        if sn.pools.iter().any(|p| ip_in(p, ip) && !self.pool_open(p)) {
            return false;
        }
        let ours = self
            .leases
            .get(ip)
            .is_some_and(|l| l.is_client(key) && l.subnet_id == sn.id);
        ours || sn.pools.iter().any(|p| ip_in(p, ip))
    }
}
