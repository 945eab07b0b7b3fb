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
    dhcp::leases::{EndKind, LeaseTable},
    dhcp::subscriber::{ReservationId, Subscribers},
    lease::{client_id_key, hw_key, ClientKey, FastReply, Lease, LeaseState},
    proto::{self, msg, opt, Boot, DhcpRequest, Malformed, Reply, Tag},
    store::StoreOp,
    xdp::map_sync::KernelGrant,
};

mod discover;
mod kernel;
mod limits;
mod link;
mod offers;
mod options;
mod release;
mod request;
mod subscriber;
mod trust;

use limits::{CapIndex, Keys};
use link::{dest, direct_line, hw_of, relay_ids, relayed_line, unstash};
use offers::Offers;
pub use offers::{LineId, SubnetOffers};
use options::{overlay, resolve};
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
                let key = match r.id() {
                    ReservationId::Hw(b) => hw_key(1, b),
                    ReservationId::ClientId(b) => client_id_key(b),
                    relay => {
                        let key: ClientKey = format!("{relay:?}").into_bytes().into();
                        reserved_ips.insert(r.ip, key);
                        relay_reservations.insert(relay.clone(), rt);
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
        let mut server = Server {
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
        };
        server.count_stored();
        server
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
}

#[cfg(test)]
mod tests;
