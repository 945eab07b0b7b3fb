//! Requests waiting for the state machine, bounded, in two classes: what
//! bound clients send (renewals, a REQUEST for an offer or binding they
//! hold, their RELEASE, DECLINE and INFORM) goes before everything else
//! (DISCOVERs, REQUESTs for addresses nobody offered). When the backlog is
//! full the oldest waiting request of the second class is dropped first,
//! as Kea's congestion handling does: it is the one most likely to have
//! been retransmitted already, and a DISCOVER costs its client only a
//! retransmission while a lost renewal costs a bound client its timers.

use std::collections::VecDeque;

use dhcp_common::packet_socket::RecvBatch;

use crate::{
    daemon::sockets::{rx_meta, PacketSocket, RxMeta},
    dhcp::server::{Arrival, Server},
    proto::{self, Tag},
};

/// One received frame, as the packet socket gave it.
pub struct Queued {
    pub iface: usize,
    pub frame: Vec<u8>,
    pub stripped_tag: Option<Tag>,
    pub check_udp: bool,
    /// When it arrived (Unix nanoseconds): what it ends, it ends then.
    pub arrived_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BacklogStats {
    /// Dropped to make room: second-class requests (oldest first)...
    pub dropped_new_clients: u64,
    /// ...and bound clients' requests, when only those were waiting.
    pub dropped_bound_clients: u64,
    /// The most that waited at once.
    pub high_water: usize,
}

pub struct Backlog {
    bound: VecDeque<Queued>,
    others: VecDeque<Queued>,
    cap: usize,
    pub stats: BacklogStats,
}

impl Backlog {
    pub fn new(cap: usize) -> Backlog {
        Backlog {
            bound: VecDeque::new(),
            others: VecDeque::new(),
            cap: cap.max(1),
            stats: BacklogStats::default(),
        }
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    pub fn len(&self) -> usize {
        self.bound.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `q`, dropping what the bound says must go.
    pub fn push(&mut self, q: Queued, from_bound_client: bool) {
        while self.len() >= self.cap {
            if self.others.pop_front().is_some() {
                self.stats.dropped_new_clients += 1;
            } else if !from_bound_client {
                self.stats.dropped_new_clients += 1;
                return;
            } else {
                self.bound.pop_front();
                self.stats.dropped_bound_clients += 1;
            }
        }
        if from_bound_client {
            self.bound.push_back(q);
        } else {
            self.others.push_back(q);
        }
        self.stats.high_water = self.stats.high_water.max(self.len());
    }

    /// The next request to handle: bound clients' first, each class in
    /// arrival order.
    pub fn pop(&mut self) -> Option<Queued> {
        self.bound.pop_front().or_else(|| self.others.pop_front())
    }
}

/// Reads up to `budget` frames from `sock` (interface `iface`, named
/// `name`) into `backlog`, counting what is malformed or dropped for room
/// in `server`'s counters. Returns whether the socket may hold more.
pub fn read(
    sock: &PacketSocket,
    iface: usize,
    name: &str,
    batch: &mut RecvBatch,
    server: &mut Server,
    backlog: &mut Backlog,
    budget: usize,
) -> bool {
    let mut read = 0;
    while read < budget {
        let n = match sock.recv_many(batch) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::warn!(interface = %name, "recv: {e}");
                return false;
            }
        };
        read += n.max(1);
        for (i, rx) in batch.received().iter().enumerate() {
            take(iface, name, batch.frame(i), &rx_meta(rx), server, backlog);
        }
    }
    true
}

/// One received frame: counted if it is not for us or malformed, else
/// queued in its class.
fn take(
    iface: usize,
    name: &str,
    frame: &[u8],
    meta: &RxMeta,
    server: &mut Server,
    backlog: &mut Backlog,
) {
    if !meta.for_us {
        server.count_not_for_us();
        return;
    }
    if meta.truncated {
        server.count_malformed(proto::Malformed::Truncated);
        return;
    }
    let bound = match proto::parse_frame(frame, meta.stripped_tag, meta.check_udp) {
        Err(m) => {
            server.count_malformed(m);
            return;
        }
        Ok(f) => match proto::parse_dhcp(f.payload) {
            Err(m) => {
                server.count_malformed(m);
                return;
            }
            Ok(req) => server.from_bound_client(
                &req,
                &Arrival {
                    iface: name,
                    tags: &f.tags,
                    src_mac: f.src_mac,
                    src_ip: f.src_ip,
                },
            ),
        },
    };
    let before = backlog.stats;
    backlog.push(
        Queued {
            iface,
            frame: frame.to_vec(),
            stripped_tag: meta.stripped_tag,
            // Checked above.
            check_udp: false,
            arrived_ns: meta.at_ns.unwrap_or_else(crate::xdp::clock::unix_ns_now),
        },
        bound,
    );
    let after = backlog.stats;
    for (why, n) in [
        (
            "overload_new_client",
            after.dropped_new_clients - before.dropped_new_clients,
        ),
        (
            "overload_bound_client",
            after.dropped_bound_clients - before.dropped_bound_clients,
        ),
    ] {
        if n > 0 {
            *server.counters.dropped.entry(why).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u8) -> Queued {
        Queued {
            iface: 0,
            frame: vec![n],
            stripped_tag: None,
            arrived_ns: 0,
            check_udp: false,
        }
    }

    fn drain(b: &mut Backlog) -> Vec<u8> {
        std::iter::from_fn(|| b.pop()).map(|q| q.frame[0]).collect()
    }

    #[test]
    fn bound_clients_go_first_and_the_oldest_new_client_is_dropped() {
        let mut b = Backlog::new(4);
        b.push(q(1), false);
        b.push(q(2), false);
        b.push(q(3), true);
        b.push(q(4), false);
        // Full: a renewal pushes out the oldest DISCOVER.
        b.push(q(5), true);
        assert_eq!(b.stats.dropped_new_clients, 1);
        // And a DISCOVER the next oldest.
        b.push(q(6), false);
        assert_eq!(b.stats.dropped_new_clients, 2);
        assert_eq!(b.len(), 4);
        assert_eq!(drain(&mut b), vec![3, 5, 4, 6]);
        assert_eq!(b.stats.high_water, 4);
    }

    #[test]
    fn only_bound_clients_waiting_the_newcomer_or_the_oldest_goes() {
        let mut b = Backlog::new(2);
        b.push(q(1), true);
        b.push(q(2), true);
        b.push(q(3), false);
        assert_eq!(b.stats.dropped_new_clients, 1);
        b.push(q(4), true);
        assert_eq!(b.stats.dropped_bound_clients, 1);
        assert_eq!(drain(&mut b), vec![2, 4]);
    }

    #[test]
    fn a_flood_never_grows_it_past_its_cap() {
        let mut b = Backlog::new(100);
        for i in 0..100_000u32 {
            b.push(q(i as u8), i % 10 == 0);
            assert!(b.len() <= 100);
        }
        let s = b.stats;
        assert_eq!(drain(&mut b).len(), 100);
        assert_eq!(
            s.dropped_new_clients + s.dropped_bound_clients,
            100_000 - 100
        );
        // Nothing handled, so in the end only bound clients' requests wait.
        assert_eq!(s.dropped_new_clients, 90_000);
    }
}
