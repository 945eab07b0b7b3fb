//! Offer holds that yield under pressure.
//!
//! An OFFER keeps its address for its client for a while (RFC 2131
//! §4.3.1 allows but does not require it), so two clients are never
//! offered one address. That must not become a lock anyone can take: a
//! DISCOVER storm from random MACs would otherwise hold every free
//! address with no REQUEST ever sent. So, when a pool has no free address
//! left, a new DISCOVER takes the address of a held offer:
//! - from the subscriber line that holds the most offers (a storming line
//!   recycles its own offers; a client on another line takes from it and
//!   keeps what it got), oldest first. The client that lost it, if it
//!   REQUESTs it while the taker only holds it, gets it back (a REQUEST
//!   beats a hold: under a storm offers turn over in milliseconds, faster
//!   than a real client answers); once the taker is bound, it is NAKed and
//!   starts again;
//! - except the offers of clients that showed interest (their REQUEST was
//!   NAKed because their offer had been taken back), up to the protected
//!   share of the pool (`offer_protected_percent`): those keep their
//!   addresses as before, so a client on the very line that storms binds
//!   at its next DORA;
//! - and the hold shrinks per line while that line's offers go unrequested
//!   (halved for each, down to 1 s), whole again at the line's next
//!   REQUEST: a line whose OFFERs are never answered is not a client.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    net::Ipv4Addr,
};

use serde_json::{json, Value};

/// Lines remembered at most (the least recently seen are forgotten).
const MAX_LINES: usize = 65_536;
/// Hold halvings at most: 30 s becomes 1 s after 5 unanswered offers.
const MAX_HALVINGS: u32 = 5;

/// A subscriber line: the relay's circuit-id and remote-id for relayed
/// requests, the interface and VLAN tags for direct ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineId(pub u64);

impl LineId {
    pub fn of(parts: &[&[u8]]) -> LineId {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.len().hash(&mut h);
            p.hash(&mut h);
        }
        LineId(h.finish())
    }
}

#[derive(Debug, Default, Clone)]
struct Line {
    label: String,
    /// Offers in a row that ended without a REQUEST.
    unanswered: u32,
    offers: u64,
    requested: u64,
    taken_back: u64,
    expired_unrequested: u64,
    declines: u64,
    last_seen: u64,
}

#[derive(Debug, Clone)]
struct Held {
    subnet: u32,
    line: LineId,
    at: u64,
    protected: bool,
    client: Box<[u8]>,
}

/// A line's unprotected offers in a subnet, oldest first, and how many of
/// them are live.
type LineQueue = (VecDeque<(Ipv4Addr, u64)>, u64);

/// Where an offer is made: subnet, its pools' size, the client's line.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub subnet: u32,
    pub pool_size: u64,
    pub line: LineId,
}

/// Clients remembered as interested at most.
const MAX_INTERESTED: usize = 65_536;

#[derive(Debug, Default, Clone, Copy)]
pub struct SubnetOffers {
    pub held: u64,
    /// Held offers of interested clients, kept when the pool runs out.
    pub protected: u64,
    pub taken_back: u64,
    pub expired_unrequested: u64,
    pub declines: u64,
}

pub struct Offers {
    base_hold: u64,
    protected_percent: u32,
    held: HashMap<Ipv4Addr, Held>,
    /// Per subnet and line, unprotected offers oldest first (entries may
    /// be stale: checked against `held` when popped), and how many of
    /// them are live.
    order: HashMap<(u32, LineId), LineQueue>,
    /// Clients whose REQUEST was NAKed after their offer was taken back.
    interested: HashMap<Box<[u8]>, u64>,
    /// Per client whose offer was taken back: which address, and when.
    taken: HashMap<Box<[u8]>, (Ipv4Addr, u64)>,
    lines: HashMap<LineId, Line>,
    subnets: HashMap<u32, SubnetOffers>,
    /// Per subnet, when a take-back was last logged and how many since.
    logged: HashMap<u32, (u64, u64)>,
    seq: u64,
}

impl Offers {
    pub fn new(base_hold: u64, protected_percent: u32) -> Offers {
        Offers {
            base_hold,
            protected_percent,
            held: HashMap::new(),
            order: HashMap::new(),
            interested: HashMap::new(),
            taken: HashMap::new(),
            lines: HashMap::new(),
            subnets: HashMap::new(),
            logged: HashMap::new(),
            seq: 0,
        }
    }

