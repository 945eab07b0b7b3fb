//! The running auditor: `crate::audit::check`'s definition of the
//! invariant, applied to the live daemon (`xdhcp leases audit`, and a
//! background pass every `server.audit_interval_secs`).
//!
//! # Where the work runs
//!
//! - The map is read on the auditor's own thread, through its own handle
//!   (`FastMaps::reader`: a dup of the lease map's fd; it never writes),
//!   in chunks (`BPF_MAP_LOOKUP_BATCH`), paced to
//!   `server.audit_entries_per_sec` for background passes, at full speed
//!   when an operator asks.
//! - Each chunk is checked on the main task against the control plane's
//!   leases (between packets: one chunk per wake-up, a few hundred
//!   microseconds each), then the store's side (Bound fast-path leases
//!   with no entry) a chunk of addresses per wake-up.
//! - Repairs go through the committer (`FastMaps::unmap`, which says why).
//!
//! # What counts: the false-positive rule
//!
//! The map and the leases legitimately differ while a change is on its
//! way: memory changes first, the map loses an entry before the batch
//! that ends it is written and gains one after the batch that makes it is
//! durable. So a disagreement is reported only when
//! 1. a pass finds it and nothing pending explains it: a map entry is
//!    explained when its address is held for the kernel (`KernelHold`) on
//!    behalf of the entry's own client and the control plane has ended
//!    that binding since (released, expired, deleted, moved, stripped: the
//!    committer removes the entry before that change is written, and the
//!    hold lasts until it reports the entry gone and the ring is read); a
//!    missing entry is explained when its binding was handed to the map by
//!    a commit the committer had not reported on when the pass began (or
//!    the map refused it: full, or no template slot);
//! 2. and, once every commit handed out before the end of that pass has
//!    been written and reported, the kernel's entry, read again, still
//!    disagrees with the leases the same way and nothing pending explains
//!    it, judged against what was pending when the re-read was asked for:
//!    an entry the committer adds after the re-read belongs to a commit
//!    not yet reported then (so its lease is explained); one it removes
//!    after it keeps its hold until the report has come and the ring has
//!    been read twice (`Engine::kernel_tick`), so the check must come
//!    before that, else the read is repeated.
//!
//! Once the pending commits are written the control plane's leases are
//! the store's (every change reaches the store through a commit), so what
//! is confirmed is a disagreement with what the store holds. If the
//! committer cannot write (the store failing), the pass ends inconclusive
//! rather than guess.

mod checks;
mod finish;
mod pass;
mod reader;
mod status;
mod stepping;
#[cfg(test)]
mod tests;
mod walk;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{atomic::AtomicU64, mpsc as std_mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Result;
use dhcp_common::LeaseKey;
use tokio::sync::{mpsc, oneshot};

use crate::{
    api::control::Response,
    audit::Kind,
    daemon::engine::Engine,
    xdp::map_sync::{Eligibility, LeaseReader},
};

pub use finish::Repair;
use pass::{Pass, Phase, Waiter};
pub use reader::Reading;
use reader::{read_loop, ReadRequest};
pub use status::{Finding, Summary};

/// How long a pass waits for the committer to write what was pending.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Listed leases checked per main-task wake-up on the store's side (4x as
/// many addresses when it walks the subnets): about a millisecond at
/// most, on a table far larger than the caches.
const STEP: usize = 256;
/// Map entries the reader hands the main task at a time (as long to check).
const SCAN_CHUNK: usize = 256;
/// Candidates kept per pass (more are counted, not listed).
const MAX_CANDIDATES: usize = 10_000;
/// Confirmed disagreements listed in `status`.
const STATUS_LIST: usize = 16;

/// `[server]` audit_* keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Pause between background passes; None: no background passes.
    pub interval: Option<Duration>,
    /// Map entries read per second by a background pass.
    pub rate: u32,
    /// Remove the stray entries a pass confirms.
    pub repair: bool,
}

impl Settings {
    pub fn from_config(s: &crate::config::Server) -> Settings {
        Settings {
            interval: (s.audit_interval_secs > 0)
                .then(|| Duration::from_secs(u64::from(s.audit_interval_secs))),
            rate: s.audit_entries_per_sec.max(1),
            repair: s.audit_repair,
        }
    }
}

pub struct Auditor {
    settings: Settings,
    requests: std_mpsc::Sender<ReadRequest>,
    current: Arc<AtomicU64>,
    eligibility: Eligibility,
    pass: Option<Pass>,
    next_id: u64,
    waiting: Vec<Waiter>,
    next_due: Option<Instant>,
    /// Confirmed by the last conclusive pass: logged and counted once.
    known: HashSet<(Kind, Ipv4Addr, Option<LeaseKey>)>,
    found: HashMap<Kind, u64>,
    passes: u64,
    last: Option<Summary>,
}

impl Auditor {
    /// Starts the reader thread on `reader`; the main task receives its
    /// readings on the returned channel and hands them to `on_reading`.
    pub fn spawn(
        reader: Arc<LeaseReader>,
        eligibility: Eligibility,
        settings: Settings,
    ) -> Result<(Auditor, mpsc::Receiver<Reading>)> {
        let (req_tx, req_rx) = std_mpsc::channel();
        // Two chunks in flight at most: the map is never copied whole.
        let (tx, rx) = mpsc::channel(2);
        let current = Arc::new(AtomicU64::new(0));
        {
            let current = current.clone();
            std::thread::Builder::new()
                .name("xdhcp-audit".into())
                .spawn(move || read_loop(&reader, req_rx, tx, &current))?;
        }
        let a = Auditor {
            settings,
            requests: req_tx,
            current,
            eligibility,
            pass: None,
            next_id: 0,
            waiting: Vec::new(),
            next_due: settings.interval.map(|i| Instant::now() + i),
            known: HashSet::new(),
            found: HashMap::new(),
            passes: 0,
            last: None,
        };
        Ok((a, rx))
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// New settings (reload).
    pub fn set_settings(&mut self, s: Settings) {
        if s.interval != self.settings.interval {
            self.next_due = s.interval.map(|i| Instant::now() + i);
        }
        self.settings = s;
    }

    /// When the next background pass is due (none running).
    pub fn due(&self) -> Option<Instant> {
        if self.pass.is_some() {
            return None;
        }
        self.next_due
    }

    /// Whether the store's side of a pass has a chunk to check.
    pub fn has_step(&self) -> bool {
        self.pass
            .as_ref()
            .is_some_and(|p| p.phase == Phase::Missing)
    }

    /// `lease4-audit`: answered when a pass that starts now has finished.
    /// A background pass under way is dropped for it (it started before
    /// the request, and at the background pace).
    pub fn request(
        &mut self,
        reply: oneshot::Sender<Response>,
        repair: bool,
        engine: &mut Engine,
    ) -> Option<Repair> {
        self.waiting.push(Waiter { reply, repair });
        match &self.pass {
            Some(p) if p.requested => None,
            _ => {
                self.pass = None;
                self.start(true, engine)
            }
        }
    }
}
