use super::{
    checks::{check_chunk, explained_missing},
    pass::Pass,
    walk::Coverage,
};
use crate::{
    audit::Kind,
    dhcp::leases::LeaseTable,
    lease::{Lease, LeaseState},
    xdp::{clock::unix_now, map_sync::lease_key},
};
use dhcp_common::{LeaseKey, LeaseValue};

fn lease(i: u8, state: LeaseState) -> Lease {
    crate::audit::tests::lease(i, state, true)
}

fn entry(l: &Lease) -> (LeaseKey, LeaseValue) {
    let mut v: LeaseValue = bytemuck::Zeroable::zeroed();
    v.ip = u32::from_ne_bytes(l.ip.octets());
    v.subnet_id = l.subnet_id;
    v.lease_secs = l.lease_secs;
    v.expires_mono_ns = crate::xdp::clock::unix_to_mono_ns(l.expires);
    v.reported_mono_ns = v.expires_mono_ns;
    (lease_key(l.client.as_deref().unwrap()).unwrap(), v)
}

fn pass() -> Pass {
    Pass::new(1, true, Vec::new(), 0, Coverage::new(&[]))
}

/// An entry whose binding the control plane has ended is a candidate
/// only once the hold that covers the pending removal is gone.
#[test]
fn an_ended_binding_still_in_the_map_is_explained_while_held() {
    let mut t = LeaseTable::new();
    let l = lease(10, LeaseState::Bound);
    t.put(l.clone());
    t.hold_for_kernel(&l, 1);
    let e = entry(&l);
    let mut released = l.clone();
    released.state = LeaseState::Released;
    t.put(released);
    let mut p = pass();
    check_chunk(&mut p, &[e], &t, unix_now());
    assert_eq!(p.candidates.len(), 1, "no hold ended yet: a candidate");
    t.hold_ended(
        l.ip,
        crate::xdp::clock::unix_ns_now(),
        crate::dhcp::leases::EndKind::Ended,
    );
    let mut p = pass();
    check_chunk(&mut p, &[e], &t, unix_now());
    assert!(p.candidates.is_empty(), "removal pending: explained");
    // Another client's key at that address is not explained by it.
    let mut other = entry(&lease(11, LeaseState::Bound));
    other.1.ip = e.1.ip;
    check_chunk(&mut p, &[other], &t, unix_now());
    assert_eq!(p.candidates.len(), 1);
    assert_eq!(p.candidates[0].d.kind, Kind::OtherClient);
    assert_eq!(p.entries, 2);
}

#[test]
fn a_missing_entry_is_explained_by_a_commit_not_yet_reported() {
    let mut t = LeaseTable::new();
    let l = lease(12, LeaseState::Bound);
    t.put(l.clone());
    t.hold_for_kernel(&l, 5);
    assert!(explained_missing(&l, &t, 4));
    assert!(!explained_missing(&l, &t, 5));
}
