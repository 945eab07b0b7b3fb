//! `cargo xtask bench`: side-by-side rates on one lab, one run.
//!
//! Control plane: xdhcp with the fast path off (durable leases: SQLite WAL,
//! fsync per group commit) and ISC Kea (Debian's kea-dhcp4-server, memfile,
//! two threads), both driven by the same generators (`xdhcp-loadgen`, and
//! perfdhcp acting as a relay); fast path and the bare XDP ceiling by
//! loadgen's XDP engine. Every ramp is adaptive (`xdhcp_ramp`): the rate
//! rises geometrically until a step loses more than 1% or the generator's
//! offered rate stops rising, then is bisected at the knee; the figure is
//! the highest answered rate with at most 1% loss, and each ramp says how
//! it ended (loss, plateau or capped). Ratios are printed by the reporting
//! rule (`xdhcp_ramp::ratio`): a ratio is a measurement only when both
//! ramps allow it, a bound otherwise, and a target counts as met only when
//! the rule says so. DORA and perfdhcp steps start a fresh server with an
//! empty lease store.
//!
//! Here the run's sections in order, and the programs it runs; in
//! `bench/`: the servers and their lab, the ramp drivers (`ramps`,
//! `perfdhcp`, `loadgen`, `reconnect`, set by `plan`), the report's model
//! and its renderings (`json`, `markdown`, `svg`, put together by
//! `report`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{cargo, root_dir, run};

mod json;
mod lab;
mod loadgen;
mod markdown;
mod model;
mod perfdhcp;
mod pg2renew;
mod pglab;
mod pgreport;
mod pgsection;
mod plan;
mod ramps;
mod reconnect;
mod report;
mod servers;
mod svg;

use lab::{cpus, lab, load_average, BenchLab, RmemGuard};
use model::{Curve, Key, Machine};
use perfdhcp::{perf_ramp, Load};
use pgreport::write_pg_report;
use pgsection::postgres_section;
use plan::BenchPlan;
use ramps::{ceiling_ramp, dora_ramp, renew_ramp, RenewRamp};
use servers::{ensure_peer_packages, System, MAX_NEW_CLIENTS};

/// `cargo xtask bench [--quick]`: sections 1 to 7 on one lab, section 8
/// (leases in PostgreSQL) on its own, the reports, then the fast path's
/// in-kernel cost.
pub fn bench(quick: bool) -> Result<()> {
    let load_before = load_average();
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let lab = lab()?;
    let plan = BenchPlan::new(quick);
    let mut run = BenchRun {
        lab: &lab,
        bin: &bin,
        plan: &plan,
        curves: Vec::new(),
    };
    run.ceiling()?;
    let rss_fast = run.fast_path_renewals()?;
    run.fast_path_shapes()?;
    run.control_plane_renewals()?;
    run.dora_and_kea_renewals()?;
    run.perfdhcp_ramps()?;
    reconnect::mass_reconnect(&lab, &bin, quick)?;
    let _ = std::fs::remove_dir_all(&lab.dir);
    let machine = Machine {
        cpus: cpus(),
        load_before,
        load_after: load_average(),
    };
    report::write_report(&run.curves, quick, &machine, false)?;
    // After the report: a failing section 8 costs only its own.
    let pg = postgres_section(&bin, &plan)?;
    write_pg_report(
        &pg,
        quick,
        &Machine {
            load_after: load_average(),
            ..machine
        },
    )?;
    if let Some(kib) = rss_fast {
        println!(
            "xdhcp RSS after the fast-path run ({} leases): {:.1} MiB",
            plan.clients,
            kib as f64 / 1024.0
        );
    }
    in_kernel_cost(quick)
}

/// `cargo xtask bench --reconnect-only`: section 7 on its own lab.
pub fn reconnect_only(quick: bool) -> Result<()> {
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let lab = lab()?;
    let r = reconnect::mass_reconnect(&lab, &bin, quick);
    let _ = std::fs::remove_dir_all(&lab.dir);
    r
}

