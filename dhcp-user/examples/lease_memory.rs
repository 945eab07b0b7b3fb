//! Memory of the in-memory lease table per bound lease:
//! `cargo run --release -p xdhcp --example lease_memory [N]`.

use std::net::Ipv4Addr;

use xdhcp::{
    dhcp::leases::LeaseTable,
    lease::{hw_key, Lease, LeaseState},
};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().unwrap());
    let before = rss_bytes();
    let mut t = LeaseTable::new();
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for i in 0..n {
        let mac = [
            2,
            0,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ];
        let mut hw = vec![1u8];
        hw.extend_from_slice(&mac);
        t.put(Lease {
            ip: Ipv4Addr::from(base + i),
            client: Some(hw_key(1, &mac)),
            hw: hw.into_boxed_slice(),
            subnet_id: 1,
            state: LeaseState::Bound,
            expires: 2_000_000_000,
            lease_secs: 3600,
            fast: None,
            relay: None,
        });
    }
    let after = rss_bytes();
    println!(
        "{n} bound leases: {:.1} MiB resident, {:.0} bytes per lease",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / f64::from(n)
    );
    assert_eq!(t.len(), n as usize);
}
