//! A pass's checks: map chunks against the leases, the store's side,
//! what pending changes explain, and the re-check (rules 1 and 2).

use std::{collections::HashMap, net::Ipv4Addr};

use dhcp_common::{LeaseKey, LeaseValue};

use super::{
    pass::{Candidate, Pass},
    Finding, MAX_CANDIDATES,
};
use crate::{
    audit::{self, Disagreement, Kind},
    daemon::engine::Engine,
    dhcp::leases::LeaseTable,
    lease::{Lease, LeaseState},
    xdp::map_sync::{is_client_key, lease_key, Eligibility},
};

/// Whether a pending change explains map entry disagreement `d` (rule 1).
fn explained_entry(d: &Disagreement, leases: &LeaseTable) -> bool {
    leases.hold(d.ip).is_some_and(|h| {
        h.ended.is_some() && h.lease.client.as_deref().and_then(lease_key) == d.key
    })
}

/// Whether a pending change explains lease `l`'s missing entry: its
/// binding was handed to the map by a commit not reported on by `base`.
pub(super) fn explained_missing(l: &Lease, leases: &LeaseTable, base: u64) -> bool {
    leases.hold(l.ip).is_some_and(|h| h.seq > base)
}

fn push_candidate(p: &mut Pass, d: Disagreement, value: Option<LeaseValue>) {
    p.seen += 1;
    if p.candidates.len() < MAX_CANDIDATES {
        p.candidates.push(Candidate { d, value });
    } else {
        p.beyond_cap += 1;
    }
}

/// The map's side of a pass, one chunk.
pub(super) fn check_chunk(
    p: &mut Pass,
    entries: &[(LeaseKey, LeaseValue)],
    leases: &LeaseTable,
    now: u64,
) {
    let clocks = audit::Clocks::now();
    for (k, v) in entries {
        p.entries += 1;
        let ip = Ipv4Addr::from(v.ip.to_ne_bytes());
        let lease = leases.get(ip);
        if let Some(d) = audit::check_entry(k, v, lease, now, &clocks) {
            if !explained_entry(&d, leases) {
                push_candidate(p, d, Some(*v));
            }
        }
        // Its client's key is in the map: not missing (`audit::check`).
        if lease.is_some_and(|l| is_client_key(l.client.as_deref(), k)) {
            p.covered.insert(ip);
        }
        if v.expires_mono_ns > v.reported_mono_ns {
            p.unreported += 1;
            let renewed = clocks
                .mono_ns_to_unix(v.expires_mono_ns)
                .saturating_sub(u64::from(v.lease_secs));
            p.oldest_renewal = Some(p.oldest_renewal.map_or(renewed, |o| o.min(renewed)));
        }
    }
}

/// The rule for which leases the map should hold: the sync's, for
/// subnets still served (`Engine::load_map`).
fn mapped(l: &Lease, engine: &Engine, el: &Eligibility) -> bool {
    el.would_map(l) && engine.server.serves_subnet(l.subnet_id)
}

/// The store's side of a pass, one chunk of addresses.
pub(super) fn missing_chunk(p: &mut Pass, engine: &Engine, el: &Eligibility, now: u64) {
    let leases = &engine.server.leases;
    let chunk: Vec<&Lease> = p
        .walk
        .next()
        .into_iter()
        .filter_map(|ip| leases.get(ip))
        .filter(|l| l.state == LeaseState::Bound && l.fast.is_some() && mapped(l, engine, el))
        .collect();
    p.bound_fast += chunk.len() as u64;
    let covered = &p.covered;
    let found = audit::check_missing(
        chunk.into_iter(),
        &|_| true,
        &|l, _| covered.contains(l.ip),
        now,
    );
    for d in found {
        if el.refused(d.ip) {
            // The map refused it (full, no template slot): the control
            // plane's by design.
            p.bound_fast = p.bound_fast.saturating_sub(1);
            continue;
        }
        let Some(l) = leases.get(d.ip) else { continue };
        if explained_missing(l, leases, p.base) {
            continue;
        }
        push_candidate(p, d, None);
    }
}

/// Rule 2: the candidates against the kernel's entries read again.
pub(super) fn recheck(
    p: &mut Pass,
    fresh: &[(LeaseKey, Option<LeaseValue>)],
    engine: &Engine,
    el: &Eligibility,
    now: u64,
) -> Vec<Finding> {
    let leases = &engine.server.leases;
    let fresh: HashMap<LeaseKey, Option<LeaseValue>> = fresh.iter().copied().collect();
    let mut out = Vec::new();
    for c in std::mem::take(&mut p.candidates) {
        let Some(key) = c.d.key else { continue };
        let now_v = fresh.get(&key).copied().flatten();
        if c.d.kind == Kind::Missing {
            // The key is in the map (for this binding or another of the
            // client's): not missing.
            if now_v.is_some() {
                continue;
            }
            let Some(l) = leases.get(c.d.ip) else {
                continue;
            };
            if el.refused(l.ip) || explained_missing(l, leases, p.base) {
                continue;
            }
            let is_mapped = |l: &Lease| mapped(l, engine, el);
            if let Some(d) =
                audit::check_missing(std::iter::once(l), &is_mapped, &|_, _| false, now)
                    .into_iter()
                    .next()
            {
                out.push(Finding {
                    d,
                    kernel: None,
                    lease: Some(l.clone()),
                    repair: false,
                });
            }
            continue;
        }
        let Some(v) = now_v else { continue };
        if Some(v.ip) != c.value.map(|o| o.ip) {
            continue;
        }
        let again = audit::check_entries(&[(key, v)], |ip| leases.get(ip), now);
        if let Some(d) = again.into_iter().find(|d| d.kind == c.d.kind) {
            if explained_entry(&d, leases) {
                continue;
            }
            out.push(Finding {
                lease: leases.get(d.ip).cloned(),
                d,
                kernel: Some(v),
                repair: false,
            });
        }
    }
    out.sort_by_key(|f| (f.d.ip, f.d.kind));
    out
}
