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
use serde_json::Value;
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
    // One queue per CPU: each loadgen thread sends on its own.
    let queues = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    lab.veth_with_queues(
        &srv,
        "srv0",
        Some("198.18.0.1/16"),
        &cli,
        "cli0",
        Some("198.18.0.2/16"),
        queues,
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
xdp = "@XDP@"

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

/// Kea for directly connected clients (loadgen): raw sockets, as Kea's
/// documentation asks for clients without an address yet.
fn kea_raw_config() -> String {
    assert!(KEA_CONFIG.contains(r#""dhcp-socket-type": "udp""#));
    KEA_CONFIG.replace(
        r#""dhcp-socket-type": "udp""#,
        r#""dhcp-socket-type": "raw""#,
    )
}

fn start(lab: &BenchLab, system: System, bin: &Path) -> Result<Logged> {
    start_with(lab, system, bin, "off", KEA_CONFIG)
}

fn start_with(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    xdp: &str,
    kea_config: &str,
) -> Result<Logged> {
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
            std::fs::write(
                &cfg,
                XDHCP_CONFIG.replace("@DIR@", &dir).replace("@XDP@", xdp),
            )?;
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
            std::fs::write(&cfg, kea_config.replace("@DIR@", &dir))?;
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

/// One ramp step: (offered/s, answered/s, loss %).
type Point = (f64, f64, f64);

/// One system's ramp, a point per step.
#[derive(Clone)]
struct Curve {
    label: String,
    points: Vec<Point>,
}

impl Curve {
    /// Highest answered rate with at most 1% loss.
    fn best(&self) -> f64 {
        self.points
            .iter()
            .filter(|p| p.2 <= 1.0)
            .map(|p| p.1)
            .fold(0.0, f64::max)
    }
}

fn points(reports: &[Value], phase: &str) -> Vec<Point> {
    reports
        .iter()
        .filter(|r| r["phase"] == phase)
        .map(|r| {
            (
                r["offered_per_s"].as_f64().unwrap_or(0.0),
                r["answered_per_s"].as_f64().unwrap_or(0.0),
                r["loss_pct"].as_f64().unwrap_or(100.0),
            )
        })
        .collect()
}

/// Runs `xdhcp loadgen ARGS --json` in the client namespace.
fn loadgen(lab: &BenchLab, bin: &Path, args: &[String]) -> Result<Vec<Value>> {
    let mut cmd = Command::new(bin);
    cmd.args(["loadgen", "--iface", "cli0", "--json"])
        .args(args);
    let out = lab.cli.command_from(&cmd).output().context("loadgen")?;
    if !out.status.success() {
        bail!(
            "loadgen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("loadgen's JSON")?;
    let steps = v.as_array().cloned().unwrap_or_default();
    for r in &steps {
        eprintln!(
            "   {:<12} {:<6} target {:>9} offered {:>10.0}/s answered {:>10.0}/s loss {:>6.2}% p99 {:>8} µs{}",
            r["phase"].as_str().unwrap_or("?"),
            r["engine"].as_str().unwrap_or("?"),
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
    }
    Ok(steps)
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

fn rates_arg(r: &[u64]) -> String {
    r.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

struct Plan {
    xdp_rates: Vec<u64>,
    xdp_secs: f64,
    cp_rates: Vec<u64>,
    cp_secs: f64,
    dora_rates: Vec<u64>,
    dora_secs: u64,
    clients: u32,
    perfdhcp_rates: Vec<u64>,
    perfdhcp_secs: u64,
}

/// Daemon RSS in KiB (from /proc).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// DORA ramp: a fresh server and store per step, `rate × secs` new clients.
fn dora_ramp(
    lab: &BenchLab,
    bin: &Path,
    system: System,
    xdp: &str,
    plan: &Plan,
) -> Result<Vec<Point>> {
    let mut pts = Vec::new();
    for &rate in &plan.dora_rates {
        let d = start_with(lab, system, bin, xdp, &kea_raw_config())?;
        let clients = rate * plan.dora_secs;
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
        let p = points(&r, "dora");
        let over = p.iter().any(|p| p.2 > 1.0);
        pts.extend(p);
        if over {
            break;
        }
    }
    Ok(pts)
}

/// DORA for `plan.clients`, then a renewal ramp with `engine`.
struct RenewRamp<'a> {
    system: System,
    /// The server's `xdp` setting.
    xdp: &'a str,
    /// loadgen's engine for the renewals.
    engine: &'a str,
    rates: &'a [u64],
    secs: f64,
    clients: u32,
}

/// Returns the steps and the server's RSS (KiB) at the end.
fn renew_ramp(lab: &BenchLab, bin: &Path, rr: RenewRamp) -> Result<(Vec<Point>, Option<u64>)> {
    let RenewRamp {
        system,
        xdp,
        engine,
        rates,
        secs,
        clients,
    } = rr;
    let d = start_with(lab, system, bin, xdp, &kea_raw_config())?;
    let mut args = vec![
        s("--clients"),
        s(clients),
        s("--phase"),
        s("dora"),
        s("--rate"),
        // Below each system's DORA limit: every client must hold a lease.
        s(if system == System::Kea { 2_000 } else { 8_000 }),
        s("--duration"),
        s(60),
        s("--phase"),
        s("renew"),
        s("--engine"),
        s(engine),
        s("--rates"),
        rates_arg(rates),
        s("--count"),
        s(1_000_000_000u64),
        s("--step-duration"),
        s(secs),
        s("--threads"),
        s(std::thread::available_parallelism().map_or(1, |n| n.get())),
    ];
    if system == System::Xdhcp {
        args.extend([
            s("--server-socket"),
            lab.dir.join("control.sock").display().to_string(),
        ]);
    }
    let r = loadgen(lab, bin, &args)?;
    let rss = rss_kib(d.pid());
    drop(d);
    let bound = r
        .iter()
        .find(|x| x["phase"] == "dora")
        .and_then(|x| x["ok"].as_u64())
        .unwrap_or(0);
    if bound < clients as u64 * 9 / 10 {
        bail!("only {bound} of {clients} clients got a lease before the renewal ramp");
    }
    Ok((points(&r, "renew"), rss))
}

/// Answered vs offered, log-log, one polyline per system.
fn svg(curves: &[Curve]) -> String {
    let (w, h, m) = (900.0, 560.0, 70.0);
    let (lo, hi) = (2.0f64, 7.0f64); // 100/s .. 10M/s
    let x = |v: f64| m + (v.max(100.0).log10() - lo) / (hi - lo) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v.max(100.0).log10() - lo) / (hi - lo) * (h - 2.0 * m);
    let colors = [
        "#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
        "#17becf",
    ];
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"24\" font-size=\"15\">answered vs offered requests/s (log-log; same veth lab, one run)</text>",
        m
    );
    for e in 2..=7 {
        let v = 10f64.powi(e);
        let label = ["100", "1k", "10k", "100k", "1M", "10M"][(e - 2) as usize];
        let _ = writeln!(
            o,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>",
            x(v),
            m,
            h - m,
            h - m + 16.0
        );
        let _ = writeln!(
            o,
            "<line x1=\"{1}\" y1=\"{0}\" x2=\"{2}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{3}\" y=\"{0}\" text-anchor=\"end\">{label}</text>",
            y(v),
            m,
            w - m,
            m - 6.0
        );
    }
    let _ = writeln!(
        o,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>",
        x(100.0),
        y(100.0),
        x(1e7),
        y(1e7)
    );
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered/s</text><text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">answered/s</text>",
        w / 2.0,
        h - 24.0,
        h / 2.0,
        h / 2.0
    );
    for (k, c) in curves.iter().enumerate() {
        let col = colors[k % colors.len()];
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                o,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{col}\"/>"
            );
        }
        let ly = m + 10.0 + 16.0 * k as f64;
        let _ = writeln!(
            o,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            m + 10.0,
            m + 30.0,
            m + 36.0,
            ly + 4.0,
            c.label.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    o.push_str("</svg>\n");
    o
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
    let plan = if quick {
        Plan {
            xdp_rates: vec![250_000, 500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000],
            xdp_secs: 1.0,
            cp_rates: vec![4_000, 8_000, 16_000, 32_000, 64_000, 96_000],
            cp_secs: 1.5,
            dora_rates: vec![
                2_000, 4_000, 6_000, 8_000, 12_000, 16_000, 24_000, 32_000, 48_000,
            ],
            dora_secs: 2,
            clients: 20_000,
            perfdhcp_rates: vec![2_000, 4_000, 8_000],
            perfdhcp_secs: 2,
        }
    } else {
        Plan {
            xdp_rates: vec![
                250_000, 500_000, 750_000, 1_000_000, 1_250_000, 1_500_000, 1_750_000, 2_000_000,
                2_500_000, 3_000_000, 4_000_000,
            ],
            xdp_secs: 3.0,
            cp_rates: vec![
                1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 16_000, 20_000, 24_000, 32_000,
                40_000, 48_000, 64_000, 80_000, 96_000,
            ],
            cp_secs: 3.0,
            dora_rates: vec![
                1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 14_000, 16_000, 20_000, 24_000,
                28_000, 32_000, 40_000, 48_000, 64_000,
            ],
            dora_secs: 3,
            clients: 50_000,
            perfdhcp_rates: vec![
                1_000, 2_000, 4_000, 6_000, 8_000, 12_000, 16_000, 20_000, 24_000, 32_000,
            ],
            perfdhcp_secs: 5,
        }
    };
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut curves: Vec<Curve> = Vec::new();

    // 1. The ceiling: the bare program bounces each request (parse, one
    // lookup in a map of all clients' keys, swap, XDP_TX).
    eprintln!("== 1. ceiling: bare XDP bounce (parse + lookup + swap + XDP_TX), xdp engine, {ncpu} sending threads");
    {
        let mut cmd = Command::new(&bin);
        cmd.args(["lab-bounce", "srv0", "--clients", &plan.clients.to_string()]);
        let b = Logged::spawn(&lab.srv, &cmd, None)?;
        b.wait_for("bounce program attached", Duration::from_secs(60))?;
        let r = loadgen(
            &lab,
            &bin,
            &[
                s("--clients"),
                s(plan.clients),
                s("--phase"),
                s("renew"),
                s("--engine"),
                s("xdp"),
                s("--threads"),
                s(ncpu),
                s("--synthetic"),
                s("198.18.1.0"),
                s("--server"),
                s("198.18.0.1"),
                s("--expect"),
                s("bounce"),
                s("--rates"),
                rates_arg(&plan.xdp_rates),
                s("--count"),
                s(1_000_000_000u64),
                s("--duration"),
                s(plan.xdp_secs),
            ],
        )?;
        drop(b);
        curves.push(Curve {
            label: "ceiling: bare XDP bounce".into(),
            points: points(&r, "renew"),
        });
    }

    // 2. Renewals answered by the fast path.
    eprintln!(
        "== 2. xdhcp renewals, fast path on ({} clients leased by DORA first)",
        plan.clients
    );
    let (p, rss_fast) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Xdhcp,
            xdp: "native",
            engine: "xdp",
            rates: &plan.xdp_rates,
            secs: plan.xdp_secs,
            clients: plan.clients,
        },
    )?;
    curves.push(Curve {
        label: "xdhcp renewals, fast path (XDP)".into(),
        points: p,
    });

    // 3. Renewals answered by the control plane.
    eprintln!("== 3. xdhcp renewals, fast path off (control plane, SQLite fsync)");
    let (p, _) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Xdhcp,
            xdp: "off",
            engine: "packet",
            rates: &plan.cp_rates,
            secs: plan.cp_secs,
            clients: plan.clients / 4,
        },
    )?;
    curves.push(Curve {
        label: "xdhcp renewals, control plane".into(),
        points: p,
    });

    // 4. DORA, xdhcp and Kea, same generator.
    eprintln!(
        "== 4. DORA: fresh server and store per step, rate × {} s new clients",
        plan.dora_secs
    );
    let p = dora_ramp(&lab, &bin, System::Xdhcp, "native", &plan)?;
    curves.push(Curve {
        label: "xdhcp DORA (SQLite fsync)".into(),
        points: p,
    });
    let p = dora_ramp(&lab, &bin, System::Kea, "off", &plan)?;
    curves.push(Curve {
        label: "Kea 2.2 DORA (memfile, 2 threads)".into(),
        points: p,
    });
    eprintln!("== 4b. Kea renewals, same generator");
    let (p, _) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Kea,
            xdp: "off",
            engine: "packet",
            rates: &plan.cp_rates,
            secs: plan.cp_secs,
            clients: plan.clients / 4,
        },
    )?;
    curves.push(Curve {
        label: "Kea 2.2 renewals".into(),
        points: p,
    });

    // 5. The same perfdhcp command against both (relay mode).
    eprintln!(
        "== 5. perfdhcp (relay mode), {} s per step, fresh server and store each step",
        plan.perfdhcp_secs
    );
    let mut perf = Vec::new();
    for load in [Load::Dora, Load::Renew] {
        for system in [System::Kea, System::Xdhcp] {
            let (best, steps) = ramp(
                &lab,
                system,
                &bin,
                load,
                &plan.perfdhcp_rates,
                plan.perfdhcp_secs,
            )?;
            perf.push((system, load, best));
            curves.push(Curve {
                label: format!(
                    "perfdhcp {}: {}",
                    if load == Load::Dora { "DORA" } else { "renew" },
                    if system == System::Kea {
                        "Kea"
                    } else {
                        "xdhcp"
                    }
                ),
                points: steps
                    .iter()
                    .map(|s| (s.offered as f64, s.answered_per_s, s.loss * 100.0))
                    .collect(),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&lab.dir);

    let best = |label: &str| {
        curves
            .iter()
            .find(|c| c.label.starts_with(label))
            .map_or(0.0, Curve::best)
    };
    let ceiling = best("ceiling");
    let kea_dora = best("Kea 2.2 DORA");
    let kea_renew = best("Kea 2.2 renewals");
    let perf_get = |sys: System, l: Load| {
        perf.iter()
            .find(|r| r.0 == sys && r.1 == l)
            .map_or(0.0, |r| r.2)
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| measurement (highest answered/s with ≤ 1% loss) | answered/s | vs ceiling | vs Kea (same generator) |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|");
    let row = |t: &mut String, label: &str, v: f64, kea: Option<f64>| {
        let _ = writeln!(
            t,
            "| {label} | {v:.0} | {:.1}% | {} |",
            100.0 * v / ceiling.max(1.0),
            kea.map_or("-".into(), |k| format!("{:.1}x", v / k.max(1.0)))
        );
    };
    row(&mut t, "1. ceiling: bare XDP bounce", ceiling, None);
    row(
        &mut t,
        "2. xdhcp renewals, fast path",
        best("xdhcp renewals, fast path"),
        Some(kea_renew),
    );
    row(
        &mut t,
        "3. xdhcp renewals, control plane",
        best("xdhcp renewals, control plane"),
        Some(kea_renew),
    );
    row(
        &mut t,
        "4. xdhcp DORA (durable)",
        best("xdhcp DORA"),
        Some(kea_dora),
    );
    row(&mut t, "   Kea 2.2 DORA", kea_dora, None);
    row(&mut t, "   Kea 2.2 renewals", kea_renew, None);
    let kd = perf_get(System::Kea, Load::Dora);
    let kr = perf_get(System::Kea, Load::Renew);
    row(&mut t, "5. perfdhcp DORA: Kea", kd, None);
    row(
        &mut t,
        "5. perfdhcp DORA: xdhcp",
        perf_get(System::Xdhcp, Load::Dora),
        Some(kd),
    );
    row(&mut t, "5. perfdhcp renewals: Kea", kr, None);
    row(
        &mut t,
        "5. perfdhcp renewals: xdhcp",
        perf_get(System::Xdhcp, Load::Renew),
        Some(kr),
    );
    println!("\n{t}");
    if let Some(kib) = rss_fast {
        println!(
            "xdhcp RSS after the fast-path run ({} leases): {:.1} MiB",
            plan.clients,
            kib as f64 / 1024.0
        );
    }
    let out_dir = root_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let plot = out_dir.join(if quick {
        "answered-vs-offered-quick.svg"
    } else {
        "answered-vs-offered.svg"
    });
    std::fs::write(&plot, svg(&curves))?;
    let mut raw = String::new();
    for c in &curves {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.0}/{:.0}/{:.2}%", p.0, p.1, p.2))
            .collect();
        let _ = writeln!(
            raw,
            "{} (offered/answered/loss): {}",
            c.label,
            pts.join(" ")
        );
    }
    std::fs::write(plot.with_extension("txt"), &raw)?;
    println!("plot: {}", plot.display());

    // 6. The fast path's in-kernel cost next to the yardstick, through
    // BPF_PROG_TEST_RUN (no lab needed): 1,000,000 bindings (100,000 quick).
    eprintln!("== 6. fast path: in-kernel cost per renewal vs parse+lookup+swap");
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
    if !quick {
        eprintln!("== memory: control plane lease table, 1,000,000 leases");
        run(cargo().args([
            "run",
            "--release",
            "-p",
            "xdhcp",
            "--example",
            "lease_memory",
        ]))?;
    }
    Ok(())
}
