//! Mixed client load on the lab's client veth, with a record of every ACK
//! the clients accepted: DORA from clients that hold nothing, renewals
//! (RENEWING, unicast to the server: what the XDP program answers) and
//! releases from clients that hold a lease, chosen at random. Each client
//! behaves as RFC 2131 says one should: it takes an ACK only for its
//! current transaction, counts its lease from when it sent the request,
//! gives the address up when that ends or when it releases it, and
//! retries from scratch when a server stays silent.
//!
//! The records let a test check the server against what the clients
//! were told: [`unacknowledged_losses`] (an ACKed lease missing from the
//! store) and [`overlaps`] (one address held by two clients at once).

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;

use crate::{
    dhcp::{Msg, ReplyView, ACK, DISCOVER, NAK, OFFER, RELEASE, REQUEST},
    frame::FrameSpec,
    raw::RawSocket,
    Netns,
};

mod check;

pub use check::{overlaps, story, unacknowledged_losses, StoredLease};

/// What every client asks for (DORA and renewals alike, so the fast path
/// sees the request shape it bound).
const PRL: [u8; 6] = [1, 3, 6, 15, 51, 54];

/// Seconds since the epoch, as the server counts.
pub fn unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// An ACK a client accepted.
#[derive(Clone, Debug)]
pub struct Acked {
    pub client: u32,
    pub ip: Ipv4Addr,
    /// When the request it answers left (the lease counts from here).
    pub sent: f64,
    pub received: f64,
    pub lease_secs: u32,
    /// A renewal (RENEWING) rather than the end of a DORA.
    pub renewal: bool,
}

impl Acked {
    /// The end of the lease as the client counts it.
    pub fn end(&self) -> f64 {
        self.sent + f64::from(self.lease_secs)
    }
}

/// A RELEASE a client sent (it gave the address up as it did).
#[derive(Clone, Debug)]
pub struct Released {
    pub client: u32,
    pub ip: Ipv4Addr,
    pub at: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Idle,
    Discovering,
    Requesting(Ipv4Addr),
    Bound,
    Renewing,
}

#[derive(Clone, Debug)]
struct Client {
    state: State,
    xid: u32,
    sent: f64,
    ip: Option<Ipv4Addr>,
    end: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub discovers: u64,
    pub requests: u64,
    pub renewals: u64,
    pub releases: u64,
    pub acks: u64,
    pub renewal_acks: u64,
    pub naks: u64,
    pub timeouts: u64,
}

pub struct Churn {
    sock: RawSocket,
    server_ip: Ipv4Addr,
    server_mac: [u8; 6],
    clients: Vec<Client>,
    pub acked: Vec<Acked>,
    pub released: Vec<Released>,
    pub counts: Counts,
    seq: u32,
    rng: u64,
}

