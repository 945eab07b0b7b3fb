//! Offer holds must not starve a pool (issue 20): a DISCOVER storm from
//! random MACs, or a slow trickle of one DISCOVER per address per hold
//! time, while real clients join a small pool. Bounded in count and time.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp_lab::{daemon::DaemonLab, proc::loadgen_bin};

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
offer_hold_secs = 30

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
end = "198.18.0.29"
"#;

/// loadgen's DISCOVER storm from `clients` distinct MACs, in the
/// background (the caller waits for it).
fn storm(lab: &DaemonLab, clients: &str, rate: &str, secs: &str) -> std::process::Child {
    let mut cmd = Command::new(loadgen_bin());
    cmd.args([
        "--iface",
        "cli0",
        "--json",
        "--timeout-ms",
        "200",
        "--clients",
        clients,
        "--rate",
        rate,
        "--duration",
        secs,
        "--count",
        "1000000",
        "--phase",
        "discover",
    ]);
    lab.cli
        .command_from(&cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The time from a udhcpc's start to its "bound" event.
fn join(lab: &DaemonLab) -> Duration {
    let n = lab.events().len();
    let t0 = Instant::now();
    let _client = lab.udhcpc("$lease").unwrap();
    lab.wait_event("bound ", n, Duration::from_secs(15));
    t0.elapsed()
}

#[test]
fn a_discover_storm_from_random_macs_does_not_keep_new_clients_out() {
    let mut lab = DaemonLab::new("ofstorm", CONFIG, None).unwrap();
    lab.start().unwrap();
    // 1,500 DISCOVERs a second from 50,000 MACs for 10 s, into a pool of 20.
    let gen = storm(&lab, "50000", "1500", "10");
    std::thread::sleep(Duration::from_secs(3));
    let took = join(&lab);
    let out = gen.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report[0]["sent"].as_u64().unwrap();
    assert!(sent >= 10_000, "the storm sent {sent} DISCOVERs");
    let st = lab.stats();
    let sn = &st["arguments"]["subnets"][0];
    eprintln!("storm: {sent} DISCOVERs; client bound in {took:?}; subnet {sn}");
    assert!(
        sn["offers-taken-back"].as_u64().unwrap() > 1000,
        "held offers yielded: {sn}"
    );
    // The storm turns the pool's offers over every few ms, and udhcpc
    // answers an OFFER in tens of ms: its offer is taken back before its
    // REQUEST arrives, and the REQUEST wins it back from the storm's hold.
    let naks = lab.events().iter().filter(|e| e.starts_with("nak")).count();
    assert!(
        naks == 0 && took < Duration::from_secs(2),
        "a new client joined a stormed pool in {took:?} after {naks} NAKs (must be about a second); events {:?}",
        lab.events()
    );
    // The storm's line holds its offers for 1 s now, and `stats` names it.
    let lines = st["arguments"]["offer-lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l["hold-secs"] == 1),
        "the storming line's hold shrank: {lines:?}"
    );
}

#[test]
fn offers_held_by_a_trickle_yield_to_a_new_client() {
    let mut lab = DaemonLab::new("oftrickle", CONFIG, None).unwrap();
    lab.start().unwrap();
    // One DISCOVER per pool address per hold time keeps a pool of 20
    // closed with fixed 30 s holds: 40 of them over 2 s fill it.
    let gen = storm(&lab, "1000", "20", "2");
    let out = gen.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sn = &lab.stats()["arguments"]["subnets"][0];
    assert!(
        sn["offers-taken-back"].as_u64().unwrap() > 0,
        "the pool ran out of free addresses: {sn}"
    );
    let took = join(&lab);
    assert!(
        took < Duration::from_secs(2),
        "a new client joined a pool held by offers in {took:?} (must be about a second)"
    );
    let (code, out) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("WARNING") && out.contains("offers held"),
        "{out}"
    );
}
