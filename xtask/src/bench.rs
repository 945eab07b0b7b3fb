//! `cargo xtask bench`: side-by-side rates on one lab, one run.
//!
//! Control plane: xdhcp with the fast path off (durable leases: SQLite WAL,
//! fsync per group commit) and ISC Kea (Debian's kea-dhcp4-server, memfile,
//! two threads), both driven by the same perfdhcp acting as a relay. Each
//! is ramped up; the figure is the highest answered rate with at most 1%
//! loss. Every step starts a fresh server with an empty lease store.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use xdhcp_lab::{proc::Logged, Lab, Netns};

use crate::{cargo, root_dir, run};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Xdhcp,
    Kea,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Xdhcp => "xdhcp (control plane, SQLite fsync)",
            System::Kea => "Kea 2.2 (memfile, 2 threads)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Dora,
    Renew,
}

#[derive(Debug, Default, Clone)]
struct Section {
    sent: u64,
    received: u64,
}

#[derive(Debug, Default, Clone)]
struct Report {
    discover: Section,
    request: Section,
    renew: Section,
}

fn parse_perfdhcp(out: &str) -> Report {
    let mut r = Report::default();
    let mut cur: Option<&mut Section> = None;
    for line in out.lines() {
        if line.starts_with("***Statistics for:") {
            cur = if line.contains("DISCOVER-OFFER") {
                Some(&mut r.discover)
            } else if line.contains("renewal") {
                Some(&mut r.renew)
            } else if line.contains("REQUEST-ACK") {
                Some(&mut r.request)
            } else {
                None
            };
            continue;
        }
        if let Some(s) = cur.as_deref_mut() {
            if let Some(v) = line.strip_prefix("sent packets: ") {
                s.sent = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("received packets: ") {
                s.received = v.trim().parse().unwrap_or(0);
            }
        }
    }
    r
}

struct Step {
    offered: u64,
    answered_per_s: f64,
    loss: f64,
    /// xdhcp's own count: (requests received, replies sent).
    server: Option<(u64, u64)>,
}

/// Sums the numbers in "received [A=1 B=2] sent [C=3]" from xdhcp's log.
fn server_counts(lines: &[String]) -> Option<(u64, u64)> {
    let line = lines
        .iter()
        .find(|l| l.contains("control plane: received ["))?;
    let sum = |section: &str| -> u64 {
        line.split(section)
            .nth(1)
            .and_then(|r| r.split(']').next())
            .map_or(0, |kv| {
                kv.split_whitespace()
                    .filter_map(|p| p.split('=').nth(1)?.parse::<u64>().ok())
                    .sum()
            })
    };
    Some((sum("received ["), sum("sent [")))
}

struct BenchLab {
    _lab: Lab,
    srv: Netns,
    cli: Netns,
    dir: PathBuf,
}

fn lab() -> Result<BenchLab> {
    let mut lab = Lab::new("bench")?;
    let srv = lab.netns("srv")?;
    let cli = lab.netns("cli")?;
    lab.veth(
        &srv,
        "srv0",
        Some("198.18.0.1/16"),
        &cli,
        "cli0",
        Some("198.18.0.2/16"),
    )?;
    let dir = std::env::temp_dir().join(lab.prefix());
    std::fs::create_dir_all(&dir)?;
    Ok(BenchLab {
        _lab: lab,
        srv,
        cli,
        dir,
    })
}

const XDHCP_CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DIR@/xdhcp-leases.db"
lease_db_sync = "full"

[[interface]]
name = "srv0"
xdp = "off"

[logging]
level = "warn"

[options]
lease_time = 3600

[[subnet]]
id = 1
subnet = "198.18.0.0/16"
interface = "srv0"
[[subnet.pool]]
start = "198.18.1.0"
end = "198.18.255.250"
"#;

const KEA_CONFIG: &str = r#"{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "srv0" ], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": true, "lfc-interval": 0,
                      "name": "@DIR@/kea-leases4.csv" },
  "multi-threading": { "enable-multi-threading": true, "thread-pool-size": 2,
                       "packet-queue-size": 64 },
  "valid-lifetime": 3600,
  "subnet4": [ { "id": 1, "subnet": "198.18.0.0/16",
                 "pools": [ { "pool": "198.18.1.0 - 198.18.255.250" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                 "output_options": [ { "output": "stderr" } ] } ]
} }"#;

