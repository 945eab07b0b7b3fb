//! The XDP program's rate limits, through BPF_PROG_TEST_RUN: frames the
//! fast path passes are dropped in the driver once their client MAC's or
//! their line's bucket is empty, counted by reason; other MACs and other
//! lines are untouched; clients the lease map holds a binding for are
//! never limited; a subnet's limits apply where its requests arrive.

use std::{collections::HashMap as StdHashMap, net::Ipv4Addr};

use aya::maps::HashMap;
use dhcp_common::{id_kind, lease_flags, stat, LeaseKey, LeaseValue, MAP_LEASES};
use xdhcp::{
    config::Config,
    xdp::loader::{Fastpath, XDP_PASS},
    xdp::rate_limits::RateMaps,
};
use xdhcp_lab::{
    dhcp::Msg,
    frame::{FrameSpec, TPID_8021Q},
};

const XDP_DROP: u32 = 1;
/// BPF_PROG_TEST_RUN needs a real device for the ingress ifindex: loopback.
const IFINDEX: u32 = 1;
const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 10, 1);

fn config(limits: &str) -> Config {
    let text = format!(
        r#"
[server]
server_id = "198.18.0.1"
lease_db = "/nonexistent/unused.db"
[[interface]]
name = "lo"
{limits}
[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "lo"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.199"
[[subnet]]
id = 300
subnet = "198.19.10.0/24"
[[subnet.pool]]
start = "198.19.10.20"
end = "198.19.10.220"
"#
    );
    Config::parse(&text, "test config").unwrap()
}

struct Rig {
    fp: Fastpath,
    _rates: RateMaps,
}

impl Rig {
    fn new(config: &Config) -> Rig {
        xdhcp_lab::require_lab();
        let mut fp = Fastpath::load_sized(false, 1024)
            .expect("loading the XDP program (needs root and BPF)");
        let mut rates = RateMaps::take(&mut fp).unwrap();
        rates
            .apply(config, &StdHashMap::from([("lo".to_string(), IFINDEX)]))
            .unwrap();
        Rig { fp, _rates: rates }
    }

    fn verdict(&self, frame: &[u8]) -> u32 {
        self.fp.test_run_on(frame, IFINDEX, 1).unwrap().verdict
    }

    /// Verdicts of `n` frames, as (passed, dropped).
    fn run(&self, n: u32, frame: impl Fn(u32) -> Vec<u8>) -> (u32, u32) {
        let (mut pass, mut drop) = (0, 0);
        for i in 0..n {
            match self.verdict(&frame(i)) {
                XDP_PASS => pass += 1,
                XDP_DROP => drop += 1,
                v => panic!("verdict {v}"),
            }
        }
        (pass, drop)
    }

    fn stat(&self, idx: u32) -> u64 {
        self.fp.stats().unwrap().get(idx)
    }
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x77, b[0], b[1], b[2], b[3]]
}

/// A DISCOVER from `mac`, untagged or with one 802.1Q tag.
fn discover(mac: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
    FrameSpec {
        tags: vlan.map(|v| vec![(TPID_8021Q, v)]).unwrap_or_default(),
        ..FrameSpec::dhcp_request(mac, 1)
    }
    .build()
}

/// A relayed DISCOVER for `mac`, from a relay whose Ethernet source is
/// always the same, with option 82 sub-options as given.
fn relayed(mac: [u8; 6], rai: Option<&[u8]>) -> Vec<u8> {
    let mut m = Msg::new(1, mac, 7);
    m.giaddr = GIADDR;
    m.hops = 1;
    if let Some(rai) = rai {
        m = m.opt(82, rai);
    }
    FrameSpec {
        src_mac: [0x02, 0, 0x5e, 0, 0, 0xfe],
        src_ip: GIADDR.octets(),
        dst_ip: [198, 18, 0, 1],
        src_port: 67,
        payload: m.encode(),
        ..Default::default()
    }
    .build()
}

fn circuit(id: &[u8]) -> Vec<u8> {
    let mut v = vec![1, id.len() as u8];
    v.extend_from_slice(id);
    v
}

#[test]
fn without_limits_nothing_is_dropped() {
    let rig = Rig::new(&config(""));
    assert_eq!(rig.run(200, |_| discover(mac(1), None)), (200, 0));
    assert_eq!(rig.stat(stat::PASS_UNKNOWN_CLIENT), 200);
    assert_eq!(rig.stat(stat::RATE_LIMITED_MAC), 0);
}