    fn line(&mut self, id: LineId, label: impl FnOnce() -> String, now: u64) -> &mut Line {
        if self.lines.len() >= MAX_LINES && !self.lines.contains_key(&id) {
            // Forget the quietest half: lines seen longest ago.
            let mut seen: Vec<u64> = self.lines.values().map(|l| l.last_seen).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            self.lines.retain(|_, l| l.last_seen > cut);
        }
        let l = self.lines.entry(id).or_insert_with(|| Line {
            label: label(),
            ..Default::default()
        });
        l.last_seen = now;
        l
    }

    /// How long an offer made to `line` holds its address.
    pub fn hold_secs(&self, line: LineId) -> u64 {
        let halvings = self
            .lines
            .get(&line)
            .map_or(0, |l| l.unanswered.min(MAX_HALVINGS));
        (self.base_hold >> halvings)
            .max(1)
            .min(self.base_hold.max(1))
    }

    /// An offer of `ip` to `client` on `line` now holds it.
    pub fn offered(
        &mut self,
        ip: Ipv4Addr,
        at_place: Place,
        client: &[u8],
        label: impl FnOnce() -> String,
        now: u64,
    ) {
        let Place {
            subnet,
            pool_size,
            line,
        } = at_place;
        self.gone(ip);
        self.line(line, label, now).offers += 1;
        self.seq += 1;
        let at = self.seq;
        let protected = self.interested.contains_key(client)
            && self.subnet(subnet).protected < self.protected_limit(pool_size);
        self.held.insert(
            ip,
            Held {
                subnet,
                line,
                at,
                protected,
                client: client.into(),
            },
        );
        let s = self.subnets.entry(subnet).or_default();
        s.held += 1;
        if protected {
            s.protected += 1;
        } else {
            let (q, live) = self.order.entry((subnet, line)).or_default();
            q.push_back((ip, at));
            *live += 1;
        }
    }

    fn protected_limit(&self, pool_size: u64) -> u64 {
        (pool_size * u64::from(self.protected_percent)).div_ceil(100)
    }

    /// `client` asked for an offer that had been taken back: its next
    /// offers are protected (within the share).
    pub fn interested(&mut self, client: &[u8], now: u64) {
        if self.interested.len() >= MAX_INTERESTED {
            let mut seen: Vec<u64> = self.interested.values().copied().collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            self.interested.retain(|_, t| *t > cut);
        }
        self.interested.insert(client.into(), now);
    }

    /// The client REQUESTed the address it was offered.
    pub fn requested(&mut self, ip: Ipv4Addr, client: &[u8]) {
        self.interested.remove(client);
        if let Some(h) = self.remove(ip) {
            if let Some(l) = self.lines.get_mut(&h.line) {
                l.unanswered = 0;
                l.requested += 1;
            }
        }
    }

    /// The offer ended some other way (the client chose another server,
    /// was offered another address, or was bound by another path).
    pub fn gone(&mut self, ip: Ipv4Addr) {
        self.remove(ip);
    }

