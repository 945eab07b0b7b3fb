//! The PostgreSQL lease store against a real PostgreSQL 15 that each test
//! starts for itself (`PgCluster`): schema versions and `xdhcp db`,
//! batches as one round trip, the change feed, a database that goes away
//! and comes back, and the daemon serving from it.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use xdhcp::{
    lease::{client_id_key, Lease, LeaseState},
    store::{
        postgres::{schema as pg_schema, DatabaseConfig, PgStore},
        LeaseStore, StoreOp,
    },
};
use xdhcp_lab::{daemon::DaemonLab, postgres::PgCluster, proc::xdhcp_bin};

fn db(pg: &PgCluster, node: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: Some(pg.url()),
        node: Some(node.into()),
        timeout_secs: 2,
        ..DatabaseConfig::default()
    }
}

fn lease(n: u32, expires: u64) -> Lease {
    Lease {
        ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n),
        client: Some(client_id_key(&n.to_be_bytes())),
        hw: Box::new([1, 2, 0, 0, 0, 0, n as u8]),
        subnet_id: 1,
        state: LeaseState::Bound,
        expires,
        lease_secs: 600,
        fast: None,
        // Stashed relay information rides with the lease (schema 3).
        relay: n
            .is_multiple_of(2)
            .then(|| Box::from(&[198, 18, 9, 1, 1, 3, b'c', b'/', n as u8][..])),
    }
}

