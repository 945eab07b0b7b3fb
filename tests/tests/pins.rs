//! A pinned fast path is only kept when the next daemon can use it: the
//! pins must outlive the daemon (`stop --keep-fast-path` refuses when they
//! would vanish with it).
//! The kept-and-adopted path itself is control.rs's
//! `the_fast_path_outlives_a_stopped_daemon_and_the_next_one_adopts_it`.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use xdhcp_lab::daemon::DaemonLab;

const SIGUSR1: i32 = 10;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[interface]]
name = "srv0"

[options]
lease_time = 40

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.150"
"#;

fn status(lab: &DaemonLab) -> Value {
    let (code, out) = lab.cli(&["status", "--json"]).unwrap();
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// The client renews (SIGUSR1) and gets an answer; returns the event.
fn renewal_answered(lab: &DaemonLab, client: &xdhcp_lab::proc::Logged) -> String {
    let n = lab.events().len();
    client.signal(SIGUSR1);
    lab.wait_event("renew ", n, Duration::from_secs(20))
}

/// What a new user does: the daemon under `ip netns exec` (a private
/// mount namespace with a fresh /sys) with pin_dir under /sys/fs/bpf.
/// The daemon mounts a bpffs there that goes with it, so a hitless stop
/// would leave nothing: it is refused, with why and how to fix it, and
/// the daemon keeps serving.
#[test]
fn a_hitless_stop_is_refused_when_the_pins_would_vanish_with_the_daemon() {
    let mut lab = DaemonLab::new("pinpriv", CONFIG, None).unwrap();
    lab.pin_dir = Some(PathBuf::from(format!("/sys/fs/bpf/{}", lab.lab.prefix())));
    lab.start().unwrap();
    lab.daemon()
        .wait_for(
            "`xdhcp stop --keep-fast-path` will be refused",
            Duration::from_secs(5),
        )
        .unwrap();
    let st = status(&lab);
    let h = &st["arguments"]["hitless-stop"];
    assert_eq!(h["possible"], false, "{st}");
    assert!(
        h["why"].as_str().unwrap().contains("mounted itself"),
        "{st}"
    );
    let (code, out) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hitless stop  NOT possible"), "{out}");

    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip = bound.split_whitespace().nth(1).unwrap().to_string();

    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_ne!(code, 0, "refused: {out}");
    for needle in [
        "would not outlive the daemon",
        "mount namespace that is not PID 1's",
        "mount -t bpf",
        "systemd unit",
        "still serving",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from: {out}");
    }
    // Still serving: the control API and DHCP answer.
    assert_eq!(status(&lab)["result"], 0);
    let renew = renewal_answered(&lab, &client);
    assert!(renew.contains(&ip), "{renew}");
    // A plain stop still stops, and detaches.
    let (code, out) = lab.cli(&["stop"]).unwrap();
    assert_eq!(code, 0, "{out}");
    let (status, lines) = lab.wait_stopped().unwrap();
    assert!(status.success(), "{lines:?}");
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap(), None);
    drop(client);
}
