//! Group commit: lease changes reach the store, and the XDP lease map
//! follows them, in one ordered stream.
//!
//! For each batch: entries the batch ends leave the map *before* it is
//! written (reading what the kernel granted there first), entries it makes
//! enter the map only *after* it is durable, and replies (ACKs) leave only
//! then. A batch the store refuses is retried, in order, until it is
//! written: nothing queued behind it is written, mapped or answered
//! before (fail closed), and nothing in it is lost.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use dhcp_common::{LeaseKey, LeaseValue};

pub use self::ends::keep_kernel_grants;
use crate::{
    lease::Lease,
    store::{LeaseStore, StoreHealth, StoreOp},
    xdp::clock::unix_now,
    xdp::map_sync::{FastMaps, MapReport, SyncStats},
};

mod absorb;
mod batch;
mod ends;
use batch::{Batch, Shutdown};

/// Told how the batch holding a change went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Durable,
    /// The write failed; the change stays applied in memory and is retried
    /// until the store takes it.
    Retrying(String),
}

/// Work for the committer: lease changes, then the replies that may only
/// leave once those changes are durable.
pub struct Commit<W> {
    /// Increasing; `MapReport::seq` says up to which commit a report goes.
    pub seq: u64,
    pub ops: Vec<StoreOp>,
    pub replies: Vec<W>,
    pub done: Option<tokio::sync::oneshot::Sender<Written>>,
    /// The auditor's repairs: stray map entries to remove (key, and the
    /// value it confirmed), before the batch is written
    /// (`FastMaps::unmap`).
    pub unmap: Vec<(LeaseKey, LeaseValue)>,
    /// When (Unix nanoseconds) the control plane made these changes: a
    /// grant found in an entry the batch removes is weighed against it
    /// (`keep_kernel_grants`).
    pub at_ns: u64,
    /// The bindings that its `Delete`s end, and its `Put`s of a lease no
    /// longer naming a client (a DECLINE's), that the kernel may have been
    /// answering for, as last handed to it: a grant the kernel made after
    /// the change is written in its place (`keep_kernel_grants`).
    pub deleted: Vec<Lease>,
}

/// The store and the map, written in step.
pub struct Committer {
    pub store: Box<dyn LeaseStore>,
    pub maps: Option<FastMaps>,
    pub sync: Arc<Mutex<SyncStats>>,
    pub health: Arc<Mutex<StoreHealth>>,
    /// Commits handed over and not yet written (or abandoned): senders add
    /// one per commit, the committer takes them off once their batch is
    /// done, so a failing store shows as a full queue (`CommitQueue`).
    pub queued: Arc<AtomicUsize>,
}

/// The sending side of the committer's queue, with its bound: requests
/// are handled only while `has_room`, so while the store is slow or down
/// the queue stops growing and requests wait in the bounded backlog
/// instead (the kernel drops what does not fit there).
pub struct CommitQueue<W> {
    tx: mpsc::Sender<Commit<W>>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl<W> CommitQueue<W> {
    pub fn new(tx: mpsc::Sender<Commit<W>>, queued: Arc<AtomicUsize>, cap: usize) -> Self {
        CommitQueue { tx, queued, cap }
    }

    pub fn send(&self, c: Commit<W>) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(c).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::SeqCst) < self.cap
    }

    pub fn len(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }
}

impl Committer {
    pub fn new(store: Box<dyn LeaseStore>, maps: Option<FastMaps>) -> Committer {
        let sync = Arc::new(Mutex::new(
            maps.as_ref().map(|m| m.stats).unwrap_or_default(),
        ));
        // A shared store is described from the start, not only after its
        // first write.
        let health = StoreHealth {
            database: store.describe(),
            ..Default::default()
        };
        Committer {
            store,
            maps,
            sync,
            health: Arc::new(Mutex::new(health)),
            queued: Arc::default(),
        }
    }

    /// Before the write: the map stops answering for what `ops` end, and
    /// a grant read from an entry they remove is written with them when
    /// it outlives the batch's end of the binding (`keep_kernel_grants`;
    /// `op_ns[i]`: when `ops[i]` was decided). `report.kept` says which.
    pub fn prepare(
        &mut self,
        ops: &mut [StoreOp],
        op_ns: &mut [u64],
        deleted: &[Lease],
        report: &mut MapReport,
    ) {
        if let Some(m) = self.maps.as_mut() {
            m.before_commit(ops, report);
        }
        report.kept = keep_kernel_grants(ops, op_ns, deleted, &report.removed, &[], unix_now());
        if !report.kept.is_empty() {
            tracing::info!(
                bindings = report.kept.len(),
                "the kernel renewed bindings this batch ends: written bound until the kernel's grant"
            );
        }
    }

