//! While the store refuses writes, the committer keeps taking commits into
//! the batch it retries, so the queue does not grow with the outage.
//! Commits the daemon makes itself (renewals the kernel answered, reclaim,
//! the auditor's repairs) are not gated by the commit queue as requests
//! are, and would otherwise pile up in proportion to renewals × downtime.
//! Taken in, each of their changes that a later change of the same address
//! replaces is folded away: every lease op writes the whole row, and the
//! map sync acts on each address's last `Put` or `Delete` only
//! (`last_lease_op`), so the store and the map end as if each had been
//! written (`fold_superseded`). Changes with a reply or a waiter stay
//! (their claim and their answer are the batch's), and those are bounded
//! by the commit queue. A batch so holds at most two of the daemon's own
//! changes per address (its last `Put` or `Delete`, its last `Renewed`).

use std::{collections::HashMap, net::Ipv4Addr};

use super::{keep_kernel_grants, Committer};
use crate::{
    lease::Lease,
    store::StoreOp,
    xdp::clock::unix_now,
    xdp::map_sync::{KernelGrant, MapReport},
};

/// The address a lease op writes.
fn address(op: &StoreOp) -> Option<Ipv4Addr> {
    match op {
        StoreOp::Delete { ip, .. } => Some(*ip),
        op => op.lease().map(|l| l.ip),
    }
}

/// Drops each of the daemon's own lease ops (`internal`) that a later op
/// of the same address replaces, in the store and in the map alike, with
/// its `op_ns` and `internal` entries; returns how many went. Any later
/// lease op replaces a `Renewed` (the map sync does not act on those);
/// only a later `Put` or `Delete` replaces a `Put` or `Delete` (a later
/// `Renewed` would leave the map unwritten).
pub fn fold_superseded(
    ops: &mut Vec<StoreOp>,
    op_ns: &mut Vec<u64>,
    internal: &mut Vec<bool>,
    kept: &[(KernelGrant, Lease)],
) -> usize {
    let mut last_any: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut last_put_or_delete: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(ip) = address(op) {
            last_any.insert(ip, i);
            if !matches!(op, StoreOp::Renewed(_)) {
                last_put_or_delete.insert(ip, i);
            }
        }
    }
    let keep: Vec<bool> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let Some(ip) = address(op).filter(|_| internal[i]) else {
                return true;
            };
            let last = match op {
                StoreOp::Renewed(_) => last_any[&ip],
                _ => last_put_or_delete[&ip],
            };
            last == i
        })
        .collect();
    super::ends::carry_ends(ops, op_ns, kept, &last_put_or_delete);
    let before = ops.len();
    let mut it = keep.iter();
    ops.retain(|_| *it.next().unwrap());
    let mut it = keep.iter();
    op_ns.retain(|_| *it.next().unwrap());
    let mut it = keep.iter();
    internal.retain(|_| *it.next().unwrap());
    before - ops.len()
}

impl Committer {
    /// `prepare` for the ops from `from` on, added to a batch whose ops
    /// before them were prepared: the map stops answering for what the new
    /// ones end; superseded ops of the daemon's own are folded away; every
    /// grant read so far is weighed against the batch's last op of its
    /// address (`keep_kernel_grants`, which leaves a grant already kept as
    /// it is); `report.kept` holds only grants still in the batch's last
    /// op of their address, which is what the store will hold.
    pub fn prepare_more(
        &mut self,
        ops: &mut Vec<StoreOp>,
        op_ns: &mut Vec<u64>,
        internal: &mut Vec<bool>,
        deleted: &[Lease],
        from: usize,
        report: &mut MapReport,
    ) {
        if let Some(m) = self.maps.as_mut() {
            m.before_commit(&ops[from..], report);
        }
        fold_superseded(ops, op_ns, internal, &report.kept);
        let kept = keep_kernel_grants(
            ops,
            op_ns,
            deleted,
            &report.removed,
            &report.kept,
            unix_now(),
        );
        report.kept.extend(kept);
        let last: HashMap<Ipv4Addr, &StoreOp> = ops
            .iter()
            .filter_map(|op| Some((address(op)?, op)))
            .collect();
        report
            .kept
            .retain(|(g, l)| matches!(last.get(&g.ip), Some(StoreOp::Put(p)) if p == l));
    }
}
