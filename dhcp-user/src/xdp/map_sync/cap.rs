//! The MCLT cap of each entry (`LeaseValue::cap_mono_ns`): the end the
//! store has durably acknowledged plus `database.mclt_secs`, so no kernel
//! grants a client past what another node waits out before it reuses
//! the address (RELIABILITY.md, "Several nodes on one PostgreSQL").

use std::{collections::HashMap, net::Ipv4Addr};

use dhcp_common::{mclt_cap_ns, LeaseValue};

use super::{is_client_key, unix_to_mono_ns, FastMaps};
use crate::{lease::Lease, store::StoreOp};

/// Replaces an element only if it is there: a cap never brings back an
/// entry removed in between.
const BPF_EXIST: u64 = 2;

/// The cap of a binding whose durably stored end is `stored_end` (Unix
/// seconds).
pub(super) fn cap_for(stored_end: u64, mclt_secs: Option<u32>) -> u64 {
    mclt_cap_ns(unix_to_mono_ns(stored_end), mclt_secs)
}

/// `v` with the cap `cap`, if that changes it.
pub(super) fn with_cap(v: &LeaseValue, cap: u64) -> Option<LeaseValue> {
    (v.cap_mono_ns != cap).then_some(LeaseValue {
        cap_mono_ns: cap,
        ..*v
    })
}

/// Addresses whose last op in `ops` is a `Renewed`: what the store now
/// holds for them is that renewal's end (an op after it, in the same
/// batch, is what was stored instead).
fn last_renewals(ops: &[StoreOp]) -> impl Iterator<Item = &Lease> {
    let mut last: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Put(l) | StoreOp::Renewed(l) => {
                last.insert(l.ip, i);
            }
            StoreOp::Delete { ip, .. } => {
                last.insert(*ip, i);
            }
            _ => {}
        }
    }
    let mut idx: Vec<usize> = last.into_values().collect();
    idx.sort_unstable();
    idx.into_iter().filter_map(|i| match &ops[i] {
        StoreOp::Renewed(l) => Some(l),
        _ => None,
    })
}

impl FastMaps {
    /// After a durable batch: the entries whose kernel renewals it stored
    /// may now grant up to their new stored end plus the MCLT.
    ///
    /// A read-modify-write of the whole value, and the kernel may renew
    /// the binding between the read and the write: the update replaces
    /// the element, so what the program wrote into the old one (its new
    /// `expires_mono_ns`, and `reported_mono_ns` with an event) is lost.
    /// Harmless: a renewal with an event has that event on the ring
    /// already, which stores it (and the stale `reported` only makes the
    /// next renewal report again); one without an event ended under the
    /// reported end plus lease/8, which is what the map's record of a
    /// renewal in that microsecond can lose at a removal too
    /// (`remove_reading`), and a client renewing on RFC 2131 timers is
    /// back before the stored end. The cap written is the one the store
    /// now acknowledges, so the lost write never lets the kernel grant
    /// past it. Without an MCLT (one node) there is no cap to move and
    /// nothing is written.
    pub(super) fn raise_caps(&mut self, ops: &[StoreOp]) {
        if self.mclt_secs.is_none() {
            return;
        }
        for l in last_renewals(ops) {
            let Some((key, _)) = self.by_ip.get(&l.ip) else {
                continue;
            };
            if !is_client_key(l.client.as_deref(), key) {
                continue;
            }
            let Ok(v) = self.leases.get(key, 0) else {
                continue;
            };
            let Some(v) = with_cap(&v, cap_for(l.expires, self.mclt_secs)) else {
                continue;
            };
            if let Err(e) = self.leases.insert(key, v, BPF_EXIST) {
                tracing::debug!(ip = %l.ip, "moving an entry's MCLT cap: {e}");
            } else {
                self.stats.caps_raised += 1;
            }
        }
    }

    /// Sets the MCLT the caps are made with: `Some` with a store other
    /// nodes share, `None` (no cap) with one no other node takes
    /// addresses from. Before the first write.
    pub fn set_mclt(&mut self, mclt_secs: Option<u32>) {
        self.mclt_secs = mclt_secs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lease::{client_id_key, LeaseState},
        xdp::clock::unix_now,
    };

    fn lease(n: u8, expires: u64) -> Lease {
        Lease {
            ip: Ipv4Addr::new(198, 18, 0, n),
            client: Some(client_id_key(&[1, n])),
            hw: Box::new([1, 2, 0, 0, 0, 0, n]),
            subnet_id: 1,
            state: LeaseState::Bound,
            expires,
            lease_secs: 30,
            fast: None,
            relay: None,
        }
    }

    fn renewed(n: u8, expires: u64) -> StoreOp {
        StoreOp::Renewed(lease(n, expires))
    }

    #[test]
    fn the_cap_is_the_stored_end_plus_the_mclt() {
        let end = unix_now() + 30;
        let cap = cap_for(end, Some(40));
        // The clock offset may be measured again between the readings.
        let want = unix_to_mono_ns(end) + 40_000_000_000;
        assert!(cap.abs_diff(want) < 1_000_000, "{cap} vs {want}");
        // One node: no cap at all, whatever the end.
        assert_eq!(cap_for(end, None), dhcp_common::NO_CAP);
        // A renewal the kernel answers at `now` ends at now + lease: it
        // fits under the cap while now <= stored end - lease + MCLT.
        let lease_ns = 30_000_000_000;
        let now = cap - 40_000_000_000 - lease_ns;
        assert!(now + 40_000_000_000 + lease_ns <= cap);
        assert!(now + 40_000_000_001 + lease_ns > cap);
    }

    #[test]
    fn a_cap_is_rewritten_only_when_it_changes() {
        let v: LeaseValue = bytemuck::Zeroable::zeroed();
        let v = LeaseValue {
            expires_mono_ns: 7,
            reported_mono_ns: 5,
            cap_mono_ns: 100,
            ..v
        };
        assert_eq!(with_cap(&v, 100), None);
        let w = with_cap(&v, 200).unwrap();
        assert_eq!(w.cap_mono_ns, 200);
        assert_eq!((w.expires_mono_ns, w.reported_mono_ns), (7, 5));
    }

    #[test]
    fn only_a_renewal_that_is_its_addresses_last_op_moves_a_cap() {
        let ops = vec![
            renewed(1, 10),
            renewed(1, 20),
            renewed(2, 30),
            StoreOp::Put(lease(2, 25)),
            renewed(3, 40),
        ];
        let got: Vec<(Ipv4Addr, u64)> = last_renewals(&ops).map(|l| (l.ip, l.expires)).collect();
        assert_eq!(
            got,
            vec![
                (Ipv4Addr::new(198, 18, 0, 1), 20),
                (Ipv4Addr::new(198, 18, 0, 3), 40)
            ]
        );
    }
}
