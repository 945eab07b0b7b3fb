//! A pinned fast path is only kept when the next daemon can use it: the
//! pins must outlive the daemon (`stop --keep-fast-path` refuses when they
//! would vanish with it), and the next daemon must read them as they were
//! written (pins of another layout are refused before anything changes).
//! The kept-and-adopted path itself is control.rs's
//! `the_fast_path_outlives_a_stopped_daemon_and_the_next_one_adopts_it`.

use std::{path::PathBuf, process::Command, time::Duration};

use dhcp_common::{Layout, LAYOUT_VERSION, MAP_LAYOUT};
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

/// Pins left by a daemon whose maps hold another layout are refused at
/// the next start, before anything is detached or replaced and before the
/// store is recovered: the old program keeps answering renewals, and the
/// message names the old layout and `xdhcp detach`. Pins from before layout records (none
/// pinned) are refused whatever their sizes.
#[test]
fn pins_of_another_layout_are_refused_before_anything_is_detached() {
    let mut lab = DaemonLab::new("pinlayout", CONFIG, None).unwrap();
    let pin_dir = lab.pin_in_host_bpffs().unwrap();
    lab.start().unwrap();
    let st = status(&lab);
    assert_eq!(st["arguments"]["hitless-stop"]["possible"], true, "{st}");
    assert!(pin_dir.join(MAP_LAYOUT).exists(), "layout recorded");
    let client = lab.udhcpc("").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(20));
    let ip = bound.split_whitespace().nth(1).unwrap().to_string();

    // Pins without a record are from before layout records, two layouts
    // back (or their record was lost): refused, whatever their sizes.
    // With the record, adopted.
    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0, "{out}");
    lab.wait_stopped().unwrap();
    std::fs::remove_file(pin_dir.join(MAP_LAYOUT)).unwrap();
    let refused = xdhcp::xdp::pins::check_layout(&pin_dir).unwrap_err();
    assert!(
        format!("{refused:#}").contains("no layout record"),
        "{refused:#}"
    );
    xdhcp::xdp::pins::record_layout(&pin_dir, &Layout::CURRENT).unwrap();
    lab.start().unwrap();
    lab.daemon()
        .wait_for("adopted the running XDP fast path", Duration::from_secs(5))
        .unwrap();
    assert!(pin_dir.join(MAP_LAYOUT).exists(), "layout recorded again");

    // A daemon with other counters (a release that added some) left
    // these: converted, the renewals still answered by the kernel.
    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0, "{out}");
    lab.wait_stopped().unwrap();
    let fewer_counters = Layout {
        stats: Layout::CURRENT.stats - 8,
        ..Layout::CURRENT
    };
    xdhcp::xdp::pins::record_layout(&pin_dir, &fewer_counters).unwrap();
    lab.start().unwrap();
    lab.daemon()
        .wait_for("this layout with other counters", Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        xdhcp::xdp::pins::check_layout(&pin_dir).unwrap(),
        xdhcp::xdp::pins::PinnedLayout::Recorded,
        "this build's record after the conversion"
    );
    let renew = renewal_answered(&lab, &client);
    assert!(renew.contains(&ip), "the new program answers: {renew}");

    // A daemon with another layout left these.
    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0, "{out}");
    lab.wait_stopped().unwrap();
    let other = Layout {
        version: LAYOUT_VERSION + 1,
        ..Layout::CURRENT
    };
    xdhcp::xdp::pins::record_layout(&pin_dir, &other).unwrap();
    let pins_before = pins(&pin_dir);
    let store_before = stored(&lab);
    // The stop kept the fast path, so the store is unclean: a start that
    // got as far as recovery would move every end to now + lease time.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, lines) = lab.start_refused().unwrap();
    assert!(!status.success(), "{lines:?}");
    let all = lines.join("\n");
    for needle in [
        format!(
            "left by a daemon with layout version {}",
            LAYOUT_VERSION + 1
        ),
        format!("this xdhcp has layout version {LAYOUT_VERSION}"),
        "converts pinned maps only from the layout before it".into(),
        "xdhcp detach --pin-dir".into(),
    ] {
        assert!(all.contains(&needle), "{needle:?} missing: {all}");
    }
    // Nothing was touched: the store not even recovered, same pins,
    // still attached, still answering.
    assert_eq!(stored(&lab), store_before, "refused before recovery");
    assert_eq!(pins(&pin_dir), pins_before);
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap().as_deref(), Some("xdp"));
    let renew = renewal_answered(&lab, &client);
    assert!(renew.contains(&ip), "the old program answers: {renew}");

    // What the message says to do works.
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
    lab.start().unwrap();
    let renew = renewal_answered(&lab, &client);
    assert!(renew.contains(&ip), "{renew}");
    assert!(pin_dir.join(MAP_LAYOUT).exists());
    lab.stop(15).unwrap();
    drop(client);
}

/// Every lease row, as the store holds it.
fn stored(lab: &DaemonLab) -> Vec<(i64, i64, i64)> {
    let c = rusqlite::Connection::open(lab.db()).unwrap();
    let mut q = c
        .prepare("SELECT ip, state, expires FROM leases ORDER BY ip")
        .unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn pins(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
