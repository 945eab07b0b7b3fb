//! A DISCOVER and SELECTING-REQUEST flood from random MACs on one line
//! (a relay port, its option 82 circuit-id), sent by the load generator's
//! XDP engine on a second link at well over ten times the control plane's
//! DORA capacity, while 1,000 bound clients renew and 100 new clients join
//! on another line. Run with the XDP rate limits on and off: with them,
//! no renewal is lost, every new client is bound, the flooding line binds
//! only what its bucket admits, and the daemon's memory stays bounded.
//! Each run prints its figures (RELIABILITY.md, "Floods").

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp_lab::{daemon::DaemonLab, proc::loadgen_bin};

/// Two subnets: the subscribers' on srv0 and, behind the flooding
/// relay, its own (3,584 addresses each; the flood requests them all in
/// turn). Limits: per MAC everywhere, per line on the relay's subnet.
const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
lease_db_sync = "normal"

[[interface]]
name = "srv0"
[[interface]]
name = "srv1"

[options]
lease_time = 3600

@LIMITS@

[[subnet]]
id = 1
subnet = "198.18.0.0/20"
interface = "srv0"
[[subnet.pool]]
start = "198.18.1.0"
end = "198.18.14.255"

[[subnet]]
id = 2
subnet = "198.18.16.0/20"
relays = ["198.18.16.1"]
[[subnet.pool]]
start = "198.18.17.0"
end = "198.18.30.255"
@SUBNET_LIMITS@
"#;

const POOL: u64 = 3584;
const LIMITS: (&str, &str) = (
    "[rate_limits]\nmac_per_sec = 2\nmac_burst = 10\n",
    "[subnet.rate_limits]\nline_per_sec = 50\nline_burst = 100\n",
);
const FLOOD_SECS: f64 = 6.0;

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn loadgen(lab: &DaemonLab, iface: &str, args: &[String]) -> Vec<Value> {
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(["--iface", iface, "--json", "--timeout-ms", "500"])
        .arg("--server-socket")
        .arg(lab.socket())
        .args(args);
    let out = lab.cli.command_from(&cmd).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v.as_array().unwrap().clone()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Leases held in `subnet`.
fn leases(lab: &DaemonLab, subnet: &str) -> u64 {
    let (code, out) = lab
        .cli(&["leases", "list", "--subnet", subnet, "--json"])
        .unwrap();
    if code == 3 {
        return 0;
    }
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["arguments"]["leases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["state"] != "released" && l["state"] != "expired")
                .count() as u64
        })
        .unwrap_or_else(|| panic!("no lease list in {out}"))
}

