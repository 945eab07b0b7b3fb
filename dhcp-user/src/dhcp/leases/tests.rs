use super::*;
use crate::lease::client_id_key;

fn lease(ip: [u8; 4], client: &[u8], state: LeaseState, expires: u64) -> Lease {
    Lease {
        ip: Ipv4Addr::from(ip),
        client: Some(client_id_key(client)),
        hw: Box::new([1, 2, 0, 0, 0, 0, 1]),
        subnet_id: 1,
        state,
        expires,
        lease_secs: 100,
        fast: None,
        relay: None,
    }
}

#[test]
fn allocation_prefers_unused_then_oldest_freed_and_skips_held() {
    let mut t = LeaseTable::new();
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Released, 50));
    t.put(lease([198, 18, 0, 11], b"bb", LeaseState::Bound, 1000));
    t.add_pool(
        1,
        Ipv4Addr::new(198, 18, 0, 10),
        Ipv4Addr::new(198, 18, 0, 12),
        &|_| false,
    );
    assert_eq!(t.allocate(1, 100), Some(Ipv4Addr::new(198, 18, 0, 12)));
    assert_eq!(t.allocate(1, 100), Some(Ipv4Addr::new(198, 18, 0, 10)));
    // .11 is bound until 1000: never handed out.
    assert_eq!(t.allocate(1, 100), None);
}

#[test]
fn reserved_addresses_are_not_in_the_pool() {
    let mut t = LeaseTable::new();
    t.add_pool(
        1,
        Ipv4Addr::new(198, 18, 0, 10),
        Ipv4Addr::new(198, 18, 0, 11),
        &|a| a == u32::from(Ipv4Addr::new(198, 18, 0, 10)),
    );
    assert_eq!(t.allocate(1, 0), Some(Ipv4Addr::new(198, 18, 0, 11)));
    assert_eq!(t.allocate(1, 0), None);
}

#[test]
fn one_address_per_client_per_subnet() {
    let mut t = LeaseTable::new();
    t.add_pool(
        1,
        Ipv4Addr::new(198, 18, 0, 10),
        Ipv4Addr::new(198, 18, 0, 20),
        &|_| false,
    );
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Offered, 100));
    t.put(lease([198, 18, 0, 11], b"aa", LeaseState::Bound, 100));
    assert!(
        t.get(Ipv4Addr::new(198, 18, 0, 10)).is_none(),
        "the superseded offer is dropped"
    );
    assert_eq!(
        t.by_client(1, &client_id_key(b"aa")).unwrap().ip,
        Ipv4Addr::new(198, 18, 0, 11)
    );
}

#[test]
fn reclaim_expires_bound_and_drops_offers_and_probation() {
    let mut t = LeaseTable::new();
    t.add_pool(
        1,
        Ipv4Addr::new(198, 18, 0, 10),
        Ipv4Addr::new(198, 18, 0, 12),
        &|_| false,
    );
    for _ in 0..3 {
        t.allocate(1, 0);
    }
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 10));
    t.put(lease([198, 18, 0, 11], b"bb", LeaseState::Offered, 10));
    let mut d = lease([198, 18, 0, 12], b"", LeaseState::Declined, 10);
    d.client = None;
    t.put(d);
    assert_eq!(t.allocate(1, 5), None);
    let (expired, offers) = t.reclaim(10);
    assert_eq!(offers, vec![Ipv4Addr::new(198, 18, 0, 11)]);
    assert_eq!(expired.len(), 1);
    assert_eq!(
        t.get(Ipv4Addr::new(198, 18, 0, 10)).unwrap().state,
        LeaseState::Expired
    );
    assert!(t.get(Ipv4Addr::new(198, 18, 0, 11)).is_none());
    let mut got: Vec<_> = std::iter::from_fn(|| t.allocate(1, 10)).collect();
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn availability() {
    let mut t = LeaseTable::new();
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 100));
    let ip = Ipv4Addr::new(198, 18, 0, 10);
    assert!(t.available_to(ip, &client_id_key(b"aa"), 50));
    assert!(!t.available_to(ip, &client_id_key(b"bb"), 50));
    assert!(t.available_to(ip, &client_id_key(b"bb"), 100));
}

mod free_list {
    use super::*;

