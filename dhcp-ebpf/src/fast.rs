//! The fast path: a DHCPREQUEST in RENEWING, REBINDING or INIT-REBOOT from
//! a client with an active binding in the lease map is answered here with
//! the DHCPACK the control plane would send, turned around with XDP_TX.
//! Anything else returns a pass reason and goes to the control plane.
//!
//! Shaped for the verifier: the BOOTP payload is copied into a per-CPU
//! scratch buffer (`bpf_xdp_load_bytes`), parsed and answered there with
//! offsets masked to the buffer, and written back in one
//! `bpf_xdp_store_bytes`. Everything a loop produces is kept in that map
//! value, not in registers or on the stack, so the verifier does not fork
//! its states over it; loops carry only their counter.

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use core::mem::size_of;

use dhcp_common::{
    id_kind, lease_flags, stat, IfaceInfo, LeaseKey, LeaseValue, RenewEvent, FNV_OFFSET, FNV_PRIME,
    MAX_ID_LEN, REPORT_FRACTION, TEMPLATE_OPTIONS_MAX,
};

use crate::{
    parse::Frame, XDHCP_EVENTS, XDHCP_IFACES, XDHCP_LEASES, XDHCP_SCRATCH, XDHCP_TEMPLATES,
};

/// Scratch buffers are this big (plus slack for word accesses); every
/// offset into them is masked with `M`.
pub const BUF: usize = 2048;
const M: usize = BUF - 1;
/// Largest request payload considered; larger ones are the control plane's.
const MAX_REQUEST: usize = 1472;
/// Largest reply payload built here (two `bpf_csum_diff` calls of 512).
const MAX_REPLY: usize = 1024;
const MAX_OPTIONS: usize = 96;
const MAX_RELAY_INFO: usize = 255;
const BOOTP_FIXED: usize = 236;
const OPTIONS_START: usize = 240;
const MIN_PAYLOAD: usize = 300;
const BPF_RB_NO_WAKEUP: u64 = 1;
pub const EXPIRY_MARGIN_NS: u64 = dhcp_common::EXPIRY_MARGIN_SECS * 1_000_000_000;

/// Per-CPU working memory of one request.
#[repr(C)]
pub struct Scratch {
    pub req: [u8; BUF + 8],
    pub out: [u8; BUF + 8],
    pub key: dhcp_common::LeaseKey,
    // What the options walk found (offsets into `req`, 0 = absent).
    pub req_len: u32,
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
    pub hash: u32,
    // Carried between the sections of `try_answer`.
    pub l3: u32,
    pub outer_vlan: u32,
    pub inner_vlan: u32,
    pub frame_len: u32,
    pub state: u32,
    pub ip: u32,
    pub o: u32,
    pub plen: u32,
    /// Checksum accumulator of the reply payload (memory-order words).
    pub sum: u32,
}

/// A fresh read of a scratch field: LLVM must not reuse a register copy,
/// whose range the verifier would have narrowed on some path and so tell
/// paths apart that are the same.
#[inline(always)]
fn vol(v: &u32) -> usize {
    unsafe { core::ptr::read_volatile(v) as usize }
}

/// `p + size <= end`, in a form the verifier learns the range from: LLVM
/// would otherwise merge or rewrite the comparison (e.g. into pointer
/// differences) and the verifier would see no bound. The volatile read
/// hides the constant from LLVM; the verifier still knows it exactly.
#[inline(always)]
fn fits(p: usize, size: usize, end: usize) -> bool {
    let size = unsafe { core::ptr::read_volatile(&size) };
    p + size <= end
}

#[inline(always)]
fn rd8(buf: &[u8; BUF + 8], off: usize) -> u8 {
    unsafe { *buf.as_ptr().add(off & M) }
}

/// Raw (memory order) 32-bit word.
#[inline(always)]
fn rd32(buf: &[u8; BUF + 8], off: usize) -> u32 {
    unsafe { (buf.as_ptr().add(off & M) as *const u32).read_unaligned() }
}

