//! The control API and the management CLI against a running daemon in the
//! lab, checked by their effect on real DHCP traffic.

use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use serde_json::Value;
use xdhcp_lab::daemon::{wait_until, DaemonLab};

const SIGUSR1: i32 = 10;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

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
end = "198.18.0.150"
"#;

fn json(lab: &DaemonLab, args: &[&str]) -> (i32, Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out) = lab.cli(&a).unwrap();
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    (code, v)
}

#[test]
fn cli_reads_the_daemon_and_a_deleted_lease_is_naked_at_its_next_renewal() {
    let mut lab = DaemonLab::new("control", CONFIG, None).unwrap();
    lab.start().unwrap();
    let mode = std::fs::metadata(lab.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket must be root-only");

    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mac = lab.cli.mac("cli0").unwrap();
    let mac_s = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    // status
    let (code, st) = json(&lab, &["status"]);
    assert_eq!(code, 0, "{st}");
    let a = &st["arguments"];
    assert_eq!(a["interfaces"][0]["name"], "srv0");
    assert_eq!(a["interfaces"][0]["xdp"], "native");
    assert_eq!(a["leases"], 1);
    assert_eq!(a["lease-map"]["bindings"], 1, "{st}");
    assert_eq!(a["lease-store"]["healthy"], true, "{st}");
    assert!(a["lease-store"]["batches"].as_u64().unwrap() >= 1, "{st}");
    let (code, text) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0);
    assert!(
        text.contains("XDP native") && text.contains("1 of 1048576 bindings"),
        "{text}"
    );

    // leases list / show
    let (code, text) = lab.cli(&["leases", "list"]).unwrap();
    assert_eq!(code, 0);
    let row = text
        .lines()
        .find(|l| l.starts_with(&ip.to_string()))
        .unwrap_or_else(|| panic!("{text}"));
    // The store's view and the kernel's, read from the map itself.
    assert!(
        row.contains(&mac_s) && row.contains("bound") && row.contains(" yes  "),
        "{row}"
    );
    let (_, v) = json(&lab, &["leases", "list"]);
    let l = &v["arguments"]["leases"][0];
    assert_eq!(l["in-xdp-map"], true, "{v}");
    assert_eq!(l["xdp-map"]["ip-address"], ip.to_string(), "{v}");
    let (code, v) = json(&lab, &["leases", "list", "--subnet", "198.18.1.0/24"]);
    assert_eq!(code, 3, "another subnet holds none: {v}");
    let (code, v) = json(&lab, &["leases", "show", &mac_s]);
    assert_eq!(
        (code, v["arguments"]["ip-address"].as_str()),
        (0, Some(&*ip.to_string())),
        "{v}"
    );
    let (code, _) = lab.cli(&["leases", "show", "198.18.0.149"]).unwrap();
    assert_eq!(code, 3);
    let (code, out) = lab
        .cli(&["leases", "list", "--subnet", "nonsense"])
        .unwrap();
    assert_eq!(code, 1, "{out}");

    // A renewal answered in the kernel shows in the stats.
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20));
    let fast = wait_until(Duration::from_secs(5), || {
        let (_, s) = json(&lab, &["stats"]);
        let x = &s["arguments"]["xdp"];
        let n = x["fp_ack_renewing"].as_u64().unwrap_or(0)
            + x["fp_ack_rebinding"].as_u64().unwrap_or(0);
        (n >= 1).then_some(s)
    })
    .expect("a fast-path ACK counted");
    let a = &fast["arguments"];
    assert!(a["sent"]["ACK"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(a["subnets"][0]["assigned-addresses"], 1, "{a}");
    let (code, text) = lab.cli(&["stats"]).unwrap();
    assert_eq!(code, 0);
    assert!(
        text.contains("fast path (XDP)") && text.contains("198.18.0.0/24"),
        "{text}"
    );

    // Delete: gone from the store and the lease map; the next renewal is
    // the control plane's, and it NAKs.
    let (code, out) = lab.cli(&["leases", "delete", &ip.to_string()]).unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, _) = lab.cli(&["leases", "show", &ip.to_string()]).unwrap();
    assert_eq!(code, 3);
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["bindings"], 0, "{st}");
    let naks = lab.daemon().count("REQUEST -> NAK");
    client.signal(SIGUSR1);
    lab.daemon()
        .wait_for_count("REQUEST -> NAK", naks + 1, Duration::from_secs(10))
        .unwrap();
    // udhcpc starts over and is bound again, by the control plane.
    let n = lab.events().len();
    lab.wait_event("bound ", n, Duration::from_secs(20));

    // Unknown commands are refused, nothing else happens.
    let (code, out) = lab.cli(&["leases", "delete", "not-an-id!"]).unwrap();
    assert_eq!(code, 1, "{out}");
    drop(client);
}

