//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: verdict,
//! frame out and counters for every frame shape the parser must handle.

use dhcp_common::stat;
use xdhcp::{
    fixture::{check_all, Fixture},
    xdp::loader::{Fastpath, XDP_PASS},
};
use xdhcp_lab::frame::{FrameSpec, ETH_P_ARP, ETH_P_IPV6, TPID_8021AD, TPID_8021Q};

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x07];

fn load() -> Fastpath {
    xdhcp_lab::require_lab();
    Fastpath::load(false).expect("loading the XDP program (needs root and BPF)")
}

fn discover() -> FrameSpec {
    FrameSpec::dhcp_request(MAC, 1)
}

fn pass(name: &str, frame: Vec<u8>) -> Fixture {
    Fixture::new(name, frame, XDP_PASS).counts(stat::RX_FRAMES, 1)
}

#[test]
fn dhcp_requests_are_counted_and_passed_in_every_encapsulation() {
    let fp = load();
    // Every DHCP request reaches the fast path, which passes a DISCOVER
    // from a client it holds no binding for with that reason.
    let dhcp = |name: &str, frame: Vec<u8>| {
        pass(name, frame)
            .counts(stat::DHCP_REQUESTS, 1)
            .counts(stat::PASS_UNKNOWN_CLIENT, 1)
    };
    let mut fixtures = vec![dhcp("untagged", discover().build())];
    for (name, tpid) in [
        ("802.1Q", TPID_8021Q),
        ("802.1ad outer alone", TPID_8021AD),
        ("0x9100", 0x9100),
    ] {
        let mut f = discover();
        f.tags = vec![(tpid, 100)];
        fixtures.push(dhcp(name, f.build()).counts(stat::VLAN_SINGLE, 1));
    }
    for (name, outer) in [
        ("QinQ 88a8/8100", TPID_8021AD),
        ("QinQ 8100/8100", TPID_8021Q),
        ("QinQ 9100/8100", 0x9100),
    ] {
        let mut f = discover();
        f.tags = vec![(outer, 100), (TPID_8021Q, 4094)];
        fixtures.push(dhcp(name, f.build()).counts(stat::VLAN_DOUBLE, 1));
    }
    let mut f = discover();
    f.ip_options = vec![0x94, 0x04, 0x00, 0x00]; // router alert
    fixtures.push(
        pass("IPv4 options", f.build())
            .counts(stat::IP_OPTIONS, 1)
            .counts(stat::DHCP_REQUESTS, 1)
            .counts(stat::PASS_UNUSUAL, 1),
    );
    let mut f = discover();
    f.ip_options = vec![1; 40]; // IHL 15, the maximum
    f.tags = vec![(TPID_8021AD, 7), (TPID_8021Q, 8)];
    fixtures.push(
        pass("QinQ + 40 bytes of IPv4 options", f.build())
            .counts(stat::VLAN_DOUBLE, 1)
            .counts(stat::IP_OPTIONS, 1)
            .counts(stat::DHCP_REQUESTS, 1)
            .counts(stat::PASS_UNUSUAL, 1),
    );
    // A unicast renewal (ciaddr set, to the server's address).
    let mut f = FrameSpec::dhcp_request(MAC, 3);
    f.src_ip = [198, 18, 0, 10];
    f.dst_ip = [198, 18, 0, 1];
    f.payload[12..16].copy_from_slice(&[198, 18, 0, 10]);
    fixtures.push(
        pass("unicast request from an unknown client", f.build())
            .counts(stat::DHCP_REQUESTS, 1)
            .counts(stat::PASS_UNKNOWN_CLIENT, 1),
    );
    check_all(&fp, &fixtures).unwrap();
}