#[inline(always)]
fn wr8(buf: &mut [u8; BUF + 8], off: usize, v: u8) {
    unsafe { *buf.as_mut_ptr().add(off & M) = v }
}

#[inline(always)]
fn wr32(buf: &mut [u8; BUF + 8], off: usize, v: u32) {
    unsafe { (buf.as_mut_ptr().add(off & M) as *mut u32).write_unaligned(v) }
}

#[inline(always)]
fn wr64(buf: &mut [u8; BUF + 8], off: usize, v: u64) {
    unsafe { (buf.as_mut_ptr().add(off & M) as *mut u64).write_unaligned(v) }
}

/// Walks the options of `s.req`, recording what the fast path needs.
#[inline(always)]
fn walk_options(s: &mut Scratch) -> Result<(), u32> {
    // One store each: LLVM would merge plain stores into a call to a
    // byte-wise memset.
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
    ] {
        unsafe { core::ptr::write_volatile(f, 0) };
    }
    s.off = OPTIONS_START as u32;
    let mut i = 0;
    while i < MAX_OPTIONS {
        i += 1;
        let n = vol(&s.req_len);
        let off = vol(&s.off) & M;
        if off >= n {
            // Options must end with END.
            return Err(stat::PASS_MALFORMED);
        }
        let code = rd8(&s.req, off);
        if code == 0 {
            s.off = (off + 1) as u32;
            continue;
        }
        if code == 255 {
            s.done = 1;
            break;
        }
        if off + 2 > n {
            return Err(stat::PASS_MALFORMED);
        }
        let len = rd8(&s.req, off + 1) as usize;
        let v = off + 2;
        if v + len > n {
            return Err(stat::PASS_MALFORMED);
        }
        // The control plane keeps the first instance of each option; a
        // repeated one it reads is the control plane's to judge, as are
        // bad lengths, option overload, rapid commit and subnet selection.
        match code {
            53 if len == 1 && vol(&s.msg_type) == 0 => s.msg_type = rd8(&s.req, v) as u32,
            50 if len == 4 && vol(&s.has_requested) == 0 => {
                s.requested = rd32(&s.req, v);
                s.has_requested = 1;
            }
            54 => s.has_server_id = 1,
            55 if vol(&s.prl_len) == 0 => {
                s.prl_off = v as u32;
                s.prl_len = len as u32 + 1;
            }
            57 if len == 2 && vol(&s.has_mms) == 0 => {
                s.mms = ((rd8(&s.req, v) as u32) << 8) | rd8(&s.req, v + 1) as u32;
                s.has_mms = 1;
            }
            61 if vol(&s.cid_off) == 0 => {
                s.cid_off = v as u32;
                s.cid_len = len as u32;
            }
            82 if vol(&s.rai_off) == 0 => {
                s.rai_off = v as u32;
                s.rai_len = len as u32;
            }
            51 if len == 4 => {}
            53 | 50 | 55 | 57 | 61 | 82 | 51 | 52 | 80 | 118 => return Err(stat::PASS_UNUSUAL),
            _ => {}
        }
        s.off = (v + len) as u32;
    }
    if vol(&s.done) == 0 {
        return Err(stat::PASS_UNUSUAL);
    }
    Ok(())
}

