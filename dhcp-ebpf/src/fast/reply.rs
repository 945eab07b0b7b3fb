//! The reply, written over the request: where its options go, the tail
//! it echoes staged, the frame grown to fit, then the fixed part, options
//! and headers written and checksummed.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use dhcp_common::{
    layout::{bootp, eth, ipv4, opt, udp},
    reply_ip, stat, IfaceInfo, ReplyTemplate, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    TEMPLATE_OPTIONS_MAX,
};

use super::{
    access::{at, fits, fold, halves, ld16, ld32, ld64, payload, set, st16, st32, st64, st8, vol},
    Scratch, DROP, IP_UDP_LEN, M, MAX_RELAY_INFO, MAX_REPLY, TAIL,
};

/// Where the reply's options go: the template, then (staged in
/// `s.tail`) 61, 80 (a rapid ACK) and 82 echoed, in the control plane's
/// order, END, and zero padding to the BOOTP minimum. Sets `s.tlen`, `s.t` (the tail's bytes up to END),
/// `s.tail_len` (to the end of the reply) and `s.plen`.
#[inline(always)]
pub(crate) fn layout(s: &mut Scratch, tmpl: &ReplyTemplate) -> Result<(), u32> {
    let tlen = tmpl.options_len as usize;
    if tlen == 0 || tlen > TEMPLATE_OPTIONS_MAX {
        return Err(stat::PASS_NO_TEMPLATE);
    }
    let cid_len = vol(&s.cid_len);
    let rai_len = vol(&s.rai_len);
    let mut t = 1 + 2 * (vol(&s.rapid) & 1);
    if cid_len > 0 {
        t += 2 + cid_len;
    }
    if rai_len > 0 {
        t += 2 + rai_len;
    }
    let o = bootp::OPTIONS + tlen + t;
    let plen = if o < bootp::MIN_LEN {
        bootp::MIN_LEN
    } else {
        o
    };
    let mms = vol(&s.mms);
    let limit = if mms > bootp::MIN_MAX_MESSAGE {
        mms
    } else {
        bootp::MIN_MAX_MESSAGE
    } - IP_UDP_LEN;
    if plen > limit || plen > MAX_REPLY {
        return Err(stat::PASS_TOO_BIG);
    }
    s.tlen = tlen as u32;
    s.t = t as u32;
    s.plen = plen as u32;
    s.tail_len = (plen - bootp::OPTIONS - tlen) as u32;
    Ok(())
}

/// Fills `s.tail`: 61 (from the key, which holds the identifier), 80 for
/// a rapid ACK and 82 (from the request, before the template covers it),
/// END, zeros. Returns its ones'-complement sum as if it started at an
/// even offset.
#[inline(always)]
pub(crate) fn stage_tail(ctx: &XdpContext, s: &mut Scratch) -> Result<u64, u32> {
    let tail = s.tail.as_mut_ptr() as usize;
    if vol(&s.cid_len) | vol(&s.rai_len) | vol(&s.rapid) == 0 {
        // Nothing echoed: END and zeros.
        st64(tail, opt::END as u64);
        let mut i = 1;
        while i < TAIL / 8 {
            if 8 * i >= vol(&s.tail_len) {
                break;
            }
            st64(tail + 8 * i, 0);
            i += 1;
        }
        return Ok(opt::END as u64);
    }
    let mut t = 0;
    let cid_len = vol(&s.cid_len);
    if cid_len > 0 {
        st16(tail, opt::CLIENT_ID as u16 | (cid_len as u16) << 8);
        let id = s.key.id.as_ptr() as usize;
        // The key's identifier is zero past its length (and the scratch
        // word after the key, never written, is zero too).
        st64(tail + 2, ld64(id));
        st64(tail + 10, ld64(id + 8));
        st64(tail + 18, ld64(id + 16));
        t = 2 + cid_len;
    }
    // 80 always written, kept only by a rapid ACK (the next option, or
    // END, lands on it otherwise): no branch for the verifier to fork on.
    st16(tail + (t & 0x3f), opt::RAPID_COMMIT as u16);
    s.k = (t + 2 * (vol(&s.rapid) & 1)) as u32;
    let rai_len = vol(&s.rai_len);
    if rai_len > 0 {
        let t = vol(&s.k) & 0x3f;
        st16(
            tail + t,
            opt::RELAY_AGENT_INFO as u16 | (rai_len as u16) << 8,
        );
        // One helper call for the value (1..=255 bytes, the volatile read
        // keeping the mask from LLVM): a bytewise loop cost a bounds
        // check and a verifier state per byte.
        let rest = (rai_len - 1) as u32;
        let n = ((vol(&rest) & MAX_RELAY_INFO) + 1) as u32;
        let dst = (tail + ((t + 2) & 0x3f)) as *mut core::ffi::c_void;
        // SAFETY: `tail` holds 64 + 256 bytes past `dst`; the helper
        // checks the frame's.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, (vol(&s.rai_off) & M) as u32, dst, n) } != 0 {
            return Err(stat::PASS_MALFORMED);
        }
        s.k = (t + 2 + rai_len) as u32;
    }
    let t = vol(&s.k) & 0x1ff;
    st8(tail + t, opt::END);
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

