//! Section 8's report: its table (each ratio by the reporting rule), its
//! two targets, the database's share at each figure, the change
//! propagation lag, as printed and as bench/postgres[-quick].{txt,json}.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::{json, Value};
use xdhcp_ramp::{Role, Style};

use super::{
    json::curve_json,
    markdown::{load_note, target_line},
    model::{ratio_of, Curve, Key, Machine},
    pg2renew::two_node_line,
    pgsection::{figure_step, DbShare, PgSection, FOLLOWER_LAG_MS},
};
use crate::root_dir;

/// The curve a row is compared with, and how the ratio is written.
type Versus = Option<(Key, Style)>;

/// Rows: label, curve, the curve it is compared with.
const PG_ROWS: [(&str, Key, Versus); 6] = [
    (
        "8. xdhcp DORA, 1 node on PostgreSQL",
        Key::PgDora1,
        Some((Key::KeaPgDora, Style::Times)),
    ),
    (
        "8. xdhcp DORA, 2 nodes on one PostgreSQL, one segment (sum the generator sees)",
        Key::PgDora2,
        Some((Key::KeaPgDora, Style::Times)),
    ),
    (
        "   Kea 2.2 DORA, PostgreSQL lease backend (2 threads)",
        Key::KeaPgDora,
        None,
    ),
    (
        "8. xdhcp renewals, fast path, 1 node on PostgreSQL (direct veth)",
        Key::PgRenew1,
        Some((Key::PgLabEmbeddedRenew, Style::Percent)),
    ),
    (
        "   xdhcp renewals, fast path, embedded store (same direct veth)",
        Key::PgLabEmbeddedRenew,
        None,
    ),
    (
        "8. xdhcp renewals, fast path, 2 nodes on one PostgreSQL (sum of two generators, a direct veth each)",
        Key::PgRenew2,
        Some((Key::PgRenew1, Style::Percent)),
    ),
];

/// Issue 15's targets: (what, numerator, denominator, at least, style).
const PG_TARGETS: [(&str, Key, Key, f64, Style); 2] = [
    (
        "2 xdhcp nodes on PostgreSQL >= 5x Kea 2.2 on PostgreSQL, DORA (same generator)",
        Key::PgDora2,
        Key::KeaPgDora,
        5.0,
        Style::Times,
    ),
    (
        "kernel renewals on PostgreSQL as fast as with the embedded store (>= 90% of it, same lab)",
        Key::PgRenew1,
        Key::PgLabEmbeddedRenew,
        0.9,
        Style::Percent,
    ),
];

fn curves(sec: &PgSection) -> Vec<Curve> {
    sec.measured.iter().map(|m| m.curve.clone()).collect()
}

/// The table; every ratio carries its status.
pub(super) fn pg_table(sec: &PgSection) -> String {
    let cs = curves(sec);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| measurement (highest answered/s with <= 1% loss) | answered/s | ramp ended | vs | database at the figure |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---|");
    for (label, key, peer) in PG_ROWS {
        let row = match sec.measured.iter().find(|m| m.curve.key == key) {
            Some(m) => {
                let vs = peer.map_or("-".into(), |(p, style)| {
                    ratio_of(&cs, key, p, Role::Peer).map_or("-".into(), |r| {
                        format!(
                            "vs {}: {}",
                            p.short(),
                            r.text(style, key.short(), p.short())
                        )
                    })
                });
                let share = figure_step(&m.curve.points)
                    .and_then(|i| m.shares.get(i))
                    .or(m.shares.first().filter(|_| m.shares.len() == 1))
                    .map_or("-".into(), share_text);
                format!(
                    "{} | {} | {vs} | {share}",
                    m.curve
                        .outcome
                        .figure
                        .map_or("-".into(), xdhcp_ramp::thousands),
                    m.curve.outcome.describe()
                )
            }
            None => match sec.failed.iter().find(|f| f.0 == key) {
                Some((_, e)) => format!("- | failed: {} | - | -", e.replace('|', "/")),
                None => "- | not run | - | -".into(),
            },
        };
        let _ = writeln!(t, "| {label} | {row} |");
    }
    t
}

/// The database's share: per lease, per batch, per round trip.
pub(super) fn share_text(s: &DbShare) -> String {
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some(scope) = s.scope {
        parts.push(format!("over {scope}"));
    }
    if let Some(l) = s.leases {
        parts.push(format!("{l} leases"));
    }
    if let (Some(rows), Some(rt), Some(b)) = (s.rows, s.round_trips, s.batches) {
        parts.push(format!("{rows} rows in {b} batches, {rt} round trips"));
    }
    if let Some(x) = per(s.round_trips, s.leases.or(s.rows)) {
        let of = if s.leases.is_some() { "lease" } else { "row" };
        parts.push(format!("{x:.3} round trips per {of}"));
    }
    if let Some(x) = per(s.rows, s.batches) {
        parts.push(format!("{x:.1} rows per batch"));
    }
    if let Some(c) = s.commits {
        parts.push(format!("{c} commits"));
        if let Some(x) = per(Some(c), s.leases) {
            parts.push(format!("{x:.3} commits per lease (reads included)"));
        }
    }
    if s.duplicate_addresses > 0 {
        parts.push(format!("{} ADDRESSES GIVEN TWICE", s.duplicate_addresses));
    }
    parts.join("; ")
}

