//! Issue 15 in the netns lab: two or three xdhcp nodes (fast path on) on
//! one L2 segment and one PostgreSQL 15, every node seeing every packet
//! (`xdhcp_lab::multinode`). Each test is bounded in count and time.

use std::time::{Duration, Instant};

use serde_json::Value;
use xdhcp_lab::multinode::MultiNodeLab;

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Every node OFFERs to every DISCOVER; a client's REQUEST names one
/// server and only that one may ACK. The database refuses a second
/// node's claim on an address, so no address is in two bindings.
#[test]
fn three_nodes_seeing_every_packet_give_no_address_twice_and_no_client_two_acks() {
    let t0 = Instant::now();
    let lab = MultiNodeLab::new("mn3dora", 3, 600, "").unwrap();
    let dh = lab.dhclient().unwrap();
    let ud = lab.udhcpc().unwrap();
    let r = lab
        .loadgen(
            0,
            &[
                "--clients",
                "10000",
                "--rate",
                "2000",
                "--timeout-ms",
                "2000",
                "--phase",
                "dora",
            ],
        )
        .unwrap();
    let dora = &r[0];
    eprintln!("dora: {dora}");
    let dh_ip = lab.wait_event("dhclient", "BOUND ", 0, Duration::from_secs(30));
    let ud_ip = lab.wait_event("udhcpc", "bound ", 0, Duration::from_secs(30));
    eprintln!("dhclient {dh_ip}; udhcpc {ud_ip}; {:?}", t0.elapsed());
    drop((dh, ud));
    assert_eq!(n(dora, "duplicate_addresses"), 0, "{dora}");
    assert_eq!(n(dora, "duplicate_acks"), 0, "{dora}");
    let (twice, clients_twice) = lab.double_bindings().unwrap();
    assert_eq!((twice, clients_twice), (0, 0));
    eprintln!("{}", lab.logs());
}