fn start(lab: &BenchLab, system: System, bin: &Path) -> Result<Logged> {
    let dir = lab.dir.display().to_string();
    for f in [
        "xdhcp-leases.db",
        "xdhcp-leases.db-wal",
        "xdhcp-leases.db-shm",
        "kea-leases4.csv",
        "kea-leases4.csv.2",
    ] {
        let _ = std::fs::remove_file(lab.dir.join(f));
    }
    let d = match system {
        System::Xdhcp => {
            let cfg = lab.dir.join("xdhcp.toml");
            std::fs::write(&cfg, XDHCP_CONFIG.replace("@DIR@", &dir))?;
            let d = Logged::spawn(
                &lab.srv,
                Command::new(bin)
                    .arg("serve")
                    .arg("--config")
                    .arg(&cfg)
                    .arg("--control-socket")
                    .arg(lab.dir.join("control.sock"))
                    .env("RUST_LOG", "warn,xdhcp::serve=info"),
                None,
            )?;
            d.wait_for("xdhcp serving", Duration::from_secs(30))?;
            d
        }
        System::Kea => {
            let cfg = lab.dir.join("kea.json");
            std::fs::write(&cfg, KEA_CONFIG.replace("@DIR@", &dir))?;
            let d = Logged::spawn(
                &lab.srv,
                Command::new("kea-dhcp4")
                    .arg("-c")
                    .arg(&cfg)
                    .env("KEA_PIDFILE_DIR", &lab.dir)
                    .env("KEA_LOCKFILE_DIR", &lab.dir),
                None,
            )?;
            // Kea logs nothing at WARN when it starts well: give it time.
            std::thread::sleep(Duration::from_secs(2));
            d
        }
    };
    Ok(d)
}

fn step(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    load: Load,
    rate: u64,
    secs: u64,
) -> Result<Step> {
    let mut d = start(lab, system, bin)?;
    let mut cmd = Command::new("perfdhcp");
    cmd.args([
        "-4",
        "-l",
        "198.18.0.2",
        "-r",
        &rate.to_string(),
        "-R",
        "1000000",
    ]);
    if load == Load::Renew {
        cmd.args(["-f", &rate.to_string()]);
    }
    cmd.args(["-p", &secs.to_string(), "-W", "1000000", "198.18.0.1"]);
    let out = lab.cli.command_from(&cmd).output().context("perfdhcp")?;
    d.signal(15);
    let _ = d.wait(Duration::from_secs(20));
    let server = if system == System::Xdhcp {
        server_counts(&d.lines())
    } else {
        None
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let r = parse_perfdhcp(&text);
    if r.discover.sent == 0 {
        bail!(
            "perfdhcp sent nothing:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Loss: DISCOVERs that never became an ACK (DORA); renewals unanswered.
    let (answered, offered_msgs) = match load {
        Load::Dora => (r.request.received, r.discover.sent),
        Load::Renew => (r.renew.received, r.renew.sent),
    };
    let mut loss = 1.0 - answered as f64 / offered_msgs.max(1) as f64;
    if load == Load::Renew {
        loss = loss.max(1.0 - r.request.received as f64 / r.discover.sent.max(1) as f64);
    }
    Ok(Step {
        offered: rate,
        answered_per_s: answered as f64 / secs as f64,
        loss: loss.max(0.0),
        server,
    })
}

/// Highest answered rate with loss ≤ 1%, ramping up until loss exceeds it.
fn ramp(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    load: Load,
    rates: &[u64],
    secs: u64,
) -> Result<(f64, Vec<Step>)> {
    let mut best = 0.0f64;
    let mut steps = Vec::new();
    for &rate in rates {
        let s = step(lab, system, bin, load, rate, secs)?;
        eprintln!(
            "   {:<38} {:<6} offered {:>6}/s answered {:>7.0}/s loss {:>6.2}%{}",
            system.name(),
            format!("{load:?}"),
            s.offered,
            s.answered_per_s,
            s.loss * 100.0,
            s.server
                .map(|(rx, tx)| format!("  (server: {rx} requests in, {tx} replies out)"))
                .unwrap_or_default()
        );
        let ok = s.loss <= 0.01;
        if ok {
            best = best.max(s.answered_per_s);
        }
        steps.push(s);
        if !ok {
            break;
        }
    }
    Ok((best, steps))
}

fn ensure_peer_packages() -> Result<()> {
    let missing: Vec<&str> = ["kea-dhcp4-server", "kea-admin"]
        .into_iter()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing))?;
    }
    // The Debian package starts a system-wide Kea; it must not compete.
    let _ = Command::new("systemctl")
        .args(["stop", "kea-dhcp4-server"])
        .status();
    Ok(())
}