/// One line per target, by the reporting rule; on a machine that was
/// `busy`, a met target is no claim.
pub(super) fn pg_target_lines(sec: &PgSection, busy: bool) -> Vec<String> {
    let cs = curves(sec);
    PG_TARGETS
        .iter()
        .map(|&(what, num, den, at_least, style)| {
            target_line(&cs, (what, num, den, Role::Peer, at_least, style), busy)
        })
        .collect()
}

/// The change-propagation lag at the two nodes' peak rate: what their
/// followers reported at the end of the figure's step, or why there is no
/// figure.
pub(super) fn lag_line(sec: &PgSection) -> String {
    let Some(m) = sec.measured.iter().find(|m| m.curve.key == Key::PgDora2) else {
        return "change-propagation lag at the peak rate: not measured: no two-node figure".into();
    };
    let lags = figure_step(&m.curve.points)
        .and_then(|i| m.shares.get(i))
        .map(|s| s.lag_ms.clone())
        .unwrap_or_default();
    if lags.is_empty() {
        return format!("change-propagation lag at the peak rate: not measured: no follower yet (no node reports {FOLLOWER_LAG_MS} in its status)");
    }
    let max = lags.iter().copied().fold(0.0, f64::max);
    format!(
        "change-propagation lag at the peak rate (2 nodes, DORA at the figure's step): at most {max:.0} ms (per node: {})",
        lags.iter()
            .map(|l| format!("{l:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The section's text: table, targets, lag, the missing row, the load.
pub(super) fn pg_text(sec: &PgSection, machine: &Machine) -> String {
    let mut p = format!("\n## Leases in PostgreSQL\n\n{}\n", pg_table(sec));
    p += "Targets (issue 15; by the reporting rule):\n";
    for l in pg_target_lines(sec, machine.busy()) {
        let _ = writeln!(p, "- {l}");
    }
    let _ = writeln!(p, "- {}", lag_line(sec));
    let _ = writeln!(p, "- {}", two_node_line(sec, machine.cpus));
    let _ = writeln!(p, "{}", load_note(machine));
    p
}

/// The section as JSON: its curves, ratios, targets, the database's share
/// at every step, the lag.
pub(super) fn pg_json(sec: &PgSection, quick: bool, machine: &Machine) -> Value {
    let cs = curves(sec);
    json!({
        "run": if quick { "quick" } else { "full" },
        "section": "leases in PostgreSQL",
        "curves": sec.measured.iter().map(|m| {
            let mut c = curve_json(&m.curve);
            c["database"] = m.shares.iter().map(share_json).collect::<Vec<_>>().into();
            c["figure_step"] = figure_step(&m.curve.points).into();
            c
        }).collect::<Vec<_>>(),
        "failed": sec.failed.iter().map(|(k, e)| json!({"label": k.label(), "error": e})).collect::<Vec<_>>(),
        "ratios": PG_ROWS.iter().filter_map(|&(_, key, peer)| {
            let (p, style) = peer?;
            let r = ratio_of(&cs, key, p, Role::Peer)?;
            Some(json!({"num": key.label(), "den": p.label(), "value": r.value, "low": r.low,
                        "high": r.high, "text": r.text(style, key.short(), p.short())}))
        }).collect::<Vec<_>>(),
        "targets": pg_target_lines(sec, machine.busy()),
        "lag": lag_line(sec),
        "two_node_renewals": {
            "text": two_node_line(sec, machine.cpus),
            "nodes": sec.two_nodes.iter().map(|p| json!({
                "node": p.name, "lag_ms": p.lag_ms, "max_lag_ms": p.max_lag_ms,
                "changes_in_ramp": p.changes_in_ramp,
                "steps": p.steps.iter().map(|s| json!({"target_per_s": s.target,
                    "offered_per_s": s.offered, "answered_per_s": s.answered,
                    "loss_pct": s.loss_pct})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
        "machine": {"cpus": machine.cpus, "load_average_before": machine.load_before,
                    "load_average_after": machine.load_after, "note": load_note(machine)},
    })
}

fn share_json(s: &DbShare) -> Value {
    json!({
        "leases": s.leases, "rows": s.rows, "round_trips": s.round_trips, "batches": s.batches,
        "commits": s.commits, "follower_lag_ms": s.lag_ms, "scope": s.scope,
        "duplicate_addresses": s.duplicate_addresses, "text": share_text(s),
    })
}

/// Prints the section and writes bench/postgres[-quick].{txt,json}.
pub(super) fn write_pg_report(sec: &PgSection, quick: bool, machine: &Machine) -> Result<()> {
    let text = pg_text(sec, machine);
    print!("{text}");
    let dir = root_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let stem = dir.join(if quick { "postgres-quick" } else { "postgres" });
    std::fs::write(stem.with_extension("txt"), &text)?;
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string_pretty(&pg_json(sec, quick, machine))?,
    )?;
    println!(
        "PostgreSQL section: {} (.json beside it)",
        stem.with_extension("txt").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use xdhcp_ramp::End;

    use super::*;
    use crate::bench::{
        model::{curve_of, Pt},
        pgsection::PgMeasured,
    };

    fn measured(key: Key, figure: f64, end: End, shares: Vec<DbShare>) -> PgMeasured {
        PgMeasured {
            curve: curve_of(key, figure, end),
            shares,
        }
    }

    fn section(m: Vec<PgMeasured>) -> PgSection {
        PgSection {
            measured: m,
            failed: vec![(Key::PgRenew1, "kernel | said no".into())],
            two_nodes: Vec::new(),
        }
    }

    #[test]
    fn the_two_node_target_counts_only_by_the_rule() {
        // Both ramps found their knee: a measurement, met.
        let sec = section(vec![
            measured(Key::PgDora2, 8_000.0, End::Loss, vec![]),
            measured(Key::KeaPgDora, 400.0, End::Loss, vec![]),
        ]);
        let l = pg_target_lines(&sec, false);
        assert_eq!(
            l[0],
            "2 xdhcp nodes on PostgreSQL >= 5x Kea 2.2 on PostgreSQL, DORA (same generator): 20.0x -> met"
        );
        assert!(l[1].ends_with("no figure -> undecided"), "{l:?}");
        assert!(pg_target_lines(&sec, true)[0].ends_with("not a claim"));
        // Kea's ramp capped: its figure is a lower bound, the ratio an
        // upper one, which cannot show the target met.
        let sec = section(vec![
            measured(Key::PgDora2, 8_000.0, End::Loss, vec![]),
            measured(Key::KeaPgDora, 400.0, End::Capped, vec![]),
        ]);
        let l = pg_target_lines(&sec, false);
        assert!(l[0].contains("≤ 20.0x (Kea on PostgreSQL capped)"), "{l:?}");
        assert!(!l[0].ends_with("-> met"), "{l:?}");
        // Kea's ramp plateaued: a peer's plateau is a lower bound too (it
        // is not the lab's ceiling).
        let sec = section(vec![
            measured(Key::PgDora2, 8_000.0, End::Loss, vec![]),
            measured(Key::KeaPgDora, 400.0, End::Plateau, vec![]),
        ]);
        let l = pg_target_lines(&sec, false);
        assert!(
            l[0].contains("≤ 20.0x (Kea on PostgreSQL plateau)"),
            "{l:?}"
        );
    }

    #[test]
    fn the_table_shows_the_share_at_the_figure_and_failures() {
        let at = |rt| DbShare {
            leases: Some(1_000),
            rows: Some(2_000),
            round_trips: Some(rt),
            batches: Some(100),
            commits: Some(100),
            ..DbShare::default()
        };
        // The figure is the first step's; the lossy one above it and the
        // refinement below it are not.
        let mut m = measured(
            Key::PgDora1,
            9_000.0,
            End::Loss,
            vec![at(100), at(999), at(555)],
        );
        for (loss_pct, answered) in [(20.0, 9_500.0), (0.0, 8_000.0)] {
            m.curve.points.push(Pt {
                loss_pct,
                answered,
                ..m.curve.points[0].clone()
            });
        }
        let t = pg_table(&section(vec![m]));
        assert!(
            t.contains("| 9,000 | loss | - | 1000 leases; 2000 rows in 100 batches, 100 round trips; 0.100 round trips per lease; 20.0 rows per batch; 100 commits; 0.100 commits per lease (reads included) |"),
            "{t}"
        );
        assert!(t.contains("| failed: kernel / said no |"), "{t}");
        assert!(t.contains("| - | not run | - | - |"), "{t}");
    }

    #[test]
    fn the_lag_is_reported_only_when_a_follower_reports_it() {
        let sec = section(vec![measured(
            Key::PgDora2,
            8_000.0,
            End::Loss,
            vec![DbShare::default()],
        )]);
        assert!(lag_line(&sec).ends_with(
            "not measured: no follower yet (no node reports /follower/lag-ms in its status)"
        ));
        let dbs = [
            Some(json!({"rows": 5, "round-trips": 2, "batches": 2, "follower": {"lag-ms": 12.0}})),
            Some(json!({"rows": 7, "round-trips": 3, "batches": 1, "follower": {"lag-ms": 40.0}})),
        ];
        let s = DbShare::of_nodes(&dbs);
        assert_eq!(
            (s.rows, s.round_trips, s.batches),
            (Some(12), Some(5), Some(3))
        );
        let sec = section(vec![measured(Key::PgDora2, 8_000.0, End::Loss, vec![s])]);
        assert_eq!(
            lag_line(&sec),
            "change-propagation lag at the peak rate (2 nodes, DORA at the figure's step): at most 40 ms (per node: 12 ms, 40 ms)"
        );
        // A node that did not answer leaves the sum unknown, not smaller.
        assert_eq!(DbShare::of_nodes(&[dbs[0].clone(), None]).rows, None);
    }
}
