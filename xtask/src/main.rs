//! Project tasks: `cargo xtask setup|test|fuzz|demo|bench|lab-clean`.
//!
//! `test` and `demo` run `setup` first; setup is idempotent and cheap when
//! everything is already there.

mod bench;
mod demo;
mod fuzz;
mod setup;
mod structure;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "xdhcp project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and packages xdhcp needs (idempotent) and
    /// check root, BPF and netns support.
    Setup,
    /// Set up, then run every check and test (fmt, clippy, unit, BPF
    /// fixtures, netns integration tests, a short run of every fuzz
    /// target).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check the structure rules alone (part of `test`): no import circle
    /// between modules, no non-test source file over 500 lines.
    Structure,
    /// Set up, build, and run the demo lab: a client namespace talking to
    /// `xdhcp serve` on the embedded default config.
    Demo,
    /// Measure xdhcp next to ISC Kea on the same lab, in one run.
    Bench {
        /// Shorter steps and fewer bisections than the full run.
        #[arg(long)]
        quick: bool,
        /// Run nothing: redraw the plot, points and report of a run from
        /// its JSON report (bench/answered-vs-offered*.json).
        #[arg(long, value_name = "JSON", conflicts_with = "quick")]
        replot: Option<PathBuf>,
        /// Only the mass-reconnect comparison (with --quick: fewer
        /// subscribers).
        #[arg(long, conflicts_with = "replot")]
        reconnect_only: bool,
        /// Only the fast path's per-shape renewal ramps (section 2b), their
        /// figures printed.
        #[arg(long, conflicts_with_all = ["replot", "reconnect_only"])]
        shapes_only: bool,
        /// Only section 8, leases in PostgreSQL (xdhcp with one and two
        /// nodes, Kea's PostgreSQL backend), its report printed and
        /// written to bench/postgres[-quick].{txt,json}.
        #[arg(long, conflicts_with_all = ["replot", "reconnect_only", "shapes_only"])]
        pg_only: bool,
    },
    /// Set up, then run the libFuzzer targets (fuzz/): 25 s each, or an
    /// hour each with --long, which also grows fuzz/corpus/.
    Fuzz {
        /// An hour a target, new inputs kept in fuzz/corpus/<target>/.
        #[arg(long)]
        long: bool,
        /// Only this target (frame, server, config, control).
        #[arg(long)]
        target: Option<String>,
        /// Seconds a target (overrides the mode's).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Remove network namespaces left by crashed test runs.
    LabClean,
}

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command from the workspace root, echoing it; fails on non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", describe(cmd));
    let status = cmd
        .current_dir(root_dir())
        .status()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn test(args: &[String]) -> Result<()> {
    setup::setup()?;
    let stale = xdhcp_lab::cleanup_stale();
    if !stale.is_empty() {
        eprintln!("xtask: removed stale lab namespaces: {stale:?}");
    }
    run(cargo().args(["fmt", "--all", "--check"]))?;
    structure::check()?;
    // The XDP crate is its own workspace.
    run(cargo().args(["fmt", "--manifest-path", "dhcp-ebpf/Cargo.toml", "--check"]))?;
    // So is the fuzz crate (cargo-fuzz's flags).
    run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The fuzz crate, on the main target directory (its dependencies are
    // the workspace's, so mostly already checked).
    run(cargo().args([
        "clippy",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--all-targets",
        "--target-dir",
        "target",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests start the real daemon and load generator.
    run(cargo().args(["build", "-p", "xdhcp", "-p", "xdhcp-loadgen", "--bins"]))?;
    run(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .arg("--")
        .args(args))?;
    // A short bounded run of every fuzz target; a crash fails the test.
    fuzz::fuzz(&fuzz::Opts {
        long: false,
        target: None,
        seconds: None,
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Task::Setup => setup::setup(),
        Task::Test { args } => test(&args),
        Task::Fuzz {
            long,
            target,
            seconds,
        } => setup::setup().and_then(|()| {
            fuzz::fuzz(&fuzz::Opts {
                long,
                target,
                seconds,
            })
        }),
        Task::Structure => structure::check(),
        Task::Demo => setup::setup().and_then(|()| demo::demo()),
        Task::Bench {
            replot: Some(json), ..
        } => bench::replot(&json),
        Task::Bench {
            quick,
            reconnect_only: true,
            ..
        } => setup::setup().and_then(|()| bench::reconnect_only(quick)),
        Task::Bench {
            quick,
            shapes_only: true,
            ..
        } => setup::setup().and_then(|()| bench::shapes_only(quick)),
        Task::Bench {
            quick,
            pg_only: true,
            ..
        } => setup::setup().and_then(|()| bench::pg_only(quick)),
        Task::Bench { quick, .. } => setup::setup().and_then(|()| bench::bench(quick)),
        Task::LabClean => {
            for ns in xdhcp_lab::cleanup_stale() {
                println!("removed {ns}");
            }
            Ok(())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
