//! The request: its headers checked, its options walked, the client state
//! it was sent in told apart, its lease-map key built, and the binding and
//! the request's shape checked against what the lease map holds.

use aya_ebpf::{
    helpers::{bpf_ktime_get_coarse_ns, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use dhcp_common::{
    id_kind,
    layout::{bootp, ipv4, msg, opt, udp},
    lease_flags, shape_hash_finish, stat, LeaseKey, LeaseValue, MAX_ID_LEN, SHAPE_OFFSET,
    SHAPE_PRIME,
};

use super::{
    access::{
        at, fits, fold, halves, ld16, ld32, ld64, ld8, low_bytes, opaque, payload, pk8, set, st64,
        st8, vol,
    },
    Scratch, EXPIRY_MARGIN_NS, IP_UDP_LEN, M, MAX_OPTIONS, MAX_REQUEST,
};

/// Walks the request's options, recording what the fast path needs.
#[inline(always)]
pub(crate) fn walk_options(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
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
        &mut s.rapid,
    ] {
        set(f, 0);
    }
    set(&mut s.off, vol(&s.b) + bootp::OPTIONS);
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
        if code == opt::PAD {
            set(&mut s.off, off + 1);
            continue;
        }
        if code == opt::END {
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
        // bad lengths, option overload and subnet selection.
        // (Values lie before `n`, inside the frame; `fits` shows the
        // verifier.)
        match code {
            opt::MESSAGE_TYPE if len == 1 && vol(&s.msg_type) == 0 => {
                if !fits(p, 3, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.msg_type = ld8(p + 2) as u32;
            }
            opt::REQUESTED_IP if len == 4 && vol(&s.has_requested) == 0 => {
                if !fits(p, 6, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.requested = ld32(p + 2);
                s.has_requested = 1;
            }
            opt::SERVER_ID if len == 4 && vol(&s.has_server_id) == 0 => {
                if !fits(p, 6, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.server_id = ld32(p + 2);
                s.has_server_id = 1;
            }
            opt::SERVER_ID => return Err(stat::PASS_UNUSUAL),
            opt::PARAMETER_REQUEST_LIST if vol(&s.prl_len) == 0 => {
                s.prl_off = v as u32;
                s.prl_len = len as u32 + 1;
            }
            opt::MAX_MESSAGE_SIZE if len == 2 && vol(&s.has_mms) == 0 => {
                if !fits(p, 4, end) {
                    return Err(stat::PASS_MALFORMED);
                }
                s.mms = u16::from_be(ld16(p + 2)) as u32;
                s.has_mms = 1;
            }
            // RFC 2132 9.14: at least a type and a byte; the control plane
            // drops a shorter one.
            opt::CLIENT_ID if len < 2 && vol(&s.cid_off) == 0 => return Err(stat::PASS_MALFORMED),
            opt::CLIENT_ID if vol(&s.cid_off) == 0 => {
                s.cid_off = v as u32;
                s.cid_len = len as u32;
            }
            // An empty 82 (no sub-option) is echoed empty by the control
            // plane; the lease map has no such shape (length 0 = absent).
            opt::RELAY_AGENT_INFO if len > 0 && vol(&s.rai_off) == 0 => {
                s.rai_off = v as u32;
                s.rai_len = len as u32;
            }
            opt::LEASE_TIME if len == 4 => {}
            // RFC 4039: no value (the control plane drops one with a value).
            opt::RAPID_COMMIT if len == 0 => s.rapid = 1,
            opt::MESSAGE_TYPE
            | opt::REQUESTED_IP
            | opt::PARAMETER_REQUEST_LIST
            | opt::MAX_MESSAGE_SIZE
            | opt::CLIENT_ID
            | opt::RELAY_AGENT_INFO
            | opt::LEASE_TIME
            | opt::OVERLOAD
            | opt::RAPID_COMMIT
            | opt::SUBNET_SELECTION => return Err(stat::PASS_UNUSUAL),
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

/// The request's payload (per the UDP length) lies in the frame, which is
/// one linear buffer, and is of a size the fast path answers.
#[inline(always)]
pub(crate) fn check_request(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
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
    let ip = ctx.data() + ((b - IP_UDP_LEN) & 0x3f);
    if !fits(ip, IP_UDP_LEN, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    // What the kernel's stack and the control plane drop (`parse_frame`):
    // a bad header checksum, a UDP datagram longer than the IPv4 one (no
    // IPv4 options here: the header is 20 bytes).
    let ip_sum = halves(ld64(ip)) + halves(ld64(ip + 8)) + ld32(ip + 16) as u64;
    if fold(ip_sum) != 0xffff {
        return Err(stat::PASS_MALFORMED);
    }
    let tot_len = u16::from_be(ld16(ip + ipv4::TOTAL_LEN.start)) as usize;
    let udp_len = u16::from_be(ld16(ip + ipv4::MIN_HEADER_LEN + udp::LEN.start)) as usize;
    if udp_len < udp::HEADER_LEN + bootp::OPTIONS + 1
        || udp_len + ipv4::MIN_HEADER_LEN > tot_len
        || b + udp_len - udp::HEADER_LEN > frame_len
    {
        return Err(stat::PASS_MALFORMED);
    }
    let n = udp_len - udp::HEADER_LEN;
    if n > MAX_REQUEST {
        return Err(stat::PASS_UNUSUAL);
    }
    s.end = (b + n) as u32;
    s.dst = ld32(ip + ipv4::DST.start);
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
pub(crate) fn classify(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
    let p = payload(ctx, s)?;
    if unsafe { *((p + bootp::OP) as *const u8) } != bootp::BOOTREQUEST {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if unsafe { *((p + bootp::HLEN) as *const u8) } > bootp::MAX_HLEN {
        return Err(stat::PASS_MALFORMED);
    }
    if ld32(p + bootp::COOKIE.start) != u32::from_ne_bytes(bootp::MAGIC_COOKIE) {
        return Err(stat::PASS_MALFORMED);
    }
    let ciaddr = ld32(p + bootp::CIADDR.start);
    let has_requested = vol(&s.has_requested) != 0;
    if vol(&s.msg_type) == msg::DISCOVER as usize {
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
    if vol(&s.msg_type) != msg::REQUEST as usize {
        return Err(stat::PASS_NOT_REQUEST);
    }
    if vol(&s.rapid) != 0 {
        // Rapid commit belongs in a DISCOVER (RFC 4039 §4); in a REQUEST
        // it is the control plane's to judge.
        return Err(stat::PASS_UNUSUAL);
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
pub(crate) const KEYED_ID_LEN: usize = if MAX_ID_LEN < 20 { MAX_ID_LEN } else { 20 };

/// The client's identity, as the control plane keys it: the client
/// identifier when sent, else htype + chaddr; unused bytes zero. Built a
/// word at a time from the identity's first 24 bytes (`MAX_ID_LEN` is 20),
/// masked to its length.
#[inline(always)]
pub(crate) fn build_key(ctx: &XdpContext, s: &mut Scratch) -> Result<(), u32> {
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
        let htype = unsafe { *((p + bootp::HTYPE) as *const u8) } as u64;
        let hlen = unsafe { *((p + bootp::HLEN) as *const u8) } as usize & 0x1f;
        let c = p + bootp::CHADDR.start;
        let (lo, hi) = (ld64(c), ld64(c + 8));
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
pub(crate) fn check_lease(
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
    //
    // Nor may it grant an end past the MCLT cap: the store has not
    // acknowledged enough of what this kernel granted for another node to
    // wait it out, so the control plane answers (storing first). Passed
    // rather than shortened: the template's 51/58/59 are the control
    // plane's to choose. A DISCOVER passes too (its OFFER binds nothing,
    // but the REQUEST after it would pass).
    //
    // One compare, one exit, the expiry's, with its reason: a branch or
    // an exit of its own, or a reason the verifier cannot tell is that
    // constant, walks the rest of the program again for every state that
    // gets here, which the instruction limit has no room for (tried: five
    // shapes of it, each past 1,000,000 instructions). Each limit is a
    // signed distance, negative once reached (caps stay below 2^63,
    // `dhcp_common::NO_CAP`); which one it was goes to scratch without a
    // branch, for the limits program (verified on its own) to count the
    // pass as `PASS_MCLT_CAP` (`fast::pass_reason`).
    let left = lease
        .expires_mono_ns
        .wrapping_sub(now + EXPIRY_MARGIN_NS + 1) as i64;
    #[cfg(not(feature = "layout-prev"))]
    let room = lease
        .cap_mono_ns
        .wrapping_sub(now + lease.lease_secs as u64 * 1_000_000_000) as i64;
    #[cfg(feature = "layout-prev")]
    let room = 0i64;
    set(&mut s.capped, ((room & !left) as u64 >> 63) as usize);
    if (opaque((left | room) as usize) as i64) < 0 {
        return Err(stat::PASS_EXPIRED);
    }
    let giaddr = ld32(payload(ctx, s)? + bootp::GIADDR.start);
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
pub(crate) fn check_shape(
    ctx: &XdpContext,
    s: &mut Scratch,
    lease: &LeaseValue,
) -> Result<(), u32> {
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
