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
        line: Some(LineId(line)),
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
                line: None,
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

/// The caps hold across a restart: bindings read from the store count
/// before any of their clients' requests reach the control plane (the
/// kernel may renew them for a long time).
mod from_the_store {
    use std::sync::Arc;

    use dhcp_common::{layout::bootp, ETH_P_8021Q};

    use super::*;
    use crate::{
        config::Config,
        dhcp::server::Outcome,
        lease::{client_id_key, FastReply},
        proto::{self, msg, opt, Tag},
    };

    const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"

[limits]
leases_per_mac = 1
leases_per_circuit_id = 1
leases_per_line = 1

[[interface]]
name = "srv0"

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.110"

[[subnet]]
id = 2
subnet = "198.18.1.0/24"
interface = "srv0"
vlan = 100
[[subnet.pool]]
start = "198.18.1.10"
end = "198.18.1.20"
[[subnet.reservation]]
hw_address = "02:00:00:00:00:99"
ip = "198.18.1.50"

[[subnet]]
id = 4
subnet = "198.18.3.0/24"
relays = ["198.18.9.1"]
[[subnet.pool]]
start = "198.18.3.10"
end = "198.18.3.20"
"#;

    const NOW: u64 = 1_000_000;
    const RELAY: [u8; 4] = [198, 18, 9, 1];
    const VLAN100: &[Tag] = &[Tag {
        tpid: ETH_P_8021Q,
        tci: 100,
    }];