/// FNV-1a over `len` bytes of `s.req` at `off`, continuing `s.hash`.
#[inline(always)]
fn hash_more(s: &mut Scratch, off_field: u32, len_field: u32) {
    let base = off_field as usize & M;
    let len = len_field as usize;
    let mut h = vol(&s.hash) as u32;
    let mut i = 0;
    while i < 256 {
        if i >= len {
            break;
        }
        h ^= rd8(&s.req, base + i) as u32;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    s.hash = h;
}

/// Copies `len` bytes of `s.req` at `from` to `s.out` at `to`, adding
/// them to the checksum accumulator `s.sum` (a byte at an even payload
/// offset is the low half of its little-endian word).
#[inline(always)]
fn copy_out(s: &mut Scratch, from: usize, to: usize, len: usize) {
    let from = from & M;
    let to = to & M;
    let mut sum = vol(&s.sum) as u32;
    let mut i = 0;
    while i < MAX_RELAY_INFO {
        if i >= len {
            break;
        }
        let b = rd8(&s.req, from + i);
        wr8(&mut s.out, to + i, b);
        sum += (b as u32) << (((to + i) & 1) * 8);
        i += 1;
    }
    s.sum = sum;
}

/// A byte at payload offset `at`, for the checksum.
#[inline(always)]
fn byte_sum(b: u8, at: usize) -> u32 {
    (b as u32) << ((at & 1) * 8)
}

/// Copies `words` 64-bit words; volatile so LLVM keeps the loop instead
/// of calling a byte-wise `memcpy`.
#[inline(always)]
fn copy_words(from: *const u8, to: *mut u8, words: usize) {
    let mut i = 0;
    while i < words {
        unsafe {
            let v = core::ptr::read_volatile((from as *const u64).add(i));
            core::ptr::write_volatile((to as *mut u64).add(i), v);
        }
        i += 1;
    }
}

#[inline(always)]
fn copy_u32s(from: *const u8, to: *mut u8, words: usize) {
    let mut i = 0;
    while i < words {
        unsafe {
            let v = core::ptr::read_volatile((from as *const u32).add(i));
            core::ptr::write_volatile((to as *mut u32).add(i), v);
        }
        i += 1;
    }
}

#[inline(always)]
fn zero_u32s(to: *mut u8, words: usize) {
    let mut i = 0;
    while i < words {
        unsafe { core::ptr::write_volatile((to as *mut u32).add(i), 0) };
        i += 1;
    }
}

#[inline(always)]
fn zero_words(to: *mut u8, words: usize) {
    let mut i = 0;
    while i < words {
        unsafe { core::ptr::write_volatile((to as *mut u64).add(i), 0) };
        i += 1;
    }
}

/// Folds carries into 32 bits.
#[inline(always)]
fn fold32(mut sum: u64) -> u32 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as u32
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
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
    if frame.ip_options {
        return Err(stat::PASS_UNUSUAL);
    }
    let s = XDHCP_SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_UNUSUAL)?;
    let s = unsafe { &mut *s };
    s.l3 = frame.l3_off as u32;
    s.outer_vlan = frame.outer_vlan as u32;
    s.inner_vlan = frame.inner_vlan as u32;
    load_request(ctx, s)?;
    walk_options(s)?;
    classify(s)?;
    build_key(s)?;
    let ifindex = ctx.ingress_ifindex() as u32;
    let v: *mut LeaseValue = XDHCP_LEASES
        .get_ptr_mut(&s.key)
        .ok_or(stat::PASS_UNKNOWN_CLIENT)?;
    let lease = unsafe { &mut *v };
    let now = check_lease(s, lease, ifindex)?;
    check_shape(s, lease)?;
    let tmpl = XDHCP_TEMPLATES
        .get(lease.template_id)
        .ok_or(stat::PASS_NO_TEMPLATE)?;
    build_payload(s, tmpl)?;
    // Interfaces without the fast path are not in the map.
    let iface: &IfaceInfo = XDHCP_IFACES
        .get(ifindex)
        .filter(|i| i.server_ip != 0)
        .ok_or(stat::PASS_WRONG_SCOPE)?;
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
            copy_u32s(
                &s.key as *const _ as *const u8,
                core::ptr::addr_of_mut!((*ev).key) as *mut u8,
                size_of::<LeaseKey>() / 4,
            );
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
    if let Err(e) = rewrite_frame(ctx, s, iface) {
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

/// Copies the BOOTP payload (per the UDP length) into `s.req`.
#[inline(always)]
fn load_request(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    s.frame_len = frame_len as u32;
    let l3 = vol(&s.l3) & 0x3f;
    let data = ctx.data();
    let end = ctx.data_end();
    let ip = data + l3;
    if !fits(ip, 28, end) {
        return Err(stat::PASS_MALFORMED);
    }
    let udp_len = u16::from_be(unsafe { ((ip + 24) as *const u16).read_unaligned() }) as usize;
    let b = l3 + 28;
    if udp_len < 8 + OPTIONS_START + 1 || b + udp_len - 8 > frame_len {
        return Err(stat::PASS_MALFORMED);
    }
    let n = udp_len - 8;
    if n > MAX_REQUEST {
        return Err(stat::PASS_UNUSUAL);
    }
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, b as u32, s.req.as_mut_ptr() as *mut _, n as u32) } != 0
    {
        return Err(stat::PASS_MALFORMED);
    }
    s.req_len = n as u32;
    // RENEWING is unicast, REBINDING broadcast: keep which.
    s.state = if unsafe { ((ip + 16) as *const u32).read_unaligned() } == u32::MAX {
        stat::FP_ACK_REBINDING
    } else {
        stat::FP_ACK_RENEWING
    };
    Ok(())
}

