//! The invariant between the two planes, as a check over what each one
//! holds (see `crate::daemon::engine` for the statement and how it is kept).
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
//! the daemon's background auditor (`crate::daemon::auditor`).

use std::{collections::HashSet, net::Ipv4Addr};

use dhcp_common::{LeaseKey, LeaseValue};

pub use crate::xdp::clock::Clocks;
use crate::{
    lease::{Lease, LeaseState},
    xdp::map_sync::{is_client_key, lease_key},
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
    let mut out = check_entries(entries, lease_at, now);
    if let Some(mapped) = mapped {
        let keys: HashSet<LeaseKey> = entries.iter().map(|(k, _)| *k).collect();
        out.extend(check_missing(bound, mapped, &|_, k| keys.contains(k), now));
    }
    out
}

/// The map's half of [`check`]: each entry against the store's lease at
/// its address. Entries can be checked in any grouping (the auditor
/// checks the map a chunk at a time).
pub fn check_entries<'a>(
    entries: &[(LeaseKey, LeaseValue)],
    lease_at: impl Fn(Ipv4Addr) -> Option<&'a Lease>,
    now: u64,
) -> Vec<Disagreement> {
    let clocks = Clocks::now();
    entries
        .iter()
        .filter_map(|(k, v)| {
            let ip = Ipv4Addr::from(v.ip.to_ne_bytes());
            check_entry(k, v, lease_at(ip), now, &clocks)
        })
        .collect()
}

/// One map entry against `lease`, the store's lease at the entry's
/// address (`check_entries`), with the kernel's clock read as `clocks`.
pub fn check_entry(
    k: &LeaseKey,
    v: &LeaseValue,
    lease: Option<&Lease>,
    now: u64,
    clocks: &Clocks,
) -> Option<Disagreement> {
    let ip = Ipv4Addr::from(v.ip.to_ne_bytes());
    let kernel = clocks.mono_ns_to_unix_ceil(v.expires_mono_ns);
    let mut d = Disagreement {
        kind: Kind::NoLease,
        ip,
        key: Some(*k),
        kernel_expires: Some(kernel),
        store_expires: None,
    };
    let Some(l) = lease else {
        return Some(d);
    };
    d.store_expires = Some(l.expires);
    d.kind = if !is_client_key(l.client.as_deref(), k) {
        Kind::OtherClient
    } else if l.subnet_id != v.subnet_id {
        Kind::OtherSubnet
    } else if l.state != LeaseState::Bound {
        Kind::NotBound
    } else if kernel > now && kernel > recovered_end(l, now) + SLACK_SECS {
        Kind::BeyondRecovery
    } else {
        return None;
    };
    Some(d)
}

