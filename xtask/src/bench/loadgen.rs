//! The load generator (`xdhcp-loadgen --json`) as the bench drives it: a
//! run in the client namespace, its steps echoed as they come, and its
//! JSON read back as steps and ramp ends.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xdhcp_lab::Netns;
use xdhcp_ramp::{End, Outcome};

use super::{
    lab::BenchLab,
    loadgen_command,
    model::{outcome_from_json, Pt},
};

/// An argument for a generator's command line.
pub(super) fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

/// The steps of `phase` in loadgen's JSON.
pub(super) fn points(reports: &[Value], phase: &str) -> Vec<Pt> {
    reports
        .iter()
        .filter(|r| r["phase"] == phase)
        .map(|r| Pt::from_json(r, &r["ramp"]["stage"]))
        .collect()
}

/// How loadgen's ramp of `phase` ended (its last step's `ramp.end`).
pub(super) fn loadgen_outcome(reports: &[Value], phase: &str) -> Result<Outcome> {
    let e = reports
        .iter()
        .filter(|r| r["phase"] == phase)
        .filter_map(|r| r["ramp"].get("end"))
        .next_back()
        .with_context(|| format!("loadgen reported no end for its {phase} ramp"))?;
    let end = e["end"]
        .as_str()
        .and_then(End::parse)
        .with_context(|| format!("loadgen's ramp end: {e}"))?;
    Ok(outcome_from_json(
        e,
        end,
        e["steps"].as_u64().unwrap_or(0) as u32,
    ))
}

/// The steps and how the ramp of `phase` ended.
pub(super) fn ramp_of(reports: &[Value], phase: &str) -> Result<(Vec<Pt>, Outcome)> {
    Ok((points(reports, phase), loadgen_outcome(reports, phase)?))
}

/// Runs `xdhcp-loadgen ARGS --json` in the client namespace.
pub(super) fn loadgen(lab: &BenchLab, bin: &Path, args: &[String]) -> Result<Vec<Value>> {
    loadgen_in(&lab.cli, bin, args)
}

/// Runs `xdhcp-loadgen ARGS --json` on `cli0` in namespace `ns`.
pub(super) fn loadgen_in(ns: &Netns, bin: &Path, args: &[String]) -> Result<Vec<Value>> {
    let mut cmd = loadgen_command(bin);
    cmd.args(["--iface", "cli0", "--json"]).args(args);
    let out = ns.command_from(&cmd).output().context("loadgen")?;
    if !out.status.success() {
        bail!(
            "loadgen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("loadgen's JSON")?;
    let steps = v.as_array().cloned().unwrap_or_default();
    steps.iter().for_each(echo_step);
    Ok(steps)
}

/// One of loadgen's steps, on stderr as the bench goes.
fn echo_step(r: &Value) {
    eprintln!(
        "   {:<12} {:<6} {:<6} target {:>9} offered {:>10.0}/s answered {:>10.0}/s loss {:>6.2}% p99 {:>8} µs{}",
        r["phase"].as_str().unwrap_or("?"),
        r["engine"].as_str().unwrap_or("?"),
        r["ramp"]["stage"].as_str().unwrap_or(""),
        r["target_per_s"],
        r["offered_per_s"].as_f64().unwrap_or(0.0),
        r["answered_per_s"].as_f64().unwrap_or(0.0),
        r["loss_pct"].as_f64().unwrap_or(0.0),
        r["latency_us_p99"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
        r.get("server")
            .map(|s| format!(
                "  server: xdp {} / control plane {} ACKs, {} passed by XDP",
                s["fast_path_acks"], s["control_plane_acks"], s["xdp_passed"]
            ))
            .unwrap_or_default()
    );
    if let Some(w) = r["ramp"]["settle_secs"].as_f64() {
        eprintln!("   (beyond the loss threshold: waited {w:.1} s for the interface to go quiet)");
    }
    if let Some(summary) = r["ramp"]["end"]["summary"].as_str() {
        eprintln!("   -> ramp ended: {summary}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_phase_reads_back_as_its_steps_and_end() {
        let reports = vec![
            json!({"phase": "dora", "target_per_s": 10, "offered_per_s": 10.0,
                   "answered_per_s": 10.0, "loss_pct": 0.0}),
            json!({"phase": "renew", "target_per_s": 1000, "offered_per_s": 990.0,
                   "answered_per_s": 990.0, "loss_pct": 0.0, "ramp": {"stage": "probe"}}),
            json!({"phase": "renew", "target_per_s": 2000, "offered_per_s": 1980.0,
                   "answered_per_s": 1500.0, "loss_pct": 24.2, "ramp": {"stage": "refine",
                   "end": {"end": "loss", "figure_per_s": 990.0, "steps": 2,
                           "knee_offered_per_s": [990.0, 1980.0],
                           "knee_target_per_s": [1000, 2000]}}}),
        ];
        let (pts, o) = ramp_of(&reports, "renew").unwrap();
        assert_eq!(pts.len(), 2);
        assert!(!pts[0].refine && pts[1].refine);
        assert_eq!((pts[1].target, pts[1].loss_pct), (2000, 24.2));
        assert_eq!(o.end, End::Loss);
        assert_eq!(o.figure, Some(990.0));
        assert_eq!(o.knee, Some((990.0, 1980.0)));
        assert_eq!(o.knee_targets, Some((1000, 2000)));
        assert_eq!(o.steps, 2);
        assert!(loadgen_outcome(&reports, "dora").is_err());
    }
}
