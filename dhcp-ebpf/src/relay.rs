//! Relayed renewals are answered here only when they come from their
//! relay: the frame's IPv4 source is its giaddr. The control plane serves
//! relayed requests only from trusted relays and lets this program renew
//! a relayed binding only when its giaddr is one (`server::trust`), so a
//! host on an access port that forges a relay's giaddr gets no answer
//! from either plane (the control plane drops it and counts it).

use aya_ebpf::programs::XdpContext;

use dhcp_common::stat;

use crate::parse::{ptr_at, Frame, Ipv4Hdr};

/// Ok when the frame is not relayed (`giaddr` 0) or its IPv4 source is
/// `giaddr` (both in network order).
#[inline(always)]
pub fn from_its_relay(ctx: &XdpContext, frame: &Frame, giaddr: u32) -> Result<(), u32> {
    if giaddr == 0 {
        return Ok(());
    }
    let ip =
        ptr_at::<Ipv4Hdr>(ctx.data(), ctx.data_end(), frame.l3_off).ok_or(stat::PASS_MALFORMED)?;
    if unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ip).saddr)) } != giaddr {
        return Err(stat::PASS_WRONG_SCOPE);
    }
    Ok(())
}
