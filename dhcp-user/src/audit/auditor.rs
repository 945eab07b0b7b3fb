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

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use dhcp_common::{LeaseKey, LeaseValue};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{
    api::commands::kernel_json,
    api::control::{self, Response},
    audit::{self, Disagreement, Kind},
    daemon::engine::Engine,
    dhcp::leases::{Lease, LeaseState, LeaseTable},
    store::StoreOp,
    xdp::clock::unix_now,
    xdp::map_sync::{is_client_key, key_text, lease_key, Eligibility, LeaseReader, ReadCursor},
};

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

/// From the reader thread to the main task.
pub enum Reading {
    Chunk {
        pass: u64,
        entries: Vec<(LeaseKey, LeaseValue)>,
        last: bool,
    },
    /// The kernel's entries for the keys asked for, read again.
    Fresh {
        pass: u64,
        entries: Vec<(LeaseKey, Option<LeaseValue>)>,
    },
    Failed {
        pass: u64,
        error: String,
    },
}

enum ReadRequest {
    Scan { pass: u64, rate: Option<u32> },
    Get { pass: u64, keys: Vec<LeaseKey> },
}

/// Stray entries to remove and bindings to strip, for the committer
/// (`Engine::repair`).
#[derive(Debug, Default)]
pub struct Repair {
    pub ops: Vec<StoreOp>,
    pub unmap: Vec<(LeaseKey, LeaseValue)>,
}

impl Repair {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.unmap.is_empty()
    }
}

/// A confirmed disagreement, with both planes' views.
#[derive(Debug, Clone)]
pub struct Finding {
    pub d: Disagreement,
    pub kernel: Option<LeaseValue>,
    pub lease: Option<Lease>,
    /// A removal was sent to the committer.
    pub repair: bool,
}

impl Finding {
    fn id(&self) -> (Kind, Ipv4Addr, Option<LeaseKey>) {
        (self.d.kind, self.d.ip, self.d.key)
    }

    pub fn json(&self) -> Value {
        json!({
            "kind": self.d.kind.name(),
            "ip-address": self.d.ip.to_string(),
            "key": self.d.key.as_ref().map(key_text),
            "kernel": self.kernel.as_ref().map(kernel_json),
            "store": self.lease.as_ref().map(|l| json!({
                "state": l.state.as_str(),
                "expires": l.expires,
                "subnet-id": l.subnet_id,
                "client": l.client.as_deref().and_then(lease_key).as_ref().map(key_text),
                "fast-path": l.fast.is_some(),
            })),
            "repair": self.repair,
        })
    }
}

struct Candidate {
    d: Disagreement,
    value: Option<LeaseValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Scanning,
    Missing,
    Draining,
    Rechecking,
}

struct Waiter {
    reply: oneshot::Sender<Response>,
    repair: bool,
}

/// One pass through the map and the leases.
struct Pass {
    id: u64,
    /// Asked for by an operator: full speed.
    requested: bool,
    waiters: Vec<Waiter>,
    phase: Phase,
    /// `Engine::reported_seq` when the pass began (then when the re-read
    /// was asked for).
    base: u64,
    /// `Engine::ticks` when the re-read was asked for.
    ticks: u64,
    /// Addresses whose lease's client has its entry there.
    covered: Coverage,
    entries: u64,
    unreported: u64,
    /// Unix time of the oldest renewal the kernel has not reported.
    oldest_renewal: Option<u64>,
    bound_fast: u64,
    candidates: Vec<Candidate>,
    beyond_cap: u64,
    /// Candidates the scan found (before the re-check).
    seen: u64,
    walk: Walk,
    /// The last commit handed out when the scan ended.
    target: u64,
    drain_since: Instant,
    tries: u32,
    started: Instant,
    started_unix: u64,
    longest_step: Duration,
    longest_step_cpu: Duration,
    /// The main task's CPU time for the whole pass.
    main_cpu: Duration,
}

