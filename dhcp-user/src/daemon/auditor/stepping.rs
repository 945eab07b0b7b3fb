//! A pass's phases: scanning the map, the store's side, draining the
//! committer, re-checking; each step driven from the main task.

use std::{sync::atomic::Ordering, time::Instant};

use super::{
    checks::{check_chunk, missing_chunk, recheck},
    pass::{note_step, Pass, Phase, StepTimer},
    reader::{ReadRequest, Reading},
    walk::{Coverage, Walk},
    Auditor, Repair, DRAIN_TIMEOUT,
};
use crate::{daemon::engine::Engine, xdp::clock::unix_now};

impl Auditor {
    pub(super) fn start(&mut self, requested: bool, engine: &mut Engine) -> Option<Repair> {
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
}
