//! Both planes for operators, in the lab: the kernel's view of a lease
//! beside the store's (`leases show/list`), `leases audit` against
//! disagreements planted in the real, pinned lease map, the daemon's
//! background auditor (counted, logged once, repaired through the
//! committer), and a clean lab under mixed load auditing clean.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use dhcp_common::{LeaseKey, LeaseValue};
use serde_json::Value;
use xdhcp::{
    lease::{client_id_key, hw_key},
    xdp::clock::{unix_now, unix_to_mono_ns},
    xdp::map_sync::lease_key,
};
use xdhcp_lab::daemon::{wait_until, DaemonLab};

const SIGUSR1: i32 = 10;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
audit_interval_secs = 1
audit_repair = false

[[interface]]
name = "srv0"

[options]
lease_time = 120
dns_servers = ["198.18.0.53"]

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.199"
"#;

fn json(lab: &DaemonLab, args: &[&str]) -> (i32, Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out) = lab.cli(&a).unwrap();
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    (code, v)
}

fn key_of(mac: [u8; 6]) -> LeaseKey {
    lease_key(&hw_key(1, &mac)).unwrap()
}

/// udhcpc's key: it sends option 61, 01 + its MAC.
fn udhcpc_key(mac: [u8; 6]) -> LeaseKey {
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    lease_key(&client_id_key(&id)).unwrap()
}

type LeaseMap = BpfHashMap<MapData, LeaseKey, LeaseValue>;

