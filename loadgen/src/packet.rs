//! The AF_PACKET engine: one thread sends at the offered rate and drains
//! replies between sends, so it can answer OFFERs with REQUESTs (DORA).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    build_request, mac_of, progress_bar, xid, Args, Bindings, Counts, PhaseReport, RequestSpec,
    ServerInfo, BROADCAST_MAC,
};
use crate::{programs, Phase};
use dhcp_common::layout::{bootp, eth, ipv4, opt, udp, DHCP_CLIENT_PORT, ETH_P_IP};
use xdhcp::xdp::loader;

pub struct PacketEngine {
    fd: OwnedFd,
    /// XDP_PASS on the interface: a veth delivers frames the far end sent
    /// with XDP_TX (fast-path ACKs) only to a peer running XDP.
    _peer: Option<programs::PeerProgram>,
}

/// A reply's fields the checks need.
struct Reply {
    xid: u32,
    msg_type: u8,
    yiaddr: Ipv4Addr,
    chaddr: [u8; 6],
    server_id: Option<Ipv4Addr>,
    lease_time: Option<u32>,
    src_mac: [u8; 6],
}

fn parse_reply(f: &[u8]) -> Option<Reply> {
    // Ethernet, IPv4, UDP to 68, BOOTREPLY with the magic cookie.
    let ip = eth::HEADER_LEN;
    if f.len() < ip + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + bootp::OPTIONS
        || f[eth::ETHERTYPE] != ETH_P_IP.to_be_bytes()
        || f[ip + ipv4::VERSION_IHL] >> 4 != 4
        || f[ip + ipv4::PROTOCOL] != ipv4::PROTO_UDP
    {
        return None;
    }
    let ihl = ((f[ip + ipv4::VERSION_IHL] & 0xf) as usize) * 4;
    let u = ip + ihl;
    if f.len() < u + udp::HEADER_LEN + bootp::OPTIONS
        || f[u + udp::DST_PORT.start..u + udp::DST_PORT.end] != DHCP_CLIENT_PORT.to_be_bytes()
    {
        return None;
    }
    let b = &f[u + udp::HEADER_LEN..];
    if b[bootp::OP] != bootp::BOOTREPLY || b[bootp::COOKIE] != bootp::MAGIC_COOKIE {
        return None;
    }
    let yiaddr: [u8; 4] = b[bootp::YIADDR].try_into().ok()?;
    let mut r = Reply {
        xid: u32::from_be_bytes(b[bootp::XID].try_into().ok()?),
        msg_type: 0,
        yiaddr: Ipv4Addr::from(yiaddr),
        chaddr: b[bootp::CHADDR.start..bootp::CHADDR.start + 6]
            .try_into()
            .ok()?,
        server_id: None,
        lease_time: None,
        src_mac: f[eth::SRC].try_into().ok()?,
    };
    let mut i = bootp::OPTIONS;
    while i < b.len() {
        let code = b[i];
        if code == opt::END {
            break;
        }
        if code == opt::PAD {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (opt::MESSAGE_TYPE, 1) => r.msg_type = v[0],
            (opt::SERVER_ID, 4) => r.server_id = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (opt::LEASE_TIME, 4) => r.lease_time = Some(u32::from_be_bytes(v.try_into().ok()?)),
            _ => {}
        }
        i += 2 + len;
    }
    Some(r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    Offer,
    Ack,
}

impl PacketEngine {
    pub fn open(iface: &str) -> Result<PacketEngine> {
        let ifindex = loader::ifindex(iface)?;
        let proto = (libc::ETH_P_IP as u16).to_be() as i32;
        // SAFETY: plain socket calls on a fresh descriptor we own.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
        if fd < 0 {
            bail!(
                "AF_PACKET socket: {} (loadgen needs CAP_NET_RAW)",
                std::io::Error::last_os_error()
            );
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            bail!("binding to {iface}: {}", std::io::Error::last_os_error());
        }
        // Bursts of replies must not overflow the socket while we send.
        let big: libc::c_int = 64 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &big as *const _ as *const libc::c_void,
                    4,
                )
            };
        }
        // Our own requests would come back as outgoing copies: ignore them.
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                23, // PACKET_IGNORE_OUTGOING
                &one as *const _ as *const libc::c_void,
                4,
            )
        };
        let peer = match programs::attach_peer(iface) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("no XDP_PASS program on {iface} ({e:#}); one is already attached?");
                None
            }
        };
        Ok(PacketEngine { fd, _peer: peer })
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: a valid buffer on our socket.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        r == frame.len() as isize
    }

    fn recv<'a>(&self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        // SAFETY: a valid buffer on our socket.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (r > 0).then(|| &buf[..r as usize])
    }

    fn wait_readable(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    pub fn run_phase(
        &mut self,
        args: &Args,
        phase: Phase,
        epoch: u32,
        bindings: &mut Bindings,
    ) -> Result<PhaseReport> {
        let n = args.clients;
        let bound = bindings.bound();
        // Which client each request is for.
        let targets: Box<dyn Fn(u64) -> u32> = match phase {
            Phase::Dora => Box::new(|k| k as u32),
            Phase::Discover => Box::new(move |k| n + (k % (super::MAX_CLIENTS - n) as u64) as u32),
            _ => {
                if bound.is_empty() {
                    bail!(
                        "phase {} needs leases: run a dora phase first or give --synthetic",
                        phase.name()
                    );
                }
                let b = bound.clone();
                Box::new(move |k| b[(k % b.len() as u64) as usize].0)
            }
        };
        let total: u64 = match phase {
            Phase::Dora => n as u64,
            Phase::Release | Phase::Decline | Phase::Reconnect => bound.len() as u64,
            _ => args.count.unwrap_or(n as u64),
        };
        let server = bindings.server;
        if phase != Phase::Dora && phase != Phase::Discover && server.is_none() {
            bail!(
                "phase {} needs the server: a dora phase or --server",
                phase.name()
            );
        }
        let expects_reply = !matches!(phase, Phase::Release | Phase::Decline);
        let timeout = Duration::from_millis(args.timeout_ms);
        let max_send = Duration::from_secs_f64(args.duration);

        // Per client: when its request left (0 = nothing outstanding) and
        // what it waits for; DORA also keeps the offered address.
        let slots = if phase == Phase::Discover {
            total.min((super::MAX_CLIENTS - n) as u64) as usize
        } else {
            n as usize
        };
        let mut sent_at = vec![0u64; slots];
        // Reconnect: each client's last send (its exchange's latest step)
        // and retransmissions so far, for an RFC 2131 §4.1 backoff.
        let reconnect = phase == Phase::Reconnect;
        let (mut last_try, mut tries) = if reconnect {
            (vec![0u64; slots], vec![0u8; slots])
        } else {
            (Vec::new(), Vec::new())
        };
        let mut waiting = vec![Wait::None; slots];
        let mut offered: HashMap<u32, (Ipv4Addr, Ipv4Addr)> = HashMap::new();
        let slot = |i: u32| -> usize {
            if phase == Phase::Discover {
                (i - n) as usize
            } else {
                i as usize
            }
        };
        let ip_of = |i: u32| bindings.ips.get(i as usize).copied().flatten();

        let mut c = Counts {
            expects_reply,
            ..Default::default()
        };
        let pb = progress_bar(total, phase.name(), args.json);
        let start = Instant::now();
        let mut send_end: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        let mut outstanding: u64 = 0;
        let mut failed_sends = 0u64;
        let mut learned_server: Option<ServerInfo> = server;
        let mut acked: Vec<(u32, Ipv4Addr)> = Vec::new();
        if reconnect {
            c.retries = Some(0);
        }
        let (mut back, mut last_back_ns, mut next_scan) = (0u64, 0u64, timeout);
        loop {
            let now = Instant::now();
            let elapsed = now - start;
            if send_end.is_none() {
                // A reconnect is everyone at once: as fast as the engine goes.
                let due = if args.rate > 0 && phase != Phase::Reconnect {
                    ((elapsed.as_secs_f64() * args.rate as f64) as u64 + 1).min(total)
                } else {
                    (c.sent + 64).min(total)
                };
                while c.sent < due {
                    let k = c.sent;
                    let i = targets(k);
                    let frame = self.request_frame(phase, epoch, i, ip_of(i), learned_server);
                    if !self.send(&frame) {
                        // Socket buffer full: try again on the next pass.
                        failed_sends += 1;
                        break;
                    }
                    c.sent += 1;
                    if expects_reply {
                        let s = slot(i);
                        if waiting[s] != Wait::None {
                            // Re-sent before the last one was answered.
                            outstanding -= 1;
                        }
                        sent_at[s] = start.elapsed().as_nanos() as u64 + 1;
                        if reconnect {
                            last_try[s] = sent_at[s];
                        }
                        let discovers = matches!(phase, Phase::Dora | Phase::Discover)
                            || (phase == Phase::Reconnect && i.is_multiple_of(2));
                        waiting[s] = if discovers { Wait::Offer } else { Wait::Ack };
                        outstanding += 1;
                    }
                }
                if c.sent >= total || elapsed >= max_send {
                    send_end = Some(Instant::now());
                    c.send_secs = start.elapsed().as_secs_f64();
                }
            }
            let mut got = 0;
            while got < 512 {
                let Some(f) = self.recv(&mut buf) else { break };
                got += 1;
                let Some(r) = parse_reply(f) else { continue };
                let t = start.elapsed().as_nanos() as u64 + 1;
                let i = r.xid & (super::MAX_CLIENTS - 1);
                if r.xid >> 24 != epoch
                    || (phase == Phase::Discover && (i < n || slot(i) >= slots))
                    || (phase != Phase::Discover && i >= n)
                {
                    c.stray += 1;
                    continue;
                }
                // Another generator on the segment may share this epoch
                // (it is the clock's milliseconds mod 255): its client i's
                // broadcast replies carry that client's chaddr, not ours.
                let mac_ok = r.chaddr == mac_of(i);
                if !mac_ok {
                    c.stray += 1;
                    continue;
                }
                let s = slot(i);
                if waiting[s] == Wait::None || !expects_reply {
                    c.duplicate += 1;
                    continue;
                }
                if waiting[s] == Wait::Offer
                    && matches!(phase, Phase::Dora | Phase::Reconnect)
                    && r.msg_type == 2
                {
                    // OFFER: answer with a SELECTING REQUEST, same xid. A
                    // returning client must be offered its own address.
                    let moved = phase == Phase::Reconnect && ip_of(i) != Some(r.yiaddr);
                    let Some(sid) = r.server_id.filter(|_| mac_ok && !moved) else {
                        c.wrong += 1;
                        waiting[s] = Wait::None;
                        outstanding -= 1;
                        continue;
                    };
                    if learned_server.is_none() {
                        learned_server = Some(ServerInfo {
                            ip: sid,
                            mac: r.src_mac,
                        });
                    }
                    offered.insert(i, (r.yiaddr, sid));
                    let (frame, _) = build_request(&RequestSpec {
                        msg_type: 3,
                        xid: xid(epoch, i),
                        mac: mac_of(i),
                        ciaddr: Ipv4Addr::UNSPECIFIED,
                        requested: Some(r.yiaddr),
                        server_id: Some(sid),
                        dst_mac: BROADCAST_MAC,
                        dst_ip: Ipv4Addr::BROADCAST,
                    });
                    if self.send(&frame) {
                        waiting[s] = Wait::Ack;
                        if reconnect {
                            last_try[s] = t;
                        }
                    }
                    continue;
                }
                let lat = t.saturating_sub(sent_at[s]);
                waiting[s] = Wait::None;
                outstanding -= 1;
                c.latency.record(lat);
                if lat > timeout.as_nanos() as u64 {
                    c.late += 1;
                }
                let expected_ip = match phase {
                    Phase::Dora => offered.get(&i).map(|o| o.0),
                    Phase::Reconnect => ip_of(i).or(Some(Ipv4Addr::BROADCAST)),
                    Phase::Discover => None,
                    _ => ip_of(i),
                };
                let want_type = if phase == Phase::Discover { 2 } else { 5 };
                let server_ok = match (phase, learned_server) {
                    (Phase::Discover, _) => r.server_id.is_some(),
                    (_, Some(sv)) => r.server_id == Some(sv.ip),
                    (_, None) => false,
                };
                if r.msg_type == 6 {
                    c.nak += 1;
                } else if r.msg_type == want_type
                    && mac_ok
                    && server_ok
                    && r.lease_time.is_some_and(|l| l > 0)
                    && expected_ip.is_none_or(|ip| ip == r.yiaddr)
                    && !r.yiaddr.is_unspecified()
                {
                    c.ok += 1;
                    if phase == Phase::Dora {
                        acked.push((i, r.yiaddr));
                    }
                    if reconnect {
                        back += 1;
                        last_back_ns = t;
                    }
                } else {
                    c.wrong += 1;
                }
                pb.set_position(c.ok + c.nak + c.wrong);
            }
            if reconnect && send_end.is_some() && start.elapsed() >= next_scan {
                // Real clients retransmit (RFC 2131 §4.1: after 4 s, then
                // doubling to 64 s; here the reply timeout, doubling to 16
                // times it): whoever is still unanswered asks again, from
                // the start of its exchange, until every one is back or
                // the phase's time is up.
                next_scan = start.elapsed() + timeout / 4;
                let now_ns = start.elapsed().as_nanos() as u64 + 1;
                for &(i, _) in &bound {
                    let s = i as usize;
                    // Spread like real clients' randomised retries (±1 s in
                    // RFC 2131): up to one more timeout, by client and try,
                    // so a wave of them is not one burst.
                    let t0 = timeout.as_nanos() as u64;
                    let jitter = (u64::from(i) << 8 | u64::from(tries[s]))
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        % t0.max(1);
                    let wait = (t0 << tries[s].min(4)) + jitter;
                    if waiting[s] == Wait::None || now_ns.saturating_sub(last_try[s]) < wait {
                        continue;
                    }
                    let frame = self.request_frame(phase, epoch, i, ip_of(i), learned_server);
                    if !self.send(&frame) {
                        break;
                    }
                    sent_at[s] = now_ns;
                    last_try[s] = now_ns;
                    tries[s] = tries[s].saturating_add(1);
                    waiting[s] = if i.is_multiple_of(2) {
                        Wait::Offer
                    } else {
                        Wait::Ack
                    };
                    *c.retries.get_or_insert(0) += 1;
                }
            }
            if let Some(end) = send_end {
                let drain = if reconnect {
                    max_send.max(timeout * 2)
                } else if expects_reply {
                    timeout * 2
                } else {
                    Duration::from_millis(200)
                };
                if outstanding == 0 || end.elapsed() >= drain {
                    break;
                }
                self.wait_readable(5);
            } else if got == 0 {
                if args.rate > 0 {
                    // Sleep until the next request is due, or a reply comes.
                    let next = Duration::from_secs_f64((c.sent + 1) as f64 / args.rate as f64);
                    let wait = next.saturating_sub(start.elapsed());
                    if wait > Duration::from_micros(200) {
                        self.wait_readable((wait.as_millis() as i32).clamp(1, 5));
                    }
                } else if failed_sends > 0 {
                    self.wait_readable(1);
                }
            }
            if !expects_reply {
                pb.set_position(c.sent);
            }
        }
        pb.finish_and_clear();
        if reconnect && back >= total {
            c.all_back_secs = Some(last_back_ns as f64 / 1e9);
        }
        if failed_sends > 0 {
            tracing::debug!("{failed_sends} sends deferred (socket buffer full)");
        }
        if phase == Phase::Dora {
            // Every client's address must be its own.
            let mut seen: HashMap<Ipv4Addr, u32> = HashMap::new();
            let mut dups = 0;
            for (i, ip) in &acked {
                if seen.insert(*ip, *i).is_some() {
                    dups += 1;
                }
            }
            c.duplicate_addresses = Some(dups);
            for (i, ip) in acked {
                bindings.ips[i as usize] = Some(ip);
            }
            bindings.server = learned_server;
        }
        Ok(c.report(phase, "packet"))
    }

    fn request_frame(
        &self,
        phase: Phase,
        epoch: u32,
        i: u32,
        ip: Option<Ipv4Addr>,
        server: Option<ServerInfo>,
    ) -> Vec<u8> {
        let zero = Ipv4Addr::UNSPECIFIED;
        let ip = ip.unwrap_or(zero);
        let (sip, smac) = server.map_or((zero, BROADCAST_MAC), |s| (s.ip, s.mac));
        let spec = match phase {
            Phase::Reconnect if i % 2 == 1 => {
                request_spec(Phase::InitReboot, epoch, i, ip, sip, smac)
            }
            Phase::Dora | Phase::Discover | Phase::Reconnect => RequestSpec {
                msg_type: 1,
                xid: xid(epoch, i),
                mac: mac_of(i),
                ciaddr: zero,
                requested: None,
                server_id: None,
                dst_mac: BROADCAST_MAC,
                dst_ip: Ipv4Addr::BROADCAST,
            },
            _ => request_spec(phase, epoch, i, ip, sip, smac),
        };
        build_request(&spec).0
    }
}

