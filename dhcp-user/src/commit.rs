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
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use dhcp_common::{LeaseKey, LeaseValue};

use crate::{
    clock::unix_now,
    fastmap::{FastMaps, MapReport, SyncStats},
    store::{LeaseStore, StoreOp},
};

/// What the committer reports about the lease store.
#[derive(Debug, Default, Clone)]
pub struct StoreHealth {
    pub batches: u64,
    pub failed_batches: u64,
    /// Write attempts that failed (a failed batch is retried).
    pub failed_writes: u64,
    /// Batches written only after one or more retries.
    pub recovered_batches: u64,
    pub last_error: Option<String>,
    /// Unix seconds of the last successful write.
    pub last_write: u64,
    /// Commits waiting behind a failing batch.
    pub waiting: u64,
}

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
}

/// The store and the map, written in step.
pub struct Committer {
    pub store: Box<dyn LeaseStore>,
    pub maps: Option<FastMaps>,
    pub sync: Arc<Mutex<SyncStats>>,
    pub health: Arc<Mutex<StoreHealth>>,
}

impl Committer {
    pub fn new(store: Box<dyn LeaseStore>, maps: Option<FastMaps>) -> Committer {
        let sync = Arc::new(Mutex::new(
            maps.as_ref().map(|m| m.stats).unwrap_or_default(),
        ));
        Committer {
            store,
            maps,
            sync,
            health: Arc::default(),
        }
    }

    /// Before the write: the map stops answering for what `ops` end.
    pub fn prepare(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        if let Some(m) = self.maps.as_mut() {
            m.before_commit(ops, report);
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
                h.batches += 1;
                h.last_write = unix_now();
                h.last_error = None;
            }
            Err(e) => {
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
    /// commits' waiters so); once `stopping` is set, a batch that
    /// still cannot be written after `give_up` is abandoned (the next
    /// start recovers as after a crash). Returns whether everything was
    /// written.
    pub fn run<W>(
        &mut self,
        rx: mpsc::Receiver<Commit<W>>,
        reports: impl Fn(MapReport),
        send: impl Fn(&W),
        stopping: &AtomicBool,
        give_up: Duration,
    ) -> bool {
        let mut all_written = true;
        while let Ok(first) = rx.recv() {
            let mut seq = first.seq;
            let mut ops = first.ops;
            let mut replies = first.replies;
            let mut done: Vec<_> = first.done.into_iter().collect();
            let mut unmap = first.unmap;
            while ops.len() < 4096 {
                let Ok(more) = rx.try_recv() else { break };
                seq = seq.max(more.seq);
                ops.extend(more.ops);
                replies.extend(more.replies);
                done.extend(more.done);
                unmap.extend(more.unmap);
            }
            let started = Instant::now();
            let mut report = MapReport::new(seq);
            // Repairs first: a stray the sync wrote leaves through its own
            // bookkeeping before the batch's ops (which may strip the same
            // binding) look at it.
            self.unmap(&unmap, &mut report);
            self.prepare(&ops, &mut report);
            let mut backoff = Duration::from_millis(50);
            let mut failures = 0u32;
            let written = loop {
                match self.write(&ops) {
                    Ok(()) => break true,
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            self.health.lock().unwrap().failed_batches += 1;
                            tracing::error!(
                                ops = ops.len(),
                                replies = replies.len(),
                                "lease store write failed; replies withheld, retrying until it succeeds: {e:#}"
                            );
                            let why = format!("{e:#}");
                            for d in done.drain(..) {
                                let _ = d.send(Written::Retrying(why.clone()));
                            }
                        }
                        // Shutting down (the sender is gone) and still
                        // failing: the caller leaves the store unclean.
                        if started.elapsed() > give_up && stopping.load(Ordering::SeqCst) {
                            tracing::error!(
                                ops = ops.len(),
                                "lease store still failing at shutdown: batch abandoned, the next start recovers as after a crash"
                            );
                            break false;
                        }
                        self.health.lock().unwrap().waiting = 1;
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            };
            self.health.lock().unwrap().waiting = 0;
            if !written {
                all_written = false;
                if let Some(m) = self.maps.as_ref() {
                    report.finish_failed(m);
                }
                reports(report);
                continue;
            }
            if failures > 0 {
                self.health.lock().unwrap().recovered_batches += 1;
                tracing::warn!(
                    failures,
                    "lease store write succeeded after retrying: batch durable"
                );
            }
            self.finish(&ops, &mut report);
            reports(report);
            for d in done {
                let _ = d.send(Written::Durable);
            }
            // A reply withheld for long is no answer any more: the client
            // has retransmitted, and its retransmission is answered.
            if started.elapsed() < Duration::from_secs(4) {
                for r in &replies {
                    send(r);
                }
            }
        }
        all_written
    }
}