/// Client `i`'s MAC.
pub fn mac(i: u32) -> [u8; 6] {
    [0x02, 0x4b, 0x39, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

impl Churn {
    /// `n` clients (at most 4096) on `ifname` in `ns`, talking to the
    /// server at `server_ip`/`server_mac`.
    pub fn new(
        ns: &Netns,
        ifname: &str,
        n: u32,
        server_ip: Ipv4Addr,
        server_mac: [u8; 6],
        seed: u64,
    ) -> Result<Churn> {
        assert!((1..=4096).contains(&n));
        Ok(Churn {
            sock: RawSocket::open(ns, ifname)?,
            server_ip,
            server_mac,
            clients: vec![
                Client {
                    state: State::Idle,
                    xid: 0,
                    sent: 0.0,
                    ip: None,
                    end: 0.0,
                };
                n as usize
            ],
            acked: Vec::new(),
            released: Vec::new(),
            counts: Counts::default(),
            seq: 0,
            rng: seed | 1,
        })
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_xid(&mut self, i: u32) -> u32 {
        self.seq = self.seq.wrapping_add(1) & 0xf_ffff;
        (self.seq << 12) | i
    }

    fn msg(&self, t: u8, i: u32, xid: u32) -> Msg {
        Msg::new(t, mac(i), xid)
    }

    fn send_broadcast(&self, i: u32, m: &Msg) {
        let f = FrameSpec {
            src_mac: mac(i),
            payload: m.encode(),
            ..Default::default()
        };
        let _ = self.sock.send(&f.build());
    }

    fn send_unicast(&self, i: u32, from: Ipv4Addr, m: &Msg) {
        let f = FrameSpec {
            src_mac: mac(i),
            dst_mac: self.server_mac,
            src_ip: from.octets(),
            dst_ip: self.server_ip.octets(),
            payload: m.encode(),
            ..Default::default()
        };
        let _ = self.sock.send(&f.build());
    }

    /// Runs the load at about `rate` client actions per second until `stop`
    /// is set or `max` has passed, then listens `drain` longer for the
    /// answers still on their way.
    pub fn run(&mut self, rate: u32, max: Duration, drain: Duration, stop: &AtomicBool) {
        let start = Instant::now();
        let mut done = 0u64;
        let mut stopped_at: Option<Instant> = None;
        loop {
            let el = start.elapsed();
            if stopped_at.is_none() && (stop.load(Ordering::SeqCst) || el >= max) {
                stopped_at = Some(Instant::now());
            }
            if let Some(t) = stopped_at {
                if t.elapsed() >= drain {
                    break;
                }
            } else {
                let due = (el.as_secs_f64() * f64::from(rate)) as u64;
                while done < due {
                    done += 1;
                    self.act();
                }
            }
            self.timeouts();
            // Replies until the socket is quiet for a millisecond.
            while let Ok(Some(f)) = self.sock.recv(Duration::from_millis(1)) {
                self.on_frame(&f);
            }
        }
        self.timeouts();
    }

    fn act(&mut self) {
        let n = self.clients.len() as u64;
        let i = (self.random() % n) as u32;
        let r = self.random() % 100;
        let now = unix_f64();
        let c = self.clients[i as usize].clone();
        match c.state {
            State::Idle => {
                let xid = self.next_xid(i);
                let m = self.msg(DISCOVER, i, xid).opt(55, &PRL);
                self.send_broadcast(i, &m);
                self.counts.discovers += 1;
                let c = &mut self.clients[i as usize];
                c.state = State::Discovering;
                c.xid = xid;
                c.sent = now;
            }
            State::Bound if r < 60 => {
                let ip = c.ip.expect("bound");
                let xid = self.next_xid(i);
                let mut m = self.msg(REQUEST, i, xid).opt(55, &PRL);
                m.ciaddr = ip;
                self.send_unicast(i, ip, &m);
                self.counts.renewals += 1;
                let c = &mut self.clients[i as usize];
                c.state = State::Renewing;
                c.xid = xid;
                c.sent = now;
            }
            State::Bound if r < 75 => {
                let ip = c.ip.expect("bound");
                let xid = self.next_xid(i);
                let mut m = self.msg(RELEASE, i, xid).opt(54, &self.server_ip.octets());
                m.ciaddr = ip;
                self.send_unicast(i, ip, &m);
                self.counts.releases += 1;
                self.released.push(Released {
                    client: i,
                    ip,
                    at: now,
                });
                let c = &mut self.clients[i as usize];
                c.state = State::Idle;
                c.ip = None;
            }
            _ => {}
        }
    }

    /// Requests unanswered for a second are given up; leases that ended
    /// are forgotten.
    fn timeouts(&mut self) {
        let now = unix_f64();
        for c in &mut self.clients {
            let waiting = matches!(
                c.state,
                State::Discovering | State::Requesting(_) | State::Renewing
            );
            if waiting && now - c.sent > 1.0 {
                self.counts.timeouts += 1;
                c.state = if c.state == State::Renewing {
                    State::Bound
                } else {
                    State::Idle
                };
            }
            // A second before the end: never count on the last instant.
            if matches!(c.state, State::Bound | State::Renewing) && now >= c.end - 1.0 {
                c.state = State::Idle;
                c.ip = None;
            }
        }
    }

    fn on_frame(&mut self, f: &[u8]) {
        // Ethernet, IPv4, UDP to 68.
        if f.len() < 42 || f[12..14] != [8, 0] || f[23] != 17 {
            return;
        }
        let ihl = usize::from(f[14] & 0xf) * 4;
        let udp = 14 + ihl;
        if f.len() < udp + 8 || f[udp + 2..udp + 4] != [0, 68] {
            return;
        }
        let Ok(r) = ReplyView::parse(&f[udp + 8..]) else {
            return;
        };
        let i = r.xid() & 0xfff;
        let Some(c) = self.clients.get(i as usize).cloned() else {
            return;
        };
        if c.xid != r.xid() || r.chaddr() != mac(i) {
            return;
        }
        let now = unix_f64();
        match (c.state, r.msg_type()) {
            (State::Discovering, Some(OFFER)) => {
                let ip = r.yiaddr();
                let m = self
                    .msg(REQUEST, i, c.xid)
                    .opt(50, &ip.octets())
                    .opt(54, &r.option(54).unwrap_or_default())
                    .opt(55, &PRL);
                self.send_broadcast(i, &m);
                self.counts.requests += 1;
                let c = &mut self.clients[i as usize];
                c.state = State::Requesting(ip);
                c.sent = now;
            }
            (State::Requesting(ip), Some(ACK)) if r.yiaddr() == ip => self.bound(i, &r, false),
            (State::Renewing, Some(ACK)) if Some(r.yiaddr()) == c.ip => self.bound(i, &r, true),
            (State::Requesting(_) | State::Renewing, Some(NAK)) => {
                self.counts.naks += 1;
                let c = &mut self.clients[i as usize];
                c.state = State::Idle;
                c.ip = None;
            }
            _ => {}
        }
    }

    fn bound(&mut self, i: u32, r: &ReplyView, renewal: bool) {
        let lease_secs = r
            .option(51)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        let c = &mut self.clients[i as usize];
        let a = Acked {
            client: i,
            ip: r.yiaddr(),
            sent: c.sent,
            received: unix_f64(),
            lease_secs,
            renewal,
        };
        c.state = State::Bound;
        c.ip = Some(a.ip);
        c.end = a.end();
        self.counts.acks += 1;
        if renewal {
            self.counts.renewal_acks += 1;
        }
        self.acked.push(a);
    }
}