    /// Issue 12, item 11: DISCOVER with option 50 for a free address, then
    /// a REQUEST naming another server, pushed the address onto the free
    /// list again each time: it grew without bound from network input.
    #[test]
    fn the_free_list_never_holds_an_address_twice() {
        let mut t = LeaseTable::new();
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 13));
        t.add_pool(1, a, b, &|_| false);
        for i in 0..10_000u32 {
            // Offered at a requested (still queued) address, then dropped.
            t.put(Lease {
                ip: a,
                client: Some(client_id_key(&i.to_be_bytes())),
                hw: Box::new([1]),
                subnet_id: 1,
                state: LeaseState::Offered,
                expires: 100,
                lease_secs: 0,
                fast: None,
                relay: None,
            });
            t.remove(a);
        }
        let queued: usize = t.pools[&1].iter().map(|p| p.free.len()).sum();
        assert_eq!(queued, 4);
    }
}

/// Another node's binding (a shared store) is held for the MCLT past its
/// end: not allocated, not available to another client, not expired here
/// before the database would let this node take the address.
#[test]
fn another_nodes_binding_is_held_for_the_mclt_past_its_end() {
    let ip = Ipv4Addr::new(198, 18, 0, 10);
    let mut t = LeaseTable::new();
    t.add_pool(1, ip, ip, &|_| false);
    t.set_shared("me", 50, []);
    assert_eq!(
        t.put_foreign(
            lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 100),
            "other",
            90
        ),
        None
    );
    assert_eq!(t.granted_by(ip), Some("other"));
    for now in [90, 120, 149] {
        assert!(t.allocate(1, now).is_none(), "allocated at {now}");
        assert!(!t.available_to(ip, &client_id_key(b"bb"), now));
        assert!(t.reclaim(now).0.is_empty(), "expired at {now}");
    }
    // Its own client may have it back at any time.
    assert!(t.available_to(ip, &client_id_key(b"aa"), 120));
    // End + MCLT: this node expires it (its write is then allowed) and
    // the lease is its own from then on.
    let (expired, _) = t.reclaim(150);
    assert_eq!(expired.len(), 1);
    assert_eq!(t.granted_by(ip), Some("me"));
    assert_eq!(t.allocate(1, 150), Some(ip));
}

/// The same lease of this node's own is not held past its end.
#[test]
fn an_own_binding_ends_at_its_end() {
    let ip = Ipv4Addr::new(198, 18, 0, 10);
    let mut t = LeaseTable::new();
    t.add_pool(1, ip, ip, &|_| false);
    t.set_shared("me", 50, []);
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 100));
    assert_eq!(t.reclaim(100).0.len(), 1);
    assert!(t.available_to(ip, &client_id_key(b"bb"), 101));
}

/// A row another node released frees the address here at once.
#[test]
fn another_nodes_release_frees_the_address() {
    let ip = Ipv4Addr::new(198, 18, 0, 10);
    let mut t = LeaseTable::new();
    t.add_pool(1, ip, ip, &|_| false);
    t.set_shared("me", 50, []);
    t.put_foreign(
        lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 1000),
        "other",
        90,
    );
    assert!(t.allocate(1, 90).is_none());
    t.put_foreign(
        lease([198, 18, 0, 10], b"aa", LeaseState::Released, 95),
        "other",
        95,
    );
    assert_eq!(t.allocate(1, 96), Some(ip));
}

/// A live peer's binding is the peer's to answer; a silent peer's, or
/// this node's own, is not.
#[test]
fn only_a_live_peers_binding_is_left_to_the_peer() {
    let mut t = LeaseTable::new();
    t.set_shared("me", 50, []);
    let key = client_id_key(b"aa");
    t.put_foreign(
        lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 1000),
        "other",
        90,
    );
    assert!(!t.live_peers_binding(1, &key, 100), "no heartbeat seen yet");
    t.set_alive_peers(["other".to_string()]);
    assert!(t.live_peers_binding(1, &key, 100));
    assert!(!t.live_peers_binding(1, &key, 1000), "ended");
    t.set_alive_peers([]);
    assert!(
        !t.live_peers_binding(1, &key, 100),
        "silent: survivors answer"
    );
    t.set_alive_peers(["other".to_string()]);
    t.put(lease([198, 18, 0, 10], b"aa", LeaseState::Bound, 1000));
    assert!(!t.live_peers_binding(1, &key, 100), "this node's own now");
}
