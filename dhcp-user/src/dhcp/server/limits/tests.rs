use super::*;
use crate::lease::{hw_key, Lease};

fn caps(per_line: u32, per_mac: u32) -> Caps {
    Caps {
        per_line,
        per_mac,
        per_circuit_id: 1,
        per_remote_id: 2,
        declines_per_client: 2,
        declines_per_line: 3,
    }
}

fn lease(ip: Ipv4Addr, client: &ClientKey, state: LeaseState, expires: u64) -> Lease {
    Lease {
        ip,
        client: Some(client.clone()),
        hw: client[1..].into(),
        subnet_id: 1,
        state,
        expires,
        lease_secs: 600,
        fast: None,
        relay: None,
    }
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn mac(n: u8) -> ClientKey {
    hw_key(1, &[2, 0, 0, 0, 0, n])
}

fn direct<'a>(hw: &'a [u8], line: u64) -> Origin<'a> {
    Origin {
        hw,
        relay: None,
        line: LineId(line),
    }
}

#[test]
fn a_line_at_its_cap_refuses_others_but_not_its_own_client() {
    let mut leases = LeaseTable::new();
    let mut idx = CapIndex::default();
    let c = caps(1, 0);
    let (a, b) = (mac(1), mac(2));
    let keys_a = Keys::leases(1, &c, &direct(&a[1..], 7));
    let keys_b = Keys::leases(1, &c, &direct(&b[1..], 7));
    assert_eq!(idx.lease_refused(&keys_a, &a, &leases, 100), None);
    leases.put(lease(ip(10), &a, LeaseState::Offered, 130));
    idx.leased(&keys_a, ip(10), &a);
    assert_eq!(
        idx.lease_refused(&keys_b, &b, &leases, 100),
        Some(Kind::Line)
    );
    assert_eq!(idx.lease_refused(&keys_a, &a, &leases, 100), None);
    // Another line is served.
    let keys_other = Keys::leases(1, &c, &direct(&b[1..], 8));
    assert_eq!(idx.lease_refused(&keys_other, &b, &leases, 100), None);
    // The hold lapses: the line is free again, and the stale entry goes.
    assert_eq!(idx.lease_refused(&keys_b, &b, &leases, 131), None);
    assert_eq!(idx.held.sets.len(), 0);
}

#[test]
fn released_or_moved_addresses_stop_counting() {
    let mut leases = LeaseTable::new();
    let mut idx = CapIndex::default();
    let c = caps(2, 0);
    let (a, b, x) = (mac(1), mac(2), mac(3));
    let k = |m: &ClientKey| Keys::leases(1, &c, &direct(&m[1..], 7));
    for (m, n) in [(&a, 10), (&b, 11)] {
        leases.put(lease(ip(n), m, LeaseState::Bound, 1000));
        idx.leased(&k(m), ip(n), m);
    }
    assert_eq!(
        idx.lease_refused(&k(&x), &x, &leases, 100),
        Some(Kind::Line)
    );
    leases.set_state(ip(11), LeaseState::Released, 100, 100);
    assert_eq!(idx.lease_refused(&k(&x), &x, &leases, 100), None);
    // An address re-recorded under other keys leaves the old ones.
    idx.leased(&k(&a), ip(10), &a);
    let elsewhere = Keys::leases(1, &c, &direct(&a[1..], 9));
    idx.leased(&elsewhere, ip(10), &a);
    assert_eq!(idx.held.sets.get(&k(&x).0[0].0).map(|s| s.len()), None);
    assert_eq!(idx.sizes().0, 1);
}

#[test]
fn mac_circuit_and_remote_caps() {
    let mut leases = LeaseTable::new();
    let mut idx = CapIndex::default();
    let c = caps(0, 1);
    let g = Ipv4Addr::new(198, 18, 2, 1);
    let relayed = |hw: &'static [u8], circuit: &'static [u8], remote: &'static [u8]| {
        Keys::leases(
            1,
            &c,
            &Origin {
                hw,
                relay: Some((g, circuit, remote)),
                line: LineId(0),
            },
        )
    };
    let a = mac(1);
    leases.put(lease(ip(10), &a, LeaseState::Bound, 1000));
    idx.leased(
        &relayed(&[1, 2, 0, 0, 0, 0, 1], b"1/1/1", b"onu-1"),
        ip(10),
        &a,
    );
    // Same circuit, other client: refused on the circuit (cap 1).
    let b = mac(2);
    let k = relayed(&[1, 2, 0, 0, 0, 0, 2], b"1/1/1", b"onu-2");
    assert_eq!(
        idx.lease_refused(&k, &b, &leases, 100),
        Some(Kind::CircuitId)
    );
    // Other circuit, same remote-id: allowed (cap 2), then refused.
    let k = relayed(&[1, 2, 0, 0, 0, 0, 2], b"1/1/2", b"onu-1");
    assert_eq!(idx.lease_refused(&k, &b, &leases, 100), None);
    leases.put(lease(ip(11), &b, LeaseState::Bound, 1000));
    idx.leased(&k, ip(11), &b);
    let x = mac(3);
    let k = relayed(&[1, 2, 0, 0, 0, 0, 3], b"1/1/3", b"onu-1");
    assert_eq!(
        idx.lease_refused(&k, &x, &leases, 100),
        Some(Kind::RemoteId)
    );
    // The same hardware address under another client identifier.
    let other_id: ClientKey = vec![0u8, 9, 9].into();
    let k = relayed(&[1, 2, 0, 0, 0, 0, 1], b"1/1/4", b"onu-4");
    assert_eq!(
        idx.lease_refused(&k, &other_id, &leases, 100),
        Some(Kind::Mac)
    );
}

#[test]
fn declines_are_capped_per_client_and_line() {
    let mut leases = LeaseTable::new();
    let mut idx = CapIndex::default();
    let c = caps(0, 0);
    let a = mac(1);
    let mut quarantined = 0;
    for n in 10..20 {
        let k = Keys::declines(1, &c, &a, LineId(7));
        if idx.decline_refused(&k, &leases).is_none() {
            let mut l = lease(ip(n), &a, LeaseState::Declined, 5000 + u64::from(n));
            l.client = None;
            leases.put(l);
            idx.declined(&k, ip(n), 5000 + u64::from(n));
            quarantined += 1;
        }
    }
    assert_eq!(quarantined, 2, "per client");
    // Other clients on the line: the line's cap (3) is one more.
    let b = mac(2);
    let k = Keys::declines(1, &c, &b, LineId(7));
    assert_eq!(idx.decline_refused(&k, &leases), None);
    let mut l = lease(ip(30), &b, LeaseState::Declined, 6000);
    l.client = None;
    leases.put(l);
    idx.declined(&k, ip(30), 6000);
    let x = mac(3);
    let k = Keys::declines(1, &c, &x, LineId(7));
    assert_eq!(idx.decline_refused(&k, &leases), Some(Kind::DeclineLine));
    // A quarantine that ended (here: the address re-leased) frees it.
    leases.put(lease(ip(30), &b, LeaseState::Bound, 9000));
    assert_eq!(idx.decline_refused(&k, &leases), None);
}
