//! The report as JSON (curves with their ends, ratios with their status,
//! targets), and the way back: a report's curves and machine, to redraw
//! it. A report from before ramps recorded their ends has its ramps
//! replayed as the fixed ramps they were.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use xdhcp_ramp::{Bound, End, Limits, Outcome, Plan, Ramp, Role, Style, Verdict};

use super::{
    markdown::target_lines,
    model::{outcome_from_json, ratio_of, Curve, Key, Machine, Pt, MAX_LOSS_PCT, ROWS, TARGETS},
};

fn bound_name(b: Bound) -> &'static str {
    match b {
        Bound::Measured => "measured",
        Bound::AtLeast => "at_least",
        Bound::AtMost => "at_most",
        Bound::Neither => "no_bound",
    }
}

/// The run as JSON: curves with their ends, ratios with their status.
pub(super) fn json_report(curves: &[Curve], quick: bool, busy: bool) -> Value {
    json!({
        "run": if quick { "quick" } else { "full" },
        "max_loss_pct": MAX_LOSS_PCT,
        "curves": curves.iter().map(curve_json).collect::<Vec<_>>(),
        "ratios": ratios_json(curves),
        "targets": targets_json(curves, busy),
    })
}

/// Every row's ratios: against the ceiling, and against its peer.
fn ratios_json(curves: &[Curve]) -> Vec<Value> {
    let mut ratios = Vec::new();
    for (_, key, kea) in ROWS {
        let mut pairs = vec![(Key::Ceiling, Role::Ceiling, Style::Percent)];
        pairs.extend(kea.map(|k| (k, Role::Peer, Style::Times)));
        for (den, role, style) in pairs {
            if key == den {
                continue;
            }
            if let Some(r) = ratio_of(curves, key, den, role) {
                ratios.push(json!({
                    "num": key.row_label(),
                    "den": den.row_label(),
                    "value": r.value,
                    "low": r.low,
                    "high": r.high,
                    "bound": bound_name(r.bound),
                    "num_end": r.num.name(),
                    "den_end": r.den.name(),
                    "text": r.text(style, key.short(), den.short()),
                }));
            }
        }
    }
    ratios
}

fn targets_json(curves: &[Curve], busy: bool) -> Vec<Value> {
    TARGETS
        .iter()
        .zip(target_lines(curves, busy))
        .map(|(&(what, num, den, role, at_least, _), line)| {
            json!({
                "target": what,
                "verdict": ratio_of(curves, num, den, role)
                    .map_or("undecided", |r| match r.against(at_least) {
                        Verdict::Met if busy => "met_by_rule_machine_busy",
                        Verdict::Met => "met",
                        Verdict::NotMet => "not_met",
                        Verdict::Undecided => "undecided",
                    }),
                "text": line,
            })
        })
        .collect()
}

pub(super) fn curve_json(c: &Curve) -> Value {
    json!({
        "label": c.key.label(),
        "end": c.outcome.end.name(),
        "ended": c.outcome.describe(),
        "figure_per_s": c.outcome.figure,
        "knee_offered_per_s": c.outcome.knee.map(|(a, b)| [a, b]),
        "knee_target_per_s": c.outcome.knee_targets.map(|(a, b)| [a, b]),
        "steps": c.points.iter().map(|p| json!({
            "target_per_s": p.target,
            "offered_per_s": p.offered,
            "answered_per_s": p.answered,
            "loss_pct": p.loss_pct,
            "stage": if p.refine { "refine" } else { "probe" },
        })).collect::<Vec<_>>(),
    })
}

/// A report read back: what [`super::report::write_report`] needs to draw
/// it again.
pub(super) struct ReadReport {
    pub curves: Vec<Curve>,
    pub quick: bool,
    pub machine: Machine,
    /// Its ramps are an old run's fixed ones, classified by [`replay`].
    pub replayed: bool,
}

