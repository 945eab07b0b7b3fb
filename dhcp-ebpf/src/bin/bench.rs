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
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use dhcp_common::{LeaseKey, LeaseValue};

dhcp_ebpf::server_programs!();

/// Sized by the benchmark only: the yardstick's lease map.
#[map(name = "XDHCP_BARE_LEASES")]
static XDHCP_BARE_LEASES: HashMap<LeaseKey, LeaseValue> = HashMap::with_max_entries(1, 0);

#[xdp]
pub fn xdhcp_bare(ctx: XdpContext) -> u32 {
    dhcp_ebpf::bare(&ctx, &XDHCP_BARE_LEASES)
}

/// Untagged Ethernet + IPv4 + UDP + a 300-byte BOOTP payload.
pub const BENCH_FRAME_LEN: usize = 342;

/// Written by the benchmark: the request and which clients to cycle.
#[repr(C)]
pub struct BenchFrame {
    pub clients: u32,
    pub first: u32,
    pub data: [u8; 344],
}

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
    let data = ctx.data();
    if data + BENCH_FRAME_LEN > ctx.data_end() {
        return false;
    }
    let mac = [
        0x02,
        0x20,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ];
    let ip = (0x6440_0000u32.wrapping_add(i)).to_be();
    unsafe {
        let p = data as *mut u8;
        core::ptr::copy_nonoverlapping(mac.as_ptr(), p.add(6), 6);
        core::ptr::copy_nonoverlapping(mac.as_ptr(), p.add(70), 6);
        (p.add(26) as *mut u32).write_unaligned(ip);
        (p.add(54) as *mut u32).write_unaligned(ip);
    }
    true
}

#[xdp]
pub fn xdhcp_bench_fast(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    dhcp_ebpf::run(&ctx)
}

#[xdp]
pub fn xdhcp_bench_bare(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    dhcp_ebpf::bare(&ctx, &XDHCP_BARE_LEASES)
}

#[xdp]
pub fn xdhcp_bench_restore(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible so the kernel lets us call every helper we may need.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
