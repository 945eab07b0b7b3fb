//! One pass's state, and the cost of its steps on the main task.

use std::time::{Duration, Instant};

use dhcp_common::LeaseValue;
use tokio::sync::oneshot;

use super::walk::{Coverage, Walk};
use crate::{api::control::Response, audit::Disagreement, xdp::clock::unix_now};

pub(super) struct Candidate {
    pub(super) d: Disagreement,
    pub(super) value: Option<LeaseValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Scanning,
    Missing,
    Draining,
    Rechecking,
}

pub(super) struct Waiter {
    pub(super) reply: oneshot::Sender<Response>,
    pub(super) repair: bool,
}

/// One pass through the map and the leases.
pub(super) struct Pass {
    pub(super) id: u64,
    /// Asked for by an operator: full speed.
    pub(super) requested: bool,
    pub(super) waiters: Vec<Waiter>,
    pub(super) phase: Phase,
    /// `Engine::reported_seq` when the pass began (then when the re-read
    /// was asked for).
    pub(super) base: u64,
    /// `Engine::ticks` when the re-read was asked for.
    pub(super) ticks: u64,
    /// Addresses whose lease's client has its entry there.
    pub(super) covered: Coverage,
    pub(super) entries: u64,
    pub(super) unreported: u64,
    /// Unix time of the oldest renewal the kernel has not reported.
    pub(super) oldest_renewal: Option<u64>,
    pub(super) bound_fast: u64,
    pub(super) candidates: Vec<Candidate>,
    pub(super) beyond_cap: u64,
    /// Candidates the scan found (before the re-check).
    pub(super) seen: u64,
    pub(super) walk: Walk,
    /// The last commit handed out when the scan ended.
    pub(super) target: u64,
    pub(super) drain_since: Instant,
    pub(super) tries: u32,
    pub(super) started: Instant,
    pub(super) started_unix: u64,
    pub(super) longest_step: Duration,
    pub(super) longest_step_cpu: Duration,
    /// The main task's CPU time for the whole pass.
    pub(super) main_cpu: Duration,
}

impl Pass {
    pub(super) fn new(
        id: u64,
        requested: bool,
        waiters: Vec<Waiter>,
        base: u64,
        covered: Coverage,
    ) -> Pass {
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
pub(super) struct StepTimer {
    pub(super) wall: Instant,
    pub(super) cpu: Duration,
}

impl StepTimer {
    pub(super) fn start() -> StepTimer {
        StepTimer {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }
}

pub(super) fn note_step(p: &mut Pass, t: StepTimer) {
    let cpu = thread_cpu().saturating_sub(t.cpu);
    p.longest_step = p.longest_step.max(t.wall.elapsed());
    p.longest_step_cpu = p.longest_step_cpu.max(cpu);
    p.main_cpu += cpu;
}
