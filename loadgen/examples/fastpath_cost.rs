//! In-kernel cost of one renewal answered by the XDP program, through
//! BPF_PROG_TEST_RUN with a lease map of N bindings (default 1,000,000),
//! next to the yardstick program `xdhcp_bare` (same parse, one lookup in
//! an N-entry map with the same key pattern, addresses swapped, XDP_TX),
//! measured in the same run. Also reports how long the control plane takes
//! to bulk-load N bindings into the map, and the map's kernel memory.
//!
//! Hot: one client renewing, `repeat` runs per call (its map entry stays in
//! cache). Spread: a different random client per call, one run each, so
//! every lookup lands in a part of the map no recent run touched (the map
//! is far larger than the CPU caches); the kernel's per-call timing covers
//! the run alone, not the syscall.
//!
//! The synthetic leases use 100.64.0.0/10 (RFC 6598, where ISP subscribers
//! live): 1,000,000 addresses do not fit 198.18.0.0/15. They never leave
//! BPF_PROG_TEST_RUN: no frame reaches any interface.
//!
//! `cargo run --release -p xdhcp-loadgen --example fastpath_cost -- [N] [runs per call]`

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use dhcp_common::{shape_hash, stat, LeaseKey, LeaseValue, MAP_BARE_LEASES};
use xdhcp::{
    fastmap::{lease_key, FastIface, FastMaps},
    fastpath::XDP_TX,
    leases::{hw_key, FastReply, Lease, LeaseState},
    serve::unix_now,
    wire,
};

const SERVER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SERVER_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 1];
const PRL: [u8; 5] = [1, 3, 6, 15, 28];

fn mac(i: u32) -> [u8; 6] {
    [
        0x02,
        0x20,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ]
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
}

/// A renewal (RENEWING, unicast) as udhcpc sends it.
fn renewal(i: u32) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&i.to_be_bytes());
    p[12..16].copy_from_slice(&ip(i).octets());
    p[28..34].copy_from_slice(&mac(i));
    p.extend_from_slice(&[99, 130, 83, 99, 53, 1, 3, 55, PRL.len() as u8]);
    p.extend_from_slice(&PRL);
    p.push(255);
    p.resize(300, 0);
    let h = wire::FrameHeader {
        src_mac: mac(i),
        dst_mac: SERVER_MAC,
        tags: Vec::new(),
        src_ip: ip(i),
        dst_ip: SERVER_ID,
        src_port: 68,
        dst_port: 67,
    };
    wire::build_frame(&h, &p)
}

fn template() -> Arc<[u8]> {
    let mut t = vec![53, 1, 5, 54, 4];
    t.extend_from_slice(&SERVER_ID.octets());
    for (code, v) in [(51u8, 3600u32), (58, 1800), (59, 3150)] {
        t.extend_from_slice(&[code, 4]);
        t.extend_from_slice(&v.to_be_bytes());
    }
    t.extend_from_slice(&[
        1, 4, 255, 192, 0, 0, 3, 4, 100, 64, 0, 1, 6, 8, 198, 18, 0, 53, 198, 18, 0, 54,
    ]);
    t.extend_from_slice(&[15, 14]);
    t.extend_from_slice(b"isp.xdhcp.test");
    t.into()
}

/// The harnesses (see dhcp-ebpf/src/bin/bench.rs): restore the request, then
/// run the fast path, the yardstick, or nothing.
const HARNESS: [&str; 3] = [
    "xdhcp_bench_fast",
    "xdhcp_bench_bare",
    "xdhcp_bench_restore",
];

