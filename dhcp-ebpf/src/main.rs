//! xdhcp's XDP program. Today it classifies frames and counts DHCP requests;
//! everything is passed on to the kernel stack (and so to the control plane).
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use dhcp_common::stat;

#[map(name = "XDHCP_STATS")]
static XDHCP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
fn count(idx: u32) {
    if let Some(counter) = XDHCP_STATS.get_ptr_mut(idx) {
        // Per-CPU slot: no other writer, no atomic needed.
        unsafe { *counter += 1 };
    }
}

#[xdp]
pub fn xdhcp(ctx: XdpContext) -> u32 {
    count(stat::RX_FRAMES);
    let parsed = parse::parse(ctx.data(), ctx.data_end());
    match parsed.frame.tags {
        1 => count(stat::VLAN_SINGLE),
        2 => count(stat::VLAN_DOUBLE),
        _ => {}
    }
    if parsed.frame.ip_options {
        count(stat::IP_OPTIONS);
    }
    count(parsed.class);
    if parsed.class == stat::DHCP_REQUESTS {
        debug!(
            &ctx,
            "dhcp request if={} vlan={}/{}",
            ctx.ingress_ifindex() as u32,
            parsed.frame.outer_vlan,
            parsed.frame.inner_vlan
        );
    }
    xdp_action::XDP_PASS
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
