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

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use core::mem::size_of;

use dhcp_common::{
    id_kind, lease_flags, reply_ip, shape_hash_finish, stat, IfaceInfo, LeaseKey, LeaseValue,
    RenewEvent, MAX_ID_LEN, REPORT_FRACTION, SHAPE_OFFSET, SHAPE_PRIME, TEMPLATE_OPTIONS_MAX,
};

use crate::{
    parse::Frame, XDHCP_EVENTS, XDHCP_IFACES, XDHCP_LEASES, XDHCP_SCRATCH, XDHCP_TEMPLATES,
};

/// Offsets into the frame are masked with this (frames this program
/// answers are far shorter).
const M: usize = 0x7ff;
/// Largest request payload considered; larger ones are the control plane's.
const MAX_REQUEST: usize = 1472;
/// Largest reply payload built here.
const MAX_REPLY: usize = 1024;
const MAX_OPTIONS: usize = 96;
const MAX_RELAY_INFO: usize = 255;
const BOOTP_FIXED: usize = 236;
const OPTIONS_START: usize = 240;
const MIN_PAYLOAD: usize = 300;
/// Bytes after the template: 61 and 82 echoed, END, zero padding.
const TAIL: usize = MAX_REPLY - OPTIONS_START;
const BPF_RB_NO_WAKEUP: u64 = 1;
pub const EXPIRY_MARGIN_NS: u64 = dhcp_common::EXPIRY_MARGIN_SECS * 1_000_000_000;

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
}

/// A fresh read of a scratch field: LLVM must not reuse a register copy,
/// whose range the verifier would have narrowed on some path and so tell
/// paths apart that are the same.
#[inline(always)]
pub(crate) fn vol(v: &u32) -> usize {
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
pub(crate) fn set(v: &mut u32, x: usize) {
    unsafe { core::ptr::write_volatile(v, x as u32) }
}

/// `p + size <= end`, in a form the verifier learns the range from: LLVM
/// would otherwise merge or rewrite the comparison (e.g. into pointer
/// differences) and the verifier would see no bound. The volatile read
/// hides the constant from LLVM; the verifier still knows it exactly.
#[inline(always)]
pub(crate) fn fits(p: usize, size: usize, end: usize) -> bool {
    opaque(p) + opaque(size) <= end
}

/// `v`, which LLVM can no longer see through (one register move; an
/// empty template would leave two line-info records on one instruction,
/// which the kernel refuses).
#[inline(always)]
fn opaque(mut v: usize) -> usize {
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack)) };
    v
}

// Word accesses to the frame and to map values at any byte offset. The
// pointers are typed as aligned on purpose: LLVM splits a load it believes
// misaligned into single bytes, while BPF on x86-64 and arm64 (efficient
// unaligned access) lets the verifier accept, and the JIT emit, one
// unaligned access; only the stack must be aligned, and these never point
// into it.
#[inline(always)]
fn ld8(p: usize) -> u8 {
    unsafe { core::ptr::read_volatile(p as *const u8) }
}
#[inline(always)]
pub(crate) fn ld16(p: usize) -> u16 {
    unsafe { core::ptr::read_volatile(p as *const u16) }
}
#[inline(always)]
pub(crate) fn ld32(p: usize) -> u32 {
    unsafe { core::ptr::read_volatile(p as *const u32) }
}
#[inline(always)]
fn ld64(p: usize) -> u64 {
    unsafe { core::ptr::read_volatile(p as *const u64) }
}
#[inline(always)]
fn st8(p: usize, v: u8) {
    unsafe { core::ptr::write_volatile(p as *mut u8, v) }
}
#[inline(always)]
fn st16(p: usize, v: u16) {
    unsafe { core::ptr::write_volatile(p as *mut u16, v) }
}
#[inline(always)]
fn st32(p: usize, v: u32) {
    unsafe { core::ptr::write_volatile(p as *mut u32, v) }
}
#[inline(always)]
fn st64(p: usize, v: u64) {
    unsafe { core::ptr::write_volatile(p as *mut u64, v) }
}

/// Where `off` is in the frame. Read back from the stack so LLVM cannot
/// fold the offset differently into the bounds check and the access (the
/// verifier would then see two unrelated pointers).
#[inline(always)]
fn at(ctx: &XdpContext, off: usize) -> usize {
    opaque(ctx.data() + (off & M))
}

