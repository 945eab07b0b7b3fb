//! The XDP program attached inside a lab namespace: frames sent across the
//! veth from the client side are counted exactly, per kind, and reach the
//! kernel stack (XDP_PASS) afterwards.

use std::time::{Duration, Instant};

use dhcp_common::stat;
use xdhcp::{
    config::XdpSetting,
    xdp::loader::{AttachedMode, Fastpath},
};
use xdhcp_lab::{
    frame::{FrameSpec, ETH_P_ARP, TPID_8021AD, TPID_8021Q},
    raw::RawSocket,
    Lab,
};

#[test]
fn counters_over_veth_match_what_was_sent() {
    xdhcp_lab::require_lab();
    let mut lab = Lab::new("xdpcount").unwrap();
    let srv = lab.netns("srv").unwrap();
    let cli = lab.netns("cli").unwrap();
    lab.veth(
        &srv,
        "srv0",
        Some("198.18.1.1/24"),
        &cli,
        "cli0",
        Some("198.18.1.2/24"),
    )
    .unwrap();

    let mut fp = Fastpath::load(false).unwrap();
    let mode = srv
        .enter(|| fp.attach("srv0", XdpSetting::Native))
        .unwrap()
        .unwrap();
    assert_eq!(mode, AttachedMode::Native, "veth supports native XDP");
    assert_eq!(srv.xdp_mode("srv0").unwrap().as_deref(), Some("xdp"));

    // Capture on the server side too: XDP_PASS must hand every frame on.
    let capture = RawSocket::open(&srv, "srv0").unwrap();
    let sock = RawSocket::open(&cli, "cli0").unwrap();
    let mac = cli.mac("cli0").unwrap();
    let before = fp.stats().unwrap();

    let mut single = FrameSpec::dhcp_request(mac, 1);
    single.tags = vec![(TPID_8021Q, 10)];
    let mut double = FrameSpec::dhcp_request(mac, 1);
    double.tags = vec![(TPID_8021AD, 10), (TPID_8021Q, 20)];
    let other_udp = FrameSpec {
        dst_port: 53,
        ..FrameSpec::dhcp_request(mac, 1)
    };
    let arp = FrameSpec {
        ethertype: ETH_P_ARP,
        src_mac: mac,
        payload: vec![0; 28],
        ..Default::default()
    };
    let frag = FrameSpec {
        frag: 0x2000,
        ..FrameSpec::dhcp_request(mac, 1)
    };

    let plan: Vec<(Vec<u8>, usize)> = vec![
        (FrameSpec::dhcp_request(mac, 1).build(), 7),
        (single.build(), 5),
        (double.build(), 3),
        (other_udp.build(), 4),
        (arp.build(), 2),
        (frag.build(), 1),
    ];
    let total: usize = plan.iter().map(|(_, n)| n).sum();
    for (frame, n) in &plan {
        for _ in 0..*n {
            sock.send(frame).unwrap();
        }
    }
    // The ARP frames make the server's stack reply; count only inbound.
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen < total && Instant::now() < deadline {
        if capture.recv(Duration::from_millis(200)).unwrap().is_some() {
            seen += 1;
        }
    }
    assert!(
        seen >= total,
        "only {seen} of {total} frames reached the server's stack"
    );

    let d = fp.stats().unwrap().since(&before);
    assert_eq!(d.get(stat::RX_FRAMES), total as u64, "{d}");
    assert_eq!(d.get(stat::DHCP_REQUESTS), 7 + 5 + 3, "{d}");
    assert_eq!(d.get(stat::VLAN_SINGLE), 5, "{d}");
    assert_eq!(d.get(stat::VLAN_DOUBLE), 3, "{d}");
    assert_eq!(d.get(stat::OTHER_UDP), 4, "{d}");
    assert_eq!(d.get(stat::NOT_IPV4), 2, "{d}");
    assert_eq!(d.get(stat::FRAGMENT), 1, "{d}");
    assert_eq!(
        d.get(stat::TRUNCATED) + d.get(stat::BAD_IPV4) + d.get(stat::NOT_UDP),
        0,
        "{d}"
    );

    fp.detach_all().unwrap();
    assert_eq!(
        srv.xdp_mode("srv0").unwrap(),
        None,
        "detach leaves nothing attached"
    );
}

#[test]
fn generic_mode_is_honoured() {
    xdhcp_lab::require_lab();
    let mut lab = Lab::new("xdpgeneric").unwrap();
    let srv = lab.netns("srv").unwrap();
    let cli = lab.netns("cli").unwrap();
    lab.veth(&srv, "srv0", None, &cli, "cli0", None).unwrap();
    let mut fp = Fastpath::load(false).unwrap();
    let mode = srv
        .enter(|| fp.attach("srv0", XdpSetting::Generic))
        .unwrap()
        .unwrap();
    assert_eq!(mode, AttachedMode::Generic);
    assert_eq!(srv.xdp_mode("srv0").unwrap().as_deref(), Some("xdpgeneric"));
    drop(fp);
    assert_eq!(
        srv.xdp_mode("srv0").unwrap(),
        None,
        "dropping the fast path detaches it"
    );
}

#[test]
fn native_falls_back_to_generic_where_the_driver_has_no_xdp() {
    xdhcp_lab::require_lab();
    let mut lab = Lab::new("xdpfallback").unwrap();
    let srv = lab.netns("srv").unwrap();
    let cli = lab.netns("cli").unwrap();
    lab.veth(&srv, "srv0", None, &cli, "cli0", None).unwrap();
    // macvlan has no native XDP (and this kernel has no dummy module).
    srv.run([
        "ip", "link", "add", "mv0", "link", "srv0", "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    srv.run(["ip", "link", "set", "mv0", "up"]).unwrap();
    let mut fp = Fastpath::load(false).unwrap();
    let mode = srv
        .enter(|| fp.attach("mv0", XdpSetting::Native))
        .unwrap()
        .unwrap();
    assert_eq!(mode, AttachedMode::Generic);
    assert_eq!(srv.xdp_mode("mv0").unwrap().as_deref(), Some("xdpgeneric"));
}

#[test]
fn lab_is_removed_on_panic() {
    xdhcp_lab::require_lab();
    let name = std::panic::catch_unwind(|| {
        let mut lab = Lab::new("panics").unwrap();
        let ns = lab.netns("a").unwrap();
        let name = ns.name().to_string();
        assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
        std::panic::panic_any(name);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(
        !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
        "{name} left behind"
    );
}

#[test]
fn lab_refuses_addresses_outside_the_benchmark_range() {
    xdhcp_lab::require_lab();
    let mut lab = Lab::new("range").unwrap();
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let err = lab
        .veth(&a, "a0", Some("10.0.0.1/24"), &b, "b0", None)
        .unwrap_err();
    assert!(err.to_string().contains("198.18.0.0/15"), "{err}");
}