fn xdhcp_db(pg: &PgCluster, cmd: &str) -> (bool, String) {
    let out = Command::new(xdhcp_bin())
        .args(["db", cmd])
        .env("XDHCP_DATABASE_URL", pg.url())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn open_err(cfg: &DatabaseConfig) -> String {
    match PgStore::open(cfg) {
        Ok(_) => panic!("opened"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn the_schema_is_made_by_db_init_upgraded_by_db_upgrade_and_checked_at_open() {
    let pg = PgCluster::start(None).unwrap();
    let cfg = db(&pg, "a");
    let (ok, said) = xdhcp_db(&pg, "status");
    assert!(ok && said.contains("no xdhcp schema"), "{said}");
    let e = open_err(&cfg);
    assert!(e.contains("xdhcp db init"), "{e}");

    // A database at version 1, as an older xdhcp made it.
    let mut c = cfg.connect().unwrap();
    let m = pg_schema::migrate(&mut c, true, 1).unwrap();
    assert_eq!((m.from, m.to), (None, 1));
    let e = open_err(&cfg);
    assert!(
        e.contains("version 1") && e.contains("xdhcp db upgrade"),
        "{e}"
    );
    let (ok, said) = xdhcp_db(&pg, "init");
    assert!(
        !ok && said.contains("already has an xdhcp schema"),
        "{said}"
    );
    let (ok, said) = xdhcp_db(&pg, "upgrade");
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("from version 1 to {}", pg_schema::SCHEMA_VERSION)),
        "{said}"
    );
    let (ok, said) = xdhcp_db(&pg, "upgrade");
    assert!(ok && said.contains("nothing to do"), "{said}");
    PgStore::open(&cfg).unwrap();

    // One from the future is refused, not written to.
    pg.psql("UPDATE xdhcp_schema SET version = 99").unwrap();
    let e = open_err(&cfg);
    assert!(e.contains("newer than this xdhcp"), "{e}");
}

#[test]
fn a_batch_is_one_round_trip_and_reads_back_as_applied_in_order() {
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let mut a = PgStore::open(&db(&pg, "node-a")).unwrap();
    let mut b = PgStore::open(&db(&pg, "node-b")).unwrap();

    let ops: Vec<_> = (1..=2000).map(|n| StoreOp::Put(lease(n, 5_000))).collect();
    a.apply(&ops).unwrap();
    let s = &a.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            s.batches.load(Relaxed),
            s.round_trips.load(Relaxed),
            s.rows.load(Relaxed)
        ),
        (1, 1, 2000)
    );

    // Within a batch the last change of an address wins, whatever the order.
    let mut renewed = lease(1, 9_000);
    renewed.lease_secs = 900;
    b.apply(&[
        StoreOp::delete_of(&lease(1, 0)),
        StoreOp::Renewed(renewed.clone()),
        StoreOp::Put(lease(2, 7_000)),
        StoreOp::delete_of(&lease(2, 0)),
        StoreOp::delete_of(&lease(3, 0)),
    ])
    .unwrap();
    let mut got = a.load().unwrap();
    got.sort_by_key(|l| l.ip);
    assert_eq!(got.len(), 1998);
    assert_eq!(got[0], renewed);
    assert_eq!(got[1], lease(4, 5_000));
    assert_eq!(
        pg.psql("SELECT node FROM xdhcp_leases WHERE ip = 3323068417")
            .unwrap(),
        "node-b",
        "each lease says which node wrote it last"
    );

    // Daemon facts are each node's own; reservations are shared.
    a.apply(&[
        StoreOp::Meta("clean", 1),
        StoreOp::PutReservation(xdhcp::store::ApiReservation {
            subnet_id: 1,
            ip: Ipv4Addr::new(198, 18, 0, 250),
            hw_address: Some("02:00:00:00:00:01".into()),
            client_id: None,
            relay: None,
        }),
        StoreOp::PutReservation(xdhcp::store::ApiReservation {
            subnet_id: 1,
            ip: Ipv4Addr::new(198, 18, 0, 251),
            hw_address: None,
            client_id: None,
            relay: Some(xdhcp::store::ApiRelayId {
                circuit_id: Some("olt1/port7".into()),
                ..Default::default()
            }),
        }),
    ])
    .unwrap();
    assert_eq!(a.meta("clean").unwrap(), Some(1));
    assert_eq!(b.meta("clean").unwrap(), None);
    assert!(
        b.take_clean().unwrap(),
        "a node that never ran counts clean"
    );
    assert_eq!(b.meta("clean").unwrap(), Some(0));
    assert_eq!(a.meta("clean").unwrap(), Some(1));
    let shared = b.reservations().unwrap();
    assert_eq!(shared.len(), 2);
    assert_eq!(
        shared[1]
            .relay
            .as_ref()
            .and_then(|r| r.circuit_id.as_deref()),
        Some("olt1/port7"),
        "a relay-identity reservation round-trips"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issue 15: the database is the arbiter of an address between nodes.
#[test]
fn a_claim_on_an_address_another_nodes_client_holds_is_lost_until_its_end_plus_mclt() {
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let mut cfg_a = db(&pg, "a");
    cfg_a.mclt_secs = 100;
    let mut cfg_b = db(&pg, "b");
    cfg_b.mclt_secs = 100;
    let mut a = PgStore::open(&cfg_a).unwrap();
    let mut b = PgStore::open(&cfg_b).unwrap();
    let now = unix_now();
    let other = |n: u32, ip_of: u32, expires: u64| {
        let mut l = lease(n, expires);
        l.ip = lease(ip_of, 0).ip;
        l
    };
    // a's clients 1 (bound), 2 (ended 50 s ago: within the MCLT), 3
    // (ended 200 s ago), 4 (released).
    let mut released = lease(4, now + 600);
    released.state = LeaseState::Released;
    a.apply(&[
        StoreOp::Put(lease(1, now + 600)),
        StoreOp::Put(lease(2, now - 50)),
        StoreOp::Put(lease(3, now - 200)),
        StoreOp::Put(released),
    ])
    .unwrap();
    assert!(a.take_lost().is_empty());
    // b's clients 11..14 claim the same four addresses, and 15 a free one.
    b.apply(&[
        StoreOp::Put(other(11, 1, now + 600)),
        StoreOp::Put(other(12, 2, now + 600)),
        StoreOp::Put(other(13, 3, now + 600)),
        StoreOp::Put(other(14, 4, now + 600)),
        StoreOp::Put(lease(15, now + 600)),
    ])
    .unwrap();
    let mut lost = b.take_lost();
    lost.sort_by_key(|l| l.ip);
    assert_eq!(lost, vec![lease(1, now + 600), lease(2, now - 50)]);
    assert!(b.take_lost().is_empty(), "taken once");
    let holders = pg
        .psql("SELECT string_agg((ip - 3323068416) || '=' || node, ',' ORDER BY ip) FROM xdhcp_leases")
        .unwrap();
    assert_eq!(holders, "1=a,2=a,3=b,4=b,15=b");
    // The holder itself, through another node (a REBINDING answered by
    // b), may always extend its binding.
    b.apply(&[StoreOp::Renewed(lease(1, now + 900))]).unwrap();
    assert!(b.take_lost().is_empty());
    assert_eq!(
        pg.psql("SELECT node || ' ' || expires FROM xdhcp_leases WHERE ip = 3323068417")
            .unwrap(),
        format!("b {}", now + 900)
    );
    assert_eq!(
        b.stats
            .lost_claims
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// Issue 15: a node deletes an address only as the client it believed
/// held it. Node b still believes client 11 holds addresses 1 and 2 (it
/// granted them once), but node a has granted them to 1 and 2 since; an
/// operator's `lease4-del` on b must not free them for anyone.
#[test]
fn a_delete_from_stale_memory_frees_no_address_another_nodes_client_holds() {
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let mut cfg_a = db(&pg, "a");
    cfg_a.mclt_secs = 100;
    let mut cfg_b = db(&pg, "b");
    cfg_b.mclt_secs = 100;
    let mut a = PgStore::open(&cfg_a).unwrap();
    let mut b = PgStore::open(&cfg_b).unwrap();
    let now = unix_now();
    let of = |n: u32, ip_of: u32, expires: u64| {
        let mut l = lease(n, expires);
        l.ip = lease(ip_of, 0).ip;
        l
    };
    // a: its clients 1 and 2 hold their addresses (2 ended 50 s ago,
    // within the MCLT), 3 ended 200 s ago, 4 is a's and bound.
    a.apply(&[
        StoreOp::Put(lease(1, now + 600)),
        StoreOp::Put(lease(2, now - 50)),
        StoreOp::Put(lease(3, now - 200)),
        StoreOp::Put(lease(4, now + 600)),
    ])
    .unwrap();
    // b deletes 1, 2 and 3 believing client 11 held them, 4 as its
    // own client 4's, and 5, which no row holds.
    b.apply(&[
        StoreOp::delete_of(&of(11, 1, 0)),
        StoreOp::delete_of(&of(11, 2, 0)),
        StoreOp::delete_of(&of(11, 3, 0)),
        StoreOp::delete_of(&lease(4, 0)),
        StoreOp::delete_of(&lease(5, 0)),
    ])
    .unwrap();
    let mut lost = b.take_lost();
    lost.sort_by_key(|l| l.ip);
    assert_eq!(
        lost,
        vec![lease(1, now + 600), lease(2, now - 50)],
        "b learns who holds what it could not delete"
    );
    let left = pg
        .psql("SELECT string_agg((ip - 3323068416) || '=' || node, ',' ORDER BY ip) FROM xdhcp_leases")
        .unwrap();
    assert_eq!(
        left, "1=a,2=a",
        "past end + MCLT (3) and the same client's (4) are gone"
    );
    assert_eq!(
        b.stats
            .lost_claims
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "a missing row is no lost claim"
    );
    // A delete with no client named frees only what holds nothing.
    let mut released = lease(6, now + 600);
    released.state = LeaseState::Released;
    a.apply(&[StoreOp::Put(released)]).unwrap();
    b.apply(&[
        StoreOp::Delete {
            ip: lease(1, 0).ip,
            client: None,
        },
        StoreOp::Delete {
            ip: lease(6, 0).ip,
            client: None,
        },
    ])
    .unwrap();
    assert_eq!(b.take_lost(), vec![lease(1, now + 600)]);
    let left = pg
        .psql("SELECT string_agg((ip - 3323068416)::text, ',' ORDER BY ip) FROM xdhcp_leases")
        .unwrap();
    assert_eq!(left, "1,2");
}

#[test]
fn every_change_is_numbered_and_announced_at_commit() {
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let cfg = db(&pg, "a");
    let mut listener = cfg.connect().unwrap();
    listener.batch_execute("LISTEN xdhcp_changes").unwrap();
    let mut a = PgStore::open(&cfg).unwrap();
    a.apply(
        &(1..=10)
            .map(|n| StoreOp::Put(lease(n, 1)))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    a.apply(&[StoreOp::delete_of(&lease(4, 0)), StoreOp::Put(lease(11, 1))])
        .unwrap();
    let mut heard = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_secs(5));
    while heard.last() != Some(&12) {
        use postgres::fallible_iterator::FallibleIterator;
        match it.next() {
            Ok(Some(m)) => heard.push(m.payload().parse::<i64>().unwrap()),
            other => panic!("no announcement: {other:?} after {heard:?}"),
        }
    }
    drop(it);
    drop(n);
    // Announcements (one per statement, so a batch's deletions and its
    // upserts may each have one) rise to the batch's highest number; the
    // numbers run without a gap, deletions included.
    assert_eq!(heard[0], 10, "{heard:?}");
    assert!(heard.windows(2).all(|w| w[0] < w[1]), "{heard:?}");
    assert!(heard.len() <= 3, "{heard:?}");
    let log = pg
        .psql("SELECT string_agg((ip - 3323068416) || ':' || deleted, ',' ORDER BY ip) || ' ' || min(seq) || '-' || max(seq) FROM xdhcp_changes WHERE seq > 10")
        .unwrap();
    // A batch's changes are to distinct addresses: their order among
    // themselves is free.
    assert_eq!(log, "4:true,11:false 11-12");
}

#[test]
fn a_database_that_goes_away_fails_writes_in_bounded_time_and_takes_them_when_back() {
    let mut pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let mut a = PgStore::open(&db(&pg, "a")).unwrap();
    a.apply(&[StoreOp::Put(lease(1, 1))]).unwrap();
    pg.stop().unwrap();
    let t = Instant::now();
    let e = format!("{:#}", a.apply(&[StoreOp::Put(lease(2, 1))]).unwrap_err());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(e.contains("PostgreSQL"), "{e}");
    // Still down: the reconnection fails too, as fast.
    assert!(a.apply(&[StoreOp::Put(lease(2, 1))]).is_err());
    pg.start_again().unwrap();
    a.apply(&[StoreOp::Put(lease(2, 1))]).unwrap();
    assert_eq!(a.load().unwrap().len(), 2);
    assert!(
        a.stats
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"

[[interface]]
name = "srv0"

[options]
lease_time = 600

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.10"
end = "198.18.0.209"

[database]
url = "@URL@"
node = "lab-node"
"#;

#[test]
fn the_daemon_serves_from_postgres_and_a_restart_rebuilds_from_it() {
    let pg = PgCluster::start(None).unwrap();
    let config = CONFIG.replace("@URL@", &pg.url());
    let mut lab = DaemonLab::new("pgserve", &config, None).unwrap();
    // Before `db init` the daemon refuses to start, saying what to run.
    let (status, lines) = lab.start_refused().unwrap();
    assert!(!status.success());
    assert!(lines.join("\n").contains("xdhcp db init"), "{lines:?}");
    assert!(xdhcp_db(&pg, "init").0);

    lab.start().unwrap();
    let r = lab.loadgen(&["--clients", "100", "--rate", "2000", "--phase", "dora"]);
    assert_eq!(r[0]["ok"], 100, "{}", r[0]);
    assert_eq!(r[0]["duplicate_addresses"], 0, "{}", r[0]);
    let bound = pg
        .psql("SELECT count(*) FROM xdhcp_leases WHERE state = 1 AND node = 'lab-node'")
        .unwrap();
    assert_eq!(bound, "100", "every ACK's lease is in PostgreSQL");
    let (code, status) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains("database      postgres at host ") && status.contains("as node lab-node"),
        "{status}"
    );
    assert!(lab.stop(15).unwrap().0.success());
    assert_eq!(
        pg.psql("SELECT v FROM xdhcp_meta WHERE node = 'lab-node' AND k = 'clean'")
            .unwrap(),
        "1"
    );

    // The restarted daemon has the leases back, in its XDP map too.
    lab.start().unwrap();
    let line = lab
        .daemon()
        .wait_for("XDP lease map loaded", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("bindings=100"), "{line}");
    let (code, list) = lab.cli(&["leases", "list"]).unwrap();
    assert_eq!(code, 0, "{list}");
    assert_eq!(list.matches("bound").count(), 100, "{list}");
}

/// Issue 15 in the lab: two daemons (fast path on) on one database, each
/// with a client of its own, the same pool, neither knowing the other's
/// leases (`database.follow = false`; `pg_follow.rs` has them follow). The second node offers the address the
/// first one bound; its claim is lost in the database, no ACK leaves, and
/// its client ends up with another address.
#[test]
fn two_nodes_on_one_database_never_bind_one_address_twice() {
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    // Without following, B does not know A's binding when its client
    // comes: the database's refusal alone keeps the address A's.
    let config = |node: &str| {
        CONFIG.replace("@URL@", &pg.url()).replace("lab-node", node) + "follow = false\n"
    };
    let mut a = DaemonLab::new("pgnodea", &config("node-a"), None).unwrap();
    let mut b = DaemonLab::new("pgnodeb", &config("node-b"), None).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    let bound_ip = |lab: &DaemonLab| -> Ipv4Addr {
        let bound = lab.wait_event("bound ", 0, Duration::from_secs(30));
        bound.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let _ca = a.udhcpc("").unwrap();
    let ip_a = bound_ip(&a);
    let _cb = b.udhcpc("").unwrap();
    let ip_b = bound_ip(&b);
    assert_ne!(ip_a, ip_b, "one address bound to two clients");
    let log = b.daemon().lines().join("\n");
    assert!(log.contains("claims lost to other nodes"), "{log}");
    let holders = pg
        .psql("SELECT string_agg(node, ',' ORDER BY node) FROM xdhcp_leases WHERE state = 1")
        .unwrap();
    assert_eq!(holders, "node-a,node-b");
}

/// Issue 15, database outage: PostgreSQL stopped for 12 s under a DORA
/// burst and a renewal. The kernel goes on answering the bound client;
/// nobody new gets an ACK; status says FAILING; when the database is
/// back the withheld batch lands, the kernel's renewal with it.
#[test]
fn a_database_outage_keeps_renewals_answered_and_loses_nothing() {
    let mut pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let config = CONFIG
        .replace("@URL@", &pg.url())
        .replace("lease_time = 600", "lease_time = 30");
    let mut lab = DaemonLab::new("pgoutage", &config, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(30));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    let row = format!(
        "SELECT expires FROM xdhcp_leases WHERE ip = {} AND state = 1",
        u32::from(ip)
    );
    let stored_before: u64 = pg.psql(&row).unwrap().parse().unwrap();
    // Past lease/8, so the kernel reports the renewal for the store.
    std::thread::sleep(Duration::from_secs(5));

    pg.stop().unwrap();
    let down = Instant::now();
    let n = lab.events().len();
    client.signal(10);
    let renew = lab.wait_event("renew ", n, Duration::from_secs(10));
    assert!(renew.contains(&ip.to_string()), "{renew}");
    let r = lab.loadgen(&["--clients", "50", "--rate", "500", "--phase", "dora"]);
    assert_eq!(r[0]["ok"], 0, "no ACK while the database is down: {}", r[0]);
    // Nor an OFFER (the batch with the renewal is failing by now):
    // silence, counted.
    assert_eq!(r[0]["server"]["control_plane_offers"], 0, "{}", r[0]);
    let st = lab.stats();
    let silent = st["arguments"]["dropped"]["store_unavailable"]
        .as_u64()
        .or(st["dropped"]["store_unavailable"].as_u64());
    assert!(silent >= Some(50), "{st}");
    let (_, status) = lab.cli(&["status"]).unwrap();
    assert!(status.contains("FAILING"), "{status}");

    std::thread::sleep(Duration::from_secs(12).saturating_sub(down.elapsed()));
    pg.start_again().unwrap();
    let healthy = xdhcp_lab::daemon::wait_until(Duration::from_secs(15), || {
        let (_, s) = lab.cli(&["status"]).ok()?;
        (!s.contains("FAILING")).then_some(())
    });
    assert!(healthy.is_some(), "{:?}", lab.cli(&["status"]));
    let stored_after: u64 = pg.psql(&row).unwrap().parse().unwrap();
    assert!(
        stored_after > stored_before,
        "the kernel's renewal during the outage reached the database: {stored_before} -> {stored_after}"
    );
    let bound: u64 = pg
        .psql("SELECT count(*) FROM xdhcp_leases WHERE state = 1")
        .unwrap()
        .parse()
        .unwrap();
    assert!(bound >= 1, "{bound}");
}

/// `sslmode=require` with `tls_ca_file`: the connection is TLS (the
/// server takes no other from the lab), and the server's certificate is
/// verified (another CA is refused).
#[test]
fn tls_connections_verify_the_server_against_the_configured_ca() {
    let mut lab = xdhcp_lab::Lab::new("pgtls").unwrap();
    let ns = lab.netns("db").unwrap();
    ns.run(["ip", "addr", "add", "198.18.0.1/32", "dev", "lo"])
        .unwrap();
    let mut pg = PgCluster::start(Some((&ns, "198.18.0.1"))).unwrap();
    let ca = pg.enable_tls().unwrap();
    pg.stop().unwrap();
    pg.start_again().unwrap();
    let dir = pg.dir.clone();
    let status = |sslmode: &str, ca: &std::path::Path| {
        let cfg = dir.join(format!("tls-{sslmode}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[server]\nserver_id = \"198.18.0.1\"\n\n[[interface]]\nname = \"lo\"\n\n[database]\nurl = \"{}\"\ntls_ca_file = \"{}\"\n",
                pg.tcp_url().unwrap() + " sslmode=" + sslmode,
                ca.display()
            ),
        )
        .unwrap();
        let out = ns
            .command_from(
                Command::new(xdhcp_bin())
                    .args(["db", "status", "--config"])
                    .arg(&cfg),
            )
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = status("require", &ca);
    assert!(ok && said.contains("no xdhcp schema"), "{said}");
    let (ok, said) = status("disable", &ca);
    assert!(
        !ok && said.contains("pg_hba.conf"),
        "plain TCP must be refused: {said}"
    );
    // A CA that did not sign the server's certificate.
    let other = dir.join("other.crt");
    let key = dir.join("other.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    let (ok, said) = status("require", &other);
    assert!(!ok && said.contains("certificate verify failed"), "{said}");
    drop(pg);
}

/// The follower of another node's changes (`store::postgres::follow`):
/// changes arrive as each address's current row, this node's own are
/// left out, and a follower that finds the history pruned past it reads
/// the other nodes' leases in full.
#[test]
fn a_follower_reads_other_nodes_changes_and_rereads_all_after_a_pruned_history() {
    use std::sync::{atomic::AtomicBool, mpsc, Arc};
    use xdhcp::store::postgres::follow::{self, FollowStats, Followed};
    let pg = PgCluster::start(None).unwrap();
    assert!(xdhcp_db(&pg, "init").0);
    let mut a = PgStore::open(&db(&pg, "a")).unwrap();
    let mut b = PgStore::open(&db(&pg, "b")).unwrap();
    a.apply(
        &(1..=3)
            .map(|n| StoreOp::Put(lease(n, 1)))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // All of it pruned before b's follower ever read it.
    pg.psql("DELETE FROM xdhcp_changes").unwrap();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(FollowStats::default());
    let t = follow::spawn(&db(&pg, "b"), 0, 0, stats.clone(), stop.clone(), move |f| {
        tx.send(f).is_ok()
    })
    .unwrap();
    let next = |what: &str| loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Followed::Alive(_)) => continue,
            Ok(f) => break f,
            Err(e) => panic!("no {what}: {e}"),
        }
    };
    match next("re-read") {
        Followed::Resync(all) => {
            let mut ips: Vec<u32> = all.iter().map(|r| u32::from(r.ip) & 0xff).collect();
            ips.sort();
            assert_eq!(ips, [1, 2, 3]);
            assert!(all.iter().all(|r| r.node == "a" && r.lease.is_some()));
        }
        other => panic!("{other:?}"),
    }
    // Then the changes: a's new lease and deletion; b's own write is not
    // handed back to b.
    b.apply(&[StoreOp::Put(lease(9, 1))]).unwrap();
    a.apply(&[StoreOp::Put(lease(4, 1)), StoreOp::delete_of(&lease(2, 1))])
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match next("changes") {
            Followed::Changes(c) => got.extend(c),
            other => panic!("{other:?}"),
        }
    }
    got.sort_by_key(|r| r.ip);
    let seen: Vec<(u32, bool)> = got
        .iter()
        .map(|r| (u32::from(r.ip) & 0xff, r.lease.is_some()))
        .collect();
    assert_eq!(seen, [(2, false), (4, true)], "{got:?}");
    assert!(stats.lag_ms.load(std::sync::atomic::Ordering::Relaxed) < 5_000);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t.join().unwrap();
}
