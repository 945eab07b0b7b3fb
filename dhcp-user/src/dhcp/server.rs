//! The RFC 2131 state machine. Pure: a parsed request and where it came
//! from go in; the reply (with its destination) and the lease changes to
//! persist come out. The caller persists before it sends an ACK.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
};

use crate::{
    config::{Caps, Config, Ipv4Net, OptionSet},
    dhcp::leases::{
        client_id_key, hw_key, ClientKey, EndKind, FastReply, Lease, LeaseState, LeaseTable,
    },
    dhcp::subscriber::{Boot, ReservationId, Subscribers},
    proto::message::{self, msg, opt, DhcpRequest, Malformed, Reply, Tag},
    store::StoreOp,
    xdp::map_sync::KernelGrant,
};

mod limits;
mod offers;
mod trust;
use limits::{CapIndex, Keys};
mod subscriber;
use offers::Offers;
pub use offers::{LineId, SubnetOffers};
pub use trust::{Trust, Verdict};

pub use crate::config::DEFAULT_LEASE_SECS;
const MAX_SHARED_TEMPLATES: usize = 65_536;
/// At most one "pool exhausted" line per subnet this often.
const EXHAUSTED_LOG_SECS: u64 = 10;
/// How far before an end a kernel grant still counts as after it. The
/// XDP program stamps renewals with `bpf_ktime_get_coarse_ns`, which lags
/// by up to a jiffy (10 ms at HZ=100), and the clock conversion adds
/// microseconds: a grant this close is honoured, the safe side (the
/// address stays its client's until that grant ends).
pub const GRANT_ORDER_SLACK_NS: u64 = 25_000_000;

/// Where a request arrived.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    pub iface: &'a str,
    /// Outermost first.
    pub tags: &'a [Tag],
    pub src_mac: [u8; 6],
    /// The IPv4 source: a relay's address for relayed requests.
    pub src_ip: Ipv4Addr,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// To the relay's server port, back through the neighbour that sent
    /// the request (`egress`).
    Relay(Ipv4Addr),
    /// A frame on the arrival interface and VLAN, without ARP.
    Direct {
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    Broadcast,
}

#[derive(Debug, Clone)]
pub struct Outgoing {
    pub msg_type: u8,
    pub payload: Vec<u8>,
    pub dest: Dest,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Option<Outgoing>,
    /// Must be durable before `reply` (an ACK) is sent.
    pub store: Vec<StoreOp>,
    /// Why nothing was sent, when nothing was.
    pub dropped: Option<&'static str>,
}

impl Outcome {
    fn drop(reason: &'static str) -> Outcome {
        Outcome {
            dropped: Some(reason),
            ..Default::default()
        }
    }
}

/// Resolved options for one reply: lease times and encoded options sorted
/// by code.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub lease_secs: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Vec<(u8, Vec<u8>)>,
    /// siaddr, sname and file (network boot).
    pub boot: Boot,
}

fn overlay(base: &OptionSet, over: &OptionSet) -> OptionSet {
    let mut custom = base.custom.clone();
    for c in &over.custom {
        custom.retain(|b| b.code != c.code);
        custom.push(c.clone());
    }
    OptionSet {
        lease_time: over.lease_time.or(base.lease_time),
        renewal_time: over.renewal_time.or(base.renewal_time),
        rebinding_time: over.rebinding_time.or(base.rebinding_time),
        routers: over.routers.clone().or_else(|| base.routers.clone()),
        dns_servers: over
            .dns_servers
            .clone()
            .or_else(|| base.dns_servers.clone()),
        domain_name: over
            .domain_name
            .clone()
            .or_else(|| base.domain_name.clone()),
        classless_routes: over
            .classless_routes
            .clone()
            .or_else(|| base.classless_routes.clone()),
        hostname: over.hostname.clone().or_else(|| base.hostname.clone()),
        domain_search: over
            .domain_search
            .clone()
            .or_else(|| base.domain_search.clone()),
        next_server: over.next_server.or(base.next_server),
        server_hostname: over
            .server_hostname
            .clone()
            .or_else(|| base.server_hostname.clone()),
        boot_file_name: over
            .boot_file_name
            .clone()
            .or_else(|| base.boot_file_name.clone()),
        tftp_server: over
            .tftp_server
            .clone()
            .or_else(|| base.tftp_server.clone()),
        custom,
    }
}

