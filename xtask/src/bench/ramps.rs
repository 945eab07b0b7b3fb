//! The ramp drivers: the bench's own adaptive ramps (a fresh server per
//! DORA step), and loadgen's, for the bare ceiling and renewals.

use std::{path::Path, time::Duration, time::Instant};

use anyhow::{bail, Context, Result};
use xdhcp_lab::proc::Logged;
use xdhcp_ramp::{Outcome, Stage};

use super::{
    bounce_command,
    lab::{cpus, rss_kib, BenchLab},
    loadgen::{loadgen, points, ramp_of, s},
    model::Pt,
    plan::{BenchPlan, RampCfg},
    servers::{kea_raw_config, start_pg_node, start_with, PgNode, System, MAX_NEW_CLIENTS},
};

/// Runs `cfg`'s ramp to its end, `measure` taking each step at the rate
/// and stage the ramp asks for; the steps and how the ramp ended.
pub(super) fn drive(
    cfg: &RampCfg,
    mut measure: impl FnMut(u64, Stage) -> Result<Pt>,
) -> Result<(Vec<Pt>, Outcome)> {
    let mut ramp = cfg.ramp();
    let started = Instant::now();
    let mut pts = Vec::new();
    while let Some(rate) = ramp.next_rate() {
        let stage = ramp.stage();
        let p = measure(rate, stage)?;
        ramp.record(
            rate,
            p.offered,
            p.answered,
            p.loss_pct,
            started.elapsed().as_secs_f64(),
        );
        pts.push(Pt {
            refine: stage == Stage::Refine,
            ..p
        });
    }
    let o = ramp.outcome();
    eprintln!("   -> ramp ended: {}", o.describe());
    Ok((pts, o))
}

/// The bare program bounces each request (parse, one lookup in a map of
/// all clients' keys, swap, XDP_TX), ramped by loadgen's XDP engine.
pub(super) fn ceiling_ramp(
    lab: &BenchLab,
    bin: &Path,
    plan: &BenchPlan,
) -> Result<(Vec<Pt>, Outcome)> {
    let b = Logged::spawn(&lab.srv, &bounce_command(bin, plan.clients), None)?;
    b.wait_for("bounce program attached", Duration::from_secs(60))?;
    let mut args = vec![
        s("--clients"),
        s(plan.clients),
        s("--phase"),
        s("renew"),
        s("--engine"),
        s("xdp"),
        s("--threads"),
        s(cpus()),
        s("--synthetic"),
        s("198.18.1.0"),
        s("--server"),
        s("198.18.0.1"),
        s("--expect"),
        s("bounce"),
        s("--count"),
        s(1_000_000_000u64),
        s("--step-duration"),
        s(plan.xdp_secs),
    ];
    args.extend(plan.xdp.loadgen_args());
    let r = loadgen(lab, bin, &args)?;
    drop(b);
    ramp_of(&r, "renew")
}

/// DORA ramp: a fresh server and store per step, `rate × secs` new clients
/// (at most [`MAX_NEW_CLIENTS`], the step then shorter).
pub(super) fn dora_ramp(
    lab: &BenchLab,
    bin: &Path,
    system: System,
    xdp: &str,
    plan: &BenchPlan,
) -> Result<(Vec<Pt>, Outcome)> {
    drive(&plan.dora, |rate, _| {
        let d = start_with(lab, system, bin, xdp, &kea_raw_config())?;
        let clients = (rate * plan.dora_secs).min(MAX_NEW_CLIENTS);
        let r = loadgen(
            lab,
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
        drop(d);
        points(&r, "dora")
            .into_iter()
            .next()
            .context("loadgen reported no DORA phase")
    })
}

/// DORA for `plan.clients`, then a renewal ramp with `engine`.
pub(super) struct RenewRamp<'a> {
    system: System,
    /// The server's `xdp` setting.
    xdp: &'a str,
    /// loadgen's engine for the renewals.
    engine: &'a str,
    ramp: &'a RampCfg,
    secs: f64,
    clients: u32,
    /// loadgen's `--shape` for the DORA and the renewals.
    shape: &'static str,
    /// The ramped phase: `renew`, or a known client's `discover-known`
    /// or `selecting` (the kernel's OFFER and SELECTING ACK).
    phase: &'static str,
    /// xdhcp on a shared database instead of the embedded store.
    node: Option<PgNode<'a>>,
}

