//! The load generator's XDP object (`xdhcp-loadgen --engine xdp`).
//!
//! `xdhcp_gen` runs under `BPF_PROG_TEST_RUN` with live frames: every run
//! turns the frame into the next client's request and returns XDP_TX, so the
//! kernel sends it out of the generator's interface with no socket, copy or
//! syscall per frame. Live frames come back to the pool after the far end
//! rewrote them (an ACK answered by XDP reuses the page), so the whole
//! request is written again each run.
//!
//! `xdhcp_gen_rx`, attached to the same interface, matches each reply to
//! its request by xid (client index + run epoch), checks it, takes the
//! latency from the send time the sender stored, and drops it; anything
//! else goes on to the kernel stack.
//!
//! `xdhcp_peer` is for the far end of a veth (the lab's client side):
//! veth hands frames sent with XDP_TX to its peer only when the peer runs
//! an XDP program.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use dhcp_common::gen::{
    bucket_of, client_mac, expect, kind, stat, GenConfig, CLIENT_ID_MAC_AT, LATENCY_BUCKETS,
    MAX_CLIENTS, MAX_FRAME_LEN, MIN_TEMPLATE_LEN,
};
use dhcp_common::layout::{
    bootp, eth, ipv4, msg, opt, udp, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ETH_P_8021AD, ETH_P_8021Q,
    ETH_P_IP,
};

/// Where the UDP and BOOTP headers start from the IPv4 header (the
/// generator's requests and the replies it reads carry no IPv4 options).
const UDP: usize = ipv4::MIN_HEADER_LEN;
const BOOTP: usize = UDP + udp::HEADER_LEN;

#[map(name = "XDHCP_GEN_CONFIG")]
static XDHCP_GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Each client's address (network order), sized by userspace.
#[map(name = "XDHCP_GEN_CLIENTS")]
static XDHCP_GEN_CLIENTS: Array<u32> = Array::with_max_entries(1, 0);

/// When each client's outstanding request left (ns, `bpf_ktime_get_ns`);
/// 0 once answered.
#[map(name = "XDHCP_GEN_SENT")]
static XDHCP_GEN_SENT: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "XDHCP_GEN_CURSOR")]
static XDHCP_GEN_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XDHCP_GEN_STATS")]
static XDHCP_GEN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map(name = "XDHCP_GEN_LATENCY")]
static XDHCP_GEN_LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(LATENCY_BUCKETS, 0);