    /// Before the write (and before `prepare`): the auditor's repairs.
    pub fn unmap(&mut self, entries: &[(LeaseKey, LeaseValue)], report: &mut MapReport) {
        if let Some(m) = self.maps.as_mut() {
            for (k, v) in entries {
                if m.unmap(k, v, report) {
                    tracing::info!(
                        ip = %std::net::Ipv4Addr::from(v.ip.to_ne_bytes()),
                        "stray entry removed from the XDP lease map: the client's next request goes to the control plane"
                    );
                }
            }
            *self.sync.lock().unwrap() = m.stats;
        }
    }

    /// One write attempt.
    pub fn write(&mut self, ops: &[StoreOp]) -> Result<()> {
        let r = self.store.apply(ops);
        let mut h = self.health.lock().unwrap();
        match &r {
            Ok(()) => {
                h.database = self.store.describe();
                h.batches += 1;
                h.last_write = unix_now();
                h.last_error = None;
            }
            Err(e) => {
                h.database = self.store.describe();
                h.failed_writes += 1;
                h.last_error = Some(format!("{e:#}"));
            }
        }
        r
    }

    /// After the write: the map answers for what `ops` made.
    pub fn finish(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        if let Some(m) = self.maps.as_mut() {
            m.after_commit(ops, report);
            *self.sync.lock().unwrap() = m.stats;
        }
    }

