//! `xdhcp serve` as an operator runs it: it attaches, receives DHCP on its
//! socket, and on SIGINT/SIGTERM detaches and exits 0 leaving nothing.

use std::{process::Command, time::Duration};

use xdhcp_lab::{
    frame::FrameSpec,
    proc::{xdhcp_bin, Logged},
    raw::RawSocket,
    Lab, Netns,
};

struct Setup {
    _lab: Lab,
    srv: Netns,
    cli: Netns,
    config: std::path::PathBuf,
}

fn setup(tag: &str, config_body: &str) -> Setup {
    xdhcp_lab::require_lab();
    let mut lab = Lab::new(tag).unwrap();
    let srv = lab.netns("srv").unwrap();
    let cli = lab.netns("cli").unwrap();
    lab.veth(&srv, "srv0", Some("198.18.2.1/24"), &cli, "cli0", None)
        .unwrap();
    let config = std::env::temp_dir().join(format!("{}.toml", lab.prefix()));
    std::fs::write(&config, config_body).unwrap();
    Setup {
        _lab: lab,
        srv,
        cli,
        config,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

const CONFIG: &str = "[server]\nserver_id = \"198.18.2.1\"\n\n[[interface]]\nname = \"srv0\"\n";

fn serve(s: &Setup) -> Logged {
    let d = Logged::spawn(
        &s.srv,
        Command::new(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&s.config),
        None,
    )
    .unwrap();
    d.wait_for("xdhcp serving", Duration::from_secs(20))
        .unwrap();
    d
}

fn lifecycle(tag: &str, signal: i32, signame: &str) {
    let s = setup(tag, CONFIG);
    let mut d = serve(&s);
    assert_eq!(
        s.srv.xdp_mode("srv0").unwrap().as_deref(),
        Some("xdp"),
        "native XDP on veth"
    );

    let sock = RawSocket::open(&s.cli, "cli0").unwrap();
    let mac = s.cli.mac("cli0").unwrap();
    sock.send(&FrameSpec::dhcp_request(mac, 1).build()).unwrap();
    sock.send(&FrameSpec::dhcp_request(mac, 3).build()).unwrap();
    d.wait_for("received Discover", Duration::from_secs(5))
        .unwrap();
    d.wait_for("received Request", Duration::from_secs(5))
        .unwrap();

    d.signal(signal);
    let status = d.wait(Duration::from_secs(10)).unwrap();
    let log = d.lines().join("\n");
    assert!(status.success(), "exit {status}\n{log}");
    assert!(log.contains(&format!("{signame}: shutting down")), "{log}");
    let counters = d.wait_for("xdp counters", Duration::ZERO).unwrap();
    assert!(counters.contains("dhcp_requests=2 "), "{counters}");
    assert!(counters.contains("control_plane_received=2"), "{counters}");
    assert_eq!(
        s.srv.xdp_mode("srv0").unwrap(),
        None,
        "XDP left attached after exit"
    );
}

#[test]
fn sigterm_detaches_and_exits_cleanly() {
    lifecycle("sigterm", libc_sig::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_detaches_and_exits_cleanly() {
    lifecycle("sigint", libc_sig::SIGINT, "SIGINT");
}

mod libc_sig {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

#[test]
fn xdp_off_serves_from_the_socket_alone() {
    let s = setup("xdpoff", &format!("{CONFIG}xdp = \"off\"\n"));
    let mut d = serve(&s);
    assert_eq!(s.srv.xdp_mode("srv0").unwrap(), None);
    let sock = RawSocket::open(&s.cli, "cli0").unwrap();
    sock.send(&FrameSpec::dhcp_request(s.cli.mac("cli0").unwrap(), 1).build())
        .unwrap();
    d.wait_for("received Discover", Duration::from_secs(5))
        .unwrap();
    d.signal(libc_sig::SIGTERM);
    assert!(d.wait(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn missing_interface_fails_with_its_name_and_leaves_nothing() {
    let s = setup("noiface", "[server]\nserver_id = \"198.18.2.1\"\n[[interface]]\nname = \"srv0\"\n[[interface]]\nname = \"nosuch0\"\n");
    let mut d = Logged::spawn(
        &s.srv,
        Command::new(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&s.config),
        None,
    )
    .unwrap();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    let log = d.lines().join("\n");
    assert!(!status.success(), "{log}");
    assert!(log.contains("nosuch0"), "{log}");
    assert_eq!(
        s.srv.xdp_mode("srv0").unwrap(),
        None,
        "partial start left XDP on srv0"
    );
}

#[test]
fn bad_config_is_refused_with_its_line() {
    let s = setup(
        "badcfg",
        "[server]\nserver_id = \"198.18.2.1\"\n\n[[interface]]\nname = \"srv0\"\nxdp = \"turbo\"\n",
    );
    let mut d = Logged::spawn(
        &s.srv,
        Command::new(xdhcp_bin())
            .arg("serve")
            .arg("--config")
            .arg(&s.config),
        None,
    )
    .unwrap();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    let log = d.lines().join("\n");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains(&format!("{}:6:", s.config.display())), "{log}");
    assert!(log.contains("turbo"), "{log}");
    assert_eq!(s.srv.xdp_mode("srv0").unwrap(), None);
}
