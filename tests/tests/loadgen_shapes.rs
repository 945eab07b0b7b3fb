//! `xdhcp-loadgen --engine xdp --shape ...` against the daemon: clients
//! bound in each request shape (tags, client id, no padding) are renewed
//! by the XDP engine in that shape, and the kernel answers every renewal.
//! A shape sent wrong (a field at the wrong offset, a missing tag) falls
//! to the control plane or goes unanswered, which the counts show.

use serde_json::Value;
use xdhcp_lab::daemon::DaemonLab;

/// Untagged clients on subnet 1, VLAN 100 on subnet 100, VLANs 100/200
/// on subnet 200 (the tags `--shape dot1q` and `--shape qinq` send).
const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

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

[[subnet]]
id = 100
subnet = "198.18.100.0/24"
interface = "srv0"
vlan = 100
[[subnet.pool]]
start = "198.18.100.10"
end = "198.18.100.209"

[[subnet]]
id = 200
subnet = "198.18.101.0/24"
interface = "srv0"
vlan = 100
inner_vlan = 200
[[subnet.pool]]
start = "198.18.101.10"
end = "198.18.101.209"
"#;

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn every_shape_the_xdp_engine_sends_is_answered_in_the_kernel() {
    // Each shape, the subnet its clients land in and whether the store
    // keys them by client id: proof the shape reached the server.
    let shapes = [
        ("plain", 1, false),
        ("dot1q", 100, false),
        ("qinq", 200, false),
        ("client-id", 1, true),
        ("unpadded", 1, false),
    ];
    for (k, (shape, subnet, by_client_id)) in shapes.into_iter().enumerate() {
        let mut lab = DaemonLab::new(&format!("lgsh{k}"), CONFIG, None).unwrap();
        lab.start().unwrap();
        // The engine brings its own XDP program for cli0.
        lab.drop_peer().unwrap();
        // A low rate: every renewal must be answered, none lost to load.
        let r = lab.loadgen(&[
            "--clients",
            "100",
            "--rate",
            "2000",
            "--count",
            "2000",
            "--shape",
            shape,
            "--phase",
            "dora",
            "--phase",
            "renew",
            "--phase",
            "rebind",
            "--engine",
            "xdp",
        ]);
        let dora = &r[0];
        assert_eq!(
            (n(dora, "ok"), n(dora, "lost")),
            (100, 0),
            "{shape}: {dora}"
        );
        assert_eq!(n(&dora["server"], "control_plane_acks"), 100, "{shape}");
        for phase in &r[1..] {
            assert_eq!(phase["engine"], "xdp", "{shape}: {phase}");
            let sent = n(phase, "sent");
            assert_eq!(sent, 2000, "{shape}: {phase}");
            assert_eq!(n(phase, "ok"), sent, "{shape}: {phase}");
            let sv = &phase["server"];
            assert_eq!(n(sv, "fast_path_acks"), sent, "{shape}: {phase}");
            assert_eq!(
                n(sv, "control_plane_acks") + n(sv, "control_plane_naks"),
                0,
                "{shape}: {phase}"
            );
        }
        let (code, out) = lab.cli(&["leases", "list", "--json"]).unwrap();
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let leases = v["arguments"]["leases"].as_array().unwrap();
        assert_eq!(leases.len(), 100, "{shape}: {v}");
        for l in leases {
            assert_eq!(l["subnet-id"], subnet, "{shape}: {l}");
            assert_eq!(l["client-id"].is_string(), by_client_id, "{shape}: {l}");
        }
    }
}

/// The relayed shape's lab (as in relay.rs): the relay 198.18.2.1 sits
/// behind cli0 (198.18.1.2), which the server routes 198.18.2.0/24 to;
/// it is the one trusted relay and its clients land in subnet 2.
const RELAY_CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[relay]]
address = "198.18.2.1"

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