/// perfdhcp takes the default socket receive buffer, which overflows at
/// ~10k replies/s on two cores: raised for the run (the knob is global,
/// namespaces read the host's value), restored on drop.
struct RmemGuard(Option<String>);

impl RmemGuard {
    fn raise() -> RmemGuard {
        let key = "/proc/sys/net/core/rmem_default";
        let old = std::fs::read_to_string(key).ok();
        if std::fs::write(key, "4194304").is_ok() {
            eprintln!(
                "xtask: net.core.rmem_default raised to 4 MiB for the benchmark (restored after)"
            );
        }
        RmemGuard(old)
    }
}

impl Drop for RmemGuard {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/net/core/rmem_default", old.trim());
        }
    }
}

pub fn bench(quick: bool) -> Result<()> {
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    run(cargo().args(["build", "--release", "-p", "xdhcp", "--bins"]))?;
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_dir().join("target"))
        .join("release/xdhcp");
    let lab = lab()?;
    let (rates, secs): (&[u64], u64) = if quick {
        (&[2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 16_000], 3)
    } else {
        (
            &[
                1_000, 2_000, 4_000, 6_000, 8_000, 12_000, 16_000, 20_000, 24_000, 32_000, 40_000,
                48_000,
            ],
            5,
        )
    };
    eprintln!("== control plane: perfdhcp as a relay, {secs} s per step, fresh server and store each step");
    let mut results = Vec::new();
    for load in [Load::Dora, Load::Renew] {
        for system in [System::Kea, System::Xdhcp] {
            let (best, _) = ramp(&lab, system, &bin, load, rates, secs)?;
            results.push((system, load, best));
        }
    }
    let get = |s: System, l: Load| {
        results
            .iter()
            .find(|r| r.0 == s && r.1 == l)
            .map_or(0.0, |r| r.2)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| load | {} | {} | xdhcp / Kea |",
        System::Kea.name(),
        System::Xdhcp.name()
    );
    let _ = writeln!(table, "|---|---:|---:|---:|");
    for (load, label) in [
        (Load::Dora, "DORA leases/s"),
        (Load::Renew, "renewals/s (with equal DORA load)"),
    ] {
        let (k, x) = (get(System::Kea, load), get(System::Xdhcp, load));
        let _ = writeln!(
            table,
            "| {label} | {k:.0} | {x:.0} | {:.2}x |",
            x / k.max(1.0)
        );
    }
    println!("\nHighest answered rate with at most 1% loss:\n\n{table}");
    let _ = std::fs::remove_dir_all(&lab.dir);

    // The fast path's in-kernel cost next to the yardstick program, through
    // BPF_PROG_TEST_RUN (no lab needed): 1,000,000 bindings (100,000 quick).
    eprintln!("== fast path: in-kernel cost per renewal vs parse+lookup+swap");
    let (bindings, runs) = if quick {
        ("100000", "20000")
    } else {
        ("1000000", "50000")
    };
    run(cargo().args([
        "run",
        "--release",
        "-p",
        "xdhcp",
        "--example",
        "fastpath_cost",
        "--",
        bindings,
        runs,
    ]))?;
    Ok(())
}