/// Copies `len` (1..=`N`) bytes from `src` (map memory, `N` bytes, a
/// power of two) into the frame at `dst`, in one helper call: the helper
/// checks the frame's bounds, and the verifier walks one call where a
/// word-by-word loop cost it a state per exit (about 445,000 of its
/// 1,000,000 instructions for the template and the tail).
#[inline(always)]
pub(crate) fn copy_to_frame<const N: usize>(
    ctx: &XdpContext,
    dst: usize,
    src: usize,
    len: usize,
) -> Result<(), u32> {
    if len == 0 || len > N {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    // 1..=N for the verifier: LLVM must not see through the mask (it
    // knows len's range and would drop it), hence the volatile read.
    let rest = (len - 1) as u32;
    let n = ((vol(&rest) & (N - 1)) + 1) as u32;
    // SAFETY: `src` holds `N` bytes of map memory; the helper checks the
    // frame's.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, (dst & M) as u32, src as *mut _, n) } != 0 {
        // The frame was sized for the reply: never, but never send a
        // reply half written.
        return Err(stat::PASS_TOO_BIG | DROP);
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
pub(crate) fn grow_at_head(ctx: &XdpContext, delta: u32, len: usize) -> Result<(), u32> {
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

/// Headers and payload of the reply written over the request. Each step
/// reads what it needs back from `Scratch` (growth, the payload's sum), so
/// no value lives in a register across the helper calls between them.
#[inline(always)]
pub(crate) fn rewrite_frame(
    ctx: &XdpContext,
    s: &mut Scratch,
    tmpl: &ReplyTemplate,
    iface: &IfaceInfo,
) -> Result<(), u32> {
    // Staged before the template goes over the relay information.
    let tail_sum = stage_tail(ctx, s)?;
    let b = vol(&s.b) & 0x3f;
    let plen = vol(&s.plen) & 0x7ff;
    if !(bootp::MIN_LEN..=MAX_REPLY).contains(&plen) {
        return Err(stat::PASS_TOO_BIG);
    }
    // Grow now; shrink once written (what lies past the reply is cut).
    let delta = (b + plen) as i32 - vol(&s.frame_len) as i32;
    set(&mut s.delta, delta as u32 as usize);
    if delta > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        grow_at_head(ctx, delta as u32, vol(&s.frame_len) & M)?;
    }
    write_fixed(ctx, s, tmpl, tail_sum)?;
    let b = vol(&s.b) & 0x3f;
    copy_to_frame::<TEMPLATE_OPTIONS_MAX>(
        ctx,
        b + bootp::OPTIONS,
        tmpl.options.as_ptr() as usize,
        vol(&s.tlen) & 0x1ff,
    )?;
    // The template's message type is ACK (5); an OFFER's is 2, written
    // without a branch (a branch here doubled the states of what follows).
    let q = at(ctx, b + bootp::OPTIONS + 2);
    if !fits(q, 1, ctx.data_end()) {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    st8(q, (5 - 3 * (vol(&s.offer) & 1)) as u8);
    copy_to_frame::<1024>(
        ctx,
        b + bootp::OPTIONS + (vol(&s.tlen) & 0x1ff),
        s.tail.as_ptr() as usize,
        vol(&s.tail_len) & 0x3ff,
    )?;
    write_headers(ctx, s, iface)?;
    let delta = vol(&s.delta) as u32 as i32;
    if delta < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // The frame is rewritten but too long: drop rather than send it.
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    Ok(())
}

/// The fixed part, RFC 2131 table 3 (as `Reply::new` does): op, hops,
/// secs, yiaddr, siaddr, sname and file change; the rest is the
/// request's. Leaves the payload's folded sum in `s.sum`.
#[inline(always)]
fn write_fixed(
    ctx: &XdpContext,
    s: &mut Scratch,
    tmpl: &ReplyTemplate,
    tail_sum: u64,
) -> Result<(), u32> {
    let Ok(p) = payload(ctx, s) else {
        return Err(stat::PASS_TOO_BIG | DROP);
    };
    st8(p + bootp::OP, bootp::BOOTREPLY);
    st8(p + bootp::HOPS, 0);
    st16(p + bootp::SECS.start, 0);
    st32(p + bootp::YIADDR.start, vol(&s.ip) as u32);
    st32(p + bootp::SIADDR.start, 0);
    let mut i = 0;
    while i < (bootp::FIXED_LEN - bootp::SNAME.start) / 8 {
        st64(p + bootp::SNAME.start + 8 * i, 0);
        i += 1;
    }
    // Payload sum: the fixed part's first 48 bytes (the rest is zero), the
    // cookie, the template's precomputed sum, the tail's (odd when it
    // starts at an odd offset: its bytes then sit in the other half). An
    // OFFER's message type 2 for the template's 5, at payload offset 242
    // (even: the low byte of a memory-order half), moves the sum by 2 - 5,
    // added as its ones' complement.
    let mut sum: u64 = tmpl.sum as u64
        + ld32(p + bootp::COOKIE.start) as u64
        + (0xffff - 3) * (vol(&s.offer) & 1) as u64;
    let mut i = 0;
    while i < bootp::SNAME.start.div_ceil(8) {
        sum += halves(ld64(p + 8 * i));
        i += 1;
    }
    let mut tail16 = fold(tail_sum) as u64;
    if vol(&s.tlen) & 1 != 0 {
        tail16 = (tail16 as u16).swap_bytes() as u64;
    }
    sum += tail16;
    set(&mut s.sum, fold(sum) as usize);
    Ok(())
}

/// Ethernet, IPv4 and UDP headers, RFC 2131 §4.1 addressing as the
/// control plane does it, from the request's fields the fixed part kept
/// (ciaddr, giaddr, flags, htype, hlen, chaddr, xid).
#[inline(always)]
fn write_headers(ctx: &XdpContext, s: &mut Scratch, iface: &IfaceInfo) -> Result<(), u32> {
    let Ok(p) = payload(ctx, s) else {
        return Err(stat::PASS_TOO_BIG | DROP);
    };
    let ciaddr = ld32(p + bootp::CIADDR.start);
    let giaddr = ld32(p + bootp::GIADDR.start);
    // The flags' first byte (network order) holds the broadcast bit.
    let flags = unsafe { *((p + bootp::FLAGS.start) as *const u8) };
    let htype = unsafe { *((p + bootp::HTYPE) as *const u8) };
    let hlen = unsafe { *((p + bootp::HLEN) as *const u8) };
    let broadcast = flags & (bootp::FLAG_BROADCAST >> 8) as u8 != 0
        || htype != bootp::HTYPE_ETHERNET
        || hlen != 6;
    // 0: back to the sender's MAC, 1: broadcast, 2: chaddr.
    let (dst_ip, dst_port, mac_from) = if giaddr != 0 {
        (giaddr, DHCP_SERVER_PORT, 0)
    } else if ciaddr != 0 {
        (ciaddr, DHCP_CLIENT_PORT, 0)
    } else if broadcast {
        (u32::MAX, DHCP_CLIENT_PORT, 1)
    } else {
        (vol(&s.ip) as u32, DHCP_CLIENT_PORT, 2)
    };
    let chaddr_lo = ld32(p + bootp::CHADDR.start);
    let chaddr_hi = ld16(p + bootp::CHADDR.start + 4);
    // The xid stays in place; the IP id derives from it.
    let ip_id = reply_ip::id(u32::from_be(ld32(p + bootp::XID.start))) as u64;
    let plen = vol(&s.plen) & 0x7ff;

    // UDP checksum: the payload's sum (memory order), then pseudo-header
    // and UDP header (host order).
    let payload_sum = u16::from_be(vol(&s.sum) as u16) as u64;
    let sip = u32::from_be(iface.server_ip) as u64;
    let dip = u32::from_be(dst_ip) as u64;
    let ulen = (udp::HEADER_LEN + plen) as u64;
    let addr_sum = (sip >> 16) + (sip & 0xffff) + (dip >> 16) + (dip & 0xffff);
    let mut csum = !fold(
        payload_sum
            + addr_sum
            + ipv4::PROTO_UDP as u64
            + ulen
            + DHCP_SERVER_PORT as u64
            + dst_port as u64
            + ulen,
    );
    if csum == 0 {
        csum = 0xffff;
    }
    // The IP header is `dhcp_common::reply_ip`'s, as the control plane
    // writes it: id from the xid, DF as defined there.
    let tot_len = ipv4::MIN_HEADER_LEN as u64 + ulen;
    let ip_csum = !fold(
        reply_ip::VERSION_IHL_TOS as u64
            + tot_len
            + ip_id
            + reply_ip::FLAGS_FRAGMENT as u64
            + reply_ip::TTL_PROTO as u64
            + addr_sum,
    );

    let b = vol(&s.b) & 0x3f;
    let data = ctx.data();
    let end = ctx.data_end();
    let ipp = data + ((b - IP_UDP_LEN) & 0x3f);
    if !fits(data, eth::HEADER_LEN, end) || !fits(ipp, IP_UDP_LEN, end) {
        return Err(stat::PASS_TOO_BIG | DROP);
    }
    let l2 = data;
    match mac_from {
        0 => {
            st32(l2, ld32(l2 + eth::SRC.start));
            st16(l2 + 4, ld16(l2 + eth::SRC.start + 4));
        }
        1 => {
            st32(l2, u32::MAX);
            st16(l2 + 4, u16::MAX);
        }
        _ => {
            st32(l2, chaddr_lo);
            st16(l2 + 4, chaddr_hi);
        }
    }
    let mac = iface.mac.as_ptr() as usize;
    st32(l2 + eth::SRC.start, ld32(mac));
    st16(l2 + eth::SRC.start + 4, ld16(mac + 4));
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
    st32(ipp + ipv4::SRC.start, iface.server_ip);
    st32(ipp + ipv4::DST.start, dst_ip);
    let udpp = ipp + ipv4::MIN_HEADER_LEN;
    st32(
        udpp + udp::SRC_PORT.start,
        u32::from_be((DHCP_SERVER_PORT as u32) << 16 | dst_port as u32),
    );
    st32(
        udpp + udp::LEN.start,
        u32::from_be((ulen as u32) << 16 | csum as u32),
    );
    Ok(())
}