#[test]
fn a_looping_mac_spends_its_own_bucket_only() {
    let rig = Rig::new(&config("[rate_limits]\nmac_per_sec = 1\nmac_burst = 5\n"));
    // Within a second: the burst passes, the rest is dropped and counted.
    assert_eq!(rig.run(50, |_| discover(mac(1), None)), (5, 45));
    assert_eq!(rig.stat(stat::RATE_LIMITED_MAC), 45);
    // Passed frames are counted with their pass reason (a DISCOVER from
    // a client the lease map does not hold), dropped ones not.
    assert_eq!(rig.stat(stat::PASS_UNKNOWN_CLIENT), 5);
    // Other clients on the same line are untouched.
    assert_eq!(rig.run(50, |i| discover(mac(100 + i), None)), (50, 0));
    // A relayed client's MAC is chaddr, not the relay's Ethernet source.
    assert_eq!(rig.run(20, |i| relayed(mac(200 + i), None)), (20, 0));
    assert_eq!(rig.run(20, |_| relayed(mac(300), None)), (5, 15));
}

#[test]
fn a_flooding_line_spends_its_own_bucket_only() {
    let rig = Rig::new(&config(
        "[rate_limits]\nline_per_sec = 1\nline_burst = 10\n",
    ));
    // Random MACs on VLAN 7: one line.
    assert_eq!(rig.run(100, |i| discover(mac(i), Some(7))), (10, 90));
    assert_eq!(rig.stat(stat::RATE_LIMITED_LINE), 90);
    // Another VLAN, or untagged, is another line.
    assert_eq!(rig.run(10, |i| discover(mac(1000 + i), Some(8))), (10, 0));
    assert_eq!(rig.run(10, |i| discover(mac(2000 + i), None)), (10, 0));
    // Behind a relay, a line is its circuit-id (+ remote-id).
    let a = circuit(b"olt1/1/1");
    let b = circuit(b"olt1/1/2");
    assert_eq!(rig.run(30, |i| relayed(mac(3000 + i), Some(&a))), (10, 20));
    assert_eq!(rig.run(10, |i| relayed(mac(4000 + i), Some(&b))), (10, 0));
    let mut a_other_remote = a.clone();
    a_other_remote.extend_from_slice(&[2, 3, b'r', b'i', b'd']);
    assert_eq!(
        rig.run(10, |i| relayed(mac(5000 + i), Some(&a_other_remote))),
        (10, 0)
    );
    // A relay naming no line is not one line: only MAC limits apply.
    assert_eq!(rig.run(30, |i| relayed(mac(6000 + i), None)), (30, 0));
    assert_eq!(
        rig.run(30, |i| relayed(mac(7000 + i), Some(&[5, 4, 198, 18, 0, 0]))),
        (30, 0)
    );
}

#[test]
fn bound_clients_are_never_limited() {
    let mut rig = Rig::new(&config(
        "[rate_limits]\nmac_per_sec = 1\nmac_burst = 1\nline_per_sec = 1\nline_burst = 1\n",
    ));
    let bound = mac(9);
    {
        let mut leases: HashMap<_, LeaseKey, LeaseValue> =
            HashMap::try_from(rig.fp.map_mut(MAP_LEASES).unwrap()).unwrap();
        let mut key = LeaseKey::zeroed();
        key.kind = id_kind::HWADDR;
        key.len = 7;
        key.id[0] = 1;
        key.id[1..7].copy_from_slice(&bound);
        let value = LeaseValue {
            expires_mono_ns: u64::MAX / 2,
            reported_mono_ns: u64::MAX / 2,
            ip: u32::from_ne_bytes([198, 18, 0, 150]),
            subnet_id: 1,
            template_id: 0,
            lease_secs: 600,
            ifindex: IFINDEX,
            outer_vlan: 0,
            inner_vlan: 0,
            giaddr: 0,
            shape_hash: 0,
            prl_len: 0,
            max_message_size: 0,
            client_id_len: 0,
            relay_info_len: 0,
            flags: lease_flags::FASTPATH,
            cap_mono_ns: dhcp_common::NO_CAP,
        };
        leases.insert(key, value, 0).unwrap();
    }
    // The line's and a stranger's buckets spent.
    assert_eq!(rig.run(10, |i| discover(mac(100 + i), None)), (1, 9));
    // The bound client's INIT-REBOOT for another address: the control
    // plane's to answer (a NAK), never limited, however many.
    let reboot = FrameSpec {
        src_mac: bound,
        payload: Msg::new(3, bound, 5).opt(50, &[198, 18, 0, 151]).encode(),
        ..Default::default()
    }
    .build();
    assert_eq!(rig.run(50, |_| reboot.clone()), (50, 0));
    assert_eq!(rig.stat(stat::PASS_WRONG_ADDRESS), 50);
}

#[test]
fn a_subnets_limits_apply_where_its_requests_arrive() {
    let mut c = config("");
    c.subnets[1].rate_limits = Some(xdhcp::xdp::rate_limits::RateLimits {
        line_per_sec: Some(1),
        line_burst: Some(3),
        ..Default::default()
    });
    let rig = Rig::new(&c);
    let a = circuit(b"port-a");
    // Relayed into subnet 300 (giaddr inside its prefix): limited.
    assert_eq!(rig.run(10, |i| relayed(mac(i), Some(&a))), (3, 7));
    // Directly connected clients of subnet 1: the global limits (none).
    assert_eq!(rig.run(50, |i| discover(mac(100 + i), None)), (50, 0));
}