/// BOOTREQUEST, DHCPREQUEST, and which client state it was sent in.
#[inline(always)]
fn classify(s: &mut Scratch) -> Result<(), u32> {
    if rd8(&s.req, 0) != 1 {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if rd8(&s.req, 2) > 16 {
        return Err(stat::PASS_MALFORMED);
    }
    if rd32(&s.req, BOOTP_FIXED) != u32::from_be(0x6382_5363) {
        return Err(stat::PASS_MALFORMED);
    }
    if vol(&s.msg_type) != 3 {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if vol(&s.has_server_id) != 0 {
        return Err(stat::PASS_SELECTING);
    }
    let ciaddr = rd32(&s.req, 12);
    let has_requested = vol(&s.has_requested) != 0;
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

/// The client's identity, as the control plane keys it: the client
/// identifier when sent, else htype + chaddr; unused bytes zero.
#[inline(always)]
fn build_key(s: &mut Scratch) -> Result<(), u32> {
    zero_u32s(&mut s.key as *mut _ as *mut u8, size_of::<LeaseKey>() / 4);
    let cid_len = vol(&s.cid_len);
    if cid_len > 0 {
        if !(2..=MAX_ID_LEN).contains(&cid_len) {
            return Err(stat::PASS_UNUSUAL);
        }
        s.key.kind = id_kind::CLIENT_ID;
        s.key.len = cid_len as u8;
        let from = vol(&s.cid_off);
        let mut i = 0;
        while i < MAX_ID_LEN {
            if i >= cid_len {
                break;
            }
            s.key.id[i] = rd8(&s.req, from + i);
            i += 1;
        }
    } else {
        let hlen = rd8(&s.req, 2) as usize & 0x1f;
        s.key.kind = id_kind::HWADDR;
        s.key.len = 1 + hlen as u8;
        s.key.id[0] = rd8(&s.req, 1);
        let mut i = 0;
        while i < 16 {
            if i >= hlen {
                break;
            }
            s.key.id[1 + i] = rd8(&s.req, 28 + i);
            i += 1;
        }
    }
    Ok(())
}

/// The binding is ours to answer: flagged, same address, not expired,
/// asked for from where it was made. Returns the current monotonic time.
#[inline(always)]
fn check_lease(s: &mut Scratch, lease: &LeaseValue, ifindex: u32) -> Result<u64, u32> {
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
    let giaddr = rd32(&s.req, 24);
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
fn check_shape(s: &mut Scratch, lease: &LeaseValue) -> Result<(), u32> {
    s.hash = FNV_OFFSET;
    let prl_len = vol(&s.prl_len);
    if prl_len > 0 {
        hash_more(s, s.prl_off, (prl_len - 1) as u32);
    }
    let rai_len = vol(&s.rai_len);
    if rai_len > 0 {
        hash_more(s, s.rai_off, rai_len as u32);
    }
    if lease.prl_len as usize != vol(&s.prl_len)
        || lease.shape_hash as usize != vol(&s.hash)
        || lease.max_message_size as usize != vol(&s.mms)
        || lease.client_id_len as usize != vol(&s.cid_len)
        || lease.relay_info_len as usize != vol(&s.rai_len)
    {
        return Err(stat::PASS_SHAPE_CHANGED);
    }
    Ok(())
}

/// The reply's BOOTP payload, in `s.out`, and its length in `s.plen`.
#[inline(always)]
fn build_payload(s: &mut Scratch, tmpl: &dhcp_common::ReplyTemplate) -> Result<(), u32> {
    let tlen = tmpl.options_len as usize;
    if tlen == 0 || tlen > TEMPLATE_OPTIONS_MAX {
        return Err(stat::PASS_NO_TEMPLATE);
    }
    // The request's fixed part with RFC 2131 table 3 applied (op, hops,
    // secs, yiaddr, siaddr, sname and file), as `Reply::new` does.
    copy_words(s.req.as_ptr(), s.out.as_mut_ptr(), OPTIONS_START / 8);
    wr8(&mut s.out, 0, 2);
    wr8(&mut s.out, 3, 0);
    wr32(&mut s.out, 8, rd32(&s.req, 8) & u32::from_be(0x0000_ffff));
    wr32(&mut s.out, 16, vol(&s.ip) as u32);
    wr32(&mut s.out, 20, 0);
    zero_words(
        unsafe { s.out.as_mut_ptr().add(40) },
        (BOOTP_FIXED - 40) / 8,
    );
    // Word-aligned, so it also cleared chaddr's last 4 bytes (put them
    // back) and left the last 4 of `file` (clear them).
    wr32(&mut s.out, 40, rd32(&s.req, 40));
    wr32(&mut s.out, BOOTP_FIXED - 4, 0);
    // Options: the template (its tail past `options_len` is zero), then
    // 61 and 82 echoed, END, zero padding to the BOOTP minimum.
    copy_words(
        tmpl.options.as_ptr(),
        unsafe { s.out.as_mut_ptr().add(OPTIONS_START) },
        TEMPLATE_OPTIONS_MAX / 8,
    );
    // Checksum so far: the fixed part, word by word, and the template's
    // precomputed sum (it starts at an even offset).
    let mut sum: u64 = tmpl.sum as u64;
    let mut i = 0;
    while i < OPTIONS_START / 8 {
        let w = unsafe { core::ptr::read_volatile((s.out.as_ptr() as *const u64).add(i)) };
        sum += (w & 0xffff_ffff) + (w >> 32);
        i += 1;
    }
    // Kept under 17 bits so the byte sums added below cannot overflow.
    let f = fold32(sum);
    s.sum = (f & 0xffff) + (f >> 16);
    s.o = (OPTIONS_START + tlen) as u32;
    let cid_len = vol(&s.cid_len);
    if cid_len > 0 {
        let o = vol(&s.o);
        wr8(&mut s.out, o, 61);
        wr8(&mut s.out, o + 1, cid_len as u8);
        s.sum = vol(&s.sum) as u32 + byte_sum(61, o) + byte_sum(cid_len as u8, o + 1);
        copy_out(s, vol(&s.cid_off), o + 2, cid_len);
        s.o = (vol(&s.o) + 2 + vol(&s.cid_len)) as u32;
    }
    let rai_len = vol(&s.rai_len);
    if rai_len > 0 {
        let o = vol(&s.o);
        wr8(&mut s.out, o, 82);
        wr8(&mut s.out, o + 1, rai_len as u8);
        s.sum = vol(&s.sum) as u32 + byte_sum(82, o) + byte_sum(rai_len as u8, o + 1);
        copy_out(s, vol(&s.rai_off), o + 2, rai_len);
        s.o = (vol(&s.o) + 2 + vol(&s.rai_len)) as u32;
    }
    let o = vol(&s.o) & M;
    wr8(&mut s.out, o, 255);
    s.sum = vol(&s.sum) as u32 + byte_sum(255, o);
    let plen = if o + 1 < MIN_PAYLOAD {
        MIN_PAYLOAD
    } else {
        o + 1
    };
    let mms = vol(&s.mms);
    let limit = if mms > 576 { mms } else { 576 } - 28;
    if plen > limit || plen > MAX_REPLY {
        return Err(stat::PASS_TOO_BIG);
    }
    s.plen = plen as u32;
    // Zeros from END to the next multiple of 4 past the payload: the
    // padding, and what the word-wise checksum reads beyond it.
    let mut i = 0;
    while i < (MIN_PAYLOAD + 8) / 8 {
        let z = vol(&s.o) + 1 + 8 * i;
        if z >= vol(&s.plen) + 3 {
            break;
        }
        wr64(&mut s.out, z, 0);
        i += 1;
    }
    Ok(())
}

/// Headers and payload of the reply written over the request.
#[inline(always)]
fn rewrite_frame(ctx: &XdpContext, s: &mut Scratch, iface: &IfaceInfo) -> Result<(), u32> {
    let plen = vol(&s.plen) & 0x7ff;
    if !(MIN_PAYLOAD..=MAX_REPLY).contains(&plen) {
        return Err(stat::PASS_TOO_BIG);
    }
    // RFC 2131 §4.1 addressing, as the control plane does it.
    let ciaddr = rd32(&s.req, 12);
    let giaddr = rd32(&s.req, 24);
    let flags = rd8(&s.req, 10);
    let broadcast = flags & 0x80 != 0 || rd8(&s.req, 1) != 1 || rd8(&s.req, 2) != 6;
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

    // UDP checksum: the payload's sum (memory order, built with it), then
    // pseudo-header and UDP header (host order).
    let payload_sum = u16::from_be(fold(vol(&s.sum) as u64)) as u64;
    let sip = u32::from_be(iface.server_ip) as u64;
    let dip = u32::from_be(dst_ip) as u64;
    let ulen = (8 + plen) as u64;
    let addr_sum = (sip >> 16) + (sip & 0xffff) + (dip >> 16) + (dip & 0xffff);
    let mut csum = !fold(payload_sum + addr_sum + 17 + ulen + 67 + dst_port as u64 + ulen);
    if csum == 0 {
        csum = 0xffff;
    }
    let tot_len = 20 + ulen;
    let ip_csum = !fold(0x4500 + tot_len + 0x4011 + addr_sum);

    // Grow or shrink the frame to the reply's size, then write it.
    let l3 = vol(&s.l3) & 0x3f;
    let b = l3 + 28;
    let delta = (b + plen) as i32 - vol(&s.frame_len) as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(stat::PASS_TOO_BIG);
    }
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, b as u32, s.out.as_mut_ptr() as *mut _, plen as u32) }
        != 0
    {
        // The frame is half rewritten: drop rather than pass garbage on.
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let ipp = data + l3;
    if !fits(data, 14, end) || !fits(ipp, 28, end) {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    unsafe {
        let eth = data as *mut u8;
        match mac_from {
            0 => core::ptr::copy_nonoverlapping(eth.add(6), eth, 6),
            1 => {
                (eth as *mut u32).write_unaligned(u32::MAX);
                (eth.add(4) as *mut u16).write_unaligned(u16::MAX);
            }
            _ => {
                let mut i = 0;
                while i < 6 {
                    *eth.add(i) = rd8(&s.req, 28 + i);
                    i += 1;
                }
            }
        }
        core::ptr::copy_nonoverlapping(iface.mac.as_ptr(), eth.add(6), 6);
        let w = ipp as *mut u32;
        w.write_unaligned(u32::from_be(0x4500_0000 | tot_len as u32));
        w.add(1).write_unaligned(0);
        w.add(2)
            .write_unaligned(u32::from_be(0x4011_0000 | ip_csum as u32));
        w.add(3).write_unaligned(iface.server_ip);
        w.add(4).write_unaligned(dst_ip);
        w.add(5)
            .write_unaligned(u32::from_be(67 << 16 | dst_port as u32));
        w.add(6)
            .write_unaligned(u32::from_be((ulen as u32) << 16 | csum as u32));
    }
    Ok(())
}

/// Set on a pass reason when the frame can no longer be passed.
pub const DROP: u32 = 0x8000_0000;