    fn hw(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    fn bound(ip: [u8; 4], subnet_id: u32, client: ClientKey, n: u8) -> Lease {
        let mut h = vec![1];
        h.extend_from_slice(&hw(n));
        Lease {
            ip: ip.into(),
            client: Some(client),
            hw: h.into(),
            subnet_id,
            state: LeaseState::Bound,
            expires: NOW + 1000,
            lease_secs: 1000,
            fast: None,
            relay: None,
        }
    }

    fn kernel_reply(outer_vlan: u16) -> Option<Arc<FastReply>> {
        Some(Arc::new(FastReply {
            outer_vlan,
            offerable: true,
            rapid: false,
            ..FastReply::minimal("srv0")
        }))
    }

    fn stash(circuit: &[u8]) -> Option<Box<[u8]>> {
        let mut v = RELAY.to_vec();
        v.extend_from_slice(&[1, circuit.len() as u8]);
        v.extend_from_slice(circuit);
        Some(v.into())
    }

    /// A DISCOVER from `n`, relayed on `circuit` when given.
    fn discover(
        s: &mut Server,
        n: u8,
        client_id: Option<&[u8]>,
        circuit: Option<&[u8]>,
        tags: &[Tag],
    ) -> Outcome {
        let mut p = vec![0u8; bootp::FIXED_LEN];
        p[bootp::OP] = bootp::BOOTREQUEST;
        p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
        p[bootp::HLEN] = 6;
        p[bootp::XID].copy_from_slice(&(0x2000 + u32::from(n)).to_be_bytes());
        p[bootp::CHADDR][..6].copy_from_slice(&hw(n));
        if circuit.is_some() {
            p[bootp::GIADDR].copy_from_slice(&RELAY);
        }
        p.extend_from_slice(&bootp::MAGIC_COOKIE);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, msg::DISCOVER]);
        if let Some(id) = client_id {
            p.extend_from_slice(&[opt::CLIENT_ID, id.len() as u8]);
            p.extend_from_slice(id);
        }
        if let Some(c) = circuit {
            p.extend_from_slice(&[opt::RELAY_AGENT_INFO, c.len() as u8 + 2, 1, c.len() as u8]);
            p.extend_from_slice(c);
        }
        p.push(opt::END);
        let req = proto::parse_dhcp(&p).unwrap();
        let arrival = Arrival {
            iface: "srv0",
            tags,
            src_mac: hw(n),
            src_ip: if circuit.is_some() {
                RELAY.into()
            } else {
                Ipv4Addr::UNSPECIFIED
            },
        };
        s.handle(&req, &arrival, NOW)
    }

    /// A RENEWING REQUEST from `n` for `ip`, unicast: no giaddr, no 82.
    fn renew(s: &mut Server, n: u8, ip: [u8; 4]) -> Outcome {
        let mut p = vec![0u8; bootp::FIXED_LEN];
        p[bootp::OP] = bootp::BOOTREQUEST;
        p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
        p[bootp::HLEN] = 6;
        p[bootp::XID].copy_from_slice(&(0x3000 + u32::from(n)).to_be_bytes());
        p[bootp::CIADDR].copy_from_slice(&ip);
        p[bootp::CHADDR][..6].copy_from_slice(&hw(n));
        p.extend_from_slice(&bootp::MAGIC_COOKIE);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, msg::REQUEST, opt::END]);
        let req = proto::parse_dhcp(&p).unwrap();
        let arrival = Arrival {
            iface: "srv0",
            tags: &[],
            src_mac: hw(n),
            src_ip: ip.into(),
        };
        s.handle(&req, &arrival, NOW)
    }

    /// A relayed binding renewed by unicast (no giaddr, no option 82) still
    /// counts on its circuit: recorded as a direct client's, it left the
    /// circuit's count and a second device there was offered an address.
    #[test]
    fn a_unicast_renewal_keeps_its_binding_on_the_circuit() {
        let circuit = Lease {
            relay: stash(b"1/1/1"),
            ..bound([198, 18, 3, 10], 4, hw_key(1, &hw(0x11)), 0x11)
        };
        let c = Config::parse(CONFIG, "test").unwrap();
        let mut s = Server::new(&c, vec![circuit]);
        let o = renew(&mut s, 0x11, [198, 18, 3, 10]);
        assert_eq!(
            o.reply.as_ref().map(|r| r.msg_type),
            Some(msg::ACK),
            "{o:?}"
        );
        let o = discover(&mut s, 0x13, None, Some(b"1/1/1"), &[]);
        assert_eq!(o.dropped, Some("cap_circuit_id"));
    }

    fn offered(o: &Outcome) -> bool {
        o.reply.as_ref().is_some_and(|r| r.msg_type == msg::OFFER)
    }

    #[test]
    fn stored_bindings_count_against_their_circuit_mac_and_line() {
        let line = Lease {
            fast: kernel_reply(0),
            ..bound([198, 18, 0, 100], 1, hw_key(1, &hw(1)), 1)
        };
        let reserved = Lease {
            fast: kernel_reply(100),
            ..bound([198, 18, 1, 50], 2, hw_key(1, &hw(0x99)), 0x99)
        };
        let circuit = Lease {
            relay: stash(b"1/1/1"),
            ..bound([198, 18, 3, 10], 4, hw_key(1, &hw(0x11)), 0x11)
        };
        let mac = Lease {
            relay: stash(b"1/2/1"),
            ..bound([198, 18, 3, 11], 4, client_id_key(&[0xff, 1]), 0x21)
        };
        let c = Config::parse(CONFIG, "test").unwrap();
        let mut s = Server::new(&c, vec![line, reserved, circuit, mac]);

        let o = discover(&mut s, 2, None, None, &[]);
        assert_eq!(o.dropped, Some("cap_line"));
        let o = discover(&mut s, 0x12, None, Some(b"1/1/1"), &[]);
        assert_eq!(o.dropped, Some("cap_circuit_id"));
        let o = discover(&mut s, 0x21, Some(&[0xff, 2]), Some(b"1/2/2"), &[]);
        assert_eq!(o.dropped, Some("cap_mac"));
        for why in ["cap_line", "cap_circuit_id", "cap_mac"] {
            assert_eq!(s.counters.limited.get(why), Some(&1), "{why}");
        }
        // Other circuits and lines are served, and a reserved binding does
        // not count against its line.
        assert!(offered(&discover(&mut s, 0x12, None, Some(b"1/1/2"), &[])));
        assert!(offered(&discover(&mut s, 3, None, None, VLAN100)));
        // The stored clients themselves come back.
        assert!(offered(&discover(&mut s, 1, None, None, &[])));
        assert!(offered(&discover(&mut s, 0x11, None, Some(b"1/1/1"), &[])));
        assert!(offered(&discover(
            &mut s,
            0x21,
            Some(&[0xff, 1]),
            Some(b"1/2/1"),
            &[]
        )));
    }
}