    /// The committer thread: takes everything that queued up while the
    /// previous batch was written into the next one, hands each batch's
    /// map report to `reports`, and sends replies with `send`. A refused
    /// write is retried with backoff (the first failure tells the
    /// commits' waiters so); once `stopping` is set, batches that still
    /// cannot be written `give_up` after the retries first saw it are
    /// abandoned, each after one more attempt (the next start recovers as
    /// after a crash). Returns whether everything was written.
    pub fn run<W>(
        &mut self,
        rx: mpsc::Receiver<Commit<W>>,
        reports: impl Fn(MapReport),
        send: impl Fn(&[&W]),
        stopping: &AtomicBool,
        give_up: Duration,
    ) -> bool {
        let mut all_written = true;
        let mut shutdown = Shutdown {
            stopping,
            give_up,
            seen: None,
        };
        while let Ok(first) = rx.recv() {
            let mut batch = Batch::gather(first, &rx);
            let started = Instant::now();
            let mut report = MapReport::new(batch.seq);
            // Repairs first: a stray the sync wrote leaves through its own
            // bookkeeping before the batch's ops (which may strip the same
            // binding) look at it.
            self.unmap(&batch.unmap, &mut report);
            self.prepare(
                &mut batch.ops,
                &mut batch.op_ns,
                &batch.deleted,
                &mut report,
            );
            let written = self.write_until_durable(&mut batch, &rx, &mut report, &mut shutdown);
            // Done with, either way: its senders may queue more.
            let _ = self
                .queued
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    Some(v.saturating_sub(batch.taken))
                });
            if !written {
                all_written = false;
                if let Some(m) = self.maps.as_ref() {
                    report.finish_failed(m);
                }
                reports(report);
                continue;
            }
            self.finish_durable(&mut batch, &mut report);
            reports(report);
            batch.answer(started, &send);
        }
        all_written
    }

    /// Writes `batch`, retrying with backoff while the store refuses it
    /// (its replies withheld, its waiters told at the first failure), and
    /// taking into it what queues meanwhile (`absorb`). False if abandoned
    /// at shutdown.
    fn write_until_durable<W>(
        &mut self,
        batch: &mut Batch<W>,
        rx: &mpsc::Receiver<Commit<W>>,
        report: &mut MapReport,
        shutdown: &mut Shutdown,
    ) -> bool {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0u32;
        let mut logged: Option<(String, Instant)> = None;
        let written = loop {
            let Err(e) = self.write(&batch.ops) else {
                break true;
            };
            failures += 1;
            let why = format!("{e:#}");
            let retrying = why.clone();
            if failures == 1 {
                self.first_failure(batch, &why);
                logged = Some((why, Instant::now()));
            } else if logged
                .as_ref()
                .is_some_and(|(last, at)| *last != why || at.elapsed() >= Duration::from_secs(30))
            {
                tracing::error!(
                    attempts = failures,
                    secs = started.elapsed().as_secs(),
                    ops = batch.ops.len(),
                    "lease store still failing; replies withheld, retrying: {why}"
                );
                logged = Some((why, Instant::now()));
            }
            if shutdown.gives_up() {
                tracing::error!(
                    ops = batch.ops.len(),
                    "lease store still failing at shutdown: batch abandoned, the next start recovers as after a crash"
                );
                break false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            self.take_in_queued(batch, rx, report, &retrying);
        };
        {
            let mut h = self.health.lock().unwrap();
            h.failing_since = None;
            h.withheld_replies = 0;
            h.pending_ops = 0;
            if written && failures > 0 {
                h.recovered_batches += 1;
            }
        }
        if written && failures > 0 {
            tracing::warn!(
                failures,
                "lease store write succeeded after retrying: batch durable"
            );
        }
        written
    }

    /// While `batch` is refused: the commits queued behind it join it, so
    /// the queue does not grow with the outage (`absorb`). Their waiters
    /// are told the write is retried, as the batch's were.
    fn take_in_queued<W>(
        &mut self,
        batch: &mut Batch<W>,
        rx: &mpsc::Receiver<Commit<W>>,
        report: &mut MapReport,
        why: &str,
    ) {
        let (from, unmap_from, done_from) = (batch.ops.len(), batch.unmap.len(), batch.done.len());
        while let Ok(c) = rx.try_recv() {
            batch.add(c);
        }
        for d in batch.done.drain(done_from..) {
            let _ = d.send(Written::Retrying(why.to_string()));
        }
        if batch.ops.len() == from && batch.unmap.len() == unmap_from {
            return;
        }
        report.seq = batch.seq;
        self.unmap(&batch.unmap[unmap_from..], report);
        let taken = batch.ops.len() - from;
        self.prepare_more(
            &mut batch.ops,
            &mut batch.op_ns,
            &mut batch.internal,
            &batch.deleted,
            from,
            report,
        );
        let mut h = self.health.lock().unwrap();
        h.withheld_replies = batch.replies.iter().map(|(_, r)| r.len() as u64).sum();
        h.pending_ops = batch.ops.len() as u64;
        tracing::debug!(
            taken,
            pending = batch.ops.len(),
            "commits queued behind a refused batch taken into it"
        );
    }

    /// A batch's first refused write: the health says so, its waiters
    /// are told it is retried.
    fn first_failure<W>(&mut self, batch: &mut Batch<W>, why: &str) {
        {
            let mut h = self.health.lock().unwrap();
            h.failed_batches += 1;
            h.failing_since = Some(unix_now());
            h.withheld_replies = batch.replies.iter().map(|(_, r)| r.len() as u64).sum();
            h.pending_ops = batch.ops.len() as u64;
        }
        tracing::error!(
            ops = batch.ops.len(),
            replies = batch.replies.len(),
            "lease store write failed; replies withheld, retrying until it succeeds: {why}"
        );
        for d in batch.done.drain(..) {
            let _ = d.send(Written::Retrying(why.to_string()));
        }
    }

    /// After a durable write: the map answers for what the batch made,
    /// except claims a shared store refused (their replies are dropped,
    /// the holders' leases go to the engine in `report.lost`).
    fn finish_durable<W>(&mut self, batch: &mut Batch<W>, report: &mut MapReport) {
        let lost = self.store.take_lost();
        if lost.is_empty() {
            self.finish(&batch.ops, report);
            return;
        }
        let gone: std::collections::HashSet<_> = lost.iter().map(|l| l.ip).collect();
        self.health.lock().unwrap().lost_claims += lost.len() as u64;
        tracing::info!(
            lost = lost.len(),
            "claims lost to other nodes in the shared store: no ACK, not mapped"
        );
        let won: Vec<StoreOp> = batch
            .ops
            .iter()
            .filter(|o| o.lease().is_none_or(|l| !gone.contains(&l.ip)))
            .cloned()
            .collect();
        batch
            .replies
            .retain(|(c, _)| !c.iter().any(|ip| gone.contains(ip)));
        self.finish(&won, report);
        report.kept.retain(|(g, _)| !gone.contains(&g.ip));
        report.lost = lost;
        report.lost_nodes = self.store.take_granted_by();
    }
}

#[cfg(test)]
mod tests;
