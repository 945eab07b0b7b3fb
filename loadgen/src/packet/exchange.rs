//! One phase on the packet engine: what every client has outstanding, and
//! the pieces the engine's loop runs in turn (sending what is due,
//! matching replies, a reconnect's retransmissions, pacing, the drain).

mod acks;

use indicatif::ProgressBar;

use super::*;
use crate::{PhaseExtras, MAX_CLIENTS};
use dhcp_common::layout::msg;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    Offer,
    Ack,
}

/// What a phase leaves behind: its counts, and for DORA the addresses
/// each client was acknowledged and the server that answered.
pub(super) struct Outcome {
    pub(super) counts: Counts,
    pub(super) acked: Vec<(u32, Ipv4Addr)>,
    pub(super) server: Option<ServerInfo>,
}

pub(super) struct Exchange<'a> {
    phase: Phase,
    epoch: u32,
    /// --clients.
    n: u32,
    total: u64,
    rate: u64,
    expects_reply: bool,
    reconnect: bool,
    timeout: Duration,
    max_send: Duration,
    /// The clients with a lease, and those leases by client.
    bound: Vec<(u32, Ipv4Addr)>,
    ips: &'a [Option<Ipv4Addr>],
    /// Per client (by `slot`): when its request left (0 = nothing
    /// outstanding) and what it waits for.
    sent_at: Vec<u64>,
    waiting: Vec<Wait>,
    /// Reconnect: each client's last send (its exchange's latest step)
    /// and retransmissions so far, for an RFC 2131 §4.1 backoff.
    last_try: Vec<u64>,
    tries: Vec<u8>,
    /// DORA: the address and server id each client was offered.
    offered: HashMap<u32, (Ipv4Addr, Ipv4Addr)>,
    acked: Vec<(u32, Ipv4Addr)>,
    acks: acks::AckLedger,
    server: Option<ServerInfo>,
    c: Counts,
    outstanding: u64,
    failed_sends: u64,
    /// Reconnect: clients with their address back, and when the last did.
    back: u64,
    last_back_ns: u64,
    next_scan: Duration,
    pb: ProgressBar,
    start: Instant,
    /// When the last request was sent (or the phase's time ran out).
    send_end: Option<Instant>,
}

/// Why a phase cannot run with what the clients hold.
pub(super) fn check_phase(
    phase: Phase,
    bound: &[(u32, Ipv4Addr)],
    server: Option<ServerInfo>,
) -> Result<()> {
    if !matches!(phase, Phase::Dora | Phase::Discover) && bound.is_empty() {
        bail!(
            "phase {} needs leases: run a dora phase first or give --synthetic",
            phase.name()
        );
    }
    if phase != Phase::Dora && phase != Phase::Discover && server.is_none() {
        bail!(
            "phase {} needs the server: a dora phase or --server",
            phase.name()
        );
    }
    Ok(())
}