/// The daemon's lease map, opened from its pin: the test's own handle.
fn pinned_map(pin_dir: &Path) -> LeaseMap {
    let data = MapData::from_pin(pin_dir.join(dhcp_common::MAP_LEASES)).unwrap();
    BpfHashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

fn with_ip(v: &LeaseValue, ip: Ipv4Addr) -> LeaseValue {
    LeaseValue {
        ip: u32::from_ne_bytes(ip.octets()),
        ..*v
    }
}

fn loadgen(lab: &DaemonLab, args: &[&str]) -> Vec<Value> {
    lab.loadgen(args)
}

fn audit_kinds(v: &Value) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = v["arguments"]["current"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["ip-address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    k.sort();
    k
}

fn plane_stats(lab: &DaemonLab) -> Value {
    json(lab, &["stats"]).1["arguments"]["plane-audit"].clone()
}

fn fast_acks(lab: &DaemonLab) -> u64 {
    let (_, s) = json(lab, &["stats"]);
    let x = &s["arguments"]["xdp"];
    ["fp_ack_renewing", "fp_ack_rebinding", "fp_ack_init_reboot"]
        .iter()
        .map(|k| x[*k].as_u64().unwrap_or(0))
        .sum()
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Each kind of disagreement, planted in the real map: `leases audit`
/// names it and exits 4; the background auditor counts it and logs it
/// once; with repair on it removes the strays through the committer, and
/// a repaired client's next renewal is the control plane's.
#[test]
fn planted_disagreements_are_named_counted_logged_once_and_repaired() {
    let mut lab = DaemonLab::new("audit", CONFIG, None).unwrap();
    let pin_dir = lab.pin_in_host_bpffs().unwrap();
    lab.start().unwrap();
    let (code, out) = lab.cli(&["leases", "audit"]).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit clean"), "{out}");

    // Leases the control plane made, for the strays to point at.
    let x = [2, 0, 0, 0, 0xaa, 0x10];
    let z = [2, 0, 0, 0, 0xaa, 0x12];
    for (ip, mac, t) in [("198.18.0.190", x, "600"), ("198.18.0.192", z, "600")] {
        let (code, out) = lab
            .cli(&["leases", "add", ip, &mac_text(mac), "--lease-time", t])
            .unwrap();
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = lab.cli(&["leases", "release", "198.18.0.190"]).unwrap();
    assert_eq!(code, 0, "{out}");
    // A real client (udhcpc, kernel-renewable) and four loadgen clients.
    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip_a: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    let r = loadgen(&lab, &["--clients", "4", "--phase", "dora"]);
    assert_eq!(r[0]["ok"], 4, "{:?}", r);
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["bindings"], 5, "{st}");
    let (code, out) = lab.cli(&["leases", "audit"]).unwrap();
    assert_eq!(code, 0, "nothing planted yet: {out}");

    // Plant one of each kind.
    let mut map = pinned_map(&pin_dir);
    let key_a = udhcpc_key(lab.cli.mac("cli0").unwrap());
    let a = map.get(&key_a, 0).expect("udhcpc's binding in the map");
    let lg0 = key_of(dhcp_common::gen::client_mac(0));
    let lg0_ip = Ipv4Addr::from(map.get(&lg0, 0).unwrap().ip.to_ne_bytes());
    let no_lease_ip: Ipv4Addr = "198.18.0.180".parse().unwrap();
    map.insert(key_of([2, 0, 0, 0, 0xbb, 1]), with_ip(&a, no_lease_ip), 0)
        .unwrap();
    map.insert(key_of([2, 0, 0, 0, 0xbb, 2]), a, 0).unwrap(); // ip_a: another client
    map.insert(key_of(x), with_ip(&a, "198.18.0.190".parse().unwrap()), 0)
        .unwrap(); // released
    map.insert(
        key_of(z),
        LeaseValue {
            expires_mono_ns: unix_to_mono_ns(unix_now() + 100_000),
            ..with_ip(&a, "198.18.0.192".parse().unwrap())
        },
        0,
    )
    .unwrap(); // beyond the 600 s the store would recover
    map.insert(key_a, LeaseValue { subnet_id: 7, ..a }, 0)
        .unwrap(); // the sync's own entry, rewritten
    map.remove(&lg0).unwrap(); // a bound fast-path lease's entry gone

    let (code, v) = json(&lab, &["leases", "audit"]);
    assert_eq!(code, 4, "{v}");
    let expected: Vec<(String, String)> = {
        let mut e = vec![
            ("beyond_recovery".to_string(), "198.18.0.192".to_string()),
            ("missing".into(), lg0_ip.to_string()),
            ("no_lease".into(), no_lease_ip.to_string()),
            ("not_bound".into(), "198.18.0.190".into()),
            ("other_client".into(), ip_a.to_string()),
            ("other_subnet".into(), ip_a.to_string()),
        ];
        e.sort();
        e
    };
    assert_eq!(audit_kinds(&v), expected, "{v}");
    // Both views of a stray: the kernel's end beside the store's.
    let beyond = v["arguments"]["current"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "beyond_recovery")
        .unwrap();
    assert!(
        beyond["kernel"]["expires"].as_u64().unwrap()
            > beyond["store"]["expires"].as_u64().unwrap() + 90_000,
        "{beyond}"
    );
    let (code, text) = lab.cli(&["leases", "audit"]).unwrap();
    eprintln!("{text}");
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("other_subnet") && text.contains("7/1") && text.contains("6 disagreements"),
        "{text}"
    );

    // The background auditor (repair off) counts each kind once and
    // logs each disagreement once, however many passes see it.
    let stats = wait_until(Duration::from_secs(20), || {
        let s = plane_stats(&lab);
        let d = &s["disagreements"];
        let all = [
            "no_lease",
            "other_client",
            "other_subnet",
            "not_bound",
            "beyond_recovery",
            "missing",
        ]
        .iter()
        .all(|k| d[*k] == 1);
        (all && s["passes"].as_u64() >= Some(4)).then_some(s)
    })
    .unwrap_or_else(|| panic!("not counted: {}", plane_stats(&lab)));
    assert_eq!(stats["current"], 6, "{stats}");
    let logged: Vec<String> = lab
        .daemon()
        .lines()
        .into_iter()
        .filter(|l| l.contains("the XDP lease map and the lease store disagree"))
        .collect();
    assert_eq!(logged.len(), 6, "{logged:#?}");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("kind=other_subnet") && l.contains(&format!("ip={ip_a}"))),
        "{logged:#?}"
    );
    let metrics = {
        let (_, st) = json(&lab, &["stats"]);
        xdhcp::api::metrics::render(&st["arguments"])
    };
    assert!(
        metrics.contains("xdhcp_plane_disagreements_total{kind=\"beyond_recovery\"} 1")
            && metrics.contains("xdhcp_plane_disagreements_current 6"),
        "{metrics}"
    );
    let (_, st) = lab.cli(&["status"]).unwrap();
    eprintln!("{st}");
    assert!(st.contains("6 DISAGREEMENTS"), "{st}");

    // Repair on (a reload applies it): the five strays leave the map, the
    // missing entry stays missing (nothing to remove).
    let original = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        original.replace("audit_repair = false", "audit_repair = true"),
    )
    .unwrap();
    let (code, out) = lab.cli(&["reload"]).unwrap();
    assert_eq!(code, 0, "{out}");
    wait_until(Duration::from_secs(20), || {
        let (_, st) = json(&lab, &["status"]);
        (st["arguments"]["lease-map"]["repairs"] == 5).then_some(())
    })
    .unwrap_or_else(|| panic!("not repaired: {}", json(&lab, &["status"]).1));
    for k in [
        key_of([2, 0, 0, 0, 0xbb, 1]),
        key_of([2, 0, 0, 0, 0xbb, 2]),
        key_of(x),
        key_of(z),
        key_a,
    ] {
        assert!(map.get(&k, 0).is_err(), "{k:?} still in the map");
    }
    // The sync's own count still has the entry the test removed behind
    // its back; the kernel's, counted by the audit, does not.
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["bindings"], 4, "{st}");
    let (code, v) = json(&lab, &["leases", "audit"]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["arguments"]["map-entries"], 3, "{v}");
    assert_eq!(
        audit_kinds(&v),
        vec![("missing".to_string(), lg0_ip.to_string())],
        "{v}"
    );
    // The repaired client's lease lost its template with its entry: its
    // next renewal is the control plane's, which maps it again.
    let (_, show) = json(&lab, &["leases", "show", &ip_a.to_string()]);
    assert_eq!(
        (
            &show["arguments"]["fast-path"],
            &show["arguments"]["in-xdp-map"]
        ),
        (&Value::Bool(false), &Value::Bool(false)),
        "{show}"
    );
    let acks = lab.daemon().count("REQUEST -> ACK");
    let fast = fast_acks(&lab);
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20));
    lab.daemon()
        .wait_for_count("REQUEST -> ACK", acks + 1, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        fast_acks(&lab),
        fast,
        "the kernel answered a repaired client"
    );
    let (_, show) = json(&lab, &["leases", "show", &ip_a.to_string()]);
    assert_eq!(show["arguments"]["in-xdp-map"], true, "{show}");
    // The missing one's client binds again (control plane), and all agree.
    let r = loadgen(&lab, &["--clients", "4", "--phase", "dora"]);
    assert_eq!(r[0]["ok"], 4, "{:?}", r);
    let (code, v) = json(&lab, &["leases", "audit"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["arguments"]["map-entries"], 5, "{v}");
    assert_eq!(v["arguments"]["store-fast-path-bindings"], 5, "{v}");
    drop(client);
}

