//! Section 8, leases in PostgreSQL: xdhcp with one node and with two
//! nodes on one database (both on one segment, so both see every
//! DISCOVER), and Kea 2.2 with its PostgreSQL lease backend on the same
//! database server, driven by the same generator and ramps as the rest of
//! the bench; what the database did for each figure.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;
use xdhcp_lab::proc::Logged;

use super::{
    lab::{lab, BenchLab},
    loadgen::{loadgen, points, s},
    model::{Curve, Key, Pt, MAX_LOSS_PCT},
    pg2renew::{two_node_renewals, NodePart},
    pglab::{node_database, PgLab, DB_ADDR},
    plan::BenchPlan,
    ramps::{drive, renew_ramp, renew_ramp_then, RenewRamp},
    servers::{kea_pg_config, start_kea_with, start_pg_node, PgNode, MAX_NEW_CLIENTS},
};

/// A node's follower lag behind the other nodes' changes, in the
/// `database` object `node_database` reads (the status's `follow`
/// object joined to it as `follower`; milliseconds, the last change
/// read). A node that does not follow reports none: not measured.
pub(super) const FOLLOWER_LAG_MS: &str = "/follower/lag-ms";

/// What the database did during one DORA step or one renewal run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct DbShare {
    /// Leases the generator got (DORA; a renewal run does not count its
    /// renewals one by one).
    pub leases: Option<u64>,
    /// xdhcp's own counts, summed over its nodes (Kea keeps none).
    pub rows: Option<u64>,
    pub round_trips: Option<u64>,
    pub batches: Option<u64>,
    /// Transactions PostgreSQL committed in the server's database.
    pub commits: Option<u64>,
    /// Each node's follower lag at the step's end (ms), where reported.
    pub lag_ms: Vec<f64>,
    /// Addresses the generator was given twice (DORA).
    pub duplicate_addresses: u64,
    /// What the counts cover, when not one DORA step.
    pub scope: Option<&'static str>,
}

impl DbShare {
    /// xdhcp's counts since `before`.
    pub(super) fn minus(self, before: &DbShare) -> DbShare {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        DbShare {
            rows: d(self.rows, before.rows),
            round_trips: d(self.round_trips, before.round_trips),
            batches: d(self.batches, before.batches),
            ..self
        }
    }

    /// xdhcp's counters from its nodes' `database` objects, read at the
    /// end of a step.
    pub(super) fn of_nodes(dbs: &[Option<Value>]) -> DbShare {
        let sum = |k: &str| -> Option<u64> {
            dbs.iter()
                .map(|d| d.as_ref().and_then(|d| d[k].as_u64()))
                .sum()
        };
        DbShare {
            rows: sum("rows"),
            round_trips: sum("round-trips"),
            batches: sum("batches"),
            lag_ms: dbs
                .iter()
                .flatten()
                .filter_map(|d| d.pointer(FOLLOWER_LAG_MS)?.as_f64())
                .collect(),
            ..DbShare::default()
        }
    }
}

/// One measurement of the section: its curve, and the database's share
/// at each step (DORA) or over the whole run (renewals: one entry).
pub(super) struct PgMeasured {
    pub curve: Curve,
    pub shares: Vec<DbShare>,
}

/// The section's results; a measurement that failed is kept as its error
/// so that the rest still reports.
pub(super) struct PgSection {
    pub measured: Vec<PgMeasured>,
    pub failed: Vec<(Key, String)>,
    /// Each node's part of the two nodes' renewals (empty if not run).
    pub two_nodes: Vec<NodePart>,
}

