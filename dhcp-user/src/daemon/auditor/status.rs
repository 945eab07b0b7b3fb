//! What passes found, for `status`, `statistic-get-all` and the
//! control API's answers.

use std::{net::Ipv4Addr, time::Duration};

use dhcp_common::{LeaseKey, LeaseValue};
use serde_json::{json, Value};

use super::{pass::Pass, Auditor, STATUS_LIST};
use crate::{
    api::commands::json::kernel_json,
    audit::{Disagreement, Kind},
    lease::Lease,
    xdp::map_sync::{key_text, lease_key},
};

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
    pub(super) fn id(&self) -> (Kind, Ipv4Addr, Option<LeaseKey>) {
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

impl Auditor {
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

pub(super) fn summary_of(
    p: &Pass,
    findings: Vec<Finding>,
    inconclusive: Option<String>,
) -> Summary {
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

pub(super) fn summary_json(s: &Summary) -> Value {
    let mut v = summary_json_short(s);
    v["disagreements-listed"] = json!(s.findings.len());
    v["current"] = s.findings.iter().map(Finding::json).collect();
    v
}

impl crate::api::commands::AuditView for Auditor {
    fn status_json(&self) -> Value {
        Auditor::status_json(self)
    }

    fn stats_json(&self) -> Value {
        Auditor::stats_json(self)
    }
}