    /// The hold ran out with no REQUEST.
    pub fn lapsed(&mut self, ip: Ipv4Addr) {
        if let Some(h) = self.remove(ip) {
            self.subnets
                .entry(h.subnet)
                .or_default()
                .expired_unrequested += 1;
            if let Some(l) = self.lines.get_mut(&h.line) {
                l.unanswered += 1;
                l.expired_unrequested += 1;
            }
        }
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Option<Held> {
        let h = self.held.remove(&ip)?;
        if let Some(s) = self.subnets.get_mut(&h.subnet) {
            s.held = s.held.saturating_sub(1);
            if h.protected {
                s.protected = s.protected.saturating_sub(1);
            }
        }
        if !h.protected {
            if let Some((_, live)) = self.order.get_mut(&(h.subnet, h.line)) {
                *live = live.saturating_sub(1);
            }
        }
        Some(h)
    }

    /// The pool of `subnet` is out: the address of the oldest unprotected
    /// offer of the line holding the most of them (`line`, the asking
    /// one, on a tie) is taken back and returned.
    pub fn take_back(
        &mut self,
        subnet: u32,
        pool_size: u64,
        line: LineId,
        still_offered: impl Fn(Ipv4Addr) -> bool,
        now: u64,
    ) -> Option<Ipv4Addr> {
        // Within the protected share, every hold keeps its address.
        if self.subnet(subnet).held <= self.protected_limit(pool_size) {
            return None;
        }
        loop {
            let victim = self
                .order
                .iter()
                .filter(|((s, _), (_, live))| *s == subnet && *live > 0)
                .max_by_key(|((_, l), (_, live))| (*live, *l == line))
                .map(|(k, _)| *k)?;
            let (ip, at) = {
                let (q, live) = self.order.get_mut(&victim)?;
                match q.pop_front() {
                    Some(e) => e,
                    None => {
                        *live = 0;
                        continue;
                    }
                }
            };
            let Some(h) = self.held.get(&ip).filter(|h| h.at == at).cloned() else {
                continue;
            };
            self.remove(ip);
            if !still_offered(ip) {
                // Ended by a path that did not say so (an operator's delete).
                continue;
            }
            self.count_taken_back(&h);
            self.note_taken(h.client, ip, now);
            let (last, n) = self.logged.entry(subnet).or_insert((0, 0));
            *n += 1;
            if now > *last {
                tracing::info!(
                    subnet,
                    %ip,
                    taken_back = *n,
                    "pool exhausted by offers: a held offer's address goes to a new client (its client is NAKed if it asks for it)"
                );
                *last = now;
                *n = 0;
            }
            return Some(ip);
        }
    }

    fn count_taken_back(&mut self, h: &Held) {
        self.subnets.entry(h.subnet).or_default().taken_back += 1;
        if let Some(l) = self.lines.get_mut(&h.line) {
            l.unanswered += 1;
            l.taken_back += 1;
        }
    }

    /// `client` REQUESTs `ip`, whose offer to it was taken back and is now
    /// another client's unprotected hold: a REQUEST beats a hold, so that
    /// hold ends (its client is NAKed if it asks) and `ip` may be bound to
    /// `client`. Holds are for telling clients apart, not bindings: two
    /// clients are still never bound to one address.
    pub fn reclaim_for(&mut self, ip: Ipv4Addr, client: &[u8], now: u64) -> bool {
        if self.taken.get(client).map(|t| t.0) != Some(ip) {
            return false;
        }
        let Some(h) = self.held.get(&ip).filter(|h| !h.protected).cloned() else {
            return false;
        };
        self.taken.remove(client);
        self.remove(ip);
        self.count_taken_back(&h);
        self.note_taken(h.client, ip, now);
        true
    }

    fn note_taken(&mut self, client: Box<[u8]>, ip: Ipv4Addr, now: u64) {
        if self.taken.len() >= MAX_INTERESTED && !self.taken.contains_key(&client) {
            let mut seen: Vec<u64> = self.taken.values().map(|t| t.1).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            self.taken.retain(|_, t| t.1 > cut);
        }
        self.taken.insert(client, (ip, now));
    }

    /// A DECLINE from `line`, in `subnet`.
    pub fn declined(
        &mut self,
        subnet: u32,
        line: LineId,
        label: impl FnOnce() -> String,
        now: u64,
    ) {
        self.line(line, label, now).declines += 1;
        self.subnets.entry(subnet).or_default().declines += 1;
    }

    pub fn subnet(&self, subnet: u32) -> SubnetOffers {
        self.subnets.get(&subnet).copied().unwrap_or_default()
    }

    /// Offers held beyond the protected share (for `status`).
    pub fn over_share(&self, subnet: u32, pool_size: u64) -> bool {
        self.subnet(subnet).held > self.protected_limit(pool_size)
    }

    /// The line that declined most, with its count (a pool exhausted by
    /// declines is reported with it).
    pub fn top_decliner(&self) -> Option<(String, u64)> {
        self.lines
            .values()
            .filter(|l| l.declines > 0)
            .max_by_key(|l| l.declines)
            .map(|l| (l.label.clone(), l.declines))
    }

    /// The lines whose offers most often went unrequested (`stats`).
    pub fn lines_json(&self, top: usize) -> Value {
        let mut v: Vec<&Line> = self
            .lines
            .values()
            .filter(|l| l.taken_back + l.expired_unrequested + l.declines > 0)
            .collect();
        v.sort_by_key(|l| std::cmp::Reverse(l.taken_back + l.expired_unrequested + l.declines));
        v.into_iter()
            .take(top)
            .map(|l| {
                json!({
                    "line": l.label,
                    "offers": l.offers,
                    "requested": l.requested,
                    "taken-back": l.taken_back,
                    "expired-unrequested": l.expired_unrequested,
                    "declines": l.declines,
                    "hold-secs": (self.base_hold >> l.unanswered.min(MAX_HALVINGS)).max(1),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
