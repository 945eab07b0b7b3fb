//! A batch of commits on its way to the store, and when the committer
//! gives up on it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use dhcp_common::{LeaseKey, LeaseValue};

use super::{Commit, Written};
use crate::{
    lease::{Lease, LeaseState},
    store::StoreOp,
};

/// The addresses a commit binds (its ACK's claim).
fn claims(ops: &[StoreOp]) -> Vec<std::net::Ipv4Addr> {
    ops.iter()
        .filter_map(StoreOp::lease)
        .filter(|l| l.state == LeaseState::Bound)
        .map(|l| l.ip)
        .collect()
}

/// When the committer gives up on a store that keeps failing: once the
/// daemon is stopping (the sender is gone), `give_up` after a retry
/// first saw it, once for all the batches still queued.
pub(super) struct Shutdown<'a> {
    pub(super) stopping: &'a AtomicBool,
    pub(super) give_up: Duration,
    pub(super) seen: Option<Instant>,
}

impl Shutdown<'_> {
    pub(super) fn gives_up(&mut self) -> bool {
        self.stopping.load(Ordering::SeqCst)
            && self.seen.get_or_insert_with(Instant::now).elapsed() >= self.give_up
    }
}

/// Commits written as one.
pub(super) struct Batch<W> {
    /// The last commit in it.
    pub(super) seq: u64,
    pub(super) ops: Vec<StoreOp>,
    /// When each op was decided (its commit's `at_ns`).
    pub(super) op_ns: Vec<u64>,
    /// Whether each op is the daemon's own (its commit has no reply and
    /// no waiter): one a later op may fold away (`absorb`).
    pub(super) internal: Vec<bool>,
    /// Each commit's replies with the addresses it binds: a reply whose
    /// claim the store refused does not leave.
    pub(super) replies: Vec<(Vec<std::net::Ipv4Addr>, Vec<W>)>,
    pub(super) done: Vec<tokio::sync::oneshot::Sender<Written>>,
    pub(super) unmap: Vec<(LeaseKey, LeaseValue)>,
    /// The bindings its deletes end, as the kernel had them.
    pub(super) deleted: Vec<Lease>,
    /// Commits taken off the queue.
    pub(super) taken: usize,
}

impl<W> Batch<W> {
    /// `first`, and everything queued behind it, up to about 4096 ops.
    pub(super) fn gather(first: Commit<W>, rx: &mpsc::Receiver<Commit<W>>) -> Batch<W> {
        let mut b = Batch {
            seq: first.seq,
            ops: Vec::new(),
            op_ns: Vec::new(),
            internal: Vec::new(),
            replies: Vec::new(),
            done: Vec::new(),
            unmap: Vec::new(),
            deleted: Vec::new(),
            taken: 0,
        };
        b.add(first);
        while b.ops.len() < 4096 {
            let Ok(more) = rx.try_recv() else { break };
            b.add(more);
        }
        b
    }

    pub(super) fn add(&mut self, c: Commit<W>) {
        self.taken += 1;
        self.seq = self.seq.max(c.seq);
        let internal = c.replies.is_empty() && c.done.is_none();
        self.internal
            .extend(std::iter::repeat_n(internal, c.ops.len()));
        self.replies.push((claims(&c.ops), c.replies));
        self.op_ns.extend(std::iter::repeat_n(c.at_ns, c.ops.len()));
        self.ops.extend(c.ops);
        self.done.extend(c.done);
        self.unmap.extend(c.unmap);
        self.deleted.extend(c.deleted);
    }

    /// Once durable: the waiters hear so, and the replies leave, unless
    /// withheld for long. Such a reply is no answer any more: the client
    /// has retransmitted, and its retransmission is answered.
    /// The replies go to `send` together, so they can leave in one system
    /// call.
    pub(super) fn answer(self, started: Instant, send: &impl Fn(&[&W])) {
        for d in self.done {
            let _ = d.send(Written::Durable);
        }
        if started.elapsed() < Duration::from_secs(4) {
            let all: Vec<&W> = self.replies.iter().flat_map(|(_, r)| r).collect();
            if !all.is_empty() {
                send(&all);
            }
        }
    }
}