/// The store's half of [`check`]: each Bound lease of `bound` the map
/// should answer for (`mapped`) whose client's key is not in the map
/// (`key_in_map`, given the lease and the key it would have).
pub fn check_missing<'a>(
    bound: impl Iterator<Item = &'a Lease>,
    mapped: &dyn Fn(&Lease) -> bool,
    key_in_map: &dyn Fn(&Lease, &LeaseKey) -> bool,
    now: u64,
) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for l in bound {
        if l.state != LeaseState::Bound || l.expires <= now || !mapped(l) {
            continue;
        }
        let Some(key) = l.client.as_deref().and_then(lease_key) else {
            continue;
        };
        // The client's key answers for another of its bindings (one per
        // key in the map): not this one's to claim.
        if key_in_map(l, &key) {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        lease::{hw_key, FastReply},
        xdp::clock::{unix_now, unix_to_mono_ns},
    };
    use std::{collections::HashMap, sync::Arc};

    /// The `i`th client's lease in subnet 1, ending in 100 s; with `fast`,
    /// renewable in the kernel. The auditor's tests use it too.
    pub(crate) fn lease(i: u8, state: LeaseState, fast: bool) -> Lease {
        Lease {
            relay: None,
            ip: Ipv4Addr::new(198, 18, 0, i),
            client: Some(hw_key(1, &[2, 0, 0, 0, 0, i])),
            hw: vec![1, 2, 0, 0, 0, 0, i].into(),
            subnet_id: 1,
            state,
            expires: unix_now() + 100,
            lease_secs: 100,
            fast: fast.then(|| Arc::new(FastReply::minimal("eth0"))),
        }
    }

    fn entry(l: &Lease, ends: u64) -> (LeaseKey, LeaseValue) {
        let mut v: LeaseValue = bytemuck::Zeroable::zeroed();
        v.ip = u32::from_ne_bytes(l.ip.octets());
        v.subnet_id = l.subnet_id;
        v.lease_secs = l.lease_secs;
        v.expires_mono_ns = unix_to_mono_ns(ends);
        v.reported_mono_ns = v.expires_mono_ns;
        (lease_key(l.client.as_deref().unwrap()).unwrap(), v)
    }

    /// Every kind, found by `check` and by its two halves alike.
    #[test]
    fn each_kind_of_disagreement_is_named() {
        let now = unix_now();
        let ok = lease(1, LeaseState::Bound, true);
        let other = lease(2, LeaseState::Bound, true);
        let released = lease(3, LeaseState::Released, true);
        let plain = lease(4, LeaseState::Bound, false);
        let missing = lease(5, LeaseState::Bound, true);
        let leases: HashMap<Ipv4Addr, &Lease> = [&ok, &other, &released, &plain, &missing]
            .into_iter()
            .map(|l| (l.ip, l))
            .collect();
        let mut stray_client = entry(&lease(9, LeaseState::Bound, true), ok.expires);
        stray_client.1.ip = u32::from_ne_bytes(other.ip.octets());
        let mut no_lease = entry(&lease(10, LeaseState::Bound, true), now + 50);
        no_lease.1.ip = u32::from_ne_bytes(Ipv4Addr::new(198, 18, 0, 200).octets());
        let mut other_subnet = entry(&other, other.expires);
        other_subnet.1.subnet_id = 7;
        let entries = vec![
            entry(&ok, ok.expires),
            stray_client,
            no_lease,
            other_subnet,
            entry(&released, released.expires),
            // No fast path: recovery grants only the stored end.
            entry(&plain, plain.expires + 60),
            // Within rounding of the stored end: fine.
            entry(
                &lease(1, LeaseState::Bound, true),
                ok.expires + SLACK_SECS - 1,
            ),
        ];
        let all: Vec<&Lease> = leases.values().copied().collect();
        let mapped = |l: &Lease| l.fast.is_some();
        let found = check(
            &entries,
            |ip| leases.get(&ip).copied(),
            all.iter().copied(),
            Some(&mapped),
            now,
        );
        let mut kinds: Vec<(Kind, Ipv4Addr)> = found.iter().map(|d| (d.kind, d.ip)).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                (Kind::NoLease, Ipv4Addr::new(198, 18, 0, 200)),
                (Kind::OtherClient, other.ip),
                (Kind::OtherSubnet, other.ip),
                (Kind::NotBound, released.ip),
                (Kind::BeyondRecovery, plain.ip),
                (Kind::Missing, missing.ip),
            ]
        );
        // `other` is covered by its own (wrong-subnet) entry's key; a lease
        // whose key answers for another of its bindings is not missing.
        let halves: Vec<Disagreement> = entries
            .chunks(2)
            .flat_map(|c| check_entries(c, |ip| leases.get(&ip).copied(), now))
            .chain(check_missing(
                all.iter().copied(),
                &mapped,
                &|_, k| entries.iter().any(|(e, _)| e == k),
                now,
            ))
            .collect();
        // (Ends converted twice may differ by the clocks' rounding.)
        let ids = |v: &[Disagreement]| {
            let mut v: Vec<_> = v.iter().map(|d| (d.kind, d.ip, d.key)).collect();
            v.sort_by_key(|x| (x.0, x.1));
            v
        };
        assert_eq!(ids(&found), ids(&halves));
    }
}