/// The request a bound client sends in `phase` (also the XDP engine's
/// template, with `i` and `ip` zero).
pub fn request_spec(
    phase: Phase,
    epoch: u32,
    i: u32,
    ip: Ipv4Addr,
    server: Ipv4Addr,
    server_mac: [u8; 6],
) -> RequestSpec {
    let zero = Ipv4Addr::UNSPECIFIED;
    let base = RequestSpec {
        msg_type: 3,
        xid: xid(epoch, i),
        mac: mac_of(i),
        ciaddr: ip,
        requested: None,
        server_id: None,
        dst_mac: server_mac,
        dst_ip: server,
    };
    match phase {
        Phase::Rebind => RequestSpec {
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::InitReboot => RequestSpec {
            ciaddr: zero,
            requested: Some(ip),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        Phase::Release => RequestSpec {
            msg_type: 7,
            server_id: Some(server),
            ..base
        },
        Phase::Decline => RequestSpec {
            msg_type: 4,
            ciaddr: zero,
            requested: Some(ip),
            server_id: Some(server),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
            ..base
        },
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_wherever_options_sit() {
        let mut b = vec![0u8; 236];
        b[0] = 2;
        b[4..8].copy_from_slice(&0x0500_0007u32.to_be_bytes());
        b[16..20].copy_from_slice(&[198, 18, 1, 7]);
        b[28..34].copy_from_slice(&crate::client_mac(7));
        b.extend_from_slice(&[
            99, 130, 83, 99, 0, 1, 4, 255, 255, 0, 0, 51, 4, 0, 0, 14, 16,
        ]);
        b.extend_from_slice(&[54, 4, 198, 18, 0, 1, 53, 1, 5, 255]);
        let f = xdhcp::proto::build_frame(
            &xdhcp::proto::FrameHeader {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: crate::client_mac(7),
                tags: Vec::new(),
                src_ip: Ipv4Addr::new(198, 18, 0, 1),
                dst_ip: Ipv4Addr::new(198, 18, 1, 7),
                src_port: 67,
                dst_port: 68,
            },
            &b,
        );
        let r = parse_reply(&f).unwrap();
        assert_eq!(r.msg_type, 5);
        assert_eq!(r.xid, 0x0500_0007);
        assert_eq!(r.server_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(r.lease_time, Some(3600));
        assert_eq!(r.yiaddr, Ipv4Addr::new(198, 18, 1, 7));
        // A request (op 1) and a truncated frame are not replies.
        let mut req = f.clone();
        req[42] = 1;
        assert!(parse_reply(&req).is_none());
        assert!(parse_reply(&f[..200]).is_none());
    }
}
