//! What xdhcp's XDP objects share: the server's fast path (`fast`,
//! `parse`, `relay`, `limits`), its maps, and the bodies of its programs.
//! Each object is its own binary (`src/bin/`) so that it carries only its
//! role's programs and maps: the server's (`server`), the load generator's
//! (`gen`, which does not link this library) and the benchmark's
//! (`bench`, the fast path beside its yardstick and harnesses).
#![no_std]
// Empty `asm!` hides values from LLVM's rewrites the verifier cannot follow.
#![feature(asm_experimental_arch)]

mod fast;
mod limits;
mod parse;
mod relay;

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use dhcp_common::{
    layout::{bootp, ipv4, udp},
    stat, IfaceInfo, LeaseKey, LeaseValue, ReplyTemplate, Stats, IFACE_SLOTS, TEMPLATE_SLOTS,
};

/// One per-CPU array of every counter: a frame looks it up once.
#[map(name = "XDHCP_STATS")]
static XDHCP_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// Sized by userspace at load time (`lease_map_entries`).
#[map(name = "XDHCP_LEASES")]
static XDHCP_LEASES: HashMap<LeaseKey, LeaseValue> = HashMap::with_max_entries(1024, 0);

#[map(name = "XDHCP_TEMPLATES")]
static XDHCP_TEMPLATES: Array<ReplyTemplate> = Array::with_max_entries(TEMPLATE_SLOTS, 0);

/// Indexed by ifindex (an array lookup is inlined; a hash one is a call).
#[map(name = "XDHCP_IFACES")]
static XDHCP_IFACES: Array<IfaceInfo> = Array::with_max_entries(IFACE_SLOTS, 0);

#[map(name = "XDHCP_EVENTS")]
static XDHCP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map(name = "XDHCP_SCRATCH")]
static XDHCP_SCRATCH: PerCpuArray<fast::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's counters: no other writer, no atomic needed.
struct Counters(*mut Stats);

impl Counters {
    #[inline(always)]
    fn count(&self, idx: u32) {
        if let Some(c) = unsafe { (*self.0).get_mut(idx as usize) } {
            *c += 1;
        }
    }
}

/// One counter bumped from deep in a rare path (a map lookup of its own).
#[inline(always)]
pub fn count(idx: u32) {
    if let Some(stats) = XDHCP_STATS.get_ptr_mut(0) {
        Counters(stats).count(idx);
    }
}

/// The server's two programs, `xdhcp` and `xdhcp_limits` (the names the
/// daemon loads and pins by), defined in the object that expands this:
/// a program defined here would be one every linking object carries.
#[macro_export]
macro_rules! server_programs {
    () => {
        #[::aya_ebpf::macros::xdp]
        pub fn xdhcp(ctx: ::aya_ebpf::programs::XdpContext) -> u32 {
            $crate::run(&ctx)
        }

        /// The rate limits, for frames the fast path passes (`limits.rs`).
        #[::aya_ebpf::macros::xdp]
        pub fn xdhcp_limits(ctx: ::aya_ebpf::programs::XdpContext) -> u32 {
            $crate::limits_program(&ctx)
        }
    };
}

/// The body of `xdhcp`: classify the frame, answer it or pass it on.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(stats) = XDHCP_STATS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let c = Counters(stats);
    c.count(stat::RX_FRAMES);
    let parsed = parse::parse(ctx.data(), ctx.data_end());
    match parsed.frame.tags {
        1 => c.count(stat::VLAN_SINGLE),
        2 => c.count(stat::VLAN_DOUBLE),
        _ => {}
    }
    if parsed.frame.ip_options {
        c.count(stat::IP_OPTIONS);
    }
    c.count(parsed.class);
    if parsed.class != stat::DHCP_REQUESTS {
        return xdp_action::XDP_PASS;
    }
    match fast::try_answer(ctx, &parsed.frame) {
        Ok(state) => {
            c.count(state);
            xdp_action::XDP_TX
        }
        Err(reason) if reason & fast::DROP != 0 => {
            c.count(reason & !fast::DROP);
            c.count(stat::DROPPED);
            xdp_action::XDP_DROP
        }
        Err(reason) => {
            debug!(ctx, "dhcp request passed: reason {}", reason);
            if let Some(s) = XDHCP_SCRATCH.get_ptr_mut(0) {
                unsafe { (*s).reason = reason };
                // The limits are their own program, verified on their own:
                // inlined here, they would be walked once for every way
                // `try_answer` can give up. No return: it counts the frame.
                unsafe { XDHCP_PROGS.tail_call(ctx, limits::SLOT) };
            }
            // No limits program (or no scratch): pass, as before.
            c.count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// The programs `run` hands frames on to (`limits::SLOT`).
#[map(name = "XDHCP_PROGS")]
static XDHCP_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The body of `xdhcp_limits`.
#[inline(always)]
pub fn limits_program(ctx: &XdpContext) -> u32 {
    let Some(stats) = XDHCP_STATS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let c = Counters(stats);
    let Some(s) = XDHCP_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let s = unsafe { &mut *s };
    match limits::over(ctx, s) {
        Some(limited) => {
            c.count(limited);
            xdp_action::XDP_DROP
        }
        None => {
            c.count(fast::pass_reason(s));
            xdp_action::XDP_PASS
        }
    }
}

/// The benchmark's yardstick (`xdhcp_bare`): parse the same frame, one
/// lookup with the same key pattern in `leases` (a map of the lease map's
/// size, the benchmark's own), swap addresses, XDP_TX. The fast path's
/// cost is reported against this one's. Here because it shares the fast
/// path's parsing and loads.
#[inline(always)]
pub fn bare(ctx: &XdpContext, leases: &HashMap<LeaseKey, LeaseValue>) -> u32 {
    let parsed = parse::parse(ctx.data(), ctx.data_end());
    if parsed.class != stat::DHCP_REQUESTS {
        return xdp_action::XDP_PASS;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let l3 = parsed.frame.l3_off & 0x3f;
    let chaddr = data + l3 + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + bootp::CHADDR.start;
    if chaddr + 6 > end {
        return xdp_action::XDP_PASS;
    }
    // Built a word at a time, as the fast path builds its keys (a zeroed
    // `LeaseKey` would become a bytewise `memset` call).
    let (lo, hi) = (fast::ld32(chaddr) as u64, fast::ld16(chaddr + 4) as u64);
    let w0 = dhcp_common::id_kind::HWADDR as u64 | 7 << 8 | 1 << 32 | lo << 40;
    let key: [u64; 3] = [w0, lo >> 24 | hi << 8, 0];
    const _: () = assert!(core::mem::size_of::<LeaseKey>() <= 8 * 3);
    let key = unsafe { &*(key.as_ptr() as *const LeaseKey) };
    if unsafe { leases.get(key) }.is_none() {
        return xdp_action::XDP_PASS;
    }
    let ip = data + l3;
    if data + 12 > end || ip + 24 > end {
        return xdp_action::XDP_PASS;
    }
    unsafe {
        let eth = data as *mut [u8; 6];
        let (d, s) = (*eth, *eth.add(1));
        *eth = s;
        *eth.add(1) = d;
        let a = (ip + 12) as *mut u32;
        let (sa, da) = (a.read_unaligned(), a.add(1).read_unaligned());
        a.write_unaligned(da);
        a.add(1).write_unaligned(sa);
        let ports = (ip + 20) as *mut u32;
        ports.write_unaligned(ports.read_unaligned().rotate_left(16));
    }
    xdp_action::XDP_TX
}