fn resolve(o: &OptionSet, net: &Ipv4Net) -> Resolved {
    // Explicit T1 and T2 are below the lease and T1 below T2 (refused at
    // load otherwise); a default gives way to an explicit value (T2 is at
    // least T1, T1 at most T2), which is sent as written.
    let lease_secs = o.lease_time.unwrap_or(DEFAULT_LEASE_SECS);
    let t2 = o.rebinding_time.unwrap_or_else(|| {
        ((u64::from(lease_secs) * 7 / 8) as u32).max(o.renewal_time.unwrap_or(0))
    });
    // A reservation's own T1/T2 under a class's shorter lease is the one
    // mix the load checks cannot see: kept in order here.
    let t2 = if t2 >= lease_secs {
        (u64::from(lease_secs) * 7 / 8) as u32
    } else {
        t2
    };
    let t1 = o.renewal_time.unwrap_or(lease_secs / 2).min(t2);
    let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    options.insert(opt::SUBNET_MASK, net.mask().to_be_bytes().to_vec());
    if let Some(r) = &o.routers {
        options.insert(opt::ROUTER, r.iter().flat_map(|a| a.octets()).collect());
    }
    if let Some(d) = &o.dns_servers {
        options.insert(opt::DNS, d.iter().flat_map(|a| a.octets()).collect());
    }
    if let Some(d) = &o.domain_name {
        options.insert(opt::DOMAIN_NAME, d.as_bytes().to_vec());
    }
    if let Some(routes) = &o.classless_routes {
        let mut v = Vec::new();
        for r in routes {
            v.push(r.destination.prefix);
            let sig = usize::from(r.destination.prefix).div_ceil(8);
            v.extend_from_slice(&r.destination.addr.octets()[..sig]);
            v.extend_from_slice(&r.gateway.octets());
        }
        options.insert(opt::CLASSLESS_ROUTES, v);
    }
    crate::dhcp::server::subscriber::resolve_more(o, &mut options);
    for c in &o.custom {
        // Refused at config load when it does not encode.
        if let Ok(v) = c.encoded() {
            options.insert(c.code, v.to_vec());
        }
    }
    options.retain(|_, v| !v.is_empty() && v.len() <= 255);
    Resolved {
        lease_secs,
        t1,
        t2,
        options: options.into_iter().collect(),
        boot: Boot::of(o),
    }
}

struct ReservationRt {
    ip: Ipv4Addr,
    resolved: Resolved,
    /// The reservation's own options (over a class's).
    own: OptionSet,
}

struct PoolRt {
    start: u32,
    end: u32,
    /// Only when the pool overrides something.
    resolved: Option<Resolved>,
    /// Global, subnet and pool options merged.
    opts: OptionSet,
    /// Classes the pool is open to (bit per class); 0: open to all.
    classes: u64,
}

struct SubnetRt {
    id: u32,
    net: Ipv4Net,
    iface: Option<String>,
    vlan: (u16, u16),
    relays: Vec<Ipv4Addr>,
    rapid_commit: bool,
    caps: Caps,
    pools: Vec<PoolRt>,
    resolved: Resolved,
    reservations: HashMap<ClientKey, ReservationRt>,
    /// Reservations by relay information (option 82).
    relay_reservations: HashMap<ReservationId, ReservationRt>,
    reserved_ips: HashMap<Ipv4Addr, ClientKey>,
    /// Global and subnet options merged.
    opts: OptionSet,
    /// The shared network it belongs to.
    shared: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// By DHCP message type (index = type).
    pub received: [u64; 9],
    pub sent: [u64; 9],
    pub dropped: BTreeMap<&'static str, u64>,
    pub malformed: BTreeMap<Malformed, u64>,
    /// Renewals the XDP program answered and the control plane recorded.
    pub fast_renewals: u64,
    /// Requests refused by a cap (no OFFER, a NAK, or a DECLINE that
    /// quarantined nothing), by reason.
    pub limited: BTreeMap<&'static str, u64>,
}

pub struct Server {
    server_id: Ipv4Addr,
    offers: Offers,
    /// Per subnet, when "pool exhausted" was last logged and the
    /// DISCOVERs refused since.
    exhausted_logged: HashMap<u32, (u64, u64)>,
    probation: u64,
    subnets: Vec<SubnetRt>,
    last_exhausted_reclaim: u64,
    /// Reply templates, shared by every lease that uses the same one.
    templates: HashSet<Arc<[u8]>>,
    trust: Trust,
    caps: CapIndex,
    pub leases: LeaseTable,
    pub counters: Counters,
    subs: Subscribers,
    /// The classes of the request being handled (`Subscribers::classify`).
    cls: u64,
}

fn ip_in(p: &PoolRt, ip: Ipv4Addr) -> bool {
    let a = u32::from(ip);
    a >= p.start && a <= p.end
}