impl Pass {
    fn new(id: u64, requested: bool, waiters: Vec<Waiter>, base: u64, covered: Coverage) -> Pass {
        Pass {
            id,
            requested,
            waiters,
            phase: Phase::Scanning,
            base,
            ticks: 0,
            covered,
            entries: 0,
            unreported: 0,
            oldest_renewal: None,
            bound_fast: 0,
            candidates: Vec::new(),
            beyond_cap: 0,
            seen: 0,
            walk: Walk::default(),
            target: 0,
            drain_since: Instant::now(),
            tries: 0,
            started: Instant::now(),
            started_unix: unix_now(),
            longest_step: Duration::ZERO,
            longest_step_cpu: Duration::ZERO,
            main_cpu: Duration::ZERO,
        }
    }
}

/// What the last finished pass saw.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub at: u64,
    pub millis: u64,
    pub requested: bool,
    pub entries: u64,
    pub bound_fast: u64,
    pub unreported: u64,
    pub oldest_unreported_age: Option<u64>,
    pub findings: Vec<Finding>,
    /// Candidates beyond what a pass lists.
    pub beyond_cap: u64,
    /// Candidates the scan found, confirmed or not.
    pub candidates: u64,
    pub inconclusive: Option<String>,
    /// The longest the pass held the main task in one go (wall clock,
    /// and the main thread's CPU time), and its CPU time in all.
    pub longest_step: Duration,
    pub longest_step_cpu: Duration,
    pub main_cpu: Duration,
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

    fn start(&mut self, requested: bool, engine: &mut Engine) -> Option<Repair> {
        self.next_id += 1;
        let id = self.next_id;
        self.current.store(id, Ordering::SeqCst);
        let waiters = if requested {
            std::mem::take(&mut self.waiting)
        } else {
            Vec::new()
        };
        self.pass = Some(Pass::new(
            id,
            requested,
            waiters,
            engine.reported_seq(),
            Coverage::new(&engine.server.subnet_ranges()),
        ));
        let rate = (!requested).then_some(self.settings.rate);
        if self
            .requests
            .send(ReadRequest::Scan { pass: id, rate })
            .is_err()
        {
            return self.finish_inconclusive("the auditor's reader thread is gone".into());
        }
        None
    }

    /// Timers and progress: a background pass due, a drain complete or
    /// timed out. Call on every map report and on a regular tick.
    pub fn poll(&mut self, engine: &mut Engine) -> Option<Repair> {
        let Some(p) = self.pass.as_mut() else {
            if !self.waiting.is_empty() {
                return self.start(true, engine);
            }
            if self.next_due.is_some_and(|d| Instant::now() >= d) {
                return self.start(false, engine);
            }
            return None;
        };
        if p.phase != Phase::Draining {
            return None;
        }
        if engine.reported_seq() >= p.target {
            p.phase = Phase::Rechecking;
            p.base = engine.reported_seq();
            p.ticks = engine.ticks();
            let keys = p.candidates.iter().filter_map(|c| c.d.key).collect();
            if self
                .requests
                .send(ReadRequest::Get { pass: p.id, keys })
                .is_err()
            {
                return self.finish_inconclusive("the auditor's reader thread is gone".into());
            }
        } else if p.drain_since.elapsed() > DRAIN_TIMEOUT {
            let why = format!(
                "{} candidate disagreements unconfirmed: the committer has not written the changes pending since the pass within {} s (lease store failing?)",
                p.candidates.len(),
                DRAIN_TIMEOUT.as_secs()
            );
            return self.finish_inconclusive(why);
        }
        None
    }

    /// A reading from the map.
    pub fn on_reading(&mut self, r: Reading, engine: &mut Engine) -> Option<Repair> {
        let t = StepTimer::start();
        let id = match &r {
            Reading::Chunk { pass, .. }
            | Reading::Fresh { pass, .. }
            | Reading::Failed { pass, .. } => *pass,
        };
        let p = self.pass.as_mut().filter(|p| p.id == id)?;
        let out = match r {
            Reading::Failed { error, .. } => {
                return self.finish_inconclusive(format!("reading the XDP lease map: {error}"))
            }
            Reading::Chunk { entries, last, .. } => {
                if p.phase != Phase::Scanning {
                    return None;
                }
                check_chunk(p, &entries, &engine.server.leases, unix_now());
                if last {
                    p.walk = Walk::over(&engine.server);
                    p.phase = Phase::Missing;
                }
                None
            }
            Reading::Fresh { entries, .. } => {
                if p.phase != Phase::Rechecking {
                    return None;
                }
                if engine.ticks() >= p.ticks + 2 {
                    // Two ring reads since the re-read was asked for: a
                    // removal reported after it may have released its
                    // hold already. Read again.
                    p.tries += 1;
                    if p.tries > 20 {
                        return self.finish_inconclusive(
                            "the main task was too busy to re-check the candidates".into(),
                        );
                    }
                    p.base = engine.reported_seq();
                    p.ticks = engine.ticks();
                    let keys = p.candidates.iter().filter_map(|c| c.d.key).collect();
                    let _ = self.requests.send(ReadRequest::Get { pass: p.id, keys });
                    return None;
                }
                let confirmed = recheck(p, &entries, engine, &self.eligibility, unix_now());
                note_step(p, t);
                return self.finish(confirmed, engine);
            }
        };
        note_step(p, t);
        out
    }

    /// One chunk of the store's side (`has_step`).
    pub fn step(&mut self, engine: &mut Engine) -> Option<Repair> {
        let t = StepTimer::start();
        let p = self.pass.as_mut().filter(|p| p.phase == Phase::Missing)?;
        let now = unix_now();
        missing_chunk(p, engine, &self.eligibility, now);
        note_step(p, t);
        if !p.walk.done() {
            return None;
        }
        p.walk = Walk::default();
        if p.candidates.is_empty() {
            return self.finish(Vec::new(), engine);
        }
        p.phase = Phase::Draining;
        p.target = engine.last_seq();
        p.drain_since = Instant::now();
        self.poll(engine)
    }

    fn finish_inconclusive(&mut self, why: String) -> Option<Repair> {
        let p = self.pass.take()?;
        tracing::warn!("plane audit inconclusive: {why}");
        let summary = summary_of(&p, Vec::new(), Some(why.clone()));
        for w in p.waiters {
            let _ = w.reply.send(Response {
                result: control::ERROR,
                text: format!("audit inconclusive: {why}"),
                arguments: summary_json(&summary),
            });
        }
        self.last = Some(summary);
        self.schedule();
        None
    }

    fn schedule(&mut self) {
        self.next_due = self.settings.interval.map(|i| Instant::now() + i);
    }

    fn finish(&mut self, mut confirmed: Vec<Finding>, engine: &mut Engine) -> Option<Repair> {
        let p = self.pass.take()?;
        self.passes += 1;
        let repair = self.settings.repair || p.waiters.iter().any(|w| w.repair);
        let mut fix = Repair::default();
        for f in &mut confirmed {
            if !repair || !f.d.kind.is_stray() {
                continue;
            }
            let (Some(key), Some(value)) = (f.d.key, f.kernel) else {
                continue;
            };
            fix.unmap.push((key, value));
            f.repair = true;
            // The entry was the lease's own client's (another subnet, or an
            // end beyond recovery): its fast path goes too, so the control
            // plane's next ACK rebuilds it and the lease is not left
            // Bound with a template and no entry.
            if let Some(l) = engine.server.leases.get(f.d.ip) {
                if l.state == LeaseState::Bound
                    && l.fast.is_some()
                    && l.client.as_deref().and_then(lease_key) == Some(key)
                {
                    let mut l = l.clone();
                    l.fast = None;
                    engine.server.leases.put(l.clone());
                    fix.ops.push(StoreOp::Put(l));
                }
            }
        }
        let ids: HashSet<_> = confirmed.iter().map(Finding::id).collect();
        for f in &confirmed {
            if self.known.contains(&f.id()) {
                continue;
            }
            *self.found.entry(f.d.kind).or_default() += 1;
            tracing::warn!(
                kind = %f.d.kind.name(),
                ip = %f.d.ip,
                key = %f.d.key.as_ref().map(key_text).unwrap_or_default(),
                kernel_expires = f.d.kernel_expires,
                store_expires = f.d.store_expires,
                store_state = %f.lease.as_ref().map_or("none", |l| l.state.as_str()),
                store_subnet = f.lease.as_ref().map(|l| l.subnet_id),
                kernel_subnet = f.kernel.as_ref().map(|v| v.subnet_id),
                repair = f.repair,
                "the XDP lease map and the lease store disagree"
            );
        }
        self.known = ids;
        let summary = summary_of(&p, confirmed, None);
        let n = summary.findings.len();
        let more = if summary.beyond_cap > 0 {
            format!(
                "; {} more candidates beyond the {MAX_CANDIDATES} a pass re-checks",
                summary.beyond_cap
            )
        } else {
            String::new()
        };
        let (result, text) = if n > 0 {
            (
                control::CONFLICT,
                format!(
                    "{n} disagreements between the XDP lease map ({} entries) and the lease store ({} bound fast-path leases){}{more}",
                    summary.entries,
                    summary.bound_fast,
                    if fix.unmap.is_empty() {
                        String::new()
                    } else {
                        format!("; {} stray entries being removed", fix.unmap.len())
                    }
                ),
            )
        } else if summary.beyond_cap > 0 {
            (
                control::ERROR,
                format!("audit inconclusive: the candidates re-checked were all in flight{more}"),
            )
        } else {
            (
                control::OK,
                format!(
                    "audit clean: {} map entries and {} bound fast-path leases agree",
                    summary.entries, summary.bound_fast
                ),
            )
        };
        for w in p.waiters {
            let _ = w.reply.send(Response {
                result,
                text: text.clone(),
                arguments: summary_json(&summary),
            });
        }
        self.last = Some(summary);
        self.schedule();
        if !self.waiting.is_empty() {
            let more = self.start(true, engine);
            debug_assert!(more.is_none());
        }
        (!fix.is_empty()).then_some(fix)
    }

    /// For `status`.
    pub fn status_json(&self) -> Value {
        let mut v = self.stats_json();
        v["interval-secs"] = json!(self.settings.interval.map(|d| d.as_secs()).unwrap_or(0));
        v["entries-per-sec"] = json!(self.settings.rate);
        v["repair"] = json!(self.settings.repair);
        v["running"] = json!(self.pass.is_some());
        if let Some(s) = &self.last {
            v["last-pass"] = summary_json_short(s);
        }
        v
    }

    /// For `statistic-get-all` (and so Prometheus).
    pub fn stats_json(&self) -> Value {
        let found: serde_json::Map<String, Value> = Kind::ALL
            .iter()
            .map(|k| {
                (
                    k.name().to_string(),
                    json!(self.found.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        let last = self.last.as_ref();
        json!({
            "passes": self.passes,
            "disagreements": found,
            // Confirmed by the last conclusive pass.
            "current": last.map(|_| self.known.len()),
            "map-entries": last.map(|s| s.entries),
            "store-fast-path-bindings": last.map(|s| s.bound_fast),
            "unreported-renewals": last.map(|s| s.unreported),
            "oldest-unreported-renewal-secs": last.and_then(|s| s.oldest_unreported_age),
            "last-pass": last.map(|s| s.at),
            "last-pass-ms": last.map(|s| s.millis),
        })
    }
}

/// This thread's CPU time (what a step costs the main task, whatever
/// else the machine runs).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// When a main-task step began.
#[derive(Clone, Copy)]
struct StepTimer {
    wall: Instant,
    cpu: Duration,
}

impl StepTimer {
    fn start() -> StepTimer {
        StepTimer {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }
}

fn note_step(p: &mut Pass, t: StepTimer) {
    let cpu = thread_cpu().saturating_sub(t.cpu);
    p.longest_step = p.longest_step.max(t.wall.elapsed());
    p.longest_step_cpu = p.longest_step_cpu.max(cpu);
    p.main_cpu += cpu;
}

fn summary_of(p: &Pass, findings: Vec<Finding>, inconclusive: Option<String>) -> Summary {
    Summary {
        at: p.started_unix,
        millis: p.started.elapsed().as_millis() as u64,
        requested: p.requested,
        entries: p.entries,
        bound_fast: p.bound_fast,
        unreported: p.unreported,
        oldest_unreported_age: p.oldest_renewal.map(|t| p.started_unix.saturating_sub(t)),
        findings,
        beyond_cap: p.beyond_cap,
        candidates: p.seen,
        inconclusive,
        longest_step: p.longest_step,
        longest_step_cpu: p.longest_step_cpu,
        main_cpu: p.main_cpu,
    }
}

fn summary_json_short(s: &Summary) -> Value {
    json!({
        "at": s.at,
        "ms": s.millis,
        "requested": s.requested,
        "map-entries": s.entries,
        "store-fast-path-bindings": s.bound_fast,
        "unreported-renewals": s.unreported,
        "oldest-unreported-renewal-secs": s.oldest_unreported_age,
        "disagreements": s.findings.len(),
        "candidates-not-rechecked": s.beyond_cap,
        "candidates": s.candidates,
        "inconclusive": s.inconclusive,
        "longest-step-us": s.longest_step.as_micros() as u64,
        "longest-step-cpu-us": s.longest_step_cpu.as_micros() as u64,
        "main-task-cpu-ms": s.main_cpu.as_millis() as u64,
        "current": s.findings.iter().take(STATUS_LIST).map(Finding::json).collect::<Vec<_>>(),
    })
}

fn summary_json(s: &Summary) -> Value {
    let mut v = summary_json_short(s);
    v["disagreements-listed"] = json!(s.findings.len());
    v["current"] = s.findings.iter().map(Finding::json).collect();
    v
}

/// Whether a pending change explains map entry disagreement `d` (rule 1).
fn explained_entry(d: &Disagreement, leases: &LeaseTable) -> bool {
    leases.hold(d.ip).is_some_and(|h| {
        h.ended.is_some() && h.lease.client.as_deref().and_then(lease_key) == d.key
    })
}

/// Whether a pending change explains lease `l`'s missing entry: its
/// binding was handed to the map by a commit not reported on by `base`.
fn explained_missing(l: &Lease, leases: &LeaseTable, base: u64) -> bool {
    leases.hold(l.ip).is_some_and(|h| h.seq > base)
}

fn push_candidate(p: &mut Pass, d: Disagreement, value: Option<LeaseValue>) {
    p.seen += 1;
    if p.candidates.len() < MAX_CANDIDATES {
        p.candidates.push(Candidate { d, value });
    } else {
        p.beyond_cap += 1;
    }
}

/// The map's side of a pass, one chunk.
fn check_chunk(p: &mut Pass, entries: &[(LeaseKey, LeaseValue)], leases: &LeaseTable, now: u64) {
    let clocks = audit::Clocks::now();
    for (k, v) in entries {
        p.entries += 1;
        let ip = Ipv4Addr::from(v.ip.to_ne_bytes());
        let lease = leases.get(ip);
        if let Some(d) = audit::check_entry(k, v, lease, now, &clocks) {
            if !explained_entry(&d, leases) {
                push_candidate(p, d, Some(*v));
            }
        }
        // Its client's key is in the map: not missing (`audit::check`).
        if lease.is_some_and(|l| is_client_key(l.client.as_deref(), k)) {
            p.covered.insert(ip);
        }
        if v.expires_mono_ns > v.reported_mono_ns {
            p.unreported += 1;
            let renewed = clocks
                .mono_ns_to_unix(v.expires_mono_ns)
                .saturating_sub(u64::from(v.lease_secs));
            p.oldest_renewal = Some(p.oldest_renewal.map_or(renewed, |o| o.min(renewed)));
        }
    }
}

/// Addresses whose lease's client has its entry there, one bit each over
/// the configured subnets (a set for any other address).
struct Coverage {
    ranges: Vec<(u32, u32, Vec<u64>)>,
    other: HashSet<Ipv4Addr>,
}

impl Coverage {
    fn new(ranges: &[(u32, u32)]) -> Coverage {
        Coverage {
            ranges: ranges
                .iter()
                .map(|&(a, b)| (a, b, vec![0u64; ((b - a) as usize) / 64 + 1]))
                .collect(),
            other: HashSet::new(),
        }
    }

    fn bit(&self, ip: Ipv4Addr) -> Option<(usize, usize, u64)> {
        let a = u32::from(ip);
        self.ranges
            .iter()
            .position(|(s, e, _)| a >= *s && a <= *e)
            .map(|r| {
                let i = (a - self.ranges[r].0) as usize;
                (r, i / 64, 1u64 << (i % 64))
            })
    }

    fn insert(&mut self, ip: Ipv4Addr) {
        match self.bit(ip) {
            Some((r, w, m)) => self.ranges[r].2[w] |= m,
            None => {
                self.other.insert(ip);
            }
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        match self.bit(ip) {
            Some((r, w, m)) => self.ranges[r].2[w] & m != 0,
            None => self.other.contains(&ip),
        }
    }
}

/// Leases at most this many are listed at once for the store's side;
/// more, and it walks the configured subnets' addresses instead, so no
/// single step goes through the whole table.
const LIST_MAX: usize = 32_768;

/// Where the store's side of a pass stands.
#[derive(Default)]
enum Walk {
    List {
        ips: Vec<Ipv4Addr>,
        pos: usize,
    },
    Ranges {
        ranges: Vec<(u32, u32)>,
        i: usize,
        next: u64,
    },
    #[default]
    Done,
}

impl Walk {
    fn over(server: &crate::dhcp::server::Server) -> Walk {
        if server.leases.len() <= LIST_MAX {
            Walk::List {
                ips: server
                    .leases
                    .iter()
                    .filter(|l| l.state == LeaseState::Bound && l.fast.is_some())
                    .map(|l| l.ip)
                    .collect(),
                pos: 0,
            }
        } else {
            let ranges = server.subnet_ranges();
            let next = ranges.first().map_or(0, |r| u64::from(r.0));
            Walk::Ranges { ranges, i: 0, next }
        }
    }

    fn done(&self) -> bool {
        match self {
            Walk::List { ips, pos } => *pos >= ips.len(),
            Walk::Ranges { ranges, i, .. } => *i >= ranges.len(),
            Walk::Done => true,
        }
    }

    /// The next addresses to look at: `STEP` listed leases, or `4 * STEP`
    /// addresses of a subnet.
    fn next(&mut self) -> Vec<Ipv4Addr> {
        match self {
            Walk::List { ips, pos } => {
                let end = (*pos + STEP).min(ips.len());
                let out = ips[*pos..end].to_vec();
                *pos = end;
                out
            }
            Walk::Ranges { ranges, i, next } => {
                let mut out = Vec::with_capacity(4 * STEP);
                while out.len() < 4 * STEP && *i < ranges.len() {
                    let end = u64::from(ranges[*i].1);
                    while out.len() < 4 * STEP && *next <= end {
                        out.push(Ipv4Addr::from(*next as u32));
                        *next += 1;
                    }
                    if *next > end {
                        *i += 1;
                        if let Some(r) = ranges.get(*i) {
                            *next = u64::from(r.0);
                        }
                    }
                }
                out
            }
            Walk::Done => Vec::new(),
        }
    }
}

/// The rule for which leases the map should hold: the sync's, for
/// subnets still served (`Engine::load_map`).
fn mapped(l: &Lease, engine: &Engine, el: &Eligibility) -> bool {
    el.would_map(l) && engine.server.serves_subnet(l.subnet_id)
}

/// The store's side of a pass, one chunk of addresses.
fn missing_chunk(p: &mut Pass, engine: &Engine, el: &Eligibility, now: u64) {
    let leases = &engine.server.leases;
    let chunk: Vec<&Lease> = p
        .walk
        .next()
        .into_iter()
        .filter_map(|ip| leases.get(ip))
        .filter(|l| l.state == LeaseState::Bound && l.fast.is_some() && mapped(l, engine, el))
        .collect();
    p.bound_fast += chunk.len() as u64;
    let covered = &p.covered;
    let found = audit::check_missing(
        chunk.into_iter(),
        &|_| true,
        &|l, _| covered.contains(l.ip),
        now,
    );
    for d in found {
        if el.refused(d.ip) {
            // The map refused it (full, no template slot): the control
            // plane's by design.
            p.bound_fast = p.bound_fast.saturating_sub(1);
            continue;
        }
        let Some(l) = leases.get(d.ip) else { continue };
        if explained_missing(l, leases, p.base) {
            continue;
        }
        push_candidate(p, d, None);
    }
}

/// Rule 2: the candidates against the kernel's entries read again.
fn recheck(
    p: &mut Pass,
    fresh: &[(LeaseKey, Option<LeaseValue>)],
    engine: &Engine,
    el: &Eligibility,
    now: u64,
) -> Vec<Finding> {
    let leases = &engine.server.leases;
    let fresh: HashMap<LeaseKey, Option<LeaseValue>> = fresh.iter().copied().collect();
    let mut out = Vec::new();
    for c in std::mem::take(&mut p.candidates) {
        let Some(key) = c.d.key else { continue };
        let now_v = fresh.get(&key).copied().flatten();
        if c.d.kind == Kind::Missing {
            // The key is in the map (for this binding or another of the
            // client's): not missing.
            if now_v.is_some() {
                continue;
            }
            let Some(l) = leases.get(c.d.ip) else {
                continue;
            };
            if el.refused(l.ip) || explained_missing(l, leases, p.base) {
                continue;
            }
            let is_mapped = |l: &Lease| mapped(l, engine, el);
            if let Some(d) =
                audit::check_missing(std::iter::once(l), &is_mapped, &|_, _| false, now)
                    .into_iter()
                    .next()
            {
                out.push(Finding {
                    d,
                    kernel: None,
                    lease: Some(l.clone()),
                    repair: false,
                });
            }
            continue;
        }
        let Some(v) = now_v else { continue };
        if Some(v.ip) != c.value.map(|o| o.ip) {
            continue;
        }
        let again = audit::check_entries(&[(key, v)], |ip| leases.get(ip), now);
        if let Some(d) = again.into_iter().find(|d| d.kind == c.d.kind) {
            if explained_entry(&d, leases) {
                continue;
            }
            out.push(Finding {
                lease: leases.get(d.ip).cloned(),
                d,
                kernel: Some(v),
                repair: false,
            });
        }
    }
    out.sort_by_key(|f| (f.d.ip, f.d.kind));
    out
}

/// The reader thread: scans and re-reads on request, until the daemon's
/// side of either channel is gone.
fn read_loop(
    reader: &LeaseReader,
    requests: std_mpsc::Receiver<ReadRequest>,
    tx: mpsc::Sender<Reading>,
    current: &AtomicU64,
) {
    while let Ok(req) = requests.recv() {
        match req {
            ReadRequest::Scan { pass, rate } => {
                let chunk = rate.map_or(SCAN_CHUNK, |r| (r as usize / 100).clamp(16, SCAN_CHUNK));
                let started = Instant::now();
                let mut read = 0u64;
                let mut cursor = ReadCursor::Start;
                loop {
                    if current.load(Ordering::SeqCst) != pass {
                        break;
                    }
                    let entries = match reader.read(&mut cursor, chunk) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tx.blocking_send(Reading::Failed {
                                pass,
                                error: format!("{e:#}"),
                            });
                            break;
                        }
                    };
                    read += entries.len() as u64;
                    let last = cursor == ReadCursor::Done;
                    if tx
                        .blocking_send(Reading::Chunk {
                            pass,
                            entries,
                            last,
                        })
                        .is_err()
                    {
                        return;
                    }
                    if last {
                        break;
                    }
                    if let Some(r) = rate {
                        let due = Duration::from_secs_f64(read as f64 / f64::from(r.max(1)));
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
            ReadRequest::Get { pass, keys } => {
                let entries = keys.iter().map(|k| (*k, reader.get(k))).collect();
                if tx.blocking_send(Reading::Fresh { pass, entries }).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{hw_key, FastReply};
    use std::sync::Arc as StdArc;

    fn fast() -> StdArc<FastReply> {
        StdArc::new(FastReply {
            offerable: false,
            iface: "eth0".into(),
            outer_vlan: 0,
            inner_vlan: 0,
            giaddr: Ipv4Addr::UNSPECIFIED,
            prl_len: 0,
            shape_hash: 0,
            max_message_size: 0,
            client_id_len: 0,
            relay_info_len: 0,
            template: vec![53, 1, 5].into(),
        })
    }

    fn lease(i: u8, state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::new(198, 18, 0, i),
            client: Some(hw_key(1, &[2, 0, 0, 0, 0, i])),
            hw: vec![1, 2, 0, 0, 0, 0, i].into(),
            subnet_id: 1,
            state,
            expires: unix_now() + 100,
            lease_secs: 100,
            fast: Some(fast()),
            relay: None,
        }
    }

    fn entry(l: &Lease) -> (LeaseKey, LeaseValue) {
        let mut v: LeaseValue = bytemuck::Zeroable::zeroed();
        v.ip = u32::from_ne_bytes(l.ip.octets());
        v.subnet_id = l.subnet_id;
        v.lease_secs = l.lease_secs;
        v.expires_mono_ns = crate::xdp::clock::unix_to_mono_ns(l.expires);
        v.reported_mono_ns = v.expires_mono_ns;
        (lease_key(l.client.as_deref().unwrap()).unwrap(), v)
    }

    fn pass() -> Pass {
        Pass::new(1, true, Vec::new(), 0, Coverage::new(&[]))
    }

    /// An entry whose binding the control plane has ended is a candidate
    /// only once the hold that covers the pending removal is gone.
    #[test]
    fn an_ended_binding_still_in_the_map_is_explained_while_held() {
        let mut t = LeaseTable::new();
        let l = lease(10, LeaseState::Bound);
        t.put(l.clone());
        t.hold_for_kernel(&l, 1);
        let e = entry(&l);
        let mut released = l.clone();
        released.state = LeaseState::Released;
        t.put(released);
        let mut p = pass();
        check_chunk(&mut p, &[e], &t, unix_now());
        assert_eq!(p.candidates.len(), 1, "no hold ended yet: a candidate");
        t.hold_ended(
            l.ip,
            crate::xdp::clock::unix_ns_now(),
            crate::dhcp::leases::EndKind::Ended,
        );
        let mut p = pass();
        check_chunk(&mut p, &[e], &t, unix_now());
        assert!(p.candidates.is_empty(), "removal pending: explained");
        // Another client's key at that address is not explained by it.
        let mut other = entry(&lease(11, LeaseState::Bound));
        other.1.ip = e.1.ip;
        check_chunk(&mut p, &[other], &t, unix_now());
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(p.candidates[0].d.kind, Kind::OtherClient);
        assert_eq!(p.entries, 2);
    }

    #[test]
    fn a_missing_entry_is_explained_by_a_commit_not_yet_reported() {
        let mut t = LeaseTable::new();
        let l = lease(12, LeaseState::Bound);
        t.put(l.clone());
        t.hold_for_kernel(&l, 5);
        assert!(explained_missing(&l, &t, 4));
        assert!(!explained_missing(&l, &t, 5));
    }
}
