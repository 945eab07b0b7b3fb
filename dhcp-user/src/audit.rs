//! The invariant between the two planes, as a check over what each one
//! holds (see `crate::engine` for the statement and how it is kept).
//!
//! Given every entry of the XDP lease map and the lease store's view of
//! the addresses they name, it lists each disagreement:
//! - a map entry with no Bound lease behind it, or for another client or
//!   subnet;
//! - a live kernel end beyond what a crash-recovered store would grant: for a
//!   stored Bound binding with fast-path data, recovery holds it until
//!   now + its lease time; otherwise, until its stored end;
//! - a Bound lease the map should answer for (it would write an entry)
//!   that has none, while its client's key is not in the map for another
//!   of its bindings.
//!
//! One definition, used by the model-based test, `xdhcp leases audit` and
//! the daemon's background auditor.

use std::{collections::HashMap, net::Ipv4Addr};

use dhcp_common::{LeaseKey, LeaseValue};

use crate::{
    clock::mono_ns_to_unix_ceil,
    fastmap::{client_key, lease_key},
    leases::{Lease, LeaseState},
};

/// Seconds of rounding allowed between the kernel's monotonic ends and the
/// store's whole Unix seconds.
pub const SLACK_SECS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A map entry for an address the store holds no lease for.
    NoLease,
    /// The store's lease for that address is another client's.
    OtherClient,
    OtherSubnet,
    /// The store's lease for that address is not Bound.
    NotBound,
    /// The kernel's end lies beyond what crash recovery would grant.
    BeyondRecovery,
    /// A Bound lease the map should answer for is not in it.
    Missing,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::NoLease => "no_lease",
            Kind::OtherClient => "other_client",
            Kind::OtherSubnet => "other_subnet",
            Kind::NotBound => "not_bound",
            Kind::BeyondRecovery => "beyond_recovery",
            Kind::Missing => "missing",
        }
    }

    /// Kinds where the kernel may answer what the store would not: a
    /// repair removes the entry.
    pub fn is_stray(self) -> bool {
        !matches!(self, Kind::Missing)
    }

    pub const ALL: [Kind; 6] = [
        Kind::NoLease,
        Kind::OtherClient,
        Kind::OtherSubnet,
        Kind::NotBound,
        Kind::BeyondRecovery,
        Kind::Missing,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub kind: Kind,
    pub ip: Ipv4Addr,
    /// The map key (for a `Missing` lease, the one it would have).
    pub key: Option<LeaseKey>,
    /// The kernel's end, Unix seconds (map entries only).
    pub kernel_expires: Option<u64>,
    /// The store's end, if it has a lease there.
    pub store_expires: Option<u64>,
}

/// Checks map `entries` against the store's leases (`lease_at`), at Unix
/// time `now`. `mapped` says which Bound leases the map should hold (the
/// sync's own eligibility rule); pass `None` to skip that check.
pub fn check<'a>(
    entries: &[(LeaseKey, LeaseValue)],
    lease_at: impl Fn(Ipv4Addr) -> Option<&'a Lease>,
    bound: impl Iterator<Item = &'a Lease>,
    mapped: Option<&dyn Fn(&Lease) -> bool>,
    now: u64,
) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let mut keys: HashMap<LeaseKey, Ipv4Addr> = HashMap::new();
    for (k, v) in entries {
        let ip = Ipv4Addr::from(v.ip.to_ne_bytes());
        keys.insert(*k, ip);
        let kernel = mono_ns_to_unix_ceil(v.expires_mono_ns);
        let mut d = Disagreement {
            kind: Kind::NoLease,
            ip,
            key: Some(*k),
            kernel_expires: Some(kernel),
            store_expires: None,
        };
        let Some(l) = lease_at(ip) else {
            out.push(d);
            continue;
        };
        d.store_expires = Some(l.expires);
        let kind = if l.client.as_deref() != client_key(k).as_deref() {
            Some(Kind::OtherClient)
        } else if l.subnet_id != v.subnet_id {
            Some(Kind::OtherSubnet)
        } else if l.state != LeaseState::Bound {
            Some(Kind::NotBound)
        } else if kernel > now && kernel > recovered_end(l, now) + SLACK_SECS {
            Some(Kind::BeyondRecovery)
        } else {
            None
        };
        if let Some(kind) = kind {
            d.kind = kind;
            out.push(d);
        }
    }
    if let Some(mapped) = mapped {
        for l in bound {
            if l.state != LeaseState::Bound || l.expires <= now || !mapped(l) {
                continue;
            }
            let Some(key) = l.client.as_deref().and_then(lease_key) else {
                continue;
            };
            // The client's key answers for another of its bindings (one per
            // key in the map): not this one's to claim.
            if keys.contains_key(&key) {
                continue;
            }
            out.push(Disagreement {
                kind: Kind::Missing,
                ip: l.ip,
                key: Some(key),
                kernel_expires: None,
                store_expires: Some(l.expires),
            });
        }
    }
    out
}

/// The end a crash-recovered store grants `l` (`Server::recover_unclean`).
pub fn recovered_end(l: &Lease, now: u64) -> u64 {
    let lease = u64::from(l.lease_secs);
    if l.state == LeaseState::Bound && l.fast.is_some() {
        l.expires.max(now + lease)
    } else {
        l.expires
    }
}
