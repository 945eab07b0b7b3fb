//! Issue 15: nodes on one PostgreSQL follow each other's changes
//! (`xdhcp::store::postgres::follow`). Two daemons, each in a lab of its
//! own on one database (its Unix socket), each with clients of its own.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use xdhcp_lab::{
    daemon::{wait_until, DaemonLab},
    postgres::PgCluster,
    proc::xdhcp_bin,
};

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
node = "@NODE@"
takeover_secs = 2
"#;

fn db_init(pg: &PgCluster) {
    let dir = std::env::temp_dir().join(format!("xdhcp-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("db.toml");
    std::fs::write(
        &cfg,
        CONFIG.replace("@URL@", &pg.url()).replace("@NODE@", "init"),
    )
    .unwrap();
    let out = std::process::Command::new(xdhcp_bin())
        .args(["db", "init", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bound leases by hardware address, as `leases list` on `lab` shows them
/// (address, node).
fn bound(lab: &DaemonLab) -> BTreeMap<String, (String, String)> {
    let (code, out) = lab.cli(&["leases", "list", "--json"]).unwrap();
    // 3: the answer is empty (Kea's result code).
    assert!(code == 0 || code == 3, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["arguments"]["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["state"] == "bound")
        .map(|l| {
            (
                l["hw-address"].as_str().unwrap_or("-").to_string(),
                (
                    l["ip-address"].as_str().unwrap().to_string(),
                    l["node"].as_str().unwrap_or("-").to_string(),
                ),
            )
        })
        .collect()
}

/// Node B learns node A's bindings from the feed within a bounded lag,
/// with no restart: its own new clients get other addresses (no claim
/// lost to A), and once A is killed (-9) A's clients that come to B
/// get their own addresses back from B: once A has been silent for
/// `takeover_secs`, B's kernel answers their REBINDING broadcasts, and
/// INIT-REBOOT and DISCOVER keep their addresses. Without the follower, B offers A's
/// addresses to its new clients (claims lost) and NAKs A's clients.
#[test]
fn a_node_follows_the_others_leases_and_serves_their_clients_after_they_die() {
    let pg = PgCluster::start(None).unwrap();
    db_init(&pg);
    let config = |node: &str| CONFIG.replace("@URL@", &pg.url()).replace("@NODE@", node);
    let mut a = DaemonLab::new("pgfola", &config("node-a"), None).unwrap();
    let mut b = DaemonLab::new("pgfolb", &config("node-b"), None).unwrap();
    b.start().unwrap();
    a.start().unwrap();

    let r = a.loadgen(&["--clients", "50", "--rate", "2000", "--phase", "dora"]);
    assert_eq!(r[0]["ok"], 50, "{}", r[0]);
    let granted = bound(&a);
    assert_eq!(granted.len(), 50);
    assert!(granted.values().all(|(_, n)| n == "node-a"), "{granted:?}");

    // B has every one of them, as A's, within the follower's bound.
    let t = Instant::now();
    let seen = wait_until(Duration::from_secs(5), || {
        let on_b = bound(&b);
        (on_b == granted).then_some(on_b)
    });
    assert!(
        seen.is_some(),
        "B's table after 5 s: {:?}\nA's: {granted:?}",
        bound(&b)
    );
    let lag = t.elapsed();
    eprintln!("B knew A's 50 bindings {lag:?} after A's last ACK");
    let (_, status) = b.cli(&["status"]).unwrap();
    assert!(status.contains("following     connected"), "{status}");
    assert!(status.contains("peer node-a"), "{status}");
    assert!(status.contains("alive"), "{status}");

    // B's own new clients (other MACs) get other addresses: no claim lost.
    let r = b.loadgen(&[
        "--clients",
        "20",
        "--mac-offset",
        "1000",
        "--rate",
        "2000",
        "--phase",
        "dora",
    ]);
    assert_eq!(r[0]["ok"], 20, "{}", r[0]);
    let (_, st) = b.cli(&["status", "--json"]).unwrap();
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(
        st["arguments"]["lease-store"]["lost-claims"], 0,
        "B offered addresses A's clients hold: {st}"
    );

    // While A is alive, A's clients are A's to answer: B stays silent
    // for them (counted), neither NAKs nor ACKs. B's engine learns that A
    // lives from its follower's next read of the heartbeats after A's
    // first one (status reads them itself): until then A counts as
    // silent, as it was before it started.
    b.daemon()
        .wait_for("live peers alive=[\"node-a\"]", Duration::from_secs(10))
        .unwrap();
    for (i, (ip, _)) in granted.values().enumerate() {
        // A handed out its pool in order (the requests below ask for
        // client i's address as .10 + i).
        assert_eq!(ip, &format!("198.18.0.{}", 10 + i), "{granted:?}");
    }
    let r = b.loadgen(&[
        "--clients",
        "5",
        "--rate",
        "1000",
        "--phase",
        "init-reboot",
        "--synthetic",
        "198.18.0.10",
        "--server",
        "198.18.0.1",
    ]);
    assert_eq!(
        (&r[0]["ok"], &r[0]["nak"]),
        (&0.into(), &0.into()),
        "{}",
        r[0]
    );
    let st = b.stats();
    let silent = st["arguments"]["dropped"]["peer_binding"]
        .as_u64()
        .or(st["dropped"]["peer_binding"].as_u64());
    assert_eq!(silent, Some(5), "{st}");

    // A dies without a word. Once it has been silent for takeover_secs,
    // B's kernel answers A's clients: their REBINDING broadcasts are
    // ACKed in B's kernel with no visit to B's control plane. Then half
    // of them reboot (INIT-REBOOT), half DISCOVER: each keeps its address.
    a.stop(9).unwrap();
    let took = b
        .daemon()
        .wait_for(
            "took over a silent peer's bindings",
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(took.contains("bindings=50"), "{took}");
    let r = b.loadgen(&[
        "--clients",
        "50",
        "--rate",
        "2000",
        "--phase",
        "rebind",
        "--synthetic",
        "198.18.0.10",
        "--server",
        "198.18.0.1",
    ]);
    assert_eq!(r[0]["ok"], 50, "{}", r[0]);
    assert_eq!(
        r[0]["server"]["fast_path_acks"], 50,
        "B's kernel answers A's clients: {}",
        r[0]
    );
    let r = b.loadgen(&[
        "--clients",
        "25",
        "--rate",
        "2000",
        "--phase",
        "init-reboot",
        "--synthetic",
        "198.18.0.10",
        "--server",
        "198.18.0.1",
    ]);
    assert_eq!(r[0]["ok"], 25, "{}", r[0]);
    let r = b.loadgen(&[
        "--clients",
        "25",
        "--mac-offset",
        "25",
        "--rate",
        "2000",
        "--phase",
        "dora",
    ]);
    assert_eq!(r[0]["ok"], 25, "{}", r[0]);
    let after = bound(&b);
    for (hw, (ip, _)) in &granted {
        let (ip_b, node) = after
            .get(hw)
            .unwrap_or_else(|| panic!("{hw} not bound on B"));
        assert_eq!(ip_b, ip, "{hw} changed address when its node died");
        assert_eq!(node, "node-b", "{hw}: B serves it since");
    }
    let rows = pg
        .psql("SELECT count(*) FROM xdhcp_leases WHERE state = 1 AND node = 'node-b'")
        .unwrap();
    assert_eq!(rows, "70");
    // A's heartbeat stops: B says so.
    let silent = wait_until(Duration::from_secs(20), || {
        let (_, s) = b.cli(&["status"]).ok()?;
        s.contains("SILENT").then_some(s)
    });
    assert!(silent.is_some(), "{:?}", b.cli(&["status"]));
}
