//! The benchmark's XDP object: the server's programs (the same code and
//! maps as the server's object), the yardstick `xdhcp_bare` and the
//! harnesses, loaded only by `xdhcp-loadgen lab-bounce` (the yardstick)
//! and `fastpath_cost`. Each harness run first
//! restores a renewal request (BPF_PROG_TEST_RUN repeats a program on the
//! same buffer, which the previous run turned into a reply), for client
//! `first + (run * 2654435761) % clients`, then runs the fast
//! path, the yardstick, or nothing. Subtracting the restore-only time
//! leaves each program's own cost, in steady state, over as many distinct
//! clients as asked.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use dhcp_common::{
    bench::{self, BenchFrame},
    layout::{bootp, eth, ipv4, udp},
    LeaseKey, LeaseValue,
};

dhcp_ebpf::server_programs!();

/// Sized by the benchmark only: the yardstick's lease map.
#[map(name = "XDHCP_BARE_LEASES")]
static XDHCP_BARE_LEASES: HashMap<LeaseKey, LeaseValue> = HashMap::with_max_entries(1, 0);

#[xdp]
pub fn xdhcp_bare(ctx: XdpContext) -> u32 {
    dhcp_ebpf::bare(&ctx, &XDHCP_BARE_LEASES)
}

/// Untagged Ethernet + IPv4 + UDP + a 300-byte BOOTP payload.
const BENCH_FRAME_LEN: usize = bench::FRAME_LEN;
const IP: usize = eth::HEADER_LEN;
const BOOTP: usize = IP + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
/// Client 0's address (100.64.0.0, RFC 6598); client i has the i-th after it.
const CLIENT_0: u32 = 0x6440_0000;

/// Named `bench::MAP_BASE` (the attribute takes a literal).
#[map(name = "XDHCP_BENCH_BASE")]
static XDHCP_BENCH_BASE: Array<BenchFrame> = Array::with_max_entries(1, 0);

#[map(name = "XDHCP_BENCH_CURSOR")]
static XDHCP_BENCH_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn restore(ctx: &XdpContext) -> bool {
    let Some(base) = XDHCP_BENCH_BASE.get(0) else {
        return false;
    };
    let Some(cursor) = XDHCP_BENCH_CURSOR.get_ptr_mut(0) else {
        return false;
    };
    let n = base.clients;
    let first = base.first;
    if n == 0 {
        return false;
    }
    let k = unsafe { *cursor };
    unsafe { *cursor = k.wrapping_add(1) };
    let i = first.wrapping_add(k.wrapping_mul(2_654_435_761) % n);
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    let delta = BENCH_FRAME_LEN as i32 - len;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return false;
    }
    let src = base.data.as_ptr() as *mut _;
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, src, BENCH_FRAME_LEN as u32) } != 0 {
        return false;
    }
    // Client i's fields, written through the helper like the frame: a
    // direct write would need a bound on the packet the server's program
    // never has, and the verifier explores the fast path after it anew
    // (the harness was refused as too complex).
    let mac = bench::client_mac(i);
    let host = CLIENT_0.wrapping_add(i);
    let ip = host.to_be_bytes();
    // The base frame is client 0's: the IPv4 header checksum follows the
    // source address (RFC 1624), or the fast path drops it as malformed.
    let c = IP + ipv4::CHECKSUM.start;
    let old = u16::from_be_bytes([base.data[c], base.data[c + 1]]);
    let mut sum = u32::from(!old)
        + u32::from(!((CLIENT_0 >> 16) as u16))
        + u32::from(!(CLIENT_0 as u16))
        + (host >> 16)
        + (host & 0xffff);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let csum = (!(sum as u16)).to_be_bytes();
    let put = |off: usize, bytes: &[u8]| unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            off as u32,
            bytes.as_ptr() as *mut _,
            bytes.len() as u32,
        ) == 0
    };
    put(eth::SRC.start, &mac)
        && put(BOOTP + bootp::CHADDR.start, &mac)
        && put(IP + ipv4::SRC.start, &ip)
        && put(c, &csum)
        && put(BOOTP + bootp::CIADDR.start, &ip)
}

/// What each harness runs after the restore, by tail call: `xdhcp`, the
/// yardstick, and `xdhcp_bench_noop` (filled by the benchmark's loader).
/// Called, not inlined: the fast path inlined after the restore was
/// refused as too complex (the verifier walked it again for the restore's
/// branches), while on its own it is the very program the server loads.
/// Every harness pays the same tail call, which the restore-only baseline
/// subtracts.
#[map(name = "XDHCP_BENCH_NEXT")]
static XDHCP_BENCH_NEXT: ProgramArray = ProgramArray::with_max_entries(3, 0);

#[inline(always)]
fn restore_then(ctx: &XdpContext, slot: u32) -> u32 {
    if restore(ctx) {
        // Returns only when the slot is empty.
        let _ = unsafe { XDHCP_BENCH_NEXT.tail_call(ctx, slot) };
    }
    xdp_action::XDP_ABORTED
}

#[xdp]
pub fn xdhcp_bench_fast(ctx: XdpContext) -> u32 {
    restore_then(&ctx, bench::NEXT_FAST)
}

#[xdp]
pub fn xdhcp_bench_bare(ctx: XdpContext) -> u32 {
    restore_then(&ctx, bench::NEXT_BARE)
}

/// The restore-only baseline's last step: the reply verdict, nothing else.
#[xdp]
pub fn xdhcp_bench_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn xdhcp_bench_restore(ctx: XdpContext) -> u32 {
    restore_then(&ctx, bench::NEXT_NOOP)
}

include!("../object_items.rs");