/// Runs the section on its own lab.
pub(super) fn postgres_section(bin: &Path, plan: &BenchPlan) -> Result<PgSection> {
    let pl = PgLab::new(bin).context("the PostgreSQL section's lab")?;
    let direct = lab()?;
    let mut sec = PgSection {
        measured: Vec::new(),
        failed: Vec::new(),
        two_nodes: Vec::new(),
    };
    eprintln!(
        "== 8. leases in PostgreSQL 15 at {DB_ADDR} (one segment: a bridge), fresh database per DORA step, rate × {} s new clients (at most {MAX_NEW_CLIENTS})",
        plan.dora_secs
    );
    let steps: [(Key, &str); 6] = [
        (Key::PgDora1, "xdhcp DORA, 1 node on PostgreSQL"),
        (
            Key::PgRenew1,
            "xdhcp renewals, fast path on, 1 node on PostgreSQL",
        ),
        (
            Key::PgLabEmbeddedRenew,
            "xdhcp renewals, fast path on, embedded store (same lab)",
        ),
        (
            Key::PgRenew2,
            "xdhcp renewals, fast path on, 2 nodes on one PostgreSQL, a direct veth and a generator each",
        ),
        (
            Key::PgDora2,
            "xdhcp DORA, 2 nodes on one PostgreSQL, every node sees every DISCOVER",
        ),
        (
            Key::KeaPgDora,
            "Kea 2.2 DORA, PostgreSQL lease backend (2 threads)",
        ),
    ];
    for (key, what) in steps {
        eprintln!("== 8. {what}");
        let r = match key {
            Key::PgDora1 => xdhcp_dora(&pl, bin, plan, 1),
            Key::PgDora2 => xdhcp_dora(&pl, bin, plan, 2),
            Key::KeaPgDora => kea_dora(&pl, bin, plan),
            Key::PgRenew1 => pg_renewals(&pl, &direct, bin, plan),
            Key::PgRenew2 => two_node_renewals(&pl, bin, plan).map(|(m, parts)| {
                sec.two_nodes = parts;
                m
            }),
            _ => embedded_renewals(&direct, bin, plan),
        };
        match r {
            Ok((points, outcome, shares)) => sec.measured.push(PgMeasured {
                curve: Curve::new(key, (points, outcome)),
                shares,
            }),
            Err(e) => {
                eprintln!("   -> failed: {e:#}");
                sec.failed.push((key, format!("{e:#}")));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&pl.bench.dir);
    let _ = std::fs::remove_dir_all(&direct.dir);
    Ok(sec)
}

pub(super) type Measured = (Vec<Pt>, xdhcp_ramp::Outcome, Vec<DbShare>);

/// loadgen's DORA of `rate × secs` new clients (at most
/// [`MAX_NEW_CLIENTS`]) at `rate`: the step, its leases and the
/// addresses it was given twice.
fn dora_step(pl: &PgLab, bin: &Path, plan: &BenchPlan, rate: u64) -> Result<(Pt, u64, u64)> {
    let clients = (rate * plan.dora_secs).min(MAX_NEW_CLIENTS);
    let r = loadgen(
        &pl.bench,
        bin,
        &[
            s("--clients"),
            s(clients),
            s("--phase"),
            s("dora"),
            s("--rate"),
            s(rate),
            s("--duration"),
            s(plan.dora_secs + 5),
        ],
    )?;
    let rep = r
        .iter()
        .find(|x| x["phase"] == "dora")
        .context("loadgen reported no DORA phase")?;
    let pt = points(&r, "dora")
        .into_iter()
        .next()
        .context("no DORA step")?;
    Ok((
        pt,
        rep["ok"].as_u64().unwrap_or(0),
        rep["duplicate_addresses"].as_u64().unwrap_or(0),
    ))
}

/// PostgreSQL's statistics reach `pg_stat_database` when a backend
/// flushes them, at the latest as it exits after its client went.
fn commits_after_exit(pl: &PgLab, db: &str) -> Option<u64> {
    std::thread::sleep(Duration::from_millis(700));
    pl.commits(db).ok()
}

/// xdhcp's DORA ramp with `nodes` nodes on the shared database (fast path
/// on, as deployed), a fresh database and fresh nodes per step.
fn xdhcp_dora(pl: &PgLab, bin: &Path, plan: &BenchPlan, nodes: usize) -> Result<Measured> {
    let mut shares = Vec::new();
    let (pts, o) = drive(&plan.dora, |rate, _| {
        pl.reset_xdhcp_db(bin)?;
        let before = pl.commits("xdhcp").unwrap_or(0);
        let daemons: Vec<Logged> = (0..nodes)
            .map(|i| {
                let (ns, sock) = pl.node_at(i);
                start_pg_node(&pl.bench, ns, bin, "native", pl.node(i), &sock)
            })
            .collect::<Result<_>>()?;
        let (pt, leases, dups) = dora_step(pl, bin, plan, rate)?;
        let dbs: Vec<Option<Value>> = (0..nodes)
            .map(|i| node_database(bin, &pl.node_at(i).1))
            .collect();
        drop(daemons);
        shares.push(DbShare {
            leases: Some(leases),
            duplicate_addresses: dups,
            commits: commits_after_exit(pl, "xdhcp").map(|c| c.saturating_sub(before)),
            ..DbShare::of_nodes(&dbs)
        });
        Ok(pt)
    })?;
    Ok((pts, o, shares))
}

/// Kea's DORA ramp on its PostgreSQL backend, a fresh database per step.
fn kea_dora(pl: &PgLab, bin: &Path, plan: &BenchPlan) -> Result<Measured> {
    let mut shares = Vec::new();
    let cfg = kea_pg_config(DB_ADDR);
    let (pts, o) = drive(&plan.dora, |rate, _| {
        pl.reset_kea_db()?;
        let before = pl.commits("kea").unwrap_or(0);
        let d = start_kea_with(&pl.bench, &pl.bench.srv, &cfg)?;
        let (pt, leases, dups) = dora_step(pl, bin, plan, rate)?;
        drop(d);
        shares.push(DbShare {
            leases: Some(leases),
            duplicate_addresses: dups,
            commits: commits_after_exit(pl, "kea").map(|c| c.saturating_sub(before)),
            ..DbShare::default()
        });
        Ok(pt)
    })?;
    Ok((pts, o, shares))
}

/// Renewals answered by node A's kernel, its leases in the database, on
/// the bench's direct veth (the bridge's software forwarding would cap
/// them far below the kernel's rate): the database's share over the
/// whole run (the DORA that leased every client, then the ramp, whose
/// renewals the control plane stores in batches).
fn pg_renewals(pl: &PgLab, direct: &BenchLab, bin: &Path, plan: &BenchPlan) -> Result<Measured> {
    pl.reset_xdhcp_db(bin)?;
    let url = pl.socket_url();
    let node = PgNode {
        url: &url,
        ..pl.node(0)
    };
    let sock = direct.control_socket();
    let rr = RenewRamp::fast_path(plan).on_database(node);
    let stop = AtomicBool::new(false);
    // The counters once the DORA's leases are all written: the ramp's
    // share is what comes after (loadgen runs both in one go).
    let (r, after_dora) = std::thread::scope(|sc| {
        let watch = sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let db = node_database(bin, &sock);
                if db
                    .as_ref()
                    .and_then(|d| d["rows"].as_u64())
                    .is_some_and(|rows| rows >= u64::from(plan.clients))
                {
                    return db;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            None
        });
        let r = renew_ramp_then(direct, bin, rr, || node_database(bin, &sock));
        stop.store(true, Ordering::Relaxed);
        (r, watch.join().ok().flatten())
    });
    let (pts, o, _, db) = r?;
    let share = match after_dora {
        Some(before) => DbShare {
            scope: Some("the ramp alone"),
            ..DbShare::of_nodes(&[db]).minus(&DbShare::of_nodes(&[Some(before)]))
        },
        None => DbShare {
            scope: Some("DORA and ramp"),
            commits: commits_after_exit(pl, "xdhcp"),
            ..DbShare::of_nodes(&[db])
        },
    };
    Ok((pts, o, vec![share]))
}

/// The same renewal ramp with the embedded store, on the same lab: the
/// figure the database's must match.
fn embedded_renewals(direct: &BenchLab, bin: &Path, plan: &BenchPlan) -> Result<Measured> {
    let (pts, o, _) = renew_ramp(direct, bin, RenewRamp::fast_path(plan))?;
    Ok((pts, o, Vec::new()))
}

/// The step a ramp's figure comes from: the highest answered rate within
/// the loss threshold.
pub(super) fn figure_step(points: &[Pt]) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.loss_pct <= MAX_LOSS_PCT)
        .max_by(|a, b| a.1.answered.total_cmp(&b.1.answered))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_ramps_share_is_what_came_after_its_dora() {
        let at = |rows, rt, b| {
            DbShare::of_nodes(&[Some(json!({"rows": rows, "round-trips": rt, "batches": b}))])
        };
        let ramp = at(25_000, 900, 880).minus(&at(20_000, 800, 790));
        assert_eq!(
            (ramp.rows, ramp.round_trips, ramp.batches),
            (Some(5_000), Some(100), Some(90))
        );
        // A count the node did not give stays unknown.
        assert_eq!(at(1, 1, 1).minus(&DbShare::default()).rows, None);
    }
}
