//! `cargo xtask fuzz [--long] [--target T] [--seconds N]`: builds the
//! libFuzzer targets in fuzz/ with cargo-fuzz and runs each for a bounded
//! time, printing how many inputs each ran. A crash (or a leak, timeout or
//! out-of-memory unit) fails the command; libFuzzer leaves the input in
//! fuzz/artifacts/<target>/.
//!
//! The short run (what `cargo xtask test` does) reads the committed
//! corpus and writes what it finds to a scratch directory, so the tree
//! stays clean; `--long` grows fuzz/corpus/<target>/ itself (minimize with
//! `cargo fuzz cmin` before committing: fuzz/README.md).

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, describe, root_dir};

pub const TARGETS: &[&str] = &["frame", "server", "config", "control"];

/// Seconds per target: the short run keeps `cargo xtask test` within
/// about two minutes of fuzzing; the long one is an hour each.
const SHORT_SECS: u64 = 25;
const LONG_SECS: u64 = 3600;

/// Faster builds (cold: the whole dependency tree instrumented) for a
/// little speed per run.
const CODEGEN_UNITS: &str = "16";

pub struct Opts {
    pub long: bool,
    pub target: Option<String>,
    pub seconds: Option<u64>,
}

struct Report {
    target: String,
    secs: f64,
    execs: u64,
    cov: String,
    result: String,
}

/// AddressSanitizer needs the toolchain's runtime (rustup's toolchains
/// ship it; Debian's rustc does not): without it the targets still run,
/// with panics, overflow checks and debug assertions as the oracles.
fn sanitizer() -> &'static str {
    let sysroot = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let lib = sysroot.map(|s| s.join("lib/rustlib/x86_64-unknown-linux-gnu/lib"));
    let has_asan = lib
        .and_then(|l| std::fs::read_dir(l).ok())
        .is_some_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_rt.asan.a"))
        });
    if has_asan {
        "address"
    } else {
        eprintln!("xtask: this toolchain has no AddressSanitizer runtime: fuzzing without ASan");
        "none"
    }
}

fn cargo_fuzz() -> Command {
    let mut c = cargo();
    // -Zsanitizer is a nightly flag: the stable toolchain allows it with
    // RUSTC_BOOTSTRAP (the build script of dhcp-user sets its own
    // environment for the BPF build).
    c.env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root_dir().join("fuzz"))
        .arg("fuzz");
    c
}

fn build_args(c: &mut Command, sanitizer: &str) {
    c.args(["--sanitizer", sanitizer, "--codegen-units", CODEGEN_UNITS]);
}

pub fn fuzz(o: &Opts) -> Result<()> {
    let targets: Vec<&str> = match &o.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("no fuzz target {t:?}; there are {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    let secs = o
        .seconds
        .unwrap_or(if o.long { LONG_SECS } else { SHORT_SECS });
    let san = sanitizer();
    let fuzz_dir = root_dir().join("fuzz");
    let mut build = cargo_fuzz();
    build.arg("build");
    build_args(&mut build, san);
    let t0 = Instant::now();
    crate::run(&mut build)?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let logs = fuzz_dir.join("target/logs");
    std::fs::create_dir_all(&logs)?;
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let mut dirs = Vec::new();
        if !o.long {
            // New inputs go to the first directory: a scratch one.
            let scratch = fuzz_dir.join("target/scratch-corpus").join(t);
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch)?;
            dirs.push(scratch);
        }
        dirs.push(corpus);
        let r = run_target(t, &dirs, secs, san, &logs.join(format!("{t}.log")))?;
        if r.result != "ok" {
            failed.push(t.to_string());
        }
        reports.push(r);
    }
    eprintln!(
        "\nxtask: fuzzing ({} mode, {secs} s a target, sanitizer {san}):",
        if o.long { "long" } else { "short" }
    );
    eprintln!(
        "  {:<8} {:>7} {:>12} {:>9}  {:<32} result",
        "target", "secs", "executions", "exec/s", "coverage"
    );
    for r in &reports {
        eprintln!(
            "  {:<8} {:>7.1} {:>12} {:>9.0}  {:<32} {}",
            r.target,
            r.secs,
            r.execs,
            r.execs as f64 / r.secs.max(0.001),
            r.cov,
            r.result
        );
    }
    println!(
        "fuzz: {} passed, {} failed",
        reports.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/<target>/, logs in fuzz/target/logs/; \
             reproduce with `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --codegen-units 16 <target> <artifact>`)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_target(t: &str, dirs: &[PathBuf], secs: u64, san: &str, log: &Path) -> Result<Report> {
    let mut c = cargo_fuzz();
    c.args(["run"]);
    build_args(&mut c, san);
    c.arg(t).args(dirs).args([
        "--".to_string(),
        format!("-max_total_time={secs}"),
        "-print_final_stats=1".into(),
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
    ]);
    eprintln!("xtask: {}", describe(&c));
    let t0 = Instant::now();
    let mut child = c
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", describe(&c)))?;
    let mut file = std::fs::File::create(log)?;
    let stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut execs = 0u64;
    let mut cov = String::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let _ = writeln!(file, "{line}");
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units: ") {
            execs = n.trim().parse().unwrap_or(0);
        }
        if let Some(i) = line.find("cov: ") {
            let rest = &line[i..];
            let end = rest
                .find(" lim:")
                .or_else(|| rest.find(" exec/s"))
                .unwrap_or(rest.len());
            cov = rest[..end].to_string();
        }
        // The progress lines (a new input, a reduced one, newly covered
        // functions) go to the log only.
        let progress = line.contains("NEW_FUNC[")
            || (line.starts_with('#')
                && (line.contains(" NEW ")
                    || line.contains(" REDUCE ")
                    || line.contains(" pulse ")));
        if !progress {
            eprintln!("  {t}: {line}");
        }
    }
    for line in out_thread.join().unwrap_or_default() {
        let _ = writeln!(file, "{line}");
        eprintln!("  {t}: {line}");
    }
    let status = child.wait()?;
    Ok(Report {
        target: t.to_string(),
        secs: t0.elapsed().as_secs_f64(),
        execs,
        cov,
        result: if status.success() {
            "ok".into()
        } else {
            format!("FAILED ({status})")
        },
    })
}