/// The frame's byte at `off`.
#[inline(always)]
pub(crate) fn pk8(ctx: &XdpContext, off: usize) -> Result<u8, u32> {
    let p = at(ctx, off);
    if !fits(p, 1, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(unsafe { *(p as *const u8) })
}

/// The BOOTP payload, its fixed part and magic cookie in the frame.
#[inline(always)]
fn payload(ctx: &XdpContext, s: &Scratch) -> Result<usize, u32> {
    let p = ctx.data() + (vol(&s.b) & 0x3f);
    if !fits(p, OPTIONS_START, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(p)
}

/// Walks the request's options, recording what the fast path needs.
#[inline(always)]
fn walk_options(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    for f in [
        &mut s.done,
        &mut s.msg_type,
        &mut s.has_requested,
        &mut s.has_server_id,
        &mut s.prl_len,
        &mut s.prl_off,
        &mut s.mms,
        &mut s.has_mms,
        &mut s.cid_len,
        &mut s.cid_off,
        &mut s.rai_len,
        &mut s.rai_off,
        &mut s.server_id,
        &mut s.offer,
    ] {
        set(f, 0);
    }
    set(&mut s.off, vol(&s.b) + OPTIONS_START);
    let mut i = 0;
    while i < MAX_OPTIONS {
        i += 1;
        let n = vol(&s.end);
        let off = vol(&s.off) & M;
        if off >= n {
            // Options must end with END.
            return Err(stat::PASS_MALFORMED);
        }
        let p = at(ctx, off);
        let end = ctx.data_end();
        if !fits(p, 1, end) {
            return Err(stat::PASS_MALFORMED);
        }
        let code = ld8(p);
        if code == 0 {
            set(&mut s.off, off + 1);
            continue;
        }
        if code == 255 {
            s.done = 1;
            break;
        }
        if off + 2 > n || !fits(p, 2, end) {
            return Err(stat::PASS_MALFORMED);
        }
        let len = ld8(p + 1) as usize;
        let v = off + 2;
        if v + len > n {
            return Err(stat::PASS_MALFORMED);
        }
        // The control plane keeps the first instance of each option; a
        // repeated one it reads is the control plane's to judge, as are
        // bad lengths, option overload, rapid commit and subnet selection.
        // (Values lie before `n`, inside the frame; `fits` shows the
        // verifier.)
        match code {
            53 if len == 1 && vol(&s.msg_type) == 0 => {
                if !fits(p, 3, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.msg_type = ld8(p + 2) as u32;
            }
            50 if len == 4 && vol(&s.has_requested) == 0 => {
                if !fits(p, 6, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.requested = ld32(p + 2);
                s.has_requested = 1;
            }
            54 if len == 4 && vol(&s.has_server_id) == 0 => {
                if !fits(p, 6, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.server_id = ld32(p + 2);
                s.has_server_id = 1;
            }
            54 => return Err(stat::PASS_UNUSUAL),
            55 if vol(&s.prl_len) == 0 => {
                s.prl_off = v as u32;
                s.prl_len = len as u32 + 1;
            }
            57 if len == 2 && vol(&s.has_mms) == 0 => {
                if !fits(p, 4, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.mms = u16::from_be(ld16(p + 2)) as u32;
                s.has_mms = 1;
            }
            // RFC 2132 9.14: at least a type and a byte; the control plane
            // drops a shorter one.
            61 if len < 2 && vol(&s.cid_off) == 0 => return Err(stat::PASS_MALFORMED),
            61 if vol(&s.cid_off) == 0 => {
                s.cid_off = v as u32;
                s.cid_len = len as u32;
            }
            // An empty 82 (no sub-option) is echoed empty by the control
            // plane; the lease map has no such shape (length 0 = absent).
            82 if len > 0 && vol(&s.rai_off) == 0 => {
                s.rai_off = v as u32;
                s.rai_len = len as u32;
            }
            51 if len == 4 => {}
            53 | 50 | 55 | 57 | 61 | 82 | 51 | 52 | 80 | 118 => return Err(stat::PASS_UNUSUAL),
            _ => {}
        }
        set(&mut s.off, v + len);
    }
    if vol(&s.done) == 0 {
        return Err(stat::PASS_UNUSUAL);
    }
    Ok(())
}

/// `dhcp_common::shape_hash_more` over `len` bytes of the frame at `off`,
/// continuing `s.hash`: a word per step.
#[inline(always)]
pub(crate) fn hash_more(
    ctx: &XdpContext,
    s: &mut Scratch,
    off: usize,
    len: usize,
) -> Result<(), u32> {
    let mut h = unsafe { core::ptr::read_volatile(&s.hash) };
    let mut i = 0;
    while i < 256 / 8 {
        if 8 * i >= len {
            break;
        }
        let p = at(ctx, off + 8 * i);
        let w = if fits(p, 8, ctx.data_end()) {
            ld64(p)
        } else {
            // The frame ends within the word: what is left, bytewise.
            let mut w = 0u64;
            let mut j = 0;
            while j < 8 {
                if 8 * i + j >= len {
                    break;
                }
                w |= (pk8(ctx, off + 8 * i + j)? as u64) << (8 * j);
                j += 1;
            }
            w
        };
        h = (h ^ low_bytes(w, len - 8 * i)).wrapping_mul(SHAPE_PRIME);
        i += 1;
    }
    s.hash = h;
    Ok(())
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The halves of a memory-order word, for a ones'-complement sum.
#[inline(always)]
fn halves(w: u64) -> u64 {
    (w & 0xffff_ffff) + (w >> 32)
}

/// The low `n` bytes (memory order) of a word, the rest zero.
#[inline(always)]
fn low_bytes(w: u64, n: usize) -> u64 {
    if n >= 8 {
        w
    } else {
        w & ((1u64 << (8 * n)) - 1)
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
    s.b = (frame.l3_off + 28) as u32;
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
    let now = check_lease(ctx, s, lease, ifindex)?;
    crate::relay::from_its_relay(ctx, frame, lease.giaddr)?;
    check_shape(ctx, s, lease)?;
    let tmpl = XDHCP_TEMPLATES
        .get(lease.template_id)
        .ok_or(stat::PASS_NO_TEMPLATE)?;
    // The template starts 53 = ACK, then 54 = the server identifier.
    let t = tmpl.options.as_ptr() as usize;
    if ld8(t) != 53 || ld8(t + 1) != 1 || ld8(t + 2) != 5 || ld8(t + 3) != 54 || ld8(t + 4) != 4 {
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
    if ld32(payload(ctx, s)? + 24) != 0 && vol(&s.dst) as u32 != iface.server_ip {
        return Err(stat::PASS_OTHER_ADDRESS);
    }
    layout(s, tmpl)?;
    if vol(&s.offer) != 0 {
        // An OFFER binds nothing: no event, the end stays.
        rewrite_frame(ctx, s, tmpl, iface)?;
        return Ok(stat::FP_OFFER);
    }
    let expires = now + lease.lease_secs as u64 * 1_000_000_000;
    // The event is queued before the frame is touched: a renewal the store
    // may never hear of is not answered here (the control plane answers it
    // and stores it itself). Renewals that move the end less than
    // lease/REPORT_FRACTION past the stored one need no event at all.
    let step = lease.lease_secs as u64 * (1_000_000_000 / REPORT_FRACTION);
    let slot = if expires >= lease.reported_mono_ns + step {
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
    if let Err(e) = rewrite_frame(ctx, s, tmpl, iface) {
        if let Some(slot) = slot {
            slot.discard(BPF_RB_NO_WAKEUP);
        }
        return Err(e);
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

/// The request's payload (per the UDP length) lies in the frame, which is
/// one linear buffer, and is of a size the fast path answers.
#[inline(always)]
fn check_request(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    if frame_len > M {
        return Err(stat::PASS_UNUSUAL);
    }
    // A frame in fragments (multi-buffer XDP) is not written in place.
    if !fits(ctx.data(), frame_len & M, ctx.data_end()) {
        return Err(stat::PASS_UNUSUAL);
    }
    s.frame_len = frame_len as u32;
    let b = vol(&s.b) & 0x3f;
    let ip = ctx.data() + ((b - 28) & 0x3f);
    if !fits(ip, 28, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    // What the kernel's stack and the control plane drop (`parse_frame`):
    // a bad header checksum, a UDP datagram longer than the IPv4 one (no
    // IPv4 options here: the header is 20 bytes).
    let ip_sum = halves(ld64(ip)) + halves(ld64(ip + 8)) + ld32(ip + 16) as u64;
    if fold(ip_sum) != 0xffff {
        return Err(stat::PASS_MALFORMED);
    }
    let tot_len = u16::from_be(ld16(ip + 2)) as usize;
    let udp_len = u16::from_be(ld16(ip + 24)) as usize;
    if udp_len < 8 + OPTIONS_START + 1 || udp_len + 20 > tot_len || b + udp_len - 8 > frame_len {
        return Err(stat::PASS_MALFORMED);
    }
    let n = udp_len - 8;
    if n > MAX_REQUEST {
        return Err(stat::PASS_UNUSUAL);
    }
    s.end = (b + n) as u32;
    s.dst = ld32(ip + 16);
    // RENEWING is unicast, REBINDING broadcast: keep which.
    s.state = if vol(&s.dst) as u32 == u32::MAX {
        stat::FP_ACK_REBINDING
    } else {
        stat::FP_ACK_RENEWING
    };
    Ok(())
}

/// BOOTREQUEST, DHCPREQUEST, and which client state it was sent in.
#[inline(always)]
fn classify(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    let p = payload(ctx, s)?;
    if unsafe { *(p as *const u8) } != 1 {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if unsafe { *((p + 2) as *const u8) } > 16 {
        return Err(stat::PASS_MALFORMED);
    }
    if ld32(p + BOOTP_FIXED) != u32::from_be(0x6382_5363) {
        return Err(stat::PASS_MALFORMED);
    }
    let ciaddr = ld32(p + 12);
    let has_requested = vol(&s.has_requested) != 0;
    if vol(&s.msg_type) == 1 {
        // DISCOVER: the OFFER is the ACK's template with another message
        // type, and the control plane's OFFER has ciaddr zero (the reply
        // keeps the request's). Its address is the binding's (set once
        // the binding is found).
        if ciaddr != 0 || vol(&s.has_server_id) != 0 {
            return Err(stat::PASS_UNUSUAL);
        }
        s.offer = 1;
        s.state = stat::FP_OFFER;
        return Ok(());
    }
    if vol(&s.msg_type) != 3 {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if vol(&s.has_server_id) != 0 {
        // SELECTING, for the binding's address (checked with the lease)
        // from our server identifier (checked with the template).
        if ciaddr != 0 || !has_requested {
            return Err(stat::PASS_SELECTING);
        }
        s.ip = vol(&s.requested) as u32;
        s.state = stat::FP_ACK_SELECTING;
        return Ok(());
    }
    if ciaddr != 0 && !has_requested {
        s.ip = ciaddr;
    } else if ciaddr == 0 && has_requested {
        s.ip = vol(&s.requested) as u32;
        s.state = stat::FP_ACK_INIT_REBOOT;
    } else {
        return Err(stat::PASS_UNUSUAL);
    }
    Ok(())
}

/// Identities `build_key` reads whole (three words, masked); longer ones
/// are the control plane's, whatever `MAX_ID_LEN` (the previous layout's
/// is 32).
const KEYED_ID_LEN: usize = if MAX_ID_LEN < 20 { MAX_ID_LEN } else { 20 };

/// The client's identity, as the control plane keys it: the client
/// identifier when sent, else htype + chaddr; unused bytes zero. Built a
/// word at a time from the identity's first 24 bytes (`MAX_ID_LEN` is 20),
/// masked to its length.
#[inline(always)]
fn build_key(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    let cid_len = vol(&s.cid_len);
    let (kind, len, w) = if cid_len > 0 {
        if !(2..=KEYED_ID_LEN).contains(&cid_len) {
            return Err(stat::PASS_UNUSUAL);
        }
        let from = vol(&s.cid_off) & M;
        let mut p = at(ctx, from);
        if !fits(p, 24, ctx.data_end()) {
            // Too near the frame's end to read as words: staged bytewise.
            p = s.tail.as_mut_ptr() as usize;
            st64(p, 0);
            st64(p + 8, 0);
            st64(p + 16, 0);
            let mut i = 0;
            while i < MAX_ID_LEN {
                if i >= cid_len {
                    break;
                }
                st8(p + i, pk8(ctx, from + i)?);
                i += 1;
            }
        }
        let w = [ld64(p), ld64(p + 8), ld64(p + 16)];
        (id_kind::CLIENT_ID, cid_len, w)
    } else {
        let p = payload(ctx, s)?;
        let htype = unsafe { *((p + 1) as *const u8) } as u64;
        let hlen = unsafe { *((p + 2) as *const u8) } as usize & 0x1f;
        let (lo, hi) = (ld64(p + 28), ld64(p + 36));
        (
            id_kind::HWADDR,
            1 + hlen,
            [htype | lo << 8, lo >> 56 | hi << 8, hi >> 56],
        )
    };
    let w0 = low_bytes(w[0], len);
    let w1 = low_bytes(w[1], len.saturating_sub(8));
    // At most 4 bytes of the third word belong to the identity.
    let w2 = low_bytes(w[2], len.saturating_sub(16));
    let k = &mut s.key as *mut LeaseKey as usize;
    st64(k, kind as u64 | (len as u64) << 8 | w0 << 32);
    st64(k + 8, w0 >> 32 | w1 << 32);
    st64(k + 16, w1 >> 32 | w2 << 32);
    Ok(())
}

/// The binding is ours to answer: flagged, same address, not expired,
/// asked for from where it was made. Returns the current monotonic time.
#[inline(always)]
fn check_lease(
    ctx: &XdpContext,
    s: &mut Scratch,
    lease: &LeaseValue,
    ifindex: u32,
) -> Result<u64, u32> {
    if lease.flags & lease_flags::FASTPATH == 0 {
        return Err(stat::PASS_UNKNOWN_CLIENT);
    }
    if lease.ip != vol(&s.ip) as u32 {
        return Err(stat::PASS_WRONG_ADDRESS);
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Close to its end a binding is the control plane's: its reclaim must
    // never race a renewal whose event is still on the way.
    if now + EXPIRY_MARGIN_NS >= lease.expires_mono_ns {
        return Err(stat::PASS_EXPIRED);
    }
    let giaddr = ld32(payload(ctx, s)? + 24);
    let scope_ok = if giaddr != 0 {
        lease.giaddr == giaddr
    } else {
        lease.giaddr == 0
            && lease.ifindex == ifindex
            && lease.outer_vlan as usize == vol(&s.outer_vlan)
            && lease.inner_vlan as usize == vol(&s.inner_vlan)
    };
    if !scope_ok {
        return Err(stat::PASS_WRONG_SCOPE);
    }
    Ok(now)
}

/// Same request shape as the one the template was built for.
#[inline(always)]
fn check_shape(ctx: &XdpContext, s: &mut Scratch, lease: &LeaseValue) -> Result<(), u32> {
    if lease.prl_len as usize != vol(&s.prl_len)
        || lease.max_message_size as usize != vol(&s.mms)
        || lease.client_id_len as usize != vol(&s.cid_len)
        || lease.relay_info_len as usize != vol(&s.rai_len)
    {
        return Err(stat::PASS_SHAPE_CHANGED);
    }
    s.hash = SHAPE_OFFSET;
    let prl_len = vol(&s.prl_len);
    if prl_len > 0 {
        hash_more(ctx, s, vol(&s.prl_off), prl_len - 1)?;
    }
    let rai_len = vol(&s.rai_len);
    if rai_len > 0 {
        hash_more(ctx, s, vol(&s.rai_off), rai_len)?;
    }
    if lease.shape_hash != shape_hash_finish(unsafe { core::ptr::read_volatile(&s.hash) }) {
        return Err(stat::PASS_SHAPE_CHANGED);
    }
    Ok(())
}

/// Where the reply's options go: the template, then (staged in
/// `s.tail`) 61 and 82 echoed, END, and zero padding to the BOOTP
/// minimum. Sets `s.tlen`, `s.t` (the tail's bytes up to END),
/// `s.tail_len` (to the end of the reply) and `s.plen`.
#[inline(always)]
fn layout(s: &mut Scratch, tmpl: &dhcp_common::ReplyTemplate) -> Result<(), u32> {
    let tlen = tmpl.options_len as usize;
    if tlen == 0 || tlen > TEMPLATE_OPTIONS_MAX {
        return Err(stat::PASS_NO_TEMPLATE);
    }
    let cid_len = vol(&s.cid_len);
    let rai_len = vol(&s.rai_len);
    let mut t = 1;
    if cid_len > 0 {
        t += 2 + cid_len;
    }
    if rai_len > 0 {
        t += 2 + rai_len;
    }
    let o = OPTIONS_START + tlen + t;
    let plen = if o < MIN_PAYLOAD { MIN_PAYLOAD } else { o };
    let mms = vol(&s.mms);
    let limit = if mms > 576 { mms } else { 576 } - 28;
    if plen > limit || plen > MAX_REPLY {
        return Err(stat::PASS_TOO_BIG);
    }
    s.tlen = tlen as u32;
    s.t = t as u32;
    s.plen = plen as u32;
    s.tail_len = (plen - OPTIONS_START - tlen) as u32;
    Ok(())
}

/// Fills `s.tail`: 61 (from the key, which holds the identifier) and 82
/// (from the request, before the template covers it), END, zeros. Returns
/// its ones'-complement sum as if it started at an even offset.
#[inline(always)]
fn stage_tail(ctx: &XdpContext, s: &mut Scratch) -> Result<u64, u32> {
    let tail = s.tail.as_mut_ptr() as usize;
    if vol(&s.cid_len) == 0 && vol(&s.rai_len) == 0 {
        // Nothing echoed: END and zeros.
        st64(tail, 255);
        let mut i = 1;
        while i < TAIL / 8 {
            if 8 * i >= vol(&s.tail_len) {
                break;
            }
            st64(tail + 8 * i, 0);
            i += 1;
        }
        return Ok(255);
    }
    let mut t = 0;
    let cid_len = vol(&s.cid_len);
    if cid_len > 0 {
        st16(tail, 61 | (cid_len as u16) << 8);
        let id = s.key.id.as_ptr() as usize;
        // The key's identifier is zero past its length (and the scratch
        // word after the key, never written, is zero too).
        st64(tail + 2, ld64(id));
        st64(tail + 10, ld64(id + 8));
        st64(tail + 18, ld64(id + 16));
        t = 2 + cid_len;
    }
    s.k = t as u32;
    let rai_len = vol(&s.rai_len);
    if rai_len > 0 {
        let t = vol(&s.k) & 0x3f;
        st16(tail + t, 82 | (rai_len as u16) << 8);
        let from = vol(&s.rai_off);
        let mut i = 0;
        while i < MAX_RELAY_INFO {
            if i >= rai_len {
                break;
            }
            let b = pk8(ctx, from + i)?;
            st8(tail + ((t + 2 + i) & 0x1ff), b);
            i += 1;
        }
        s.k = (t + 2 + rai_len) as u32;
    }
    let t = vol(&s.k) & 0x1ff;
    st8(tail + t, 255);
    // Zeros to the reply's end (at least a word, which the sum reads).
    let mut z = t + 1;
    let mut i = 0;
    while i < TAIL / 8 {
        st64(tail + (z & 0x3ff), 0);
        z += 8;
        if z >= vol(&s.tail_len) {
            break;
        }
        i += 1;
    }
    let mut sum = 0u64;
    let mut i = 0;
    while i < TAIL / 8 {
        if 8 * i >= vol(&s.t) {
            break;
        }
        sum += halves(ld64(tail + 8 * i));
        i += 1;
    }
    Ok(sum)
}

/// Copies `len` bytes from `src` (map memory, `N` bytes, a power of two)
/// into the frame at `dst`, a word at a time while whole words fit in the
/// frame, then bytewise.
#[inline(always)]
fn copy_to_frame<const N: usize>(
    ctx: &XdpContext,
    s: &mut Scratch,
    dst: usize,
    src: usize,
    len: usize,
) -> Result<(), u32> {
    let end = ctx.data_end();
    let mut p = at(ctx, dst);
    let mut k = 0;
    while k < N / 8 {
        if 8 * k >= len || !fits(p, 8, end) {
            break;
        }
        st64(p, ld64(src + ((8 * k) & (N - 8))));
        p += 8;
        k += 1;
    }
    s.k = (8 * k) as u32;
    // The frame was sized for the reply, so at most a word's worth is
    // left: never, but never send a reply half written.
    if len > vol(&s.k) + 7 {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    let mut i = 0;
    while i < 8 {
        let j = vol(&s.k) + i;
        if j >= len {
            break;
        }
        let p = at(ctx, dst + j);
        if !fits(p, 1, ctx.data_end()) {
            // The frame was sized for the reply: never, but never half.
            return Err(stat::PASS_TOO_BIG | DROP);
        }
        st8(p, unsafe { *((src + (j & (N - 1))) as *const u8) });
        i += 1;
    }
    Ok(())
}

/// Makes `delta` more bytes of frame where the driver left no tailroom,
/// from the headroom every XDP driver keeps (256 bytes): the head moves
/// back and the request's `len` bytes move forward with it, so every
/// offset from the start of the frame stays what it was. veth gives
/// frames that came from the kernel's stack or a packet socket only the
/// slack of their allocation at the tail, so a client that does not pad
/// its request to the reply's size needs this; drivers with page-sized
/// receive buffers never get here.
#[inline(always)]
fn grow_at_head(ctx: &XdpContext, delta: u32, len: usize) -> Result<(), u32> {
    const CHUNK: usize = 64;
    if delta as usize > MAX_REPLY || unsafe { bpf_xdp_adjust_head(ctx.ctx, -(delta as i32)) } != 0 {
        return Err(stat::PASS_NO_ROOM);
    }
    let mut buf = [0u8; CHUNK];
    let mut i = 0usize;
    // Front to back: each chunk is read before anything is written over
    // it, as the destination lies `delta` bytes before the source.
    while i < (MAX_REPLY + CHUNK) / CHUNK {
        let off = i * CHUNK;
        if off >= len {
            break;
        }
        let rest = ((len - off).min(CHUNK) - 1) as u32;
        // 1..=CHUNK for the verifier: the compiler must not see through
        // the mask, hence the volatile read.
        let n = ((vol(&rest) & (CHUNK - 1)) + 1) as u32;
        let p = buf.as_mut_ptr().cast();
        // SAFETY: `buf` holds `n` bytes; the helpers check the frame's.
        let moved = unsafe {
            bpf_xdp_load_bytes(ctx.ctx, (off as u32) + delta, p, n) == 0
                && bpf_xdp_store_bytes(ctx.ctx, off as u32, p, n) == 0
        };
        if !moved {
            return Err(stat::PASS_NO_ROOM | DROP);
        }
        i += 1;
    }
    if len >= MAX_REPLY + CHUNK {
        return Err(stat::PASS_NO_ROOM | DROP);
    }
    crate::count(stat::GREW_AT_HEAD);
    Ok(())
}

/// Headers and payload of the reply written over the request.
#[inline(always)]
fn rewrite_frame(
    ctx: &XdpContext,
    s: &mut Scratch,
    tmpl: &dhcp_common::ReplyTemplate,
    iface: &IfaceInfo,
) -> Result<(), u32> {
    // Staged before the template goes over the relay information.
    let tail_sum = stage_tail(ctx, s)?;
    let b = vol(&s.b) & 0x3f;
    let plen = vol(&s.plen) & 0x7ff;
    if !(MIN_PAYLOAD..=MAX_REPLY).contains(&plen) {
        return Err(stat::PASS_TOO_BIG);
    }
    // Grow now; shrink once written (what lies past the reply is cut).
    let delta = (b + plen) as i32 - vol(&s.frame_len) as i32;
    if delta > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        grow_at_head(ctx, delta as u32, vol(&s.frame_len) as usize & M)?;
    }
    let Ok(p) = payload(ctx, s) else {
        return Err(stat::PASS_TOO_BIG | DROP);
    };
    // RFC 2131 §4.1 addressing, as the control plane does it.
    let ciaddr = ld32(p + 12);
    let giaddr = ld32(p + 24);
    let flags = unsafe { *((p + 10) as *const u8) };
    let htype = unsafe { *((p + 1) as *const u8) };
    let hlen = unsafe { *((p + 2) as *const u8) };
    let broadcast = flags & 0x80 != 0 || htype != 1 || hlen != 6;
    // 0: back to the sender's MAC, 1: broadcast, 2: chaddr.
    let (dst_ip, dst_port, mac_from) = if giaddr != 0 {
        (giaddr, 67u16, 0)
    } else if ciaddr != 0 {
        (ciaddr, 68, 0)
    } else if broadcast {
        (u32::MAX, 68, 1)
    } else {
        (vol(&s.ip) as u32, 68, 2)
    };
    let chaddr_lo = ld32(p + 28);
    let chaddr_hi = ld16(p + 32);
    // The xid stays in place; the IP id derives from it.
    let ip_id = reply_ip::id(u32::from_be(ld32(p + 4))) as u64;

    // The fixed part, RFC 2131 table 3 (as `Reply::new` does): op, hops,
    // secs, yiaddr, siaddr, sname and file change; the rest is the
    // request's.
    st8(p, 2);
    st8(p + 3, 0);
    st16(p + 8, 0);
    st32(p + 16, vol(&s.ip) as u32);
    st32(p + 20, 0);
    let mut i = 0;
    while i < (BOOTP_FIXED - 44) / 8 {
        st64(p + 44 + 8 * i, 0);
        i += 1;
    }
    // Payload sum: the fixed part's first 48 bytes (the rest is zero), the
    // cookie, the template's precomputed sum, the tail's (odd when it
    // starts at an odd offset: its bytes then sit in the other half).
    let mut sum: u64 = tmpl.sum as u64 + ld32(p + BOOTP_FIXED) as u64;
    let offer = vol(&s.offer) != 0;
    if offer {
        // Message type 2 for the template's 5, at payload offset 242
        // (even: the low byte of a memory-order half): the sum moves by
        // 2 - 5, added as its ones' complement.
        sum += 0xffff - 3;
    }
    let mut i = 0;
    while i < 6 {
        sum += halves(ld64(p + 8 * i));
        i += 1;
    }
    let tlen = vol(&s.tlen);
    let mut tail16 = fold(tail_sum) as u64;
    if tlen & 1 != 0 {
        tail16 = (tail16 as u16).swap_bytes() as u64;
    }
    sum += tail16;

    copy_to_frame::<TEMPLATE_OPTIONS_MAX>(
        ctx,
        s,
        b + OPTIONS_START,
        tmpl.options.as_ptr() as usize,
        tlen & 0x1ff,
    )?;
    if offer {
        let mt = b + OPTIONS_START + 2;
        let q = at(ctx, mt & M);
        if !fits(q, 1, ctx.data_end()) {
            return Err(stat::PASS_TOO_BIG | DROP);
        }
        st8(q, 2);
    }
    let tail = s.tail.as_ptr() as usize;
    copy_to_frame::<1024>(
        ctx,
        s,
        b + OPTIONS_START + (vol(&s.tlen) & 0x1ff),
        tail,
        vol(&s.tail_len) & 0x3ff,
    )?;

    // UDP checksum: the payload's sum (memory order), then pseudo-header
    // and UDP header (host order).
    let payload_sum = u16::from_be(fold(sum)) as u64;
    let sip = u32::from_be(iface.server_ip) as u64;
    let dip = u32::from_be(dst_ip) as u64;
    let ulen = (8 + plen) as u64;
    let addr_sum = (sip >> 16) + (sip & 0xffff) + (dip >> 16) + (dip & 0xffff);
    let mut csum = !fold(payload_sum + addr_sum + 17 + ulen + 67 + dst_port as u64 + ulen);
    if csum == 0 {
        csum = 0xffff;
    }
    // The IP header is `dhcp_common::reply_ip`'s, as the control plane
    // writes it: id from the xid, DF as defined there.
    let tot_len = 20 + ulen;
    let ip_csum = !fold(
        reply_ip::VERSION_IHL_TOS as u64
            + tot_len
            + ip_id
            + reply_ip::FLAGS_FRAGMENT as u64
            + reply_ip::TTL_PROTO as u64
            + addr_sum,
    );

    let data = ctx.data();
    let end = ctx.data_end();
    let ipp = data + ((b - 28) & 0x3f);
    if !fits(data, 14, end) || !fits(ipp, 28, end) {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    let eth = data;
    match mac_from {
        0 => {
            st32(eth, ld32(eth + 6));
            st16(eth + 4, ld16(eth + 10));
        }
        1 => {
            st32(eth, u32::MAX);
            st16(eth + 4, u16::MAX);
        }
        _ => {
            st32(eth, chaddr_lo);
            st16(eth + 4, chaddr_hi);
        }
    }
    let mac = iface.mac.as_ptr() as usize;
    st32(eth + 6, ld32(mac));
    st16(eth + 10, ld16(mac + 4));
    st32(
        ipp,
        u32::from_be((reply_ip::VERSION_IHL_TOS as u32) << 16 | tot_len as u32),
    );
    st32(
        ipp + 4,
        u32::from_be((ip_id as u32) << 16 | reply_ip::FLAGS_FRAGMENT as u32),
    );
    st32(
        ipp + 8,
        u32::from_be((reply_ip::TTL_PROTO as u32) << 16 | ip_csum as u32),
    );
    st32(ipp + 12, iface.server_ip);
    st32(ipp + 16, dst_ip);
    st32(ipp + 20, u32::from_be(67 << 16 | dst_port as u32));
    st32(ipp + 24, u32::from_be((ulen as u32) << 16 | csum as u32));

    if delta < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // The frame is rewritten but too long: drop rather than send it.
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    Ok(())
}

/// Set on a pass reason when the frame can no longer be passed.
pub const DROP: u32 = 0x8000_0000;