impl Server {
    /// Builds the runtime view of `config` around the stored leases.
    pub fn new(config: &Config, stored: Vec<Lease>) -> Server {
        let subs = Subscribers::new(config);
        let mut subnets = Vec::new();
        for s in &config.subnets {
            let base = overlay(&config.options, &s.options);
            let mut reservations = HashMap::new();
            let mut relay_reservations = HashMap::new();
            let mut reserved_ips = HashMap::new();
            for r in &s.reservations {
                let resolved = resolve(&overlay(&base, &r.options), &s.subnet);
                let rt = ReservationRt {
                    ip: r.ip,
                    resolved,
                    own: r.options.clone(),
                };
                // Refused at load; one that is not a valid identity is
                // left out, never keyed as empty (a client with hlen 0
                // would match that).
                let key = match r.id() {
                    Ok(id) if id.is_relay() => {
                        let key: ClientKey = format!("{id:?}").into_bytes().into();
                        reserved_ips.insert(r.ip, key);
                        relay_reservations.insert(id.clone(), rt);
                        continue;
                    }
                    Ok(ReservationId::Hw(b)) => hw_key(1, b),
                    Ok(ReservationId::ClientId(b)) => client_id_key(b),
                    Ok(_) | Err(_) => {
                        tracing::warn!(ip = %r.ip, "reservation with an unparsable identifier ignored");
                        continue;
                    }
                };
                reserved_ips.insert(r.ip, key.clone());
                reservations.insert(key, rt);
            }
            subnets.push(SubnetRt {
                id: s.id,
                net: s.subnet,
                iface: s.interface.clone(),
                vlan: (s.vlan.unwrap_or(0), s.inner_vlan.unwrap_or(0)),
                relays: s.relays.clone(),
                rapid_commit: s.rapid_commit,
                caps: Caps::resolve(&config.limits, &s.limits),
                pools: s
                    .pools
                    .iter()
                    .map(|p| PoolRt {
                        start: u32::from(p.start),
                        end: u32::from(p.end),
                        resolved: (p.options != OptionSet::default())
                            .then(|| resolve(&overlay(&base, &p.options), &s.subnet)),
                        opts: overlay(&base, &p.options),
                        classes: subs.mask(&p.client_classes),
                    })
                    .collect(),
                resolved: resolve(&base, &s.subnet),
                reservations,
                relay_reservations,
                reserved_ips,
                opts: base.clone(),
                shared: s.shared_network.clone(),
            });
        }
        let mut leases = LeaseTable::new();
        let mut templates: HashSet<Arc<[u8]>> = HashSet::new();
        for mut l in stored {
            // One copy of each template, however many leases use it.
            if let Some(f) = &mut l.fast {
                match templates.get(&f.template) {
                    Some(t) => Arc::make_mut(f).template = t.clone(),
                    None => {
                        templates.insert(f.template.clone());
                    }
                }
            }
            // Leases of subnets that left the configuration stay in the
            // table, unserved: their addresses are still held, and a
            // subnet that comes back finds them.
            if l.state != LeaseState::Offered {
                leases.insert_stored(l);
            }
        }
        for s in &subnets {
            for p in &s.pools {
                let reserved = |a: u32| s.reserved_ips.contains_key(&Ipv4Addr::from(a));
                leases.add_pool(
                    s.id,
                    Ipv4Addr::from(p.start),
                    Ipv4Addr::from(p.end),
                    &reserved,
                );
            }
        }
        Server {
            server_id: config.server.server_id,
            offers: Offers::new(
                u64::from(config.server.offer_hold_secs),
                config.server.offer_protected_percent,
            ),
            exhausted_logged: HashMap::new(),
            probation: u64::from(config.server.decline_probation_secs),
            subnets,
            last_exhausted_reclaim: 0,
            templates,
            trust: Trust::new(config),
            caps: CapIndex::default(),
            leases,
            counters: Counters::default(),
            subs,
            cls: 0,
        }
    }

