//! When each binding a batch ends was ended.
//!
//! A grant the kernel made after a binding's end is the client's
//! (`keep_kernel_grants`); "after" is weighed against the op that ended
//! the binding, not a later rewrite of the ended lease in the same group
//! commit (a reload stripping its fast path, a second delete), as the
//! engine's hold keeps the first end too (`Leases::hold_ended`).

use std::{collections::HashMap, net::Ipv4Addr};

use crate::{
    dhcp::server::GRANT_ORDER_SLACK_NS,
    lease::{Lease, LeaseState},
    store::StoreOp,
    xdp::map_sync::KernelGrant,
};

/// A binding the batch ends whose map entry, read as it left, shows the
/// kernel granted it beyond that end (the client renewed in the kernel
/// just before or as the control plane ended it) is written as the
/// grant, bound until the kernel's end, in the same write: written a
/// batch later, a crash between the two writes would leave the store
/// ending a binding the client holds an ACK for. Written without
/// fast-path data, so the map keeps no entry for it. Returns each grant
/// kept with the lease as written (`MapReport::kept`): the engine takes
/// them into its table with the batch's report, by its own rule for
/// grants (`Server::kernel_grant_kept`), so memory and store agree from
/// this batch on.
pub fn keep_kernel_grants(
    ops: &mut [StoreOp],
    op_ns: &mut [u64],
    deleted: &[Lease],
    removed: &[KernelGrant],
    kept_before: &[(KernelGrant, Lease)],
    now: u64,
) -> Vec<(KernelGrant, Lease)> {
    let mut kept = Vec::new();
    let ends = end_times(ops, op_ns, kept_before);
    for g in removed.iter().filter(|g| g.expires > now) {
        let Some(i) = ops.iter().rposition(|op| match op {
            StoreOp::Delete { ip, .. } => *ip == g.ip,
            op => op.lease().is_some_and(|l| l.ip == g.ip),
        }) else {
            continue;
        };
        // A deleted lease: the binding as the kernel had it, if the
        // engine handed one over (it keeps the address held anyway).
        let written = match &ops[i] {
            StoreOp::Delete { ip, .. } => deleted.iter().rev().find(|l| l.ip == *ip).map(|l| {
                let mut l = l.clone();
                l.state = LeaseState::Released;
                l
            }),
            // A declined lease names no client: the kernel's grant is
            // weighed against the binding it was answering for (a client
            // that DISCOVERs right after its DECLINE may be rapid-ACKed
            // by the kernel before this batch removes the entry).
            StoreOp::Put(w) if w.client.is_none() => {
                deleted.iter().rev().find(|l| l.ip == w.ip).map(|held| {
                    let mut l = w.clone();
                    l.client = held.client.clone();
                    l.hw = held.hw.clone();
                    l
                })
            }
            op => op.lease().cloned(),
        };
        let Some(mut l) = written.filter(|l| l.is_client(&g.client)) else {
            continue;
        };
        match l.state {
            LeaseState::Bound if g.expires <= l.expires => continue,
            LeaseState::Bound => {}
            // Ran out while the kernel renewed it: the later end wins.
            LeaseState::Expired => {}
            // Released, declined or deleted: only a grant made after that
            // end.
            _ => {
                let acked_at_ns = g
                    .expires_ns
                    .saturating_sub(u64::from(l.lease_secs) * 1_000_000_000);
                let ended = ends.get(&g.ip).copied().unwrap_or(op_ns[i]);
                if acked_at_ns + GRANT_ORDER_SLACK_NS < ended {
                    continue;
                }
            }
        }
        if l.state != LeaseState::Bound {
            l.fast = None;
            l.state = LeaseState::Bound;
            // The kept write stands for the end: a later take-in weighs
            // the grant against it again (`ends::end_times`).
            if let Some(&ended) = ends.get(&g.ip) {
                op_ns[i] = op_ns[i].min(ended);
            }
        }
        l.expires = g.expires;
        ops[i] = StoreOp::Put(l.clone());
        kept.push((g.clone(), l));
    }
    kept
}