#[derive(Debug)]
struct Figures {
    flood_sent: u64,
    flood_offered_per_s: f64,
    dropped_in_xdp: u64,
    reached_control_plane: u64,
    renewals_sent: u64,
    renewals_lost: u64,
    new_clients_bound: u64,
    flood_leases: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn run(tag: &str, limits: (&str, &str)) -> Figures {
    let config = CONFIG
        .replace("@LIMITS@", limits.0)
        .replace("@SUBNET_LIMITS@", limits.1);
    let mut lab = DaemonLab::new(tag, &config, None).unwrap();
    lab.rust_log = Some("info".into());
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    // One queue per generator thread.
    lab.lab
        .veth_with_queues(&srv, "srv1", None, &cli, "cli1", None, 2)
        .unwrap();
    lab.start().unwrap();
    let pid = lab.daemon().pid();
    let srv1_mac = lab.srv.mac("srv1").unwrap();
    let srv1_mac = srv1_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    let t0 = Instant::now();
    let (flood, renew, fresh, rss_before_kib) = thread::scope(|s| {
        // 1,000 clients bind (DORA, before the flood), then renew
        // throughout it, on cli0.
        let renew = s.spawn(|| {
            loadgen(
                &lab,
                "cli0",
                &args(&[
                    "--clients",
                    "1000",
                    "--rate",
                    "1000",
                    "--phase",
                    "dora",
                    "--phase",
                    "renew",
                    "--count",
                    "8000",
                ]),
            )
        });
        thread::sleep(Duration::from_millis(2500));
        let rss_before_kib = rss_kib(pid);
        let flood = s.spawn(|| {
            loadgen(
                &lab,
                "cli1",
                &args(&[
                    "--clients",
                    &POOL.to_string(),
                    "--synthetic",
                    "198.18.17.0",
                    "--server",
                    "198.18.0.1",
                    "--server-mac",
                    &srv1_mac,
                    "--phase",
                    "flood",
                    "--flood-giaddr",
                    "198.18.16.1",
                    "--flood-circuit",
                    "olt7/1/1",
                    "--threads",
                    "2",
                    "--count",
                    "20000000",
                    "--duration",
                    &FLOOD_SECS.to_string(),
                ]),
            )
        });
        thread::sleep(Duration::from_millis(1000));
        // 100 new clients join on cli0 (another line) during the flood.
        let fresh = loadgen(
            &lab,
            "cli0",
            &args(&[
                "--clients",
                "100",
                "--rate",
                "100",
                "--mac-offset",
                "100000",
                "--phase",
                "dora",
            ]),
        );
        (
            flood.join().unwrap(),
            renew.join().unwrap(),
            fresh,
            rss_before_kib,
        )
    });
    assert!(t0.elapsed() < Duration::from_secs(60));
    let f = &flood[0];
    let rss_after_kib = rss_kib(pid);
    let flood_leases = leases(&lab, "198.18.16.0/20");
    let fresh_bound = n(&fresh[0], "ok");
    assert_eq!(n(&renew[0], "ok"), 1000, "{}", renew[0]);
    let figures = Figures {
        flood_sent: n(f, "sent"),
        flood_offered_per_s: f["offered_per_s"].as_f64().unwrap(),
        dropped_in_xdp: n(&f["server"], "xdp_rate_limited"),
        reached_control_plane: n(&f["server"], "control_plane_received"),
        renewals_sent: n(&renew[1], "sent"),
        renewals_lost: n(&renew[1], "sent") - n(&renew[1], "ok"),
        new_clients_bound: fresh_bound,
        flood_leases,
        rss_before_kib,
        rss_after_kib,
    };
    eprintln!(
        "flood figures ({tag}, limits {}): {figures:#?}",
        if limits.0.is_empty() { "off" } else { "on" }
    );
    figures
}

#[test]
fn a_flooding_line_is_stopped_in_the_driver_and_subscribers_are_still_served() {
    let on = run("floodon", LIMITS);
    let off = run("floodoff", ("", ""));
    eprintln!("limits on: {on:?}\nlimits off: {off:?}");
    // Ten times the control plane's capacity, measured in the same run:
    // what it took in per second with the flood unlimited (it was
    // saturated: its socket overflowed), in frames, against frames offered.
    let intake_per_s = off.reached_control_plane as f64 / FLOOD_SECS;
    for f in [&on, &off] {
        assert_eq!(f.renewals_sent, 8000, "every renewal sent: {f:?}");
        assert!(
            f.flood_offered_per_s >= 10.0 * intake_per_s,
            "the flood must offer ten times what the control plane takes in ({intake_per_s:.0} frames/s): {f:?}"
        );
    }
    // With limits: nothing lost, everyone new served, the flood's line
    // bound no more than its bucket let through (burst + rate × time;
    // half of what passes is SELECTING REQUESTs), memory bounded.
    assert_eq!(on.renewals_lost, 0, "{on:?}");
    assert_eq!(on.new_clients_bound, 100, "{on:?}");
    let admitted = 100 + (50.0 * (FLOOD_SECS + 2.0)) as u64;
    assert!(on.flood_leases <= admitted, "{on:?}");
    assert!(on.flood_leases < POOL, "{on:?}");
    assert!(
        on.dropped_in_xdp >= on.flood_sent - admitted - 1000,
        "{on:?}"
    );
    assert!(on.rss_after_kib < on.rss_before_kib + 64 * 1024, "{on:?}");
    // Without: the flood reaches the control plane, which it never did
    // with them.
    assert_eq!(off.dropped_in_xdp, 0, "{off:?}");
    assert!(
        off.reached_control_plane > on.reached_control_plane,
        "{off:?} vs {on:?}"
    );
}

/// A broken CPE: one MAC sending REQUESTs for an address it does not hold
/// as fast as the generator can, while 100 new clients join on the same
/// line. Its MAC's bucket is all it costs.
#[test]
fn a_looping_client_costs_its_own_bucket_not_the_server() {
    let config = CONFIG
        .replace("@LIMITS@", LIMITS.0)
        .replace("@SUBNET_LIMITS@", "");
    let mut lab = DaemonLab::new("floodloop", &config, None).unwrap();
    lab.rust_log = Some("info".into());
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    lab.lab
        .veth(&srv, "srv1", None, &cli, "cli1", None)
        .unwrap();
    lab.start().unwrap();
    let (looping, fresh) = thread::scope(|s| {
        let looping = s.spawn(|| {
            loadgen(
                &lab,
                "cli0",
                &args(&[
                    "--clients",
                    "1",
                    "--synthetic",
                    "198.18.5.5",
                    "--server",
                    "198.18.0.1",
                    "--phase",
                    "renew",
                    "--count",
                    "2000000",
                    "--duration",
                    "4",
                ]),
            )
        });
        thread::sleep(Duration::from_millis(500));
        let fresh = loadgen(
            &lab,
            "cli0",
            &args(&[
                "--clients",
                "100",
                "--rate",
                "100",
                "--mac-offset",
                "100000",
                "--phase",
                "dora",
            ]),
        );
        (looping.join().unwrap(), fresh)
    });
    let l = &looping[0];
    eprintln!(
        "looping client: sent {} ({:.0}/s), dropped in XDP {}, control plane received {}; new clients bound {}",
        n(l, "sent"),
        l["offered_per_s"].as_f64().unwrap(),
        n(&l["server"], "xdp_rate_limited"),
        n(&l["server"], "control_plane_received"),
        n(&fresh[0], "ok")
    );
    assert_eq!(n(&fresh[0], "ok"), 100, "{}", fresh[0]);
    // Its burst (10) and 2/s over the run, and the new clients' frames,
    // reached the control plane; the rest was dropped in the driver.
    assert!(n(l, "sent") > 10_000, "{l}");
    assert!(
        n(&l["server"], "xdp_rate_limited") >= n(l, "sent") - 10 - 2 * 8,
        "{l}"
    );
    assert!(n(&l["server"], "control_plane_received") < 1000, "{l}");
}
