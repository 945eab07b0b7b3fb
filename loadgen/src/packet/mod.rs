//! The AF_PACKET engine: one thread sends at the offered rate and drains
//! replies between sends, so it can answer OFFERs with REQUESTs (DORA).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    build_request, mac_of, progress_bar, xid, Args, Bindings, Counts, PhaseReport, RequestSpec,
    ServerInfo, BROADCAST_MAC,
};
use crate::{programs, Phase};
use dhcp_common::layout::{bootp, eth, ipv4, opt, udp, DHCP_CLIENT_PORT, ETH_P_IP};
use dhcp_common::packet_socket;
use xdhcp::xdp::loader;

mod reply;
mod requests;

use reply::parse_reply;
pub use requests::request_spec;

pub struct PacketEngine {
    fd: OwnedFd,
    /// XDP_PASS on the interface: a veth delivers frames the far end sent
    /// with XDP_TX (fast-path ACKs) only to a peer running XDP.
    _peer: Option<programs::PeerProgram>,
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
        let proto = i32::from(ETH_P_IP.to_be());
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
        if let Err(e) = packet_socket::bind(fd.as_fd(), ifindex, ETH_P_IP) {
            bail!("binding to {iface}: {e}");
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
}

#[cfg(test)]
mod tests;