#[test]
fn everything_else_is_classified_and_passed_unchanged() {
    let fp = load();
    let arp = FrameSpec {
        ethertype: ETH_P_ARP,
        payload: vec![0; 28],
        ..discover()
    };
    let ipv6 = FrameSpec {
        ethertype: ETH_P_IPV6,
        payload: vec![0x60; 60],
        ..discover()
    };
    let mut triple = discover();
    triple.tags = vec![(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
    let tcp = FrameSpec {
        proto: 6,
        payload: vec![0; 20],
        ..discover()
    };
    let dns = FrameSpec {
        dst_port: 53,
        ..discover()
    };
    let from_server = FrameSpec {
        src_port: 67,
        dst_port: 68,
        ..discover()
    };
    let mf = FrameSpec {
        frag: 0x2000,
        ..discover()
    };
    let offset = FrameSpec {
        frag: 0x0010,
        ..discover()
    };
    let df = FrameSpec {
        frag: 0x4000,
        ..discover()
    };

    let mut tagged_arp = arp.clone();
    tagged_arp.tags = vec![(TPID_8021Q, 5)];

    let fixtures = vec![
        pass("ARP", arp.build()).counts(stat::NOT_IPV4, 1),
        pass("tagged ARP", tagged_arp.build())
            .counts(stat::VLAN_SINGLE, 1)
            .counts(stat::NOT_IPV4, 1),
        pass("IPv6", ipv6.build()).counts(stat::NOT_IPV4, 1),
        pass("three tags", triple.build())
            .counts(stat::VLAN_DOUBLE, 1)
            .counts(stat::NOT_IPV4, 1),
        pass("TCP", tcp.build()).counts(stat::NOT_UDP, 1),
        pass("UDP to 53", dns.build()).counts(stat::OTHER_UDP, 1),
        pass("UDP 67->68 (a server's reply)", from_server.build()).counts(stat::OTHER_UDP, 1),
        pass("first fragment (MF)", mf.build()).counts(stat::FRAGMENT, 1),
        pass("later fragment (offset)", offset.build()).counts(stat::FRAGMENT, 1),
        pass("DF is not a fragment", df.build())
            .counts(stat::DHCP_REQUESTS, 1)
            .counts(stat::PASS_UNKNOWN_CLIENT, 1),
    ];
    check_all(&fp, &fixtures).unwrap();
}

#[test]
fn truncated_and_malformed_frames_are_counted_never_parsed_past_their_end() {
    let fp = load();
    let full = discover().build();
    let mut tagged = discover();
    tagged.tags = vec![(TPID_8021AD, 100), (TPID_8021Q, 200)];
    let tagged = tagged.build();

    let mut bad_version = full.clone();
    bad_version[14] = 0x65;
    let mut short_ihl = full.clone();
    short_ihl[14] = 0x44;
    let mut tot_len_below_ihl = full.clone();
    tot_len_below_ihl[16..18].copy_from_slice(&10u16.to_be_bytes());
    let mut tot_len_past_end = full.clone();
    tot_len_past_end[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let mut tot_len_no_udp = full.clone();
    tot_len_no_udp[16..18].copy_from_slice(&24u16.to_be_bytes());

    let fixtures = vec![
        // BPF_PROG_TEST_RUN refuses frames under 14 bytes, so the shortest
        // truncation is inside the first tag.
        pass("ends inside the outer tag", tagged[..16].to_vec()).counts(stat::TRUNCATED, 1),
        pass("ends inside the inner tag", tagged[..20].to_vec())
            .counts(stat::VLAN_SINGLE, 1)
            .counts(stat::TRUNCATED, 1),
        pass("ends after the Ethernet header", full[..14].to_vec()).counts(stat::TRUNCATED, 1),
        pass("ends inside the IPv4 header", full[..30].to_vec()).counts(stat::TRUNCATED, 1),
        pass("ends inside the UDP header", full[..38].to_vec()).counts(stat::TRUNCATED, 1),
        pass("ends inside the DHCP payload", full[..200].to_vec()).counts(stat::TRUNCATED, 1),
        pass("QinQ ends inside IPv4", tagged[..40].to_vec())
            .counts(stat::VLAN_DOUBLE, 1)
            .counts(stat::TRUNCATED, 1),
        pass("IPv4 version 6", bad_version).counts(stat::BAD_IPV4, 1),
        pass("IHL 4", short_ihl).counts(stat::BAD_IPV4, 1),
        pass("total length below IHL", tot_len_below_ihl).counts(stat::BAD_IPV4, 1),
        pass("total length past the frame", tot_len_past_end).counts(stat::TRUNCATED, 1),
        pass("total length leaves no UDP header", tot_len_no_udp).counts(stat::BAD_IPV4, 1),
    ];
    check_all(&fp, &fixtures).unwrap();
}

#[test]
fn repeat_runs_count_every_run() {
    let fp = load();
    let before = fp.stats().unwrap();
    let out = fp.test_run(&discover().build(), 1000).unwrap();
    assert_eq!(out.verdict, XDP_PASS);
    let d = fp.stats().unwrap().since(&before);
    assert_eq!(d.get(stat::RX_FRAMES), 1000);
    assert_eq!(d.get(stat::DHCP_REQUESTS), 1000);
}