pub(super) fn read_report(j: &Value) -> Result<ReadReport> {
    let mut curves = Vec::new();
    let mut replayed = false;
    for c in j["curves"].as_array().context("no curves in the report")? {
        let (curve, was_replayed) = read_curve(c)?;
        replayed |= was_replayed;
        curves.push(curve);
    }
    let m = &j["machine"];
    let machine = Machine {
        // 0: not recorded.
        cpus: m["cpus"].as_u64().unwrap_or(0) as usize,
        load_before: m["load_average_before"].as_f64(),
        load_after: m["load_average_after"].as_f64(),
    };
    let replayed = replayed || j["ramps"].as_str().is_some_and(|r| r.contains("fixed"));
    Ok(ReadReport {
        curves,
        quick: j["run"] == "quick",
        machine,
        replayed,
    })
}

/// A curve of the report, and whether its ramp had to be replayed.
fn read_curve(c: &Value) -> Result<(Curve, bool)> {
    let label = c["label"].as_str().unwrap_or("");
    let key = Key::ALL
        .into_iter()
        .find(|k| k.label() == label)
        .with_context(|| format!("unknown curve {label:?}"))?;
    let points: Vec<Pt> = c["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| Pt::from_json(p, &p["stage"]))
        .collect();
    let (outcome, replayed) = match c["end"].as_str() {
        Some(end) => {
            let end = End::parse(end).with_context(|| format!("{label}: end {end:?}"))?;
            (outcome_from_json(c, end, points.len() as u32), false)
        }
        // A report without ends (a run from before ramps reported
        // them): its steps classified as the fixed ramp they were.
        None => (replay(label, &points), true),
    };
    Ok((Curve::new(key, (points, outcome)), replayed))
}

/// How a fixed ramp over `points`' targets ended, by the ramp's rule.
fn replay(label: &str, points: &[Pt]) -> Outcome {
    let mut ramp = Ramp::new(
        Plan::Fixed(points.iter().map(|p| p.target).collect()),
        Limits {
            max_loss_pct: MAX_LOSS_PCT,
            max_steps: u32::MAX,
            max_secs: f64::INFINITY,
            max_rate: u64::MAX,
        },
    );
    for p in points {
        if ramp.next_rate().is_none() {
            eprintln!(
                "xtask: {label}: the rule ends this ramp before its step at {}/s",
                p.target
            );
            break;
        }
        ramp.record(p.target, p.offered, p.answered, p.loss_pct, 0.0);
    }
    ramp.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::model::{curve_of, issue_full_run};

    /// The issue's full run (see markdown's test of the same name): its
    /// JSON carries the same statuses.
    #[test]
    fn the_issue_full_run_reports_bounds_not_a_met_target() {
        let curves = issue_full_run();
        let j = json_report(&curves, false, false);
        let r = &j["ratios"][0];
        assert_eq!(r["bound"], "no_bound", "{j}");
        assert_eq!(j["targets"][0]["verdict"], "undecided");
    }

    #[test]
    fn a_target_met_on_a_busy_machine_is_no_claim() {
        let curves = vec![
            curve_of(Key::Ceiling, 2.7e6, End::Loss),
            curve_of(Key::FastPath, 2.3e6, End::Loss),
        ];
        assert_eq!(
            json_report(&curves, true, true)["targets"][0]["verdict"],
            "met_by_rule_machine_busy"
        );
    }

    /// The full run of 2026-11-23 (bench/answered-vs-offered.txt before
    /// this change): its ceiling and fast path ramps, replayed.
    #[test]
    fn old_runs_are_classified_by_replaying_their_steps() {
        let pts = |v: &[(u64, f64, f64)]| -> Vec<Pt> {
            v.iter()
                .map(|&(target, offered, loss_pct)| Pt {
                    target,
                    offered,
                    answered: offered * (1.0 - loss_pct / 100.0),
                    loss_pct,
                    refine: false,
                })
                .collect()
        };
        let fast = replay(
            "fast path",
            &pts(&[
                (2_000_000, 1_848_530.0, 0.0),
                (2_500_000, 2_115_440.0, 0.0),
                (3_000_000, 2_258_930.0, 0.0),
                (4_000_000, 2_329_430.0, 0.0),
            ]),
        );
        assert_eq!(fast.end, End::Capped);
        let cp = replay(
            "control plane",
            &pts(&[(64_000, 64_000.0, 0.0), (80_000, 80_000.0, 18.66)]),
        );
        assert_eq!(cp.end, End::Loss);
        assert_eq!(cp.knee, Some((64_000.0, 80_000.0)));
    }
}
