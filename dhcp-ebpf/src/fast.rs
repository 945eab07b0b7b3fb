//! The fast path: a DHCPREQUEST in RENEWING, REBINDING or INIT-REBOOT from
//! a client with an active binding in the lease map is answered here with
//! the DHCPACK the control plane would send, turned around with XDP_TX.
//! Anything else returns a pass reason and goes to the control plane.
//!
//! The reply is written over the request in place: a DHCPACK keeps the
//! request's xid, flags, ciaddr, giaddr, chaddr and magic cookie where they
//! are, so only the fields that change, the options and the headers are
//! written, and the checksums are built from what is written (the
//! template's own sum is precomputed by the control plane).
//!
//! Shaped for the verifier: every read or write at a variable offset is
//! masked and checked against `data_end` right before it, and whatever a
//! loop produces is kept in the per-CPU `Scratch` map value rather than in
//! registers, so the verifier does not fork its states over it; loops
//! carry only their counter.
//!
//! Here the answer's sequence (`try_answer`); in `request` what it reads
//! and checks, in `reply` what it writes, in `access` the verifier-shaped
//! memory accesses both use.

mod access;
mod reply;
mod request;

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;

use dhcp_common::{
    layout::{bootp, ipv4, msg, opt, udp},
    lease_flags, stat, IfaceInfo, LeaseKey, LeaseValue, RenewEvent, REPORT_FRACTION,
};

pub(crate) use access::{fits, ld16, ld32, pk8, set, vol};
pub(crate) use request::hash_more;

use crate::{
    parse::Frame, XDHCP_EVENTS, XDHCP_IFACES, XDHCP_LEASES, XDHCP_SCRATCH, XDHCP_TEMPLATES,
};
use access::{ld8, payload, st32};
use reply::{layout, rewrite_frame};
use request::{build_key, check_lease, check_request, check_shape, classify, walk_options};

/// Offsets into the frame are masked with this (frames this program
/// answers are far shorter).
const M: usize = 0x7ff;
/// Largest request payload considered; larger ones are the control plane's.
const MAX_REQUEST: usize = 1472;
/// Largest reply payload built here.
const MAX_REPLY: usize = 1024;
const MAX_OPTIONS: usize = 96;
const MAX_RELAY_INFO: usize = 255;
/// The headers between the IPv4 header's start and the BOOTP payload's
/// (options make a request the control plane's).
const IP_UDP_LEN: usize = ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
/// Bytes after the template: 61 and 82 echoed, END, zero padding.
const TAIL: usize = MAX_REPLY - bootp::OPTIONS;
const BPF_RB_NO_WAKEUP: u64 = 1;
pub const EXPIRY_MARGIN_NS: u64 = dhcp_common::EXPIRY_MARGIN_SECS * 1_000_000_000;

const RAPID_BIT: u32 = lease_flags::RAPID_COMMIT.trailing_zeros();

/// Per-CPU working memory of one request. Offsets are from the start of
/// the frame.
#[repr(C)]
pub struct Scratch {
    pub key: LeaseKey,
    pub _key_pad: u32,
    /// The reply's options after the template, staged (the relay
    /// information they echo sits where the template goes).
    pub tail: [u8; 1024 + 8],
    // What the options walk found (0 = absent).
    pub end: u32,
    pub off: u32,
    pub done: u32,
    pub msg_type: u32,
    pub requested: u32,
    pub has_requested: u32,
    pub has_server_id: u32,
    pub prl_off: u32,
    pub prl_len: u32,
    pub mms: u32,
    pub has_mms: u32,
    pub cid_off: u32,
    pub cid_len: u32,
    pub rai_off: u32,
    pub rai_len: u32,
    pub hash: u64,
    // Carried between the sections of `try_answer`.
    /// Where the BOOTP payload starts.
    pub b: u32,
    pub outer_vlan: u32,
    pub inner_vlan: u32,
    pub frame_len: u32,
    pub state: u32,
    pub ip: u32,
    /// The request's IPv4 destination, network order.
    pub dst: u32,
    pub tlen: u32,
    /// Bytes of `tail` written, and all of it (up to the reply's end).
    pub t: u32,
    pub tail_len: u32,
    pub plen: u32,
    pub k: u32,
    /// Option 54's value (network order) when it has four bytes.
    pub server_id: u32,
    /// 1: a DISCOVER, answered with an OFFER (no event, no new end).
    pub offer: u32,
    /// 1: the request carries rapid commit (80, empty); once the binding
    /// is found, 1 only where its subnet enables it: the DISCOVER is then
    /// ACKed (80 echoed) instead of OFFERed.
    pub rapid: u32,
    // For the rate limits (`limits.rs`), read after `try_answer`.
    /// The lease map holds a binding for the client's key.
    pub known: u32,
    pub sub_off: u32,
    pub sub_end: u32,
    pub cir_off: u32,
    pub cir_len: u32,
    pub rem_off: u32,
    pub rem_len: u32,
    /// The pass reason, counted by the limits program if it passes.
    pub reason: u32,
    /// 1: the `PASS_EXPIRED` pass was the MCLT cap's (`pass_reason`).
    pub capped: u32,
    // Carried across the helper calls of `reply::rewrite_frame`.
    /// Bytes the frame grows (negative: shrinks) to the reply's size.
    pub delta: u32,
    /// The payload's folded ones'-complement sum (memory order).
    pub sum: u32,
}