impl RenewRamp<'_> {
    /// xdhcp's renewals answered by the fast path.
    pub(super) fn fast_path(plan: &BenchPlan) -> RenewRamp<'_> {
        RenewRamp {
            system: System::Xdhcp,
            xdp: "native",
            engine: "xdp",
            ramp: &plan.xdp,
            secs: plan.xdp_secs,
            clients: plan.clients,
            shape: "plain",
            phase: "renew",
            node: None,
        }
    }

    /// A known client's `phase` (`discover-known`, `selecting`) answered
    /// by the fast path, plain shape, over a quarter of the clients.
    pub(super) fn fast_path_phase<'a>(plan: &'a BenchPlan, phase: &'static str) -> RenewRamp<'a> {
        RenewRamp {
            clients: plan.clients / 4,
            phase,
            ..RenewRamp::fast_path(plan)
        }
    }

    /// The fast path's renewals in request shape `shape` (loadgen's
    /// `--shape`): the same ramp as the plain one's, over a quarter of
    /// its clients (each shape's DORA comes first).
    pub(super) fn fast_path_shape<'a>(plan: &'a BenchPlan, shape: &'static str) -> RenewRamp<'a> {
        RenewRamp {
            clients: plan.clients / 4,
            shape,
            ..RenewRamp::fast_path(plan)
        }
    }

    /// `system`'s renewals answered by its control plane (xdhcp's fast path
    /// off), through loadgen's packet engine.
    pub(super) fn control_plane(plan: &BenchPlan, system: System) -> RenewRamp<'_> {
        RenewRamp {
            system,
            xdp: "off",
            engine: "packet",
            ramp: &plan.cp,
            secs: plan.cp_secs,
            clients: plan.clients / 4,
            shape: "plain",
            phase: "renew",
            node: None,
        }
    }

    /// loadgen's arguments: the DORA that leases every client, then the
    /// renewal ramp.
    fn loadgen_args(&self, lab: &BenchLab) -> Vec<String> {
        let mut args = vec![
            s("--clients"),
            s(self.clients),
            s("--phase"),
            s("dora"),
            s("--rate"),
            // Below each system's DORA limit (a shared database's too): every
            // client must hold a lease.
            s(if self.system == System::Kea || self.node.is_some() {
                2_000
            } else {
                8_000
            }),
            s("--duration"),
            s(60),
            s("--phase"),
            s(self.phase),
            s("--engine"),
            s(self.engine),
            s("--count"),
            s(1_000_000_000u64),
            s("--step-duration"),
            s(self.secs),
            s("--threads"),
            s(cpus()),
        ];
        args.extend(self.ramp.loadgen_args());
        if self.shape != "plain" {
            args.extend([s("--shape"), s(self.shape)]);
        }
        if self.system == System::Xdhcp {
            args.extend([
                s("--server-socket"),
                lab.control_socket().display().to_string(),
            ]);
        }
        args
    }
}

impl<'a> RenewRamp<'a> {
    /// The same ramp with xdhcp as `node` on its shared database.
    pub(super) fn on_database(self, node: PgNode<'a>) -> RenewRamp<'a> {
        RenewRamp {
            node: Some(node),
            ..self
        }
    }
}

/// Returns the steps, how the ramp ended and the server's RSS (KiB).
pub(super) fn renew_ramp(
    lab: &BenchLab,
    bin: &Path,
    rr: RenewRamp,
) -> Result<(Vec<Pt>, Outcome, Option<u64>)> {
    let (points, outcome, rss, ()) = renew_ramp_then(lab, bin, rr, || ())?;
    Ok((points, outcome, rss))
}

/// As [`renew_ramp`], with what `last` read while the server still ran.
pub(super) fn renew_ramp_then<T>(
    lab: &BenchLab,
    bin: &Path,
    rr: RenewRamp,
    last: impl FnOnce() -> T,
) -> Result<(Vec<Pt>, Outcome, Option<u64>, T)> {
    let d = match rr.node {
        Some(n) => start_pg_node(lab, &lab.srv, bin, rr.xdp, n, &lab.control_socket())?,
        None => start_with(lab, rr.system, bin, rr.xdp, &kea_raw_config())?,
    };
    let r = loadgen(lab, bin, &rr.loadgen_args(lab))?;
    let rss = rss_kib(d.pid());
    let read = last();
    drop(d);
    let bound = r
        .iter()
        .find(|x| x["phase"] == "dora")
        .and_then(|x| x["ok"].as_u64())
        .unwrap_or(0);
    let clients = rr.clients;
    if bound < clients as u64 * 9 / 10 {
        bail!("only {bound} of {clients} clients got a lease before the renewal ramp");
    }
    let (points, outcome) = ramp_of(&r, rr.phase)?;
    Ok((points, outcome, rss, read))
}