/// A lab under DORA, kernel renewals, rebinding, INIT-REBOOT, releases
/// and reloads that strip every binding: `leases audit` run throughout
/// finds nothing, and neither does the background auditor.
#[test]
fn a_clean_lab_under_mixed_load_audits_clean_repeatedly() {
    let config = CONFIG.replace("audit_repair = false", "audit_repair = true");
    let mut lab = DaemonLab::new("auditload", &config, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("").unwrap();
    lab.wait_event("bound ", 0, Duration::from_secs(20));
    let original = std::fs::read_to_string(&lab.config).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut audits = 0;
    let mut candidates = 0;
    std::thread::scope(|s| {
        let load = s.spawn(|| {
            for _ in 0..2 {
                loadgen(
                    &lab,
                    &[
                        "--clients",
                        "80",
                        "--rate",
                        "400",
                        "--phase",
                        "dora",
                        "--phase",
                        "renew",
                        "--phase",
                        "rebind",
                        "--phase",
                        "init-reboot",
                        "--phase",
                        "renew",
                        "--phase",
                        "release",
                    ],
                );
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut dns = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let (code, v) = json(&lab, &["leases", "audit"]);
            assert_eq!(code, 0, "audit {audits} under load: {v}");
            audits += 1;
            candidates += v["arguments"]["candidates"].as_u64().unwrap();
            if audits % 3 == 0 {
                // New options: every binding leaves the map.
                dns += 1;
                std::fs::write(
                    &lab.config,
                    original.replace("198.18.0.53", &format!("198.18.0.{}", 60 + dns % 2)),
                )
                .unwrap();
                let (code, out) = lab.cli(&["reload"]).unwrap();
                assert_eq!(code, 0, "{out}");
            }
            if audits % 2 == 0 {
                client.signal(SIGUSR1);
            }
        }
        load.join().unwrap();
    });
    assert!(audits >= 5, "only {audits} audits during the load");
    // In-flight changes the scan saw and the re-check dismissed.
    eprintln!("{audits} audits under load, {candidates} candidates dismissed");
    let (code, v) = json(&lab, &["leases", "audit"]);
    assert_eq!(code, 0, "{v}");
    let s = plane_stats(&lab);
    assert!(s["passes"].as_u64().unwrap() > audits, "{s}");
    for (k, n) in s["disagreements"].as_object().unwrap() {
        assert_eq!(n, 0, "background auditor found {k}: {s}");
    }
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["repairs"], 0, "{st}");
    assert!(
        !lab.daemon()
            .lines()
            .iter()
            .any(|l| l.contains("disagree") || l.contains("inconclusive")),
        "{:#?}",
        lab.daemon().lines()
    );
    drop(client);
}

/// `leases show` reads the real map entry: after a renewal the kernel
/// answered and did not report (within lease/8 of its last report), the
/// kernel's later end stands beside the store's; once a renewal is
/// reported, the two agree.
#[test]
fn leases_show_puts_the_kernels_later_end_beside_the_stores_until_reported() {
    let mut lab = DaemonLab::new("auditshow", CONFIG, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    let bound_at = Instant::now();
    let show =
        |lab: &DaemonLab| json(lab, &["leases", "show", &ip.to_string()]).1["arguments"].clone();
    let l = show(&lab);
    assert_eq!(l["in-xdp-map"], true, "{l}");
    let store_end = l["expires"].as_u64().unwrap();
    let k = &l["xdp-map"];
    assert!(
        k["expires"].as_u64().unwrap().abs_diff(store_end) <= 1
            && k["unreported-renewal"] == false
            && k["template-id"].is_u64()
            && l["map-key"].as_str().unwrap().starts_with("id 01:"),
        "{l}"
    );

    // 3 s later: the kernel renews to now + 120, 3 s past the stored end,
    // less than lease/8 (15 s): not reported.
    std::thread::sleep(Duration::from_secs(3));
    let fast = fast_acks(&lab);
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20));
    wait_until(Duration::from_secs(5), || {
        (fast_acks(&lab) > fast).then_some(())
    })
    .expect("the kernel answered");
    let l = show(&lab);
    let k = &l["xdp-map"];
    assert_eq!(
        l["expires"].as_u64().unwrap(),
        store_end,
        "store unchanged: {l}"
    );
    assert!(
        k["expires"].as_u64().unwrap() >= store_end + 2 && k["unreported-renewal"] == true,
        "the kernel's later end: {l}"
    );
    assert!(
        k["reported"].as_u64().unwrap().abs_diff(store_end) <= 1,
        "{l}"
    );
    let (code, text) = lab.cli(&["leases", "show", &ip.to_string()]).unwrap();
    eprintln!("{text}");
    assert_eq!(code, 0);
    assert!(
        text.contains("in XDP map") && text.contains("*") && text.contains("not yet reported"),
        "{text}"
    );
    let (code, v) = json(&lab, &["leases", "list"]);
    assert_eq!(code, 0);
    assert_eq!(
        v["arguments"]["leases"][0]["xdp-map"]["expires"], k["expires"],
        "{v}"
    );
    // An unreported renewal is not a disagreement; its age is exported.
    let (code, v) = json(&lab, &["leases", "audit"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["arguments"]["unreported-renewals"] == 1, "{v}");
    let age = v["arguments"]["oldest-unreported-renewal-secs"]
        .as_u64()
        .unwrap();
    assert!(age <= 3, "{v}");

    // 16 s after the bind a renewal moves the end by more than lease/8:
    // reported, stored, and the two views agree again.
    let wait = Duration::from_secs(17).saturating_sub(bound_at.elapsed());
    std::thread::sleep(wait);
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20));
    let l = wait_until(Duration::from_secs(5), || {
        let l = show(&lab);
        (l["expires"].as_u64().unwrap() > store_end + 10).then_some(l)
    })
    .expect("the report landed");
    // (udhcpc may send a second request within the second: the kernel
    // answers it without a report, an end a jiffy later.)
    let k = &l["xdp-map"];
    let (store, kernel) = (
        l["expires"].as_u64().unwrap(),
        k["expires"].as_u64().unwrap(),
    );
    assert!(
        kernel.abs_diff(store) <= 2 && k["reported"].as_u64().unwrap().abs_diff(store) <= 1,
        "{l}"
    );
    drop(client);
}