/// `cargo xtask bench --shapes-only`: section 2b on its own lab, its
/// figures printed (the run's report is left as it was).
pub fn shapes_only(quick: bool) -> Result<()> {
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let lab = lab()?;
    let plan = BenchPlan::new(quick);
    let mut run = BenchRun {
        lab: &lab,
        bin: &bin,
        plan: &plan,
        curves: Vec::new(),
    };
    let r = run.fast_path_shapes();
    let _ = std::fs::remove_dir_all(&lab.dir);
    r?;
    for c in &run.curves {
        println!(
            "{}: {} answered/s, {}",
            c.key.label(),
            c.outcome.figure.map_or("-".into(), xdhcp_ramp::thousands),
            c.outcome.describe()
        );
    }
    Ok(())
}

/// `cargo xtask bench --pg-only`: section 8 (leases in PostgreSQL) on its
/// own lab, its report printed and written (the run's report is left as
/// it was).
pub fn pg_only(quick: bool) -> Result<()> {
    let load_before = load_average();
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let pg = postgres_section(&bin, &BenchPlan::new(quick))?;
    let machine = Machine {
        cpus: cpus(),
        load_before,
        load_after: load_average(),
    };
    write_pg_report(&pg, quick, &machine)
}

/// Redraws a run's plot, points and report from its JSON report (after a
/// change to the report, without running the bench again).
pub fn replot(path: &Path) -> Result<()> {
    let r = json::read_report(&report::read_json(path)?)?;
    report::write_report(&r.curves, r.quick, &r.machine, r.replayed)
}

/// Sections 1 to 5 on one lab: each adds its curves.
struct BenchRun<'a> {
    lab: &'a BenchLab,
    bin: &'a Path,
    plan: &'a BenchPlan,
    curves: Vec<Curve>,
}

impl BenchRun<'_> {
    /// Section 1, the ceiling: the bare XDP bounce.
    fn ceiling(&mut self) -> Result<()> {
        eprintln!(
            "== 1. ceiling: bare XDP bounce (parse + lookup + swap + XDP_TX), xdp engine, {} sending threads",
            cpus()
        );
        let ramp = ceiling_ramp(self.lab, self.bin, self.plan)?;
        self.curves.push(Curve::new(Key::Ceiling, ramp));
        Ok(())
    }

    /// Section 2: renewals answered by the fast path; the server's RSS
    /// after them.
    fn fast_path_renewals(&mut self) -> Result<Option<u64>> {
        eprintln!(
            "== 2. xdhcp renewals, fast path on ({} clients leased by DORA first)",
            self.plan.clients
        );
        self.renewals(RenewRamp::fast_path(self.plan), Key::FastPath)
    }

    /// Section 2b: the fast path's renewals in each other request shape
    /// the kernel answers (tags, client id, unpadded), each after its own
    /// DORA in that shape; then a known client's DISCOVER and SELECTING
    /// REQUEST.
    fn fast_path_shapes(&mut self) -> Result<()> {
        for (key, shape) in Key::SHAPES {
            eprintln!(
                "== 2b. xdhcp renewals, fast path on, shape {shape} ({} clients leased by DORA in that shape first)",
                self.plan.clients / 4
            );
            self.renewals(RenewRamp::fast_path_shape(self.plan, shape), key)?;
        }
        for (key, phase) in Key::RECONNECTS {
            eprintln!(
                "== 2b. xdhcp fast path, known clients' {phase} ({} clients leased by DORA first)",
                self.plan.clients / 4
            );
            self.renewals(RenewRamp::fast_path_phase(self.plan, phase), key)?;
        }
        Ok(())
    }

    /// Section 3: renewals answered by the control plane.
    fn control_plane_renewals(&mut self) -> Result<()> {
        eprintln!("== 3. xdhcp renewals, fast path off (control plane, SQLite fsync)");
        let rr = RenewRamp::control_plane(self.plan, System::Xdhcp);
        self.renewals(rr, Key::ControlPlane)?;
        Ok(())
    }

    /// Section 4: DORA, xdhcp and Kea, then Kea's renewals: the same
    /// generator.
    fn dora_and_kea_renewals(&mut self) -> Result<()> {
        eprintln!(
            "== 4. DORA: fresh server and store per step, rate × {} s new clients (at most {MAX_NEW_CLIENTS})",
            self.plan.dora_secs
        );
        let xdhcp = dora_ramp(self.lab, self.bin, System::Xdhcp, "native", self.plan)?;
        self.curves.push(Curve::new(Key::XdhcpDora, xdhcp));
        let kea = dora_ramp(self.lab, self.bin, System::Kea, "off", self.plan)?;
        self.curves.push(Curve::new(Key::KeaDora, kea));
        eprintln!("== 4b. Kea renewals, same generator");
        let rr = RenewRamp::control_plane(self.plan, System::Kea);
        self.renewals(rr, Key::KeaRenew)?;
        Ok(())
    }

    /// A renewal ramp, added as `key`; the server's RSS after it.
    fn renewals(&mut self, rr: RenewRamp, key: Key) -> Result<Option<u64>> {
        let (points, outcome, rss) = renew_ramp(self.lab, self.bin, rr)?;
        self.curves.push(Curve::new(key, (points, outcome)));
        Ok(rss)
    }

    /// Section 5: the same perfdhcp command against both (relay mode).
    fn perfdhcp_ramps(&mut self) -> Result<()> {
        let plan = self.plan;
        eprintln!(
            "== 5. perfdhcp (relay mode), {} s per step (fewer when rate × period outgrows the pool), fresh server and store each step",
            plan.perfdhcp_secs
        );
        for load in [Load::Dora, Load::Renew] {
            for system in [System::Kea, System::Xdhcp] {
                let ramp = perf_ramp(
                    self.lab,
                    system,
                    self.bin,
                    load,
                    &plan.perfdhcp,
                    plan.perfdhcp_secs,
                )?;
                self.curves.push(Curve::new(perf_key(load, system), ramp));
            }
        }
        Ok(())
    }
}

