//! `xdhcp serve` as an operator runs it: it attaches, receives DHCP, and on
//! SIGINT/SIGTERM flushes, detaches and exits 0 leaving nothing behind.

use std::{process::Command, time::Duration};

use xdhcp_lab::{
    daemon::DaemonLab,
    frame::FrameSpec,
    proc::{xdhcp_bin, Logged},
    raw::RawSocket,
};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

const CONFIG: &str =
    "[server]\nserver_id = \"198.18.0.1\"\nlease_db = \"@DB@\"\n\n[[interface]]\nname = \"srv0\"\n";

fn lifecycle(tag: &str, signal: i32, signame: &str) {
    let mut lab = DaemonLab::new(tag, CONFIG, None).unwrap();
    lab.start().unwrap();
    assert_eq!(
        lab.srv.xdp_mode("srv0").unwrap().as_deref(),
        Some("xdp"),
        "native XDP on veth"
    );

    let sock = RawSocket::open(&lab.cli, "cli0").unwrap();
    let mac = lab.cli.mac("cli0").unwrap();
    sock.send(&FrameSpec::dhcp_request(mac, 1).build()).unwrap();
    sock.send(&FrameSpec::dhcp_request(mac, 3).build()).unwrap();
    // No subnet is configured: both are seen and dropped for that reason.
    lab.daemon()
        .wait_for("DISCOVER -> no_subnet", Duration::from_secs(5))
        .unwrap();
    lab.daemon()
        .wait_for("REQUEST -> ", Duration::from_secs(5))
        .unwrap();

    let (status, lines) = lab.stop(signal).unwrap();
    let log = lines.join("\n");
    assert!(status.success(), "exit {status}\n{log}");
    assert!(log.contains(&format!("{signame}: shutting down")), "{log}");
    let counters = lines
        .iter()
        .find(|l| l.contains("xdp counters"))
        .expect("counters line");
    assert!(counters.contains("dhcp_requests=2 "), "{counters}");
    assert!(counters.contains("control_plane_received=2"), "{counters}");
    assert_eq!(
        lab.srv.xdp_mode("srv0").unwrap(),
        None,
        "XDP left attached after exit"
    );
}

#[test]
fn sigterm_detaches_and_exits_cleanly() {
    lifecycle("sigterm", SIGTERM, "SIGTERM");
}

#[test]
fn sigint_detaches_and_exits_cleanly() {
    lifecycle("sigint", SIGINT, "SIGINT");
}

#[test]
fn xdp_off_serves_from_the_socket_alone() {
    let mut lab = DaemonLab::new("xdpoff", &format!("{CONFIG}xdp = \"off\"\n"), None).unwrap();
    lab.start().unwrap();
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap(), None);
    let sock = RawSocket::open(&lab.cli, "cli0").unwrap();
    sock.send(&FrameSpec::dhcp_request(lab.cli.mac("cli0").unwrap(), 1).build())
        .unwrap();
    lab.daemon()
        .wait_for("DISCOVER -> ", Duration::from_secs(5))
        .unwrap();
    assert!(lab.stop(SIGTERM).unwrap().0.success());
}

#[test]
fn missing_interface_fails_with_its_name_and_leaves_nothing() {
    let lab = DaemonLab::new(
        "noiface",
        &format!("{CONFIG}[[interface]]\nname = \"nosuch0\"\n"),
        None,
    )
    .unwrap();
    let mut d = Logged::spawn(
        &lab.srv,
        Command::new(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&lab.config),
        None,
    )
    .unwrap();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    let log = d.lines().join("\n");
    assert!(!status.success(), "{log}");
    assert!(log.contains("nosuch0"), "{log}");
    assert_eq!(
        lab.srv.xdp_mode("srv0").unwrap(),
        None,
        "partial start left XDP on srv0"
    );
}

#[test]
fn bad_config_is_refused_with_its_line() {
    let lab = DaemonLab::new("badcfg", &format!("{CONFIG}xdp = \"turbo\"\n"), None).unwrap();
    let mut d = Logged::spawn(
        &lab.srv,
        Command::new(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&lab.config),
        None,
    )
    .unwrap();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    let log = d.lines().join("\n");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("{}:7:", lab.config.display())),
        "{log}"
    );
    assert!(log.contains("turbo"), "{log}");
    assert_eq!(lab.srv.xdp_mode("srv0").unwrap(), None);
}

/// The daemon as dist/xdhcp.service runs it: an unprivileged user holding
/// only the unit's ambient capabilities. A real client gets a lease and
/// renews it in the kernel.
#[test]
fn runs_unprivileged_with_the_units_capabilities() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/xdhcp.service"
    ))
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit names its capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let config = format!(
        "{CONFIG}\n[options]\nlease_time = 60\n\n[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\ninterface = \"srv0\"\n[[subnet.pool]]\nstart = \"198.18.0.100\"\nend = \"198.18.0.110\"\n"
    );
    let mut lab = DaemonLab::new("unpriv", &config, None).unwrap();
    // Pinned too, as the unit does: a directory the user owns in a bpffs
    // it may traverse (the unit's ExecStartPre prepares the same).
    let pin_dir = lab.pin_in_host_bpffs().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir_all(&pin_dir).unwrap();
        std::os::unix::fs::chown(&pin_dir, Some(65534), Some(65534)).unwrap();
        let root = pin_dir.parent().unwrap();
        let mode = std::fs::metadata(root).unwrap().permissions().mode();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
    }
    let d = Logged::spawn(
        &lab.srv,
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"))
            .arg(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&lab.config)
            .arg("--control-socket")
            .arg(lab.socket())
            .arg("--pin-dir")
            .arg(&pin_dir)
            .env("RUST_LOG", "info,xdhcp=debug"),
        None,
    )
    .unwrap();
    d.wait_for("xdhcp serving", Duration::from_secs(30))
        .unwrap();
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
        "{}\n{:?}",
        String::from_utf8_lossy(&out.stderr),
        d.lines()
    );
    d.wait_for("REQUEST -> ACK", Duration::from_secs(5))
        .unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
    assert!(
        uid.lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "not running as nobody: {uid}"
    );
    // The control socket works for root (the operator).
    let (code, text) = lab.cli(&["status"]).unwrap();
    assert_eq!(code, 0, "{text}");
    // Unprivileged, it still tells that its pins outlive it.
    assert!(text.contains("hitless stop  possible"), "{text}");
    d.signal(SIGTERM);
}
