//! Issue 15 in the netns lab: two or three xdhcp nodes (fast path on) on
//! one L2 segment and one PostgreSQL 15, every node seeing every packet
//! (`xdhcp_lab::multinode`). Each test is bounded in count and time.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp_lab::multinode::MultiNodeLab;

/// Requests the running nodes' XDP programs answered with an ACK.
fn kernel_acks(lab: &MultiNodeLab) -> u64 {
    let acks = |n: &xdhcp_lab::multinode::Node| -> Option<u64> {
        let (_, out) = n.cli(&["stats", "--json"]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let xdp = v["arguments"]["xdp"].as_object()?.iter();
        Some(
            xdp.filter(|(k, _)| k.starts_with("fp_ack_"))
                .filter_map(|(_, v)| v.as_u64())
                .sum(),
        )
    };
    lab.nodes
        .iter()
        .filter(|n| n.running())
        .filter_map(acks)
        .sum()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Every node OFFERs to every DISCOVER; a client's REQUEST names one
/// server and only that one may ACK. The database refuses a second
/// node's claim on an address, so no address is in two bindings.
#[test]
fn three_nodes_seeing_every_packet_give_no_address_twice_and_no_client_two_acks() {
    let t0 = Instant::now();
    // T1 of 6 s: the real clients renew during the test, unicast to
    // their server through the bridge, and its kernel answers.
    let opts = "renewal_time = 6\nrebinding_time = 500";
    let lab = MultiNodeLab::new("mn3dora", 3, 600, opts).unwrap();
    let dh = lab.dhclient().unwrap();
    let ud = lab.udhcpc().unwrap();
    let r = lab
        .loadgen(
            0,
            &[
                "--clients",
                "10000",
                "--rate",
                "2000",
                "--timeout-ms",
                "2000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    let dora = &r[0];
    eprintln!("dora: {dora}");
    let dh_ip = lab.wait_event("dhclient", "BOUND ", 0, Duration::from_secs(30));
    let ud_ip = lab.wait_event("udhcpc", "bound ", 0, Duration::from_secs(30));
    eprintln!("dhclient {dh_ip}; udhcpc {ud_ip}; {:?}", t0.elapsed());
    let kernel_before = kernel_acks(&lab);
    let ip_of = |e: &str| e.split_whitespace().nth(1).unwrap().to_string();
    let (dh_ip, ud_ip) = (ip_of(&dh_ip), ip_of(&ud_ip));
    let dh_n = lab.events("dhclient").len();
    let ud_n = lab.events("udhcpc").len();
    let renewed = lab.wait_event("dhclient", "RENEW ", dh_n, Duration::from_secs(30));
    assert!(renewed.starts_with(&format!("RENEW {dh_ip}")), "{renewed}");
    // udhcpc renews at lease/2 whatever T1 says: made to now.
    ud.signal(10);
    let renewed = lab.wait_event("udhcpc", "renew ", ud_n, Duration::from_secs(30));
    assert!(renewed.starts_with(&format!("renew {ud_ip}")), "{renewed}");
    let kernel = kernel_acks(&lab) - kernel_before;
    // Not asserted (issue 15's follower is to fix it): a node with no
    // record of a client NAKs its broadcast renewal that the holder's
    // kernel has already ACKed.
    let naks: usize = lab
        .nodes
        .iter()
        .map(|n| n.daemon().count("REQUEST -> NAK"))
        .sum();
    eprintln!("kernel renewals {kernel}, control-plane NAKs {naks}");
    assert!(
        kernel >= 2,
        "renewals answered in a kernel: {kernel}\n{}",
        lab.logs()
    );
    drop((dh, ud));
    assert_eq!(n(dora, "duplicate_addresses"), 0, "{dora}");
    assert_eq!(n(dora, "duplicate_acks"), 0, "{dora}");
    let (twice, clients_twice) = lab.double_bindings().unwrap();
    assert_eq!((twice, clients_twice), (0, 0), "{}", lab.logs());
}

const BOUND_OF_0: &str = "SELECT count(*) FROM xdhcp_leases WHERE state = 1 AND node = 'node-0'";

/// `count` loadgen clients bound through node 0 alone (node 1 stopped
/// meanwhile, then started: it loads them from the database), so their
/// renewals, unicast to node 0, are its kernel's; then renewals at
/// `rate` for `secs`, in the background.
fn bind_through_node_0_then_renew(
    lab: &mut MultiNodeLab,
    count: u64,
    rate: u64,
    secs: u64,
) -> std::thread::JoinHandle<anyhow::Result<Vec<Value>>> {
    lab.stop(1, 15).unwrap();
    let (c, r, total) = (
        count.to_string(),
        rate.to_string(),
        (rate * secs).to_string(),
    );
    let h = lab.loadgen_spawn(
        0,
        &[
            "--clients",
            &c,
            "--rate",
            &r,
            "--timeout-ms",
            "1000",
            "--phase",
            "dora",
            "--phase",
            "renew",
            "--count",
            &total,
            "--duration",
            &secs.to_string(),
        ],
    );
    lab.wait_count(BOUND_OF_0, count, Duration::from_secs(60))
        .unwrap();
    lab.start(1).unwrap();
    // Each binding's stored end before: every one must move on.
    lab.psql("CREATE TABLE before AS SELECT ip, expires FROM xdhcp_leases WHERE state = 1")
        .unwrap();
    h
}

fn not_renewed_in_store(lab: &MultiNodeLab) -> u64 {
    lab.psql(
        "SELECT count(*) FROM before b LEFT JOIN xdhcp_leases l USING (ip) \
         WHERE l.expires IS NULL OR l.expires <= b.expires",
    )
    .unwrap()
    .parse()
    .unwrap()
}

/// PostgreSQL stopped for 30 s under renewals of 1,000 bound clients and
/// new DORAs: the kernel answers every renewal, nobody new is ACKed
/// while the database is away, status says so, and afterwards every
/// kernel renewal is stored, new clients are served, no address twice.
#[test]
fn a_30_s_database_outage_under_mixed_load_keeps_renewals_and_loses_nothing() {
    let mut lab = MultiNodeLab::new("mnoutage", 2, 120, "").unwrap();
    let renewals = bind_through_node_0_then_renew(&mut lab, 1000, 200, 40);
    lab.pg.stop().unwrap();
    let down = Instant::now();
    // It learns of it at its next write: its kernel's renewals, reported
    // every lease/8 (7.5 s).
    lab.wait_status(0, "FAILING", false, Duration::from_secs(25))
        .unwrap();
    let during = lab
        .loadgen(
            1,
            &[
                "--clients",
                "200",
                "--rate",
                "100",
                "--mac-offset",
                "100000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    assert_eq!(
        n(&during[0], "ok"),
        0,
        "ACKed with the database away: {}",
        during[0]
    );
    let (_, status) = lab.nodes[0].cli(&["status"]).unwrap();
    assert!(status.contains("FAILING"), "{status}");
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    lab.pg.start_again().unwrap();
    let outage = down.elapsed();
    let r = renewals.join().unwrap().unwrap();
    let renew = &r[1];
    eprintln!(
        "outage {outage:?}\ndora {}\nrenew {renew}\nduring {}",
        r[0], during[0]
    );
    assert_eq!(n(&r[0], "ok"), 1000, "{}", r[0]);
    assert_eq!(n(renew, "nak") + n(renew, "wrong"), 0, "{renew}");
    assert!(
        n(renew, "ok") * 100 >= n(renew, "sent") * 99,
        "renewals unanswered in the outage: {renew}"
    );
    assert!(
        n(&renew["server"], "fast_path_acks") >= n(renew, "ok") * 99 / 100,
        "{renew}"
    );
    for i in 0..2 {
        lab.wait_status(i, "FAILING", true, Duration::from_secs(30))
            .unwrap();
    }
    // Catch-up: the kernel's renewals of the outage are in the database.
    xdhcp_lab::daemon::wait_until(Duration::from_secs(30), || {
        (not_renewed_in_store(&lab) == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} renewals never stored\n{}",
            not_renewed_in_store(&lab),
            lab.logs()
        )
    });
    let after = lab
        .loadgen(
            1,
            &[
                "--clients",
                "300",
                "--rate",
                "300",
                "--mac-offset",
                "200000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    assert_eq!(n(&after[0], "ok"), 300, "{}", after[0]);
    assert_eq!(n(&after[0], "duplicate_acks"), 0, "{}", after[0]);
    let stored: u64 = lab
        .psql("SELECT count(*) FROM xdhcp_leases WHERE state = 1")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stored >= 1300,
        "ACKed leases missing from the database: {stored}"
    );
    assert_eq!(lab.double_bindings().unwrap(), (0, 0), "{}", lab.logs());
}

/// Node 0, holding 500 bindings, cut off from PostgreSQL and node 1 for
/// 20 s (its clients still reach it): its kernel renews them, it ACKs
/// nobody new; healed, it stores the renewals and no address is in two
/// bindings across the nodes.
#[test]
fn a_node_partitioned_from_the_database_renews_allocates_nothing_and_catches_up() {
    // 950 addresses: after the partition each node's free list reaches
    // addresses the other bound meanwhile. Node 0's follower catches up
    // from where it was cut off, so it knows them before it offers.
    let mut lab = MultiNodeLab::with_pool("mnpart", 2, 120, "", "198.18.4.181").unwrap();
    let renewals = bind_through_node_0_then_renew(&mut lab, 500, 100, 35);
    lab.partition(0).unwrap();
    let cut = Instant::now();
    // It learns of it at its next write: its kernel's renewals, reported
    // every lease/8 (7.5 s).
    lab.wait_status(0, "FAILING", false, Duration::from_secs(25))
        .unwrap();
    // New clients: node 1 serves them; node 0 may offer, never ACK.
    let during = lab
        .loadgen(
            0,
            &[
                "--clients",
                "300",
                "--rate",
                "100",
                "--mac-offset",
                "100000",
                "--timeout-ms",
                "1000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    let d = &during[0];
    // Node 0 counts the ACKs it decided; none may have left (they wait
    // for the database): its clients are the lost ones.
    assert!(
        n(d, "ok") + n(&d["server"], "control_plane_acks") <= n(d, "sent"),
        "node 0 ACKed cut off: {d}"
    );
    assert_eq!(
        n(d, "duplicate_addresses") + n(d, "duplicate_acks"),
        0,
        "{d}"
    );
    assert!(n(d, "ok") > 0, "node 1 served nobody: {d}");
    let (_, status) = lab.nodes[1].cli(&["status"]).unwrap();
    assert!(!status.contains("FAILING"), "node 1: {status}");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed()));
    lab.heal(0).unwrap();
    let r = renewals.join().unwrap().unwrap();
    let renew = &r[1];
    eprintln!("partition {:?}\nrenew {renew}\nduring {d}", cut.elapsed());
    assert_eq!(n(renew, "nak") + n(renew, "wrong"), 0, "{renew}");
    assert!(n(renew, "ok") * 100 >= n(renew, "sent") * 99, "{renew}");
    lab.wait_status(0, "FAILING", true, Duration::from_secs(30))
        .unwrap();
    xdhcp_lab::daemon::wait_until(Duration::from_secs(30), || {
        (not_renewed_in_store(&lab) == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} renewals never stored\n{}",
            not_renewed_in_store(&lab),
            lab.logs()
        )
    });
    // Both nodes' tables hold the same bindings again: node 0 read what
    // node 1 bound while it was cut off.
    let same = xdhcp_lab::daemon::wait_until(Duration::from_secs(15), || {
        let set = |i: usize| -> Option<std::collections::BTreeSet<Ipv4Addr>> {
            Some(
                lab.nodes[i]
                    .bound()
                    .ok()?
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .collect(),
            )
        };
        let (a, b) = (set(0)?, set(1)?);
        (a == b).then_some(a.len())
    });
    assert!(same.is_some(), "node 0 never caught up\n{}", lab.logs());
    let after = lab
        .loadgen(
            0,
            &[
                "--clients",
                "190",
                "--rate",
                "100",
                "--mac-offset",
                "300000",
                "--timeout-ms",
                "1000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    let a = &after[0];
    let lost_claims: u64 = (0..2)
        .map(|i| {
            let (_, s) = lab.nodes[i].cli(&["status"]).unwrap();
            let words: Vec<&str> = s.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "claims").unwrap();
            words[at - 1].parse::<u64>().unwrap()
        })
        .sum();
    eprintln!("after {a}\nclaims lost: {lost_claims}");
    assert_eq!(
        n(a, "duplicate_addresses") + n(a, "duplicate_acks"),
        0,
        "{a}"
    );
    assert_eq!(lab.double_bindings().unwrap(), (0, 0), "{}", lab.logs());
    // Claims lost here are the arbiter at work where the tables still
    // race (both nodes answer every DISCOVER); `two_nodes_on_one_database_
    // never_bind_one_address_twice` (no following) proves the arbiter.
    eprintln!("claims lost after healing: {lost_claims}");
}

/// Node 0, holding 500 bindings under renewal load, is killed (-9). Node
/// 1, which follows it, takes its bindings over once it has been silent
/// for `takeover_secs`: the clients' REBINDING broadcasts are answered by
/// node 1's kernel, each with its own address, and none of node 0's
/// addresses goes to a new client (held until stored end + MCLT).
#[test]
fn a_node_killed_under_renewals_has_its_clients_rebound_by_the_survivors_kernel() {
    let mut lab = MultiNodeLab::new("mnkill", 2, 120, "").unwrap();
    let renewals = bind_through_node_0_then_renew(&mut lab, 500, 100, 8);
    std::thread::sleep(Duration::from_secs(3));
    let held = lab.nodes[0].bound().unwrap();
    assert_eq!(held.len(), 500);
    lab.kill9(0).unwrap();
    let killed = Instant::now();
    // Renewals unicast to the dead node go unanswered from here on.
    let _ = renewals.join().unwrap();
    // Node 0 handed its pool out in order: client i holds .1.0 + i
    // (the REBINDING requests below ask for those).
    let mut by_hw = held.clone();
    by_hw.sort_by(|a, b| a.1.cmp(&b.1));
    for (i, (ip, _)) in by_hw.iter().enumerate() {
        assert_eq!(
            u32::from(*ip),
            u32::from(Ipv4Addr::new(198, 18, 1, 0)) + i as u32
        );
    }
    let took = lab.nodes[1]
        .daemon()
        .wait_for(
            "took over a silent peer's bindings",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(took.contains("bindings=500"), "{took}");
    eprintln!("taken over {:?} after the kill", killed.elapsed());
    let server = lab.nodes[0].addr.to_string();
    let r = lab
        .loadgen(
            1,
            &[
                "--clients",
                "500",
                "--rate",
                "500",
                "--phase",
                "rebind",
                "--synthetic",
                "198.18.1.0",
                "--server",
                &server,
            ],
        )
        .unwrap();
    let r = &r[0];
    eprintln!("rebind {r}");
    assert_eq!(n(r, "ok"), 500, "{r}");
    assert_eq!(n(r, "nak") + n(r, "wrong"), 0, "{r}");
    assert_eq!(
        n(&r["server"], "fast_path_acks"),
        500,
        "the survivor's kernel: {r}"
    );
    // New clients get none of node 0's addresses.
    let fresh = lab
        .loadgen(
            1,
            &[
                "--clients",
                "100",
                "--rate",
                "200",
                "--mac-offset",
                "500000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    assert_eq!(n(&fresh[0], "ok"), 100, "{}", fresh[0]);
    let old: std::collections::HashSet<Ipv4Addr> = held.iter().map(|(ip, _)| *ip).collect();
    let now = lab.nodes[1].bound().unwrap();
    assert_eq!(now.len(), 600, "{now:?}");
    let mut by_old_ip: std::collections::HashMap<Ipv4Addr, String> = held.into_iter().collect();
    for (ip, hw) in &now {
        if old.contains(ip) {
            assert_eq!(
                by_old_ip.remove(ip).as_deref(),
                Some(hw.as_str()),
                "{ip} went to another client"
            );
        }
    }
    assert!(by_old_ip.is_empty(), "{by_old_ip:?} lost their addresses");
    assert_eq!(lab.double_bindings().unwrap(), (0, 0), "{}", lab.logs());
}