/// The curve of perfdhcp's `load` against `system`.
fn perf_key(load: Load, system: System) -> Key {
    match (load, system) {
        (Load::Dora, System::Kea) => Key::PerfDoraKea,
        (Load::Dora, System::Xdhcp) => Key::PerfDoraXdhcp,
        (Load::Renew, System::Kea) => Key::PerfRenewKea,
        (Load::Renew, System::Xdhcp) => Key::PerfRenewXdhcp,
    }
}

/// Section 6: the fast path's in-kernel cost next to the yardstick, through
/// `BPF_PROG_TEST_RUN` (no lab needed); with the full run, the control
/// plane's lease table memory.
fn in_kernel_cost(quick: bool) -> Result<()> {
    eprintln!("== 6. fast path: in-kernel cost per renewal vs parse+lookup+swap");
    run(&mut fastpath_cost_command(quick))?;
    if !quick {
        eprintln!("== memory: control plane lease table, 1,000,000 leases");
        run(&mut lease_memory_command())?;
    }
    Ok(())
}

// The programs the bench runs besides the servers and perfdhcp, one
// function each, so that where they live is said in one place.

/// Builds the release binaries (the daemon's and the load generator's,
/// which sits beside it); the daemon's path.
fn release_bin() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "xdhcp",
        "-p",
        "xdhcp-loadgen",
        "--bins",
    ]))?;
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_dir().join("target"))
        .join("release/xdhcp"))
}

/// The load generator, to which the caller adds its arguments.
fn loadgen_command(bin: &Path) -> Command {
    Command::new(bin.with_file_name("xdhcp-loadgen"))
}

/// The bare XDP bounce on the server's veth, for `clients` keys.
fn bounce_command(bin: &Path, clients: u32) -> Command {
    let mut cmd = Command::new(bin.with_file_name("xdhcp-loadgen"));
    cmd.args(["lab-bounce", "srv0", "--clients", &clients.to_string()]);
    cmd
}

/// The fast path's in-kernel cost: 1,000,000 bindings (100,000 quick).
fn fastpath_cost_command(quick: bool) -> Command {
    let (bindings, runs) = if quick {
        ("100000", "20000")
    } else {
        ("1000000", "50000")
    };
    release_example("xdhcp-tests", "fastpath_cost", &[bindings, runs])
}

/// The control plane's lease table memory at 1,000,000 leases.
fn lease_memory_command() -> Command {
    release_example("xdhcp", "lease_memory", &[])
}

/// `cargo run --release -p PACKAGE --example NAME -- ARGS`.
fn release_example(package: &str, name: &str, args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", package, "--example", name]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    cmd
}