    /// The configured subnet holding `ip`, by id.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<u32> {
        self.subnet_containing(ip).map(|i| self.subnets[i].id)
    }

    pub fn server_id(&self) -> Ipv4Addr {
        self.server_id
    }

    /// Whether every relay is trusted (none listed, `relay_trust` auto).
    pub fn relays_open(&self) -> bool {
        self.trust.open()
    }

    /// Addresses the caps index (leases, quarantines).
    pub fn cap_index_sizes(&self) -> (usize, usize) {
        self.caps.sizes()
    }

    pub fn count_not_for_us(&mut self) {
        *self.counters.dropped.entry("not_for_us").or_default() += 1;
    }

    pub fn count_malformed(&mut self, m: Malformed) {
        *self.counters.malformed.entry(m).or_default() += 1;
    }

    /// Subnet ids with (pool size, addresses held).
    pub fn utilisation(&self, now: u64) -> Vec<(u32, Ipv4Net, u64, u64)> {
        self.subnets
            .iter()
            .map(|s| {
                let (t, h) = self.leases.utilisation(s.id, now);
                (s.id, s.net, t, h)
            })
            .collect()
    }

    /// Expires what ran out and returns the store changes for it.
    pub fn reclaim(&mut self, now: u64) -> Vec<StoreOp> {
        let (expired, offers) = self.leases.reclaim(now);
        for ip in offers {
            self.offers.lapsed(ip);
        }
        expired.into_iter().map(StoreOp::Put).collect()
    }

    /// Offer counters of subnet `id`, and whether its held offers exceed
    /// the protected share of its pools.
    pub fn offer_stats(&self, id: u32) -> (SubnetOffers, bool) {
        let size = self.pool_size(id);
        (self.offers.subnet(id), self.offers.over_share(id, size))
    }

    /// The lines whose offers most often went unrequested or who declined.
    pub fn offer_lines_json(&self, top: usize) -> serde_json::Value {
        self.offers.lines_json(top)
    }

    fn pool_size(&self, id: u32) -> u64 {
        self.subnets
            .iter()
            .filter(|s| s.id == id)
            .flat_map(|s| &s.pools)
            .map(|p| u64::from(p.end - p.start) + 1)
            .sum()
    }

    /// The subscriber line a request came from (see `offers`).
    fn line_of(req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> LineId {
        if !req.giaddr.is_unspecified() {
            let (circuit, remote) = relay_ids(req.relay_info.unwrap_or(&[]));
            LineId::of(&[b"relay", &req.giaddr.octets(), circuit, remote])
        } else {
            let outer = arrival.tags.first().map_or(0, Tag::vid).to_be_bytes();
            let inner = arrival.tags.get(1).map_or(0, Tag::vid).to_be_bytes();
            LineId::of(&[b"direct", arrival.iface.as_bytes(), &outer, &inner])
        }
    }

    fn line_label(req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> String {
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

    fn subnet_for_link(&self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> Option<usize> {
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

    fn subnet_containing(&self, ip: Ipv4Addr) -> Option<usize> {
        self.subnets.iter().position(|s| s.net.contains(ip))
    }

    fn identity(req: &DhcpRequest<'_>) -> ClientKey {
        match req.client_id {
            Some(id) => client_id_key(id),
            None => hw_key(req.htype, req.chaddr()),
        }
    }

    /// The client's reservation: by client identifier first, then by
    /// hardware address (operators reserve by MAC even for clients that
    /// send option 61).
    fn reservation<'s>(
        &self,
        sn: &'s SubnetRt,
        req: &DhcpRequest<'_>,
    ) -> Option<&'s ReservationRt> {
        req.client_id
            .and_then(|id| sn.reservations.get(&client_id_key(id)))
            .or_else(|| sn.reservations.get(&hw_key(req.htype, req.chaddr())))
            .or_else(|| self.relay_reservation(sn, req))
    }

    fn resolved_for<'s>(
        &'s self,
        sn: &'s SubnetRt,
        req: &DhcpRequest<'_>,
        ip: Ipv4Addr,
    ) -> Cow<'s, Resolved> {
        let reserved = self.reservation(sn, req).filter(|r| r.ip == ip);
        if self.cls != 0 {
            return Cow::Owned(self.resolved_with_classes(sn, reserved, ip));
        }
        if let Some(r) = reserved {
            return Cow::Borrowed(&r.resolved);
        }
        Cow::Borrowed(
            sn.pools
                .iter()
                .find(|p| ip_in(p, ip))
                .and_then(|p| p.resolved.as_ref())
                .unwrap_or(&sn.resolved),
        )
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
    fn acceptable(
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

    pub fn handle(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>, now: u64) -> Outcome {
        self.counters.received[usize::from(req.msg_type.min(8))] += 1;
        let plain;
        let req = match self.trusted_view(req, arrival) {
            Ok(Some(p)) => {
                plain = p;
                &plain
            }
            Ok(None) => req,
            Err(why) => {
                *self.counters.dropped.entry(why).or_default() += 1;
                return Outcome::drop(why);
            }
        };
        self.cls = self.classify(req, arrival);
        let out = match req.msg_type {
            msg::DISCOVER => self.discover(req, arrival, now),
            msg::REQUEST => self.request(req, arrival, now),
            msg::DECLINE => self.decline(req, arrival, now),
            msg::RELEASE => self.release(req, now),
            msg::INFORM => self.inform(req, arrival),
            _ => Outcome::drop("bad_message_type"),
        };
        if let Some(r) = &out.reply {
            self.counters.sent[usize::from(r.msg_type.min(8))] += 1;
        }
        if let Some(d) = out.dropped {
            *self.counters.dropped.entry(d).or_default() += 1;
        }
        out
    }

    fn discover(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>, now: u64) -> Outcome {
        let Some(mut si) = self
            .subnet_for_link(req, arrival)
            .map(|si| self.shared_home(si, req))
        else {
            return Outcome::drop("no_subnet");
        };
        let key = Self::identity(req);
        if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
            return Outcome::drop(why);
        }
        let mut reclaimed = self.hand_over(si, req, &key, now);
        let sn = &self.subnets[si];
        let mut sid = sn.id;
        let ip = if let Some(r) = self.reservation(sn, req) {
            if !self.leases.available_to(r.ip, &key, now) {
                tracing::warn!(ip = %r.ip, "reserved address held by another client; no offer");
                let mut o = Outcome::drop("reservation_conflict");
                o.store = reclaimed;
                return o;
            }
            r.ip
        } else if let Some(l) = self.leases.by_client(sid, &key).filter(|l| {
            l.state != LeaseState::Declined && self.acceptable(sn, req, &key, l.ip, now)
        }) {
            l.ip
        } else if let Some(r) = req.requested_ip.filter(|ip| {
            sn.pools.iter().any(|p| ip_in(p, *ip)) && self.acceptable(sn, req, &key, *ip, now)
        }) {
            r
        } else {
            let open = self.open_pools(si);
            let mut got = self.leases.allocate_in(sid, now, &open);
            // Offer holds and leases that ran out since the last background
            // reclaim are only returned to the pool by a reclaim; do one now
            // (at most once a second, the scan is O(leases)).
            if got.is_none() && now > self.last_exhausted_reclaim {
                self.last_exhausted_reclaim = now;
                reclaimed = self.reclaim(now);
                got = self.leases.allocate_in(sid, now, &open);
            }
            if got.is_none() {
                // A shared network's next subnets, in order.
                if let Some((other, a)) = self.allocate_shared(si, now) {
                    si = other;
                    sid = self.subnets[si].id;
                    got = Some(a);
                }
            }
            if got.is_none() {
                // Held offers beyond the protected share yield, oldest first.
                let line = Self::line_of(req, arrival);
                let size = self.pool_size(sid);
                let leases = &self.leases;
                let still = |a: Ipv4Addr| {
                    leases
                        .get(a)
                        .is_some_and(|l| l.state == LeaseState::Offered)
                };
                if let Some(a) = self.offers.take_back(sid, size, line, still, now) {
                    self.leases.remove(a);
                    *self.counters.dropped.entry("offer_taken_back").or_default() += 1;
                    got = Some(a);
                }
            }
            let sn = &self.subnets[si];
            match got {
                Some(ip) => ip,
                None => {
                    // A flood of DISCOVERs into a full pool writes one line
                    // per interval, not one per DISCOVER.
                    let (last, refused) = self.exhausted_logged.entry(sid).or_insert((0, 0));
                    *refused += 1;
                    if *last == 0 || now >= *last + EXHAUSTED_LOG_SECS {
                        let n_refused = std::mem::take(refused);
                        *last = now;
                        let decliner = self
                            .offers
                            .top_decliner()
                            .map(|(line, n)| format!(" (most declines: {line}, {n})"))
                            .unwrap_or_default();
                        tracing::warn!(subnet = %sn.net, refused = n_refused, "pool exhausted: no address to offer{decliner}");
                    }
                    let mut o = Outcome::drop("pool_exhausted");
                    o.store = reclaimed;
                    return o;
                }
            }
        };
        if self.subnets[si].rapid_commit && req.rapid_commit {
            let mut o = self.bind(si, req, arrival, key, ip, now, true);
            o.store.extend(reclaimed);
            return o;
        }
        let bound_already = self
            .leases
            .get(ip)
            .is_some_and(|l| l.is_client(&key) && l.state == LeaseState::Bound && l.expires > now);
        if !bound_already {
            let line = Self::line_of(req, arrival);
            self.end_other_offer(sid, &key, ip);
            let displaced = self.leases.put(Lease {
                ip,
                client: Some(key),
                hw: hw_of(req),
                subnet_id: sid,
                state: LeaseState::Offered,
                expires: now + self.offers.hold_secs(line),
                lease_secs: 0,
                fast: None,
                relay: None,
            });
            reclaimed.extend(displaced.map(StoreOp::Put));
            let size = self.pool_size(sid);
            let client = Self::identity(req);
            let keys = self.cap_keys(si, req, arrival);
            self.caps.leased(&keys, ip, &client);
            let place = offers::Place {
                subnet: sid,
                pool_size: size,
                line,
            };
            self.offers
                .offered(ip, place, &client, || Self::line_label(req, arrival), now);
        }
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, ip);
        let payload = self.build(
            req,
            msg::OFFER,
            Ipv4Addr::UNSPECIFIED,
            ip,
            Some(&resolved),
            false,
        );
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::OFFER,
                payload,
                dest: dest(req, arrival, msg::OFFER, ip),
            }),
            store: reclaimed,
            dropped: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(
        &mut self,
        si: usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: ClientKey,
        ip: Ipv4Addr,
        now: u64,
        rapid: bool,
    ) -> Outcome {
        let subnet_id = self.subnets[si].id;
        if self
            .leases
            .get(ip)
            .is_some_and(|l| l.state == LeaseState::Offered && l.is_client(&key))
        {
            self.offers.requested(ip, &key);
        } else {
            self.offers.gone(ip);
        }
        self.end_other_offer(subnet_id, &key, ip);
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, ip).into_owned();
        let (payload, mark) =
            self.build_marked(req, msg::ACK, req.ciaddr, ip, Some(&resolved), rapid);
        // A DISCOVER gets this binding back unless a reservation of the
        // client's points elsewhere (`discover` tries reservations first).
        let offerable = self.reservation(sn, req).is_none_or(|r| r.ip == ip);
        let fast = (!rapid
            && self.kernel_can_answer(req, &resolved)
            && subscriber::fixed_fields_clear(&payload))
        .then(|| {
            self.fast_reply(
                req,
                arrival,
                &key,
                &payload[message::BOOTP_FIXED_LEN + 4..mark],
                offerable,
            )
        })
        .flatten();
        let lease = Lease {
            ip,
            client: Some(key),
            hw: hw_of(req),
            subnet_id,
            state: LeaseState::Bound,
            expires: now + u64::from(resolved.lease_secs),
            lease_secs: resolved.lease_secs,
            fast,
            relay: self.stash_of(req),
        };
        let keys = self.cap_keys(si, req, arrival);
        if let Some(k) = &lease.client {
            self.caps.leased(&keys, ip, k);
        }
        let mut store = vec![StoreOp::Put(lease.clone())];
        if let Some(moved_from) = self.leases.put(lease) {
            store.push(StoreOp::Put(moved_from));
        }
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::ACK,
                payload,
                dest: dest(req, arrival, msg::ACK, ip),
            }),
            store,
            dropped: None,
        }
    }

    /// The XDP program's view of this ACK, when it can reproduce it: a
    /// lease-map key it can build, a template that fits its map slot.
    fn fast_reply(
        &mut self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: &[u8],
        template: &[u8],
        offerable: bool,
    ) -> Option<Arc<FastReply>> {
        if key.len() > 1 + dhcp_common::MAX_ID_LEN
            || template.len() > dhcp_common::TEMPLATE_OPTIONS_MAX
            || !self.trust.fast_path_ok(req.giaddr)
        {
            return None;
        }
        let rai = req.relay_info.unwrap_or(&[]);
        let template = match self.templates.get(template) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<[u8]> = template.into();
                // Each distinct PRL makes a template: bound what clients
                // can make us keep.
                if self.templates.len() < MAX_SHARED_TEMPLATES {
                    self.templates.insert(t.clone());
                }
                t
            }
        };
        Some(Arc::new(FastReply {
            iface: arrival.iface.into(),
            outer_vlan: arrival.tags.first().map_or(0, Tag::vid),
            inner_vlan: arrival.tags.get(1).map_or(0, Tag::vid),
            giaddr: req.giaddr,
            prl_len: req.prl.map_or(0, |p| p.len() as u16 + 1),
            shape_hash: dhcp_common::shape_hash(req.prl.unwrap_or(&[]), rai),
            max_message_size: req.max_message_size.unwrap_or(0),
            client_id_len: req.client_id.map_or(0, |c| c.len() as u8),
            relay_info_len: rai.len() as u8,
            offerable,
            template,
        }))
    }

    /// The XDP program granted `g.client` the address `g.ip` until `g.expires`
    /// (a renewal event, or an entry read as it left the map): the store
    /// change that records it, if the control plane did not know it yet.
    /// A binding the control plane ended while the kernel could still
    /// answer comes back when the kernel's grant outlives the end: it ran
    /// out (reclaim) while the kernel renewed it, or the client renewed
    /// after its release. Either way the client holds an ACK for it, and
    /// the address is not given to anyone else before it runs out.
    pub fn kernel_granted(&mut self, g: &KernelGrant, now: u64) -> Option<StoreOp> {
        let (key, ip, expires) = (&g.client[..], g.ip, g.expires);
        if let Some(l) = self
            .leases
            .get(ip)
            .filter(|l| l.is_client(key) && l.state == LeaseState::Bound)
        {
            if expires <= l.expires {
                return None;
            }
            let mut l = l.clone();
            l.expires = expires;
            self.leases.replace(l.clone());
            return Some(StoreOp::Renewed(l));
        }
        let hold = self.leases.hold(ip).filter(|h| h.lease.is_client(key))?;
        if expires <= now {
            return None;
        }
        let acked_at_ns = g
            .expires_ns
            .saturating_sub(u64::from(hold.lease.lease_secs) * 1_000_000_000);
        let honour = match hold.ended {
            None | Some((_, EndKind::Lapsed)) => true,
            Some((at_ns, EndKind::Ended)) => acked_at_ns + GRANT_ORDER_SLACK_NS >= at_ns,
        };
        if !honour {
            return None;
        }
        let mut l = hold.lease.clone();
        l.expires = expires;
        l.state = LeaseState::Bound;
        *self
            .counters
            .dropped
            .entry("kernel_grant_restored")
            .or_default() += 1;
        let moved_on = self
            .leases
            .by_client(l.subnet_id, key)
            .is_some_and(|o| o.ip != ip && o.state == LeaseState::Bound);
        if moved_on {
            // The client is bound elsewhere in the subnet now: it keeps
            // that binding, and this address waits out the kernel's grant.
            tracing::warn!(%ip, expires, "the kernel renewed a binding its client has left; address quarantined until that grant ends");
            l.client = None;
            l.state = LeaseState::Declined;
            l.fast = None;
        } else {
            tracing::warn!(%ip, expires, "the kernel renewed a binding as the control plane ended it; kept bound until that grant ends");
        }
        self.leases.put(l.clone());
        Some(StoreOp::Put(l))
    }

    /// The address range of every configured subnet (first, last).
    pub fn subnet_ranges(&self) -> Vec<(u32, u32)> {
        self.subnets
            .iter()
            .map(|s| (s.net.network(), s.net.broadcast()))
            .collect()
    }

    /// Whether leases of subnet `id` are served (its subnet is configured).
    pub fn serves_subnet(&self, id: u32) -> bool {
        self.subnets.iter().any(|s| s.id == id)
    }

    /// Takes every binding out of the kernel's hands (the replies it
    /// would build changed): the store changes for it.
    pub fn strip_fast(&mut self) -> Vec<StoreOp> {
        let ips: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|l| l.fast.is_some())
            .map(|l| l.ip)
            .collect();
        ips.into_iter()
            .filter_map(|ip| {
                let mut l = self.leases.get(ip)?.clone();
                l.fast = None;
                self.leases.replace(l.clone());
                Some(StoreOp::Put(l))
            })
            .collect()
    }

    /// After a stop that did not store every renewal the XDP program
    /// answered, a client may hold a lease the store remembers shorter
    /// than the kernel granted it. The kernel grants at most its own now +
    /// lease time, and it answered nothing after the stop, so every end it
    /// granted is before `now + lease_secs`; but it extends its entry from
    /// its own last grant, not the store's, so while events went unread it
    /// may have chained renewals well past the stored end. Every binding
    /// it could have held (Bound, with fast-path data: reclaim takes an
    /// entry out of the map before it writes the end) is extended to that
    /// bound, however old its stored end. The cost: addresses of clients
    /// that left stay held one lease time longer; never an address given
    /// to a second client.
    pub fn recover_unclean(&mut self, now: u64) -> Vec<StoreOp> {
        let due: Vec<Lease> = self
            .leases
            .iter()
            .filter(|l| {
                l.state == LeaseState::Bound
                    && l.fast.is_some()
                    && l.expires < now + u64::from(l.lease_secs)
            })
            .cloned()
            .collect();
        due.into_iter()
            .map(|mut l| {
                l.expires = now + u64::from(l.lease_secs);
                self.leases.replace(l.clone());
                StoreOp::Put(l)
            })
            .collect()
    }

    fn nak(&self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>, why: &'static str) -> Outcome {
        tracing::debug!(xid = req.xid, "NAK: {why}");
        let payload = self.build(
            req,
            msg::NAK,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            None,
            false,
        );
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::NAK,
                payload,
                dest: dest(req, arrival, msg::NAK, Ipv4Addr::UNSPECIFIED),
            }),
            ..Default::default()
        }
    }

    fn request(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>, now: u64) -> Outcome {
        let key = Self::identity(req);
        if let Some(sid) = req.server_id {
            // SELECTING.
            let si = self
                .subnet_for_link(req, arrival)
                .map(|si| self.shared_containing(si, req.requested_ip));
            if sid != self.server_id {
                // The client took another server's offer: ours is free again.
                if let Some(si) = si {
                    let sub = self.subnets[si].id;
                    if let Some(l) = self.leases.by_client(sub, &key) {
                        if l.state == LeaseState::Offered {
                            let ip = l.ip;
                            self.leases.remove(ip);
                            self.offers.gone(ip);
                        }
                    }
                }
                return Outcome::drop("other_server");
            }
            let Some(si) = si else {
                return Outcome::drop("no_subnet");
            };
            let Some(ip) = req.requested_ip else {
                return Outcome::drop("selecting_without_address");
            };
            // Its offer was taken back for another client's, which is still
            // only a hold: the REQUEST wins it back.
            if self
                .leases
                .get(ip)
                .is_some_and(|l| l.state == LeaseState::Offered && !l.is_client(&key))
                && self.offers.reclaim_for(ip, &key, now)
            {
                self.leases.remove(ip);
                *self.counters.dropped.entry("offer_taken_back").or_default() += 1;
            }
            if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
                return self.nak(req, arrival, why);
            }
            if self.acceptable(&self.subnets[si], req, &key, ip, now) {
                return self.bind(si, req, arrival, key, ip, now, false);
            }
            // Its offer may have been taken back under pressure: it showed
            // interest, its next offer is kept.
            self.offers.interested(&key, now);
            return self.nak(req, arrival, "requested address not available");
        }
        if let (Some(ip), true) = (req.requested_ip, req.ciaddr.is_unspecified()) {
            // INIT-REBOOT.
            let Some(si) = self
                .subnet_for_link(req, arrival)
                .map(|si| self.shared_containing(si, Some(ip)))
            else {
                return Outcome::drop("no_subnet");
            };
            if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
                return self.nak(req, arrival, why);
            }
            let sn = &self.subnets[si];
            if !sn.net.contains(ip) {
                return self.nak(req, arrival, "address not on the client's network");
            }
            let reserved_here = self.reservation(sn, req).is_some_and(|r| r.ip == ip);
            let known = self.leases.by_client(sn.id, &key).map(|l| (l.ip, l.state));
            return match known {
                None if !reserved_here => Outcome::drop("unknown_client"),
                Some((lip, st)) if lip != ip || st == LeaseState::Declined => {
                    self.nak(req, arrival, "client's binding is another address")
                }
                _ if self.acceptable(sn, req, &key, ip, now) => {
                    self.bind(si, req, arrival, key, ip, now, false)
                }
                _ => self.nak(req, arrival, "address held by another client"),
            };
        }
        if !req.ciaddr.is_unspecified() && req.requested_ip.is_none() {
            // RENEWING (unicast) or REBINDING (broadcast).
            let ip = req.ciaddr;
            let Some(si) = self.subnet_containing(ip) else {
                return Outcome::drop("not_our_network");
            };
            let sn = &self.subnets[si];
            let ours = self
                .leases
                .by_client(sn.id, &key)
                .is_some_and(|l| l.ip == ip && l.state != LeaseState::Declined);
            let reserved_here = self.reservation(sn, req).is_some_and(|r| r.ip == ip);
            if (ours || reserved_here) && self.acceptable(sn, req, &key, ip, now) {
                return self.bind(si, req, arrival, key, ip, now, false);
            }
            return self.nak(req, arrival, "no binding for this client and address");
        }
        Outcome::drop("request_in_no_known_state")
    }

    /// The client's offer of another address than `ip` in `subnet` ends
    /// (it is offered or bound `ip` now).
    fn end_other_offer(&mut self, subnet: u32, key: &[u8], ip: Ipv4Addr) {
        if let Some(prev) = self
            .leases
            .by_client(subnet, key)
            .filter(|l| l.state == LeaseState::Offered && l.ip != ip)
        {
            self.offers.gone(prev.ip);
        }
    }

    fn decline(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>, now: u64) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_id) {
            return Outcome::drop("other_server");
        }
        let Some(ip) = req.requested_ip else {
            return Outcome::drop("decline_without_address");
        };
        let key = Self::identity(req);
        match self.leases.get(ip) {
            Some(l) if l.is_client(&key) => {
                let mut d = l.clone();
                let subnet = l.subnet_id;
                let caps = self
                    .subnets
                    .iter()
                    .find(|s| s.id == subnet)
                    .map_or_else(Caps::default, |s| s.caps);
                let keys = Keys::declines(subnet, &caps, &key, Self::line_of(req, arrival));
                if let Some(kind) = self.caps.decline_refused(&keys, &self.leases) {
                    // The address is not quarantined: the client's hold
                    // lapses as an unrequested offer would.
                    let why = kind.reason();
                    *self.counters.limited.entry(why).or_default() += 1;
                    return Outcome::drop(why);
                }
                tracing::warn!(%ip, "address declined by its client (in use elsewhere?): quarantined");
                self.offers.gone(ip);
                self.offers.declined(
                    subnet,
                    Self::line_of(req, arrival),
                    || Self::line_label(req, arrival),
                    now,
                );
                d.client = None;
                d.state = LeaseState::Declined;
                d.expires = now + self.probation;
                self.caps.declined(&keys, ip, d.expires);
                self.leases.put(d.clone());
                Outcome {
                    store: vec![StoreOp::Put(d)],
                    ..Default::default()
                }
            }
            _ => Outcome::drop("decline_unknown"),
        }
    }

    fn release(&mut self, req: &DhcpRequest<'_>, now: u64) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_id) {
            return Outcome::drop("other_server");
        }
        let key = Self::identity(req);
        let ip = req.ciaddr;
        match self.leases.get(ip) {
            Some(l) if l.is_client(&key) && l.state == LeaseState::Bound => {
                let l = self
                    .leases
                    .set_state(ip, LeaseState::Released, now, now)
                    .cloned();
                Outcome {
                    store: l.into_iter().map(StoreOp::Put).collect(),
                    ..Default::default()
                }
            }
            _ => Outcome::drop("release_unknown"),
        }
    }

    fn inform(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> Outcome {
        let si = if req.ciaddr.is_unspecified() {
            self.subnet_for_link(req, arrival)
        } else {
            self.subnet_containing(req.ciaddr)
                .or_else(|| self.subnet_for_link(req, arrival))
        };
        let Some(si) = si else {
            return Outcome::drop("no_subnet");
        };
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, req.ciaddr).into_owned();
        let mut payload = Reply::new(
            req,
            msg::ACK,
            req.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
        );
        payload.set_boot(&resolved.boot);
        payload.push(opt::SERVER_ID, &self.server_id.octets());
        self.push_options(&mut payload, req, &resolved, false);
        self.push_echoes(&mut payload, req, false);
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::ACK,
                payload: payload.finish(),
                dest: dest(req, arrival, msg::INFORM, Ipv4Addr::UNSPECIFIED),
            }),
            ..Default::default()
        }
    }

    /// OFFER/ACK/NAK payload. Order: 53, 54, 51, 58, 59, configured options
    /// by code, 61, 80, 82 (relay information last, RFC 3046 §2.1).
    fn build(
        &self,
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        resolved: Option<&Resolved>,
        rapid: bool,
    ) -> Vec<u8> {
        self.build_marked(req, msg_type, ciaddr, yiaddr, resolved, rapid)
            .0
    }

    /// `build`, and where the echoed options (61, 80, 82) begin: what
    /// comes before them from offset 240 is the XDP reply template.
    fn build_marked(
        &self,
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        resolved: Option<&Resolved>,
        rapid: bool,
    ) -> (Vec<u8>, usize) {
        let mut r = Reply::new(req, msg_type, ciaddr, yiaddr, Ipv4Addr::UNSPECIFIED);
        if msg_type == msg::NAK && !req.giaddr.is_unspecified() {
            r.set_broadcast();
        }
        r.push(opt::SERVER_ID, &self.server_id.octets());
        if let Some(res) = resolved.filter(|_| msg_type != msg::NAK) {
            r.set_boot(&res.boot);
        }
        if let Some(res) = resolved {
            r.push(opt::LEASE_TIME, &res.lease_secs.to_be_bytes());
            r.push(opt::RENEWAL_TIME, &res.t1.to_be_bytes());
            r.push(opt::REBINDING_TIME, &res.t2.to_be_bytes());
            self.push_options(&mut r, req, res, rapid);
        }
        let mark = r.written();
        self.push_echoes(&mut r, req, rapid && resolved.is_some());
        (r.finish(), mark)
    }

    fn push_echoes(&self, r: &mut Reply, req: &DhcpRequest<'_>, rapid: bool) {
        if let Some(id) = req.client_id {
            r.push(opt::CLIENT_ID, id);
        }
        if rapid {
            r.push(opt::RAPID_COMMIT, &[]);
        }
        if let Some(rai) = req.relay_info {
            r.push(opt::RELAY_AGENT_INFO, rai);
        }
    }

    /// Configured options the client asked for (all of them when it sent no
    /// parameter request list; the subnet mask always), within its maximum
    /// message size.
    fn push_options(&self, r: &mut Reply, req: &DhcpRequest<'_>, res: &Resolved, rapid: bool) {
        let limit =
            usize::from(req.max_message_size.unwrap_or(0)).max(message::MIN_MAX_MESSAGE) - 28;
        let echo_len = req.client_id.map_or(0, |v| 2 + v.len())
            + if rapid { 2 } else { 0 }
            + req.relay_info.map_or(0, |v| 2 + v.len());
        let mut left = Vec::new();
        for (code, value) in &res.options {
            let wanted = *code == opt::SUBNET_MASK || req.prl.is_none() || req.requested(*code);
            if wanted && r.len_with_end() + 2 + value.len() + echo_len <= limit {
                r.push(*code, value);
            } else if wanted {
                left.push((*code, &value[..]));
            }
        }
        subscriber::overload(r, &left, &res.boot, limit, echo_len);
    }
}

/// Circuit-id (82.1) and remote-id (82.2) of relay agent information.
fn relay_ids(rai: &[u8]) -> (&[u8], &[u8]) {
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

fn hw_of(req: &DhcpRequest<'_>) -> Box<[u8]> {
    let mut v = Vec::with_capacity(1 + req.chaddr().len());
    v.push(req.htype);
    v.extend_from_slice(req.chaddr());
    v.into_boxed_slice()
}

/// RFC 2131 §4.1 reply addressing.
fn dest(req: &DhcpRequest<'_>, arrival: &Arrival<'_>, msg_type: u8, yiaddr: Ipv4Addr) -> Dest {
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

#[cfg(test)]
mod tests;