fn fast_acks(lab: &DaemonLab) -> u64 {
    let (_, s) = json(lab, &["stats"]);
    let x = &s["arguments"]["xdp"];
    ["fp_ack_renewing", "fp_ack_rebinding", "fp_ack_init_reboot"]
        .iter()
        .map(|k| x[*k].as_u64().unwrap_or(0))
        .sum()
}

/// Reload (CLI and SIGHUP): a bad file is refused with its line and
/// changes nothing; a good one changes the options of the very next
/// renewal (the control plane's), and the kernel answers the one after
/// with the new options.
#[test]
fn reload_refuses_bad_files_and_new_options_reach_the_next_renewal() {
    let mut lab = DaemonLab::new("reload", CONFIG, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("$dns").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    assert!(bound.ends_with(" 198.18.0.53"), "{bound}");
    let renew = |lab: &DaemonLab| {
        let n = lab.events().len();
        client.signal(SIGUSR1);
        lab.wait_event("renew ", n, Duration::from_secs(20))
    };
    assert!(renew(&lab).ends_with(" 198.18.0.53"));
    wait_until(Duration::from_secs(5), || {
        (fast_acks(&lab) >= 1).then_some(())
    })
    .expect("renewed in the kernel");
    let original = std::fs::read_to_string(&lab.config).unwrap();

    // A bad file: refused with file and line, nothing changes.
    std::fs::write(
        &lab.config,
        original.replace("name = \"srv0\"", "name = \"srv0\"\nxdp = \"turbo\""),
    )
    .unwrap();
    let (code, out) = lab.cli(&["reload"]).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:8:", lab.config.display())) && out.contains("turbo"),
        "{out}"
    );
    let (code, _) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0, "still serving");

    // A good one: new DNS server.
    std::fs::write(&lab.config, original.replace("198.18.0.53", "198.18.0.99")).unwrap();
    let (code, out) = lab.cli(&["reload"]).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 bindings answered by the control plane"),
        "{out}"
    );
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["bindings"], 0, "{st}");
    let acks = lab.daemon().count("REQUEST -> ACK");
    assert!(
        renew(&lab).ends_with(" 198.18.0.99"),
        "old options after reload"
    );
    assert!(
        lab.daemon().count("REQUEST -> ACK") > acks,
        "the control plane answered"
    );
    let fast = fast_acks(&lab);
    assert!(renew(&lab).ends_with(" 198.18.0.99"));
    wait_until(Duration::from_secs(5), || {
        (fast_acks(&lab) > fast).then_some(())
    })
    .expect("the kernel answers again, with the new template");

    // SIGHUP does the same.
    std::fs::write(&lab.config, original.replace("198.18.0.53", "198.18.0.77")).unwrap();
    lab.daemon().signal(1);
    lab.daemon()
        .wait_for("SIGHUP: configuration reloaded", Duration::from_secs(5))
        .unwrap();
    assert!(renew(&lab).ends_with(" 198.18.0.77"));
    drop(client);
}

/// Hitless restart: `xdhcp stop --keep-fast-path` leaves the program
/// answering renewals with no daemon; the next daemon adopts it (program
/// swapped atomically, the renewals made meanwhile stored); `xdhcp
/// detach` removes it all.
#[test]
fn the_fast_path_outlives_a_stopped_daemon_and_the_next_one_adopts_it() {
    // A 40 s lease: the kernel reports renewals that move the stored end
    // by lease/8 (5 s), and T1 (20 s) stays out of the way.
    let config = CONFIG.replace("lease_time = 120", "lease_time = 40");
    let mut lab = DaemonLab::new("hitless", &config, None).unwrap();
    let pin_dir = lab.pin_in_host_bpffs().unwrap();
    lab.start().unwrap();
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["hitless-stop"]["possible"], true, "{st}");
    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();

    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0, "{out}");
    let (status, lines) = lab.wait_stopped().unwrap();
    assert!(status.success(), "{lines:?}");
    assert_eq!(
        lab.srv.xdp_mode("srv0").unwrap().as_deref(),
        Some("xdp"),
        "still attached"
    );

    // No daemon: the kernel answers (and reports: the lease is 5 s older).
    std::thread::sleep(Duration::from_millis(5_500));
    let n = lab.events().len();
    client.signal(SIGUSR1);
    let renew = lab.wait_event("renew ", n, Duration::from_secs(20));
    assert!(renew.contains(&ip.to_string()), "{renew}");

    // The next daemon adopts the program and stores what happened meanwhile.
    lab.start().unwrap();
    let d = lab.daemon();
    d.wait_for("adopted the running XDP fast path", Duration::from_secs(5))
        .unwrap();
    let stored = d
        .wait_for(
            "renewals answered while no daemon ran, stored",
            Duration::from_secs(5),
        )
        .unwrap();
    // (At least the one above; the unclean-stop recovery may already
    // cover its expiry, so it need not extend anything.)
    assert!(!stored.contains("events=0"), "{stored}");
    let (_, st) = json(&lab, &["status"]);
    assert_eq!(st["arguments"]["lease-map"]["bindings"], 1, "{st}");
    let fast = fast_acks(&lab);
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20));
    wait_until(Duration::from_secs(5), || {
        (fast_acks(&lab) > fast).then_some(())
    })
    .expect("the adopted fast path answers");

    // A reload keeps what the command line set (here --pin-dir): the fast
    // path can still be kept afterwards.
    let (code, out) = lab.cli(&["reload"]).unwrap();
    assert_eq!(code, 0, "{out}");

    // Stop again keeping it; a daemon whose configuration no longer runs
    // XDP on srv0 detaches what was left there.
    let (code, _) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0);
    lab.wait_stopped().unwrap();
    let original = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        original.replace("name = \"srv0\"", "name = \"srv0\"\nxdp = \"off\""),
    )
    .unwrap();
    lab.start().unwrap();
    lab.daemon()
        .wait_for(
            "detached a fast path a previous daemon left",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        lab.srv.xdp_mode("srv0").unwrap(),
        None,
        "stale fast path detached"
    );
    lab.stop(15).unwrap();
    std::fs::write(&lab.config, original).unwrap();

    // And `xdhcp detach` removes a kept fast path with no daemon at all.
    lab.start().unwrap();
    let (code, _) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0);
    lab.wait_stopped().unwrap();
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap().as_deref(), Some("xdp"));
    let out = Command::new(xdhcp_lab::proc::xdhcp_bin())
        .args(["detach", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap(), None, "detached");
    assert!(!pin_dir.exists());
    drop(client);
}