/// The reason to count for a pass: `PASS_EXPIRED` covers the MCLT cap
/// too in the fast path (see `request::check_lease`), told apart here,
/// in the limits program, whose instructions are verified on their own
/// (without it, `run` counts such a pass as `PASS_EXPIRED`).
#[inline(always)]
pub fn pass_reason(s: &Scratch) -> u32 {
    let r = vol(&s.reason) as u32;
    if r == stat::PASS_EXPIRED && vol(&s.capped) != 0 {
        stat::PASS_MCLT_CAP
    } else {
        r
    }
}

/// Answers the request in place; Ok(the state's ACK counter) or Err(the
/// pass reason).
///
/// Each section leaves what the next needs in `Scratch` and the next reads
/// it back fresh: a value a loop compared against would otherwise stay
/// live with a different range for every iteration the loop can exit at,
/// and the verifier would walk the rest of the program once per range.
#[inline(always)]
pub fn try_answer(ctx: &XdpContext, frame: &Frame) -> Result<u32, u32> {
    let s = XDHCP_SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_UNUSUAL)?;
    let s = unsafe { &mut *s };
    // What the rate limits read must be this frame's, however early the
    // answer gives up.
    s.known = 0;
    s.rai_len = 0;
    s.b = (frame.l3_off + IP_UDP_LEN) as u32;
    s.outer_vlan = frame.outer_vlan as u32;
    s.inner_vlan = frame.inner_vlan as u32;
    if frame.ip_options {
        return Err(stat::PASS_UNUSUAL);
    }
    check_request(ctx, s)?;
    walk_options(ctx, s)?;
    classify(ctx, s)?;
    build_key(ctx, s)?;
    let ifindex = ctx.ingress_ifindex() as u32;
    let v: *mut LeaseValue = XDHCP_LEASES
        .get_ptr_mut(&s.key)
        .ok_or(stat::PASS_UNKNOWN_CLIENT)?;
    s.known = 1;
    let lease = unsafe { &mut *v };
    let offer = vol(&s.offer) != 0;
    let selecting = vol(&s.state) as u32 == stat::FP_ACK_SELECTING;
    if (offer || selecting) && lease.flags & lease_flags::OFFERABLE == 0 {
        return Err(if offer {
            stat::PASS_NOT_OFFERABLE
        } else {
            stat::PASS_SELECTING
        });
    }
    if offer {
        s.ip = lease.ip;
    }
    // Rapid commit where the binding's subnet enables it: the DISCOVER is
    // ACKed, reported like a renewal. Branch-free (one more path through
    // the rest of the program would cost the verifier as much again).
    let rapid = vol(&s.rapid) & vol(&s.offer) & (lease.flags >> RAPID_BIT) as usize & 1;
    set(&mut s.rapid, rapid);
    let offer = vol(&s.offer) & !rapid & 1;
    set(&mut s.offer, offer);
    let state = vol(&s.state) + rapid * (stat::FP_ACK_RAPID - stat::FP_OFFER) as usize;
    set(&mut s.state, state);
    let now = check_lease(ctx, s, lease, ifindex)?;
    crate::relay::from_its_relay(ctx, frame, lease.giaddr)?;
    check_shape(ctx, s, lease)?;
    let tmpl = XDHCP_TEMPLATES
        .get(lease.template_id)
        .ok_or(stat::PASS_NO_TEMPLATE)?;
    // The template starts 53 = ACK, then 54 = the server identifier.
    let t = tmpl.options.as_ptr() as usize;
    if ld8(t) != opt::MESSAGE_TYPE
        || ld8(t + 1) != 1
        || ld8(t + 2) != msg::ACK
        || ld8(t + 3) != opt::SERVER_ID
        || ld8(t + 4) != 4
    {
        return Err(stat::PASS_NO_TEMPLATE);
    }
    if selecting && ld32(t + 5) != vol(&s.server_id) as u32 {
        // Another server's, or the control plane's to judge.
        return Err(stat::PASS_SELECTING);
    }
    // Interfaces without the fast path are not in the map.
    let iface: &IfaceInfo = XDHCP_IFACES
        .get(ifindex)
        .filter(|i| i.server_ip != 0)
        .ok_or(stat::PASS_WRONG_SCOPE)?;
    // A reply to a relay leaves from the address the relay sent to
    // (`dhcp_common::reply_ip::reply_source`); here that can only be the
    // server identifier. Any other is the control plane's to answer.
    if ld32(payload(ctx, s)? + bootp::GIADDR.start) != 0 && vol(&s.dst) as u32 != iface.server_ip {
        return Err(stat::PASS_OTHER_ADDRESS);
    }
    layout(s, tmpl)?;
    let expires = now + lease.lease_secs as u64 * 1_000_000_000;
    // The event is queued before the frame is touched: a renewal the store
    // may never hear of is not answered here (the control plane answers it
    // and stores it itself). Renewals that move the end less than
    // lease/REPORT_FRACTION past the stored one need no event at all, and
    // an OFFER binds nothing: no event, the end stays.
    let step = lease.lease_secs as u64 * (1_000_000_000 / REPORT_FRACTION);
    let slot = if vol(&s.offer) == 0 && expires >= lease.reported_mono_ns + step {
        let Some(mut slot) = XDHCP_EVENTS.reserve::<RenewEvent>(0) else {
            return Err(stat::EVENT_LOST);
        };
        let ev = slot.as_mut_ptr();
        unsafe {
            let k = &s.key as *const _ as usize;
            let e = core::ptr::addr_of_mut!((*ev).key) as usize;
            let mut i = 0;
            while i < size_of::<LeaseKey>() / 4 {
                st32(e + 4 * i, ld32(k + 4 * i));
                i += 1;
            }
            core::ptr::addr_of_mut!((*ev).ip).write(vol(&s.ip) as u32);
            core::ptr::addr_of_mut!((*ev).expires_mono_ns).write(expires);
            core::ptr::addr_of_mut!((*ev).ifindex).write(ifindex);
            core::ptr::addr_of_mut!((*ev).outer_vlan).write(vol(&s.outer_vlan) as u16);
            core::ptr::addr_of_mut!((*ev).inner_vlan).write(vol(&s.inner_vlan) as u16);
        }
        Some(slot)
    } else {
        None
    };
    // One call site for every answer: each would be verified on its own.
    if let Err(e) = rewrite_frame(ctx, s, tmpl, iface) {
        if let Some(slot) = slot {
            slot.discard(BPF_RB_NO_WAKEUP);
        }
        return Err(e);
    }
    if vol(&s.offer) != 0 {
        // Never a slot here (none is reserved for an OFFER), but the
        // verifier must see every reservation released on every path.
        if let Some(slot) = slot {
            slot.discard(BPF_RB_NO_WAKEUP);
        }
        return Ok(stat::FP_OFFER);
    }
    // The binding runs on; userspace persists it from the event. No
    // wakeup: serve polls the ring on a short timer, which spares every
    // renewal the notification check.
    lease.expires_mono_ns = expires;
    if let Some(slot) = slot {
        lease.reported_mono_ns = expires;
        slot.submit(BPF_RB_NO_WAKEUP);
    }
    Ok(vol(&s.state) as u32)
}

/// Set on a pass reason when the frame can no longer be passed.
pub const DROP: u32 = 0x8000_0000;