#[inline(always)]
fn bump(idx: u32) {
    if let Some(c) = XDHCP_GEN_STATS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[xdp]
pub fn xdhcp_gen(ctx: XdpContext) -> u32 {
    match send(&ctx) {
        Some(()) => {
            bump(stat::SENT);
            xdp_action::XDP_TX
        }
        None => {
            bump(stat::SEND_FAILED);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn send(ctx: &XdpContext) -> Option<()> {
    let cfg = XDHCP_GEN_CONFIG.get(0)?;
    let cursor = XDHCP_GEN_CURSOR.get_ptr_mut(0)?;
    let n = cfg.clients;
    let stride = cfg.stride;
    if n == 0 || stride == 0 {
        return None;
    }
    let k = unsafe { *cursor };
    unsafe { *cursor = k.wrapping_add(1) };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let i = (k.wrapping_mul(stride).wrapping_add(cpu % stride)) % n;
    let ip = *XDHCP_GEN_CLIENTS.get(i)?;

    // The template's length is the run's (one per shape); the bounds
    // give the helper a size the verifier can check against the buffer.
    let len = cfg.frame_len as u32;
    if len < MIN_TEMPLATE_LEN as u32 || len > MAX_FRAME_LEN as u32 {
        return None;
    }
    let src = cfg.frame.as_ptr() as *mut _;
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, src, len) } != 0 {
        return None;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    // IPv4 after 0, 1 or 2 tags. One bound on this base covers every
    // fixed field written below (IPv4, UDP, BOOTP up to its options).
    // The verifier learns no bound on `data` itself from it, hence the
    // Ethernet header's own check first (after it, LLVM would drop it as
    // implied).
    if data + eth::HEADER_LEN > end {
        return None;
    }
    let ip_at = data + (cfg.ip_off as usize & 0x1f);
    if ip_at + BOOTP + bootp::OPTIONS > end {
        return None;
    }
    let kind = cfg.kind;
    let mac = if kind == kind::FLOOD {
        let r = unsafe { bpf_get_prandom_u32() }.to_ne_bytes();
        [0x02, 0x46, r[0], r[1], r[2], r[3]]
    } else {
        client_mac(i.wrapping_add(cfg.mac_offset))
    };
    let xid = ((cfg.epoch << 24) | (i & (MAX_CLIENTS - 1))).to_be();
    let p = data as *mut u8;
    let b = ip_at as *mut u8;
    if kind == kind::FLOOD && k & 1 == 1 {
        let t = data + (cfg.msg_type_off as usize & 0x1ff);
        let sid = data + (cfg.server_id_off as usize & 0x1ff);
        // `t + 1 > end` would become `t >= end`, whose bound the verifier
        // does not learn; option 53's value is never the frame's last word.
        if t + 4 > end || sid + 6 > end {
            return None;
        }
        unsafe {
            (t as *mut u8).write(1);
            (sid as *mut u32).write_unaligned(0);
            ((sid + 4) as *mut u16).write_unaligned(0);
        }
    }
    if cfg.client_id_off != 0 {
        let c = data + (cfg.client_id_off as usize & 0x1ff) + CLIENT_ID_MAC_AT;
        if c + 6 > end {
            return None;
        }
        unsafe { core::ptr::copy_nonoverlapping(mac.as_ptr(), c as *mut u8, 6) };
    }
    let relayed = cfg.circuit_id_off != 0;
    // RENEWING and REBINDING carry the address in ciaddr; the others have
    // ciaddr 0 and maybe option 50.
    let renewing = kind == kind::RENEWING || kind == kind::REBINDING;
    if relayed {
        let c = data + (cfg.circuit_id_off as usize & 0x1ff) + CLIENT_ID_MAC_AT;
        if c + 6 > end {
            return None;
        }
        unsafe { core::ptr::copy_nonoverlapping(mac.as_ptr(), c as *mut u8, 6) };
    }
    unsafe {
        core::ptr::copy_nonoverlapping(mac.as_ptr(), p.add(eth::SRC.start), 6);
        core::ptr::copy_nonoverlapping(mac.as_ptr(), b.add(BOOTP + bootp::CHADDR.start), 6);
        (b.add(BOOTP + bootp::XID.start) as *mut u32).write_unaligned(xid);
        if !renewing && cfg.requested_ip_off != 0 {
            // A variable offset needs its own bound for the verifier.
            let q = data + (cfg.requested_ip_off as usize & 0x1ff);
            if q + 4 > end {
                return None;
            }
            (q as *mut u32).write_unaligned(ip);
        }
        if renewing {
            // ciaddr, and the IPv4 source for both RENEWING and REBINDING
            // unless a relay sends it (then the source is its giaddr,
            // which the server checks against the binding's).
            (b.add(BOOTP + bootp::CIADDR.start) as *mut u32).write_unaligned(ip);
        }
        if renewing && !relayed {
            (b.add(ipv4::SRC.start) as *mut u32).write_unaligned(ip);
            // The template's header checksum was computed with source 0.
            let base =
                !u16::from_be((b.add(ipv4::CHECKSUM.start) as *const u16).read_unaligned()) as u32;
            let host = u32::from_be(ip);
            let sum = csum_fold(base + (host >> 16) + (host & 0xffff));
            (b.add(ipv4::CHECKSUM.start) as *mut u16).write_unaligned((!sum).to_be());
        }
    }
    if let Some(t) = XDHCP_GEN_SENT.get_ptr_mut(i) {
        unsafe { *t = bpf_ktime_get_ns() };
    }
    Some(())
}

#[xdp]
pub fn xdhcp_gen_rx(ctx: XdpContext) -> u32 {
    match receive(&ctx) {
        Some(()) => xdp_action::XDP_DROP,
        None => xdp_action::XDP_PASS,
    }
}

/// Where the IPv4 header starts after 0, 1 or 2 VLAN tags, if the frame
/// is IPv4 at all.
#[inline(always)]
fn ip_offset(ctx: &XdpContext) -> Option<usize> {
    let data = ctx.data();
    if data + eth::HEADER_LEN + 2 * eth::VLAN_TAG_LEN > ctx.data_end() {
        return None;
    }
    let p = data as *const u8;
    let rd16 = |off: usize| unsafe { u16::from_be((p.add(off) as *const u16).read_unaligned()) };
    let is_tag = |t: u16| t == ETH_P_8021Q || t == ETH_P_8021AD;
    let mut at = eth::ETHERTYPE.start;
    if is_tag(rd16(at)) {
        at += eth::VLAN_TAG_LEN;
        if is_tag(rd16(at)) {
            at += eth::VLAN_TAG_LEN;
        }
    }
    (rd16(at) == ETH_P_IP).then_some(at + 2)
}

/// None: not a reply to the generator (left to the stack).
#[inline(always)]
fn receive(ctx: &XdpContext) -> Option<()> {
    let data = ctx.data();
    let end = ctx.data_end();
    let ip_off = ip_offset(ctx)?;
    // IPv4 without options, UDP to port 68, BOOTP up to the magic
    // cookie: everything the checks below read at fixed distances.
    let ip_at = data + (ip_off & 0x1f);
    if ip_at + BOOTP + bootp::OPTIONS > end {
        return None;
    }
    let p = ip_at as *const u8;
    let rd16 = |off: usize| unsafe { u16::from_be((p.add(off) as *const u16).read_unaligned()) };
    let rd32 = |off: usize| unsafe { (p.add(off) as *const u32).read_unaligned() };
    if unsafe { *p.add(ipv4::VERSION_IHL) } != 0x45
        || unsafe { *p.add(ipv4::PROTOCOL) } != ipv4::PROTO_UDP
    {
        return None;
    }
    // Replies to a relay go to its port 67 (requests to port 67 never
    // reach this interface's ingress from the generator itself).
    let port = rd16(UDP + udp::DST_PORT.start);
    let op = unsafe { *p.add(BOOTP + bootp::OP) };
    if port != DHCP_CLIENT_PORT && !(port == DHCP_SERVER_PORT && op == bootp::BOOTREPLY) {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = XDHCP_GEN_CONFIG.get(0)?;
    let xid = u32::from_be(rd32(BOOTP + bootp::XID.start));
    let i = xid & (MAX_CLIENTS - 1);
    if xid >> 24 != cfg.epoch & 0xff || i >= cfg.clients {
        bump(stat::STRAY);
        return Some(());
    }
    let mac = client_mac(i.wrapping_add(cfg.mac_offset));
    let mac_ok = unsafe {
        let c = p.add(BOOTP + bootp::CHADDR.start);
        *c == mac[0]
            && *c.add(1) == mac[1]
            && *c.add(2) == mac[2]
            && *c.add(3) == mac[3]
            && *c.add(4) == mac[4]
            && *c.add(5) == mac[5]
    };
    // Another generator on the segment may share this epoch: its client
    // i's replies carry that client's chaddr, and are not ours to count.
    if !mac_ok {
        bump(stat::STRAY);
        return Some(());
    }
    let sent = XDHCP_GEN_SENT.get_ptr_mut(i)?;
    let t0 = unsafe { *sent };
    if t0 == 0 {
        bump(stat::DUPLICATE);
        return Some(());
    }
    unsafe { *sent = 0 };
    let lat = now.saturating_sub(t0);
    if let Some(b) = XDHCP_GEN_LATENCY.get_ptr_mut(bucket_of(lat)) {
        unsafe { *b += 1 };
    }
    if lat > cfg.timeout_ns {
        bump(stat::LATE);
    }
    if cfg.expect == expect::BOUNCE {
        bump(if op == bootp::BOOTREQUEST && mac_ok {
            stat::OK
        } else {
            stat::WRONG
        });
        return Some(());
    }
    let ip = XDHCP_GEN_CLIENTS.get(i).copied().unwrap_or(0);
    let verdict = check_ack(ctx, ip_off + BOOTP + bootp::OPTIONS, cfg.server_ip);
    let want = if cfg.expect == expect::OFFER {
        msg::OFFER
    } else {
        msg::ACK
    };
    bump(match verdict {
        msg::NAK => stat::NAK,
        v if v == want
            && op == bootp::BOOTREPLY
            && mac_ok
            && rd32(BOOTP + bootp::YIADDR.start) == ip =>
        {
            stat::OK
        }
        _ => stat::WRONG,
    });
    Some(())
}

/// Walks the reply's first options: the message type if option 54 is this
/// server and option 51 is present (ACK or OFFER) or for a NAK, else 0.
#[inline(always)]
fn check_ack(ctx: &XdpContext, options_at: usize, server_ip: u32) -> u8 {
    let data = ctx.data();
    let end = ctx.data_end();
    let mut off: usize = options_at;
    let mut msg_type = 0u8;
    let mut server_ok = false;
    let mut lease_ok = false;
    for _ in 0..16 {
        off &= 0x7ff;
        if data + off + 6 > end {
            break;
        }
        let o = (data + off) as *const u8;
        let code = unsafe { *o };
        if code == opt::END {
            break;
        }
        if code == opt::PAD {
            off += 1;
            continue;
        }
        let len = unsafe { *o.add(1) } as usize;
        match code {
            opt::MESSAGE_TYPE => msg_type = unsafe { *o.add(2) },
            opt::SERVER_ID => {
                server_ok = unsafe { (o.add(2) as *const u32).read_unaligned() } == server_ip
            }
            opt::LEASE_TIME => lease_ok = len == 4,
            _ => {}
        }
        off += 2 + len;
    }
    match msg_type {
        msg::ACK | msg::OFFER if server_ok && lease_ok => msg_type,
        msg::NAK => msg::NAK,
        _ => 0,
    }
}

#[xdp]
pub fn xdhcp_peer(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

include!("../object_items.rs");