impl<'a> Exchange<'a> {
    pub(super) fn new(
        args: &Args,
        phase: Phase,
        epoch: u32,
        bound: Vec<(u32, Ipv4Addr)>,
        bindings: &'a Bindings,
    ) -> Exchange<'a> {
        let n = args.clients;
        let total: u64 = match phase {
            Phase::Dora => n as u64,
            Phase::Release | Phase::Decline | Phase::Reconnect => bound.len() as u64,
            _ => args.count.unwrap_or(n as u64),
        };
        let slots = if phase == Phase::Discover {
            total.min((MAX_CLIENTS - n) as u64) as usize
        } else {
            n as usize
        };
        let reconnect = phase == Phase::Reconnect;
        let (last_try, tries) = if reconnect {
            (vec![0u64; slots], vec![0u8; slots])
        } else {
            (Vec::new(), Vec::new())
        };
        let expects_reply = !matches!(phase, Phase::Release | Phase::Decline);
        let timeout = Duration::from_millis(args.timeout_ms);
        let c = Counts {
            expects_reply,
            extras: PhaseExtras {
                retries: reconnect.then_some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        let pb = progress_bar(total, phase.name(), args.json);
        Exchange {
            phase,
            epoch,
            n,
            total,
            rate: args.rate,
            expects_reply,
            reconnect,
            timeout,
            max_send: Duration::from_secs_f64(args.duration),
            bound,
            ips: &bindings.ips,
            sent_at: vec![0u64; slots],
            waiting: vec![Wait::None; slots],
            last_try,
            tries,
            offered: HashMap::new(),
            acked: Vec::new(),
            acks: Default::default(),
            server: bindings.server,
            c,
            outstanding: 0,
            failed_sends: 0,
            back: 0,
            last_back_ns: 0,
            next_scan: timeout,
            pb,
            start: Instant::now(),
            send_end: None,
        }
    }

    /// Request `k`'s client.
    fn target(&self, k: u64) -> u32 {
        match self.phase {
            Phase::Dora => k as u32,
            Phase::Discover => self.n + (k % (MAX_CLIENTS - self.n) as u64) as u32,
            _ => self.bound[(k % self.bound.len() as u64) as usize].0,
        }
    }

    /// Client `i`'s place in the per-client tables: a discover phase's
    /// clients are the ones after --clients.
    fn slot(&self, i: u32) -> usize {
        if self.phase == Phase::Discover {
            (i - self.n) as usize
        } else {
            i as usize
        }
    }

    fn ip_of(&self, i: u32) -> Option<Ipv4Addr> {
        self.ips.get(i as usize).copied().flatten()
    }

    /// Nanoseconds since the phase began, never 0 (0 = nothing sent).
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    pub(super) fn sending(&self) -> bool {
        self.send_end.is_none()
    }

    /// Sends the requests due by now at the offered rate (a reconnect,
    /// everyone at once, as fast as the engine goes), and notes when
    /// the last has gone or the phase's time is up.
    pub(super) fn send_due(&mut self, eng: &PacketEngine) {
        let elapsed = self.start.elapsed();
        let due = if self.rate > 0 && !self.reconnect {
            ((elapsed.as_secs_f64() * self.rate as f64) as u64 + 1).min(self.total)
        } else {
            (self.c.sent + 64).min(self.total)
        };
        while self.c.sent < due {
            let i = self.target(self.c.sent);
            let frame = eng.request_frame(self.phase, self.epoch, i, self.ip_of(i), self.server);
            if !eng.send(&frame) {
                // Socket buffer full: try again on the next pass.
                self.failed_sends += 1;
                break;
            }
            self.c.sent += 1;
            if self.expects_reply {
                self.await_reply(i);
            }
        }
        if self.c.sent >= self.total || elapsed >= self.max_send {
            self.send_end = Some(Instant::now());
            self.c.send_secs = self.start.elapsed().as_secs_f64();
        }
    }

    /// Client `i`'s request has left: it now waits for an OFFER (its
    /// exchange starts with a DISCOVER) or an ACK.
    fn await_reply(&mut self, i: u32) {
        let s = self.slot(i);
        if self.waiting[s] != Wait::None {
            // Re-sent before the last one was answered.
            self.outstanding -= 1;
        }
        self.sent_at[s] = self.now_ns();
        if self.reconnect {
            self.last_try[s] = self.sent_at[s];
        }
        let discovers = matches!(self.phase, Phase::Dora | Phase::Discover)
            || (self.reconnect && i.is_multiple_of(2));
        self.waiting[s] = if discovers { Wait::Offer } else { Wait::Ack };
        self.outstanding += 1;
    }

    /// Reads up to 512 queued frames and matches the replies among them;
    /// returns how many frames it read.
    pub(super) fn receive(&mut self, eng: &PacketEngine, buf: &mut [u8]) -> u32 {
        let mut got = 0;
        while got < 512 {
            let Some(f) = eng.recv(buf) else { break };
            got += 1;
            if let Some(r) = parse_reply(f) {
                self.on_reply(eng, &r);
            }
        }
        got
    }

    fn on_reply(&mut self, eng: &PacketEngine, r: &Reply) {
        let t = self.now_ns();
        let i = r.xid & (MAX_CLIENTS - 1);
        if !self.is_ours(r, i) {
            self.c.stray += 1;
            return;
        }
        let s = self.slot(i);
        if self.phase == Phase::Dora && !self.first_dora_reply(i, r, s) {
            return;
        }
        if self.waiting[s] == Wait::None || !self.expects_reply {
            self.c.duplicate += 1;
            return;
        }
        if self.waiting[s] == Wait::Offer
            && matches!(self.phase, Phase::Dora | Phase::Reconnect)
            && r.msg_type == msg::OFFER
        {
            self.answer_offer(eng, i, r, t);
            return;
        }
        self.complete(i, r, t);
        self.pb.set_position(self.c.ok + self.c.nak + self.c.wrong);
    }

    /// A reply to one of this phase's clients: its epoch, a client of the
    /// phase, and that client's hardware address. Another generator on
    /// the segment may share this epoch (it is the clock's milliseconds
    /// mod 255): its client i's broadcast replies carry that client's
    /// chaddr, not ours.
    fn is_ours(&self, r: &Reply, i: u32) -> bool {
        let client_of_phase = if self.phase == Phase::Discover {
            i >= self.n && self.slot(i) < self.waiting.len()
        } else {
            i < self.n
        };
        r.xid >> 24 == self.epoch && client_of_phase && r.chaddr == mac_of(i)
    }

    /// OFFER: answered with a SELECTING REQUEST, same xid. A returning
    /// client must be offered its own address.
    fn answer_offer(&mut self, eng: &PacketEngine, i: u32, r: &Reply, t: u64) {
        let s = self.slot(i);
        let moved = self.reconnect && self.ip_of(i) != Some(r.yiaddr);
        let Some(sid) = r.server_id.filter(|_| !moved) else {
            self.c.wrong += 1;
            self.waiting[s] = Wait::None;
            self.outstanding -= 1;
            return;
        };
        if self.server.is_none() {
            self.server = Some(ServerInfo {
                ip: sid,
                mac: r.src_mac,
            });
        }
        self.offered.insert(i, (r.yiaddr, sid));
        let (frame, _) = build_request(&RequestSpec {
            msg_type: msg::REQUEST,
            xid: xid(self.epoch, i),
            mac: mac_of(i),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(r.yiaddr),
            server_id: Some(sid),
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
        });
        if eng.send(&frame) {
            self.waiting[s] = Wait::Ack;
            if self.reconnect {
                self.last_try[s] = t;
            }
        }
    }

    /// The reply that ends client `i`'s exchange: timed, then counted as
    /// ok, NAK or wrong.
    fn complete(&mut self, i: u32, r: &Reply, t: u64) {
        let s = self.slot(i);
        let lat = t.saturating_sub(self.sent_at[s]);
        self.waiting[s] = Wait::None;
        self.outstanding -= 1;
        self.c.latency.record(lat);
        if lat > self.timeout.as_nanos() as u64 {
            self.c.late += 1;
        }
        if r.msg_type == msg::NAK {
            self.c.nak += 1;
        } else if self.is_right(i, r) {
            self.c.ok += 1;
            if self.phase == Phase::Dora {
                self.acked.push((i, r.yiaddr));
            }
            if self.reconnect {
                self.back += 1;
                self.last_back_ns = t;
            }
        } else {
            self.c.wrong += 1;
        }
    }

    /// What client `i` should get: the phase's reply type from the right
    /// server, a lease, and the address it was offered or holds.
    fn is_right(&self, i: u32, r: &Reply) -> bool {
        let expected_ip = match self.phase {
            Phase::Dora => self.offered.get(&i).map(|o| o.0),
            Phase::Reconnect => self.ip_of(i).or(Some(Ipv4Addr::BROADCAST)),
            Phase::Discover => None,
            _ => self.ip_of(i),
        };
        let want_type = if self.phase == Phase::Discover {
            msg::OFFER
        } else {
            msg::ACK
        };
        let server_ok = match (self.phase, self.server) {
            (Phase::Discover, _) => r.server_id.is_some(),
            // The server this client chose, one of several.
            (Phase::Dora, _) => self.offered.get(&i).map(|o| o.1) == r.server_id,
            // Broadcast, naming no server: any server that holds the
            // binding may answer (RFC 2131 4.3.2), the one that granted
            // it or another that took it over.
            (Phase::Rebind | Phase::InitReboot, _) => r.server_id.is_some(),
            (_, Some(sv)) => r.server_id == Some(sv.ip),
            (_, None) => false,
        };
        r.msg_type == want_type
            && server_ok
            && r.lease_time.is_some_and(|l| l > 0)
            && expected_ip.is_none_or(|ip| ip == r.yiaddr)
            && !r.yiaddr.is_unspecified()
    }

    /// Reconnect, once everything is sent: every timeout/4, whoever is
    /// still unanswered and due asks again.
    pub(super) fn retransmit_if_due(&mut self, eng: &PacketEngine) {
        if self.reconnect && !self.sending() && self.start.elapsed() >= self.next_scan {
            self.next_scan = self.start.elapsed() + self.timeout / 4;
            self.retransmit(eng);
        }
    }

    /// Real clients retransmit (RFC 2131 §4.1: after 4 s, then doubling to
    /// 64 s; here the reply timeout, doubling to 16 times it): whoever is
    /// still unanswered asks again, from the start of its exchange, until
    /// every one is back or the phase's time is up.
    fn retransmit(&mut self, eng: &PacketEngine) {
        let now_ns = self.now_ns();
        let t0 = self.timeout.as_nanos() as u64;
        for k in 0..self.bound.len() {
            let i = self.bound[k].0;
            let s = i as usize;
            // Spread like real clients' randomised retries (±1 s in RFC
            // 2131): up to one more timeout, by client and try, so a wave
            // of them is not one burst.
            let jitter = (u64::from(i) << 8 | u64::from(self.tries[s]))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                % t0.max(1);
            let wait = (t0 << self.tries[s].min(4)) + jitter;
            if self.waiting[s] == Wait::None || now_ns.saturating_sub(self.last_try[s]) < wait {
                continue;
            }
            let frame = eng.request_frame(self.phase, self.epoch, i, self.ip_of(i), self.server);
            if !eng.send(&frame) {
                break;
            }
            self.sent_at[s] = now_ns;
            self.last_try[s] = now_ns;
            self.tries[s] = self.tries[s].saturating_add(1);
            self.waiting[s] = if i.is_multiple_of(2) {
                Wait::Offer
            } else {
                Wait::Ack
            };
            *self.c.extras.retries.get_or_insert(0) += 1;
        }
    }

    /// After the last send: whether every request is answered or the
    /// drain's time is up.
    pub(super) fn drained(&self) -> bool {
        let Some(end) = self.send_end else {
            return false;
        };
        let drain = if self.reconnect {
            self.max_send.max(self.timeout * 2)
        } else if self.expects_reply {
            self.timeout * 2
        } else {
            Duration::from_millis(200)
        };
        self.outstanding == 0 || end.elapsed() >= drain
    }

    /// While sending and nothing came: sleeps until the next request is
    /// due or a reply comes; after a full socket buffer, briefly.
    pub(super) fn pace(&self, eng: &PacketEngine) {
        if self.rate > 0 {
            let next = Duration::from_secs_f64((self.c.sent + 1) as f64 / self.rate as f64);
            let wait = next.saturating_sub(self.start.elapsed());
            if wait > Duration::from_micros(200) {
                eng.wait_readable((wait.as_millis() as i32).clamp(1, 5));
            }
        } else if self.failed_sends > 0 {
            eng.wait_readable(1);
        }
    }

    /// A phase without replies shows its progress by what it sent.
    pub(super) fn show_sent(&self) {
        if !self.expects_reply {
            self.pb.set_position(self.c.sent);
        }
    }

    pub(super) fn finish(mut self) -> Outcome {
        self.pb.finish_and_clear();
        if self.reconnect && self.back >= self.total {
            self.c.extras.all_back_secs = Some(self.last_back_ns as f64 / 1e9);
        }
        if self.failed_sends > 0 {
            tracing::debug!("{} sends deferred (socket buffer full)", self.failed_sends);
        }
        if self.phase == Phase::Dora {
            // Every client's address must be its own.
            let mut seen: HashMap<Ipv4Addr, u32> = HashMap::new();
            let dups = self
                .acked
                .iter()
                .filter(|(i, ip)| seen.insert(*ip, *i).is_some())
                .count();
            self.c.extras.duplicate_addresses = Some(dups as u64);
            self.c.extras.duplicate_acks.get_or_insert(0);
            self.c.extras.other_offers.get_or_insert(0);
        }
        Outcome {
            counts: self.c,
            acked: self.acked,
            server: self.server,
        }
    }
}