/// For every address whose last write in `ops` leaves it unbound: when
/// (`op_ns`) the first op after its last bound write ended it. A write
/// of a grant kept across an end (`kept`, from an earlier take-in of
/// the same batch) stands for that end: its time is the end's. One pass:
/// a folded batch holds an op per address of an outage.
pub fn end_times(
    ops: &[StoreOp],
    op_ns: &[u64],
    kept: &[(KernelGrant, Lease)],
) -> HashMap<Ipv4Addr, u64> {
    let kept: HashMap<Ipv4Addr, &Lease> = kept.iter().map(|(_, l)| (l.ip, l)).collect();
    let mut ends: HashMap<Ipv4Addr, Option<u64>> = HashMap::new();
    for (op, at) in ops.iter().zip(op_ns) {
        // A `Renewed` comes from a bound binding and ends nothing.
        let (ip, bound) = match op {
            StoreOp::Delete { ip, .. } => (*ip, false),
            StoreOp::Put(l) if kept.get(&l.ip) == Some(&l) => (l.ip, false),
            StoreOp::Renewed(_) => continue,
            op => match op.lease() {
                Some(l) => (l.ip, l.state == LeaseState::Bound),
                None => continue,
            },
        };
        let e = ends.entry(ip).or_default();
        if bound {
            *e = None;
        } else {
            e.get_or_insert(*at);
        }
    }
    ends.into_iter()
        .filter_map(|(ip, e)| Some((ip, e?)))
        .collect()
}

/// `fold_superseded` is about to drop ops: the op of each ended address
/// that stays (`last`) takes the time of the end, which may be a dropped
/// op's (a RELEASE taken in before a reload rewrote the released lease,
/// or the write of a grant an earlier take-in kept across it).
pub fn carry_ends(
    ops: &[StoreOp],
    op_ns: &mut [u64],
    kept: &[(KernelGrant, Lease)],
    last: &HashMap<Ipv4Addr, usize>,
) {
    for (ip, end) in end_times(ops, op_ns, kept) {
        if let Some(&i) = last.get(&ip) {
            op_ns[i] = op_ns[i].min(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::new(198, 18, 0, 10),
            client: Some(vec![1, 1, 2, 0, 0, 0, 0, 1].into()),
            hw: vec![1, 2, 0, 0, 0, 0, 1].into(),
            subnet_id: 1,
            state,
            expires: 100,
            lease_secs: 60,
            fast: None,
            relay: None,
        }
    }

    #[test]
    fn an_end_counts_from_the_first_op_after_the_last_bound_write() {
        let ip = lease(LeaseState::Bound).ip;
        let bound = StoreOp::Put(lease(LeaseState::Bound));
        let released = StoreOp::Put(lease(LeaseState::Released));
        let ops = [bound.clone(), released.clone(), released.clone()];
        assert_eq!(end_times(&ops, &[1, 2, 3], &[]).get(&ip), Some(&2));
        // Bound again: nothing ended.
        let ops = [released.clone(), bound.clone()];
        assert_eq!(end_times(&ops, &[1, 2], &[]).get(&ip), None);
        // The write of a grant kept across the end stands for the end.
        let grant = KernelGrant {
            client: vec![1].into(),
            ip,
            expires: 100,
            expires_ns: 100_000_000_000,
            lease_secs: 60,
        };
        let kept = [(grant, lease(LeaseState::Bound))];
        let ops = [bound.clone(), released.clone()];
        assert_eq!(end_times(&ops, &[5, 9], &kept).get(&ip), Some(&5));
        let ops = [StoreOp::delete_of(&lease(LeaseState::Bound)), released];
        assert_eq!(end_times(&ops, &[4, 9], &[]).get(&ip), Some(&4));
    }
}
