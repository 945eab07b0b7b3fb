//! When each binding a batch ends was ended.
//!
//! A grant the kernel made after a binding's end is the client's
//! (`keep_kernel_grants`); "after" is weighed against the op that ended
//! the binding, not a later rewrite of the ended lease in the same group
//! commit (a reload stripping its fast path, a second RELEASE), as the
//! engine's hold keeps the first end too (`Leases::hold_ended`).

use std::{collections::HashMap, net::Ipv4Addr};

use crate::{lease::LeaseState, store::StoreOp};

/// For every address whose last write in `ops` leaves it unbound: when
/// (`op_ns`) the first op after its last bound write ended it. One pass:
/// a folded batch holds an op per address of an outage.
pub fn end_times(ops: &[StoreOp], op_ns: &[u64]) -> HashMap<Ipv4Addr, u64> {
    let mut ends: HashMap<Ipv4Addr, Option<u64>> = HashMap::new();
    for (op, at) in ops.iter().zip(op_ns) {
        // A `Renewed` comes from a bound binding and ends nothing.
        let (ip, bound) = match op {
            StoreOp::Delete { ip, .. } => (*ip, false),
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

/// `fold_superseded` is about to drop the ops not in `keep`: the op of
/// each address that stays takes the earliest time among those folded
/// into it. An end folded away (a RELEASE the batch took in before a
/// reload rewrote the released lease, or an end whose grant an earlier
/// take-in kept) still counts from when it was made; an earlier time
/// only ever keeps more of what the kernel granted, the safe side.
pub fn carry_ends(
    ops: &[StoreOp],
    op_ns: &mut [u64],
    keep: &[bool],
    last: &HashMap<Ipv4Addr, usize>,
) {
    let mut earliest: HashMap<Ipv4Addr, u64> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if keep[i] || matches!(op, StoreOp::Renewed(_)) {
            continue;
        }
        let ip = match op {
            StoreOp::Delete { ip, .. } => *ip,
            op => match op.lease() {
                Some(l) => l.ip,
                None => continue,
            },
        };
        let e = earliest.entry(ip).or_insert(op_ns[i]);
        *e = (*e).min(op_ns[i]);
    }
    for (ip, at) in earliest {
        if let Some(&i) = last.get(&ip) {
            op_ns[i] = op_ns[i].min(at);
        }
    }
}