/// dhcp-ebpf's `BenchFrame`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BenchFrame {
    clients: u32,
    first: u32,
    data: [u8; 344],
}
// SAFETY: plain integers and bytes, no padding.
unsafe impl aya::Pod for BenchFrame {}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).map_or(Ok(1_000_000), |s| s.parse())?;
    let repeat: u32 = args.get(2).map_or(Ok(50_000), |s| s.parse())?;
    let rounds: u32 = args.get(3).map_or(Ok(21), |s| s.parse())?;
    ensure!(
        repeat <= 60_000,
        "at most 60,000 runs per call (the ring buffer holds 65,536 events)"
    );

    let mut fp = xdhcp_loadgen::programs::load_bench(n)?;
    let mut maps = FastMaps::new(
        &mut fp,
        &[FastIface {
            name: "lo".into(),
            ifindex: 1,
            mac: SERVER_MAC,
        }],
        SERVER_ID,
    )?;
    let fast = Arc::new(FastReply {
        offerable: false,
        iface: "lo".into(),
        outer_vlan: 0,
        inner_vlan: 0,
        giaddr: Ipv4Addr::UNSPECIFIED,
        prl_len: PRL.len() as u16 + 1,
        shape_hash: shape_hash(&PRL, &[]),
        max_message_size: 0,
        client_id_len: 0,
        relay_info_len: 0,
        template: template(),
    });
    // Half the lease left, as at T1: each client's first renewal moves the
    // stored end by half a lease, so it is reported (a ring record), as
    // every real T1 renewal is. A client renewed again within lease/8 of
    // that is not reported again: the hot case pays the record once.
    let expires = unix_now() + 1800;
    let leases: Vec<Lease> = (0..n)
        .map(|i| {
            let mut hw = vec![1u8];
            hw.extend_from_slice(&mac(i));
            Lease {
                ip: ip(i),
                client: Some(hw_key(1, &mac(i))),
                hw: hw.into_boxed_slice(),
                subnet_id: 1,
                state: LeaseState::Bound,
                expires,
                lease_secs: 3600,
                fast: Some(fast.clone()),
                relay: None,
            }
        })
        .collect();
    let t0 = Instant::now();
    let loaded = maps.load(leases.iter());
    let load_time = t0.elapsed();
    ensure!(loaded == n as usize, "only {loaded} of {n} bindings loaded");

    let t0 = Instant::now();
    {
        let mut bare: aya::maps::HashMap<_, LeaseKey, LeaseValue> =
            aya::maps::HashMap::try_from(fp.map_mut(MAP_BARE_LEASES).expect("bare map"))?;
        let zero: LeaseValue = bytemuck::Zeroable::zeroed();
        for l in &leases {
            bare.insert(
                lease_key(l.client.as_deref().expect("client")).expect("key fits"),
                zero,
                0,
            )?;
        }
    }
    let bare_fill = t0.elapsed();
    drop(leases);

    let mut events = aya::maps::RingBuf::try_from(fp.take_map(dhcp_common::MAP_EVENTS)?)?;
    let mut drain = || while events.next().is_some() {};

    // Both answer the plain request.
    let probe = renewal(7);
    let f = fp.test_run_on(&probe, 1, 1)?;
    let b = fp.test_run_program("xdhcp_bare", &probe, 1)?;
    ensure!(
        f.verdict == XDP_TX && b.verdict == XDP_TX,
        "verdicts {} {}",
        f.verdict,
        b.verdict
    );
    drain();

    let base = renewal(0);
    ensure!(base.len() == 342, "bench frame is {} bytes", base.len());
    let mut rows = Vec::new();
    for (case, clients, first) in [
        ("hot key (one client)", 1u32, 12_345 % n),
        ("keys spread over every binding", n, 0),
    ] {
        {
            let mut arr: aya::maps::Array<_, BenchFrame> =
                aya::maps::Array::try_from(fp.map_mut("XDHCP_BENCH_BASE").expect("bench map"))?;
            let mut data = [0u8; 344];
            data[..342].copy_from_slice(&base);
            arr.set(
                0,
                BenchFrame {
                    clients,
                    first,
                    data,
                },
                0,
            )?;
        }
        let mut t: [Vec<Duration>; 3] = Default::default();
        let mut answered = 0;
        for round in 0..rounds {
            for k in 0..3 {
                let p = ((round + k) % 3) as usize;
                let before = fp.stats()?.get(stat::FP_ACK_RENEWING);
                let out = fp.test_run_program(HARNESS[p], &base, repeat)?;
                ensure!(
                    out.verdict == XDP_TX,
                    "{} returned {}",
                    HARNESS[p],
                    out.verdict
                );
                if p == 0 {
                    answered += fp.stats()?.get(stat::FP_ACK_RENEWING) - before;
                }
                t[p].push(out.duration);
                drain();
            }
        }
        // This VM's speed drifts by a third within seconds: the ratio of
        // the two programs measured side by side in each round is steadier
        // than the ratio of the medians.
        let mut ratios: Vec<f64> = (0..t[0].len())
            .map(|r| {
                let own = |d: Duration| d.saturating_sub(t[2][r]).as_secs_f64();
                own(t[0][r]) / own(t[1][r])
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let round_ratio = ratios[ratios.len() / 2];
        let restore = median(std::mem::take(&mut t[2]));
        let fast = median(std::mem::take(&mut t[0])).saturating_sub(restore);
        let bare = median(std::mem::take(&mut t[1])).saturating_sub(restore);
        ensure!(
            answered == u64::from(rounds * repeat),
            "the fast path answered {answered} of {} runs",
            rounds * repeat
        );
        rows.push((case, clients, fast, bare, restore, round_ratio));
    }

    let stats = fp.stats()?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("lease map: {n} bindings, bulk load {:.2} s ({:.0} bindings/s), kernel memory {:.1} MiB ({} B/binding)",
        load_time.as_secs_f64(),
        f64::from(n) / load_time.as_secs_f64(),
        mib(maps.lease_map_bytes().unwrap_or(0)),
        maps.lease_map_bytes().unwrap_or(0) / u64::from(n.max(1)),
    );
    println!("bare map filled in {:.2} s", bare_fill.as_secs_f64());
    println!("| case | xdhcp fast path | bare parse+lookup+swap | ratio of medians | median of per-round ratios |");
    println!("|---|---|---|---|---|");
    for (case, clients, fast, bare, restore, round_ratio) in rows {
        println!(
            "| {case} ({clients} clients, {rounds}x{repeat} runs, restore {} ns subtracted) | {} ns | {} ns | {:.2}x | {round_ratio:.2}x |",
            restore.as_nanos(),
            fast.as_nanos(),
            bare.as_nanos(),
            fast.as_secs_f64() / bare.as_secs_f64()
        );
    }
    println!(
        "fast-path ACKs counted: {} (renewing), events lost to a full ring: {}",
        stats.get(dhcp_common::stat::FP_ACK_RENEWING),
        stats.get(dhcp_common::stat::EVENT_LOST)
    );
    Ok(())
}