/// Reservations added with the CLI are offered to their client, kept
/// across restarts and deletable; leases can be released and added.
#[test]
fn reservations_and_lease_edits_take_effect_on_real_traffic() {
    let mut lab = DaemonLab::new("reserve", CONFIG, None).unwrap();
    lab.start().unwrap();
    let mac = lab.cli.mac("cli0").unwrap();
    let mac_s = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    let (code, out) = lab
        .cli(&["reservations", "add", "198.18.0.42", &mac_s])
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, out) = lab
        .cli(&["reservations", "add", "198.18.0.42", "02:00:00:00:00:01"])
        .unwrap();
    assert_eq!(code, 1, "twice the same address: {out}");
    let (code, out) = lab
        .cli(&["reservations", "add", "10.0.0.1", &mac_s])
        .unwrap();
    assert_eq!(code, 1, "outside every subnet: {out}");
    let (_, v) = json(&lab, &["reservations", "list"]);
    assert_eq!(v["arguments"]["reservations"][0]["source"], "api", "{v}");

    // A real client is offered its reservation.
    let out = lab
        .cli
        .command_from(
            Command::new("busybox")
                .args(["udhcpc", "-i", "cli0", "-n", "-q", "-t", "3", "-T", "1"]),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, v) = json(&lab, &["leases", "show", &mac_s]);
    assert_eq!(
        (code, v["arguments"]["ip-address"].as_str()),
        (0, Some("198.18.0.42")),
        "{v}"
    );

    // Kept across a restart.
    lab.stop(15).unwrap();
    lab.start().unwrap();
    let (code, v) = json(&lab, &["reservations", "list"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["arguments"]["reservations"][0]["ip-address"],
        "198.18.0.42"
    );

    // Release, then the address is free; delete the reservation.
    let (code, out) = lab.cli(&["leases", "release", "198.18.0.42"]).unwrap();
    assert_eq!(code, 0, "{out}");
    let (_, v) = json(&lab, &["leases", "show", "198.18.0.42"]);
    assert_eq!(v["arguments"]["state"], "released", "{v}");
    let (code, out) = lab.cli(&["reservations", "delete", "198.18.0.42"]).unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, _) = lab.cli(&["reservations", "list"]).unwrap();
    assert_eq!(code, 3, "none left");

    // An operator-made lease; another client cannot take its address.
    let (code, out) = lab
        .cli(&[
            "leases",
            "add",
            "198.18.0.120",
            "02:00:00:00:00:77",
            "--lease-time",
            "600",
        ])
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, v) = json(&lab, &["leases", "show", "02:00:00:00:00:77"]);
    assert_eq!(
        (code, v["arguments"]["state"].as_str()),
        (0, Some("bound")),
        "{v}"
    );
    let (code, out) = lab
        .cli(&["leases", "add", "198.18.0.120", "02:00:00:00:00:78"])
        .unwrap();
    assert_eq!(code, 1, "{out}");
    let (code, out) = lab
        .cli(&["reservations", "add", "198.18.0.120", "02:00:00:00:00:78"])
        .unwrap();
    assert_eq!(code, 1, "reserving another client's leased address: {out}");
}
