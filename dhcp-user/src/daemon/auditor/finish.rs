//! Ending a pass: the repairs it hands the committer, what it logs and
//! counts, and the answer to whoever asked.

use std::{collections::HashSet, time::Instant};

use dhcp_common::{LeaseKey, LeaseValue};

use super::{
    status::{summary_json, summary_of},
    Auditor, Finding, Summary, MAX_CANDIDATES,
};
use crate::{
    api::control::{self, Response},
    daemon::engine::Engine,
    lease::LeaseState,
    store::StoreOp,
    xdp::map_sync::{key_text, lease_key},
};

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

impl Auditor {
    pub(super) fn finish_inconclusive(&mut self, why: String) -> Option<Repair> {
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

    pub(super) fn finish(
        &mut self,
        mut confirmed: Vec<Finding>,
        engine: &mut Engine,
    ) -> Option<Repair> {
        let p = self.pass.take()?;
        self.passes += 1;
        let repair = self.settings.repair || p.waiters.iter().any(|w| w.repair);
        let fix = if repair {
            repairs(&mut confirmed, engine)
        } else {
            Repair::default()
        };
        self.note_findings(&confirmed);
        let summary = summary_of(&p, confirmed, None);
        let (result, text) = outcome(&summary, &fix);
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

    /// Logs and counts what the last conclusive pass had not confirmed.
    fn note_findings(&mut self, confirmed: &[Finding]) {
        let ids: HashSet<_> = confirmed.iter().map(Finding::id).collect();
        for f in confirmed {
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
    }
}

/// The repairs of the stray entries among `confirmed` (each marked as
/// repaired).
fn repairs(confirmed: &mut [Finding], engine: &mut Engine) -> Repair {
    let mut fix = Repair::default();
    for f in confirmed {
        if !f.d.kind.is_stray() {
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
    fix
}

/// The answer's result code and text.
fn outcome(summary: &Summary, fix: &Repair) -> (u8, String) {
    let n = summary.findings.len();
    let more = if summary.beyond_cap > 0 {
        format!(
            "; {} more candidates beyond the {MAX_CANDIDATES} a pass re-checks",
            summary.beyond_cap
        )
    } else {
        String::new()
    };
    if n > 0 {
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
    }
}