[[subnet]]
id = 2
subnet = "198.18.2.0/24"
[[subnet.pool]]
start = "198.18.2.10"
end = "198.18.2.209"
"#;

#[test]
fn relayed_requests_from_the_xdp_engine_are_answered_in_the_kernel() {
    let mut lab = DaemonLab::new("lgshrel", RELAY_CONFIG, Some("198.18.1.2/24")).unwrap();
    lab.srv
        .run(["ip", "addr", "add", "198.18.1.1/24", "dev", "srv0"])
        .unwrap();
    lab.srv
        .run(["ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2"])
        .unwrap();
    lab.start().unwrap();
    lab.drop_peer().unwrap();
    let r = lab.loadgen(&[
        "--clients",
        "100",
        "--rate",
        "2000",
        "--count",
        "2000",
        "--shape",
        "relayed",
        "--giaddr",
        "198.18.2.1",
        "--server",
        "198.18.0.1",
        "--phase",
        "dora",
        "--phase",
        "renew",
        "--phase",
        "rebind",
        "--phase",
        "init-reboot",
        "--phase",
        "discover-known",
        "--phase",
        "selecting",
        "--engine",
        "xdp",
    ]);
    let dora = &r[0];
    assert_eq!((n(dora, "ok"), n(dora, "lost")), (100, 0), "{dora}");
    assert_eq!(n(&dora["server"], "control_plane_acks"), 100, "{dora}");
    assert_eq!(r.len(), 6);
    for phase in &r[1..] {
        assert_eq!(phase["engine"], "xdp", "{phase}");
        let sent = n(phase, "sent");
        assert_eq!(sent, 2000, "{phase}");
        assert_eq!(n(phase, "ok"), sent, "{phase}");
        let sv = &phase["server"];
        let fast = if phase["phase"] == "discover-known" {
            "fast_path_offers"
        } else {
            "fast_path_acks"
        };
        assert_eq!(n(sv, fast), sent, "{phase}");
        assert_eq!(
            n(sv, "control_plane_offers")
                + n(sv, "control_plane_acks")
                + n(sv, "control_plane_naks"),
            0,
            "{phase}"
        );
    }
    // Each client bound through the relay, on a line of its own.
    let (code, out) = lab.cli(&["leases", "list", "--json"]).unwrap();
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let leases = v["arguments"]["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 100, "{v}");
    for l in leases {
        assert_eq!(l["subnet-id"], 2, "{l}");
    }
}

#[test]
fn known_clients_discover_and_select_and_the_kernel_answers_both() {
    let mut lab = DaemonLab::new("lgshknown", CONFIG, None).unwrap();
    lab.start().unwrap();
    lab.drop_peer().unwrap();
    let r = lab.loadgen(&[
        "--clients",
        "100",
        "--rate",
        "2000",
        "--count",
        "2000",
        "--phase",
        "dora",
        "--phase",
        "discover-known",
        "--phase",
        "selecting",
        "--engine",
        "xdp",
    ]);
    assert_eq!((n(&r[0], "ok"), n(&r[0], "lost")), (100, 0), "{}", r[0]);
    // Which counter each phase's replies must land in: OFFERs for the
    // DISCOVERs, ACKs for the SELECTING REQUESTs, all from the kernel.
    for (phase, fast) in r[1..].iter().zip(["fast_path_offers", "fast_path_acks"]) {
        assert_eq!(phase["engine"], "xdp", "{phase}");
        let sent = n(phase, "sent");
        assert_eq!(sent, 2000, "{phase}");
        assert_eq!(n(phase, "ok"), sent, "{phase}");
        let sv = &phase["server"];
        assert_eq!(n(sv, fast), sent, "{phase}");
        assert_eq!(
            n(sv, "control_plane_offers")
                + n(sv, "control_plane_acks")
                + n(sv, "control_plane_naks"),
            0,
            "{phase}"
        );
    }
    assert_eq!(r[1]["phase"], "discover-known");
    assert_eq!(r[2]["phase"], "selecting");
}
