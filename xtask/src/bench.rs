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

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xdhcp_lab::{proc::Logged, Lab, Netns};
use xdhcp_ramp::{
    ratio, Bound, End, Figure, Limits, Outcome, Plan, Ramp, Ratio, Role, Stage, Style, Verdict,
};

use crate::{cargo, root_dir, run};

mod reconnect;

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

/// One perfdhcp step.
struct Step {
    /// Requests sent per second (DISCOVERs for DORA, renewals for renew).
    offered_per_s: f64,
    answered_per_s: f64,
    loss: f64,
    /// xdhcp's own count: (requests received, replies sent).
    server: Option<(u64, u64)>,
}

/// Most new clients one step may bring: the pool (198.18.1.0 -
/// 198.18.255.250) holds 65,275 addresses, and a step that outgrows it
/// loses to exhaustion, not to the server.
const MAX_NEW_CLIENTS: u64 = 60_000;

/// perfdhcp's test period at `rate`: `secs`, shortened so that the step's
/// new clients fit the pool (whole seconds, at least 1).
fn perfdhcp_secs(rate: u64, secs: u64) -> u64 {
    secs.min((MAX_NEW_CLIENTS / rate.max(1)).max(1))
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
        offered_per_s: offered_msgs as f64 / secs as f64,
        answered_per_s: answered as f64 / secs as f64,
        loss: loss.max(0.0),
        server,
    })
}

/// perfdhcp against `system`, ramped by `cfg` (a fresh server per step).
fn perf_ramp(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    load: Load,
    cfg: &RampCfg,
    secs: u64,
) -> Result<(Vec<Pt>, Outcome)> {
    let mut ramp = cfg.ramp();
    let started = Instant::now();
    let mut pts = Vec::new();
    while let Some(rate) = ramp.next_rate() {
        let stage = ramp.stage();
        let s = step(lab, system, bin, load, rate, perfdhcp_secs(rate, secs))?;
        eprintln!(
            "   {:<38} {:<6} {:<6} target {:>6}/s offered {:>7.0}/s answered {:>7.0}/s loss {:>6.2}%{}",
            system.name(),
            format!("{load:?}"),
            stage.name(),
            rate,
            s.offered_per_s,
            s.answered_per_s,
            s.loss * 100.0,
            s.server
                .map(|(rx, tx)| format!("  (server: {rx} requests in, {tx} replies out)"))
                .unwrap_or_default()
        );
        ramp.record(
            rate,
            s.offered_per_s,
            s.answered_per_s,
            s.loss * 100.0,
            started.elapsed().as_secs_f64(),
        );
        pts.push(Pt {
            target: rate,
            offered: s.offered_per_s,
            answered: s.answered_per_s,
            loss_pct: s.loss * 100.0,
            refine: stage == Stage::Refine,
        });
    }
    let o = ramp.outcome();
    eprintln!("   -> ramp ended: {}", o.describe());
    Ok((pts, o))
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

/// Daemon RSS in KiB (from /proc).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A ramp step as plotted and written out.
#[derive(Clone, Debug, PartialEq)]
struct Pt {
    target: u64,
    offered: f64,
    answered: f64,
    loss_pct: f64,
    /// A bisection step at the knee.
    refine: bool,
}

/// Which measurement a curve is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Ceiling,
    FastPath,
    ControlPlane,
    XdhcpDora,
    KeaDora,
    KeaRenew,
    PerfDoraKea,
    PerfDoraXdhcp,
    PerfRenewKea,
    PerfRenewXdhcp,
}

impl Key {
    const ALL: [Key; 10] = [
        Key::Ceiling,
        Key::FastPath,
        Key::ControlPlane,
        Key::XdhcpDora,
        Key::KeaDora,
        Key::KeaRenew,
        Key::PerfDoraKea,
        Key::PerfDoraXdhcp,
        Key::PerfRenewKea,
        Key::PerfRenewXdhcp,
    ];

    /// The curve's label in the plot, txt and JSON.
    fn label(self) -> &'static str {
        match self {
            Key::Ceiling => "ceiling: bare XDP bounce",
            Key::FastPath => "xdhcp renewals, fast path (XDP)",
            Key::ControlPlane => "xdhcp renewals, control plane",
            Key::XdhcpDora => "xdhcp DORA (SQLite fsync)",
            Key::KeaDora => "Kea 2.2 DORA (memfile, 2 threads)",
            Key::KeaRenew => "Kea 2.2 renewals",
            Key::PerfDoraKea => "perfdhcp DORA: Kea",
            Key::PerfDoraXdhcp => "perfdhcp DORA: xdhcp",
            Key::PerfRenewKea => "perfdhcp renew: Kea",
            Key::PerfRenewXdhcp => "perfdhcp renew: xdhcp",
        }
    }

    /// The name a ratio's note uses ("≤ 97.6% (ceiling capped)").
    fn short(self) -> &'static str {
        match self {
            Key::Ceiling => "ceiling",
            Key::FastPath => "fast path",
            Key::ControlPlane => "control plane",
            Key::XdhcpDora => "xdhcp DORA",
            Key::KeaDora => "Kea DORA",
            Key::KeaRenew => "Kea renewals",
            Key::PerfDoraKea | Key::PerfRenewKea => "Kea",
            Key::PerfDoraXdhcp | Key::PerfRenewXdhcp => "xdhcp",
        }
    }
}

/// One system's ramp: its steps and how it ended.
#[derive(Clone, Debug)]
struct Curve {
    key: Key,
    points: Vec<Pt>,
    outcome: Outcome,
}

impl Curve {
    fn new(key: Key, (points, outcome): (Vec<Pt>, Outcome)) -> Curve {
        Curve {
            key,
            points,
            outcome,
        }
    }

    fn figure(&self) -> Figure {
        self.outcome.as_figure()
    }
}

/// The steps of `phase` in loadgen's JSON.
fn points(reports: &[Value], phase: &str) -> Vec<Pt> {
    reports
        .iter()
        .filter(|r| r["phase"] == phase)
        .map(|r| Pt {
            target: r["target_per_s"].as_u64().unwrap_or(0),
            offered: r["offered_per_s"].as_f64().unwrap_or(0.0),
            answered: r["answered_per_s"].as_f64().unwrap_or(0.0),
            loss_pct: r["loss_pct"].as_f64().unwrap_or(100.0),
            refine: r["ramp"]["stage"] == "refine",
        })
        .collect()
}

/// How loadgen's ramp of `phase` ended (its last step's `ramp.end`).
fn loadgen_outcome(reports: &[Value], phase: &str) -> Result<Outcome> {
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
    let knee = e["knee_offered_per_s"]
        .as_array()
        .and_then(|k| Some((k.first()?.as_f64()?, k.get(1)?.as_f64()?)));
    let knee_targets = e["knee_target_per_s"]
        .as_array()
        .and_then(|k| Some((k.first()?.as_u64()?, k.get(1)?.as_u64()?)));
    Ok(Outcome {
        end,
        figure: e["figure_per_s"].as_f64(),
        knee,
        knee_targets,
        steps: e["steps"].as_u64().unwrap_or(0) as u32,
    })
}

/// Runs `xdhcp-loadgen ARGS --json` (beside the daemon's `bin`) in the
/// client namespace.
fn loadgen(lab: &BenchLab, bin: &Path, args: &[String]) -> Result<Vec<Value>> {
    let mut cmd = Command::new(bin.with_file_name("xdhcp-loadgen"));
    cmd.args(["--iface", "cli0", "--json"]).args(args);
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
            eprintln!(
                "   (beyond the loss threshold: waited {w:.1} s for the interface to go quiet)"
            );
        }
        if let Some(summary) = r["ramp"]["end"]["summary"].as_str() {
            eprintln!("   -> ramp ended: {summary}");
        }
    }
    Ok(steps)
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

/// Loss (percent) beyond which a step is past the knee.
const MAX_LOSS_PCT: f64 = 1.0;

/// An adaptive ramp (see `xdhcp_ramp`): from `from`, `factor` per step
/// until loss or plateau, then `refine` bisections; at most `max_steps`
/// steps, `max_secs` seconds and `max_rate`.
#[derive(Clone, Copy, Debug)]
struct RampCfg {
    from: u64,
    factor: f64,
    refine: u32,
    max_steps: u32,
    max_secs: f64,
    max_rate: u64,
}

impl RampCfg {
    fn ramp(&self) -> Ramp {
        Ramp::new(
            Plan::Geometric {
                start: self.from,
                factor: self.factor,
                refine: self.refine,
            },
            Limits {
                max_loss_pct: MAX_LOSS_PCT,
                max_steps: self.max_steps,
                max_secs: self.max_secs,
                max_rate: self.max_rate,
            },
        )
    }

    /// The same ramp, run by loadgen.
    fn loadgen_args(&self) -> Vec<String> {
        vec![
            s("--ramp-from"),
            s(self.from),
            s("--ramp-factor"),
            s(self.factor),
            s("--ramp-refine"),
            s(self.refine),
            s("--ramp-max-steps"),
            s(self.max_steps),
            s("--ramp-max-secs"),
            s(self.max_secs),
            s("--ramp-max-rate"),
            s(self.max_rate),
            s("--max-loss"),
            s(MAX_LOSS_PCT),
        ]
    }
}

/// What a run ramps, and how long each step sends.
struct BenchPlan {
    xdp: RampCfg,
    xdp_secs: f64,
    cp: RampCfg,
    cp_secs: f64,
    dora: RampCfg,
    dora_secs: u64,
    clients: u32,
    perfdhcp: RampCfg,
    perfdhcp_secs: u64,
}

impl BenchPlan {
    /// Factor-2 probes and four bisections: the knee to 1/16 of a probe
    /// step (6%).
    fn quick() -> BenchPlan {
        let r = |from, max_rate, max_secs| RampCfg {
            from,
            factor: 2.0,
            refine: 4,
            max_steps: 14,
            max_secs,
            max_rate,
        };
        BenchPlan {
            xdp: r(500_000, 64_000_000, 90.0),
            xdp_secs: 1.0,
            cp: r(4_000, 2_000_000, 90.0),
            cp_secs: 1.5,
            dora: r(2_000, 1_000_000, 150.0),
            dora_secs: 2,
            clients: 20_000,
            perfdhcp: RampCfg {
                refine: 3,
                max_steps: 9,
                ..r(1_000, MAX_NEW_CLIENTS, 90.0)
            },
            perfdhcp_secs: 2,
        }
    }

    /// Factor-1.5 probes and five bisections: the knee to 1/64 of a probe
    /// step (under 1%).
    fn full() -> BenchPlan {
        let r = |from, max_rate, max_secs| RampCfg {
            from,
            factor: 1.5,
            refine: 5,
            max_steps: 26,
            max_secs,
            max_rate,
        };
        BenchPlan {
            xdp: r(250_000, 64_000_000, 400.0),
            xdp_secs: 3.0,
            cp: r(1_000, 2_000_000, 400.0),
            cp_secs: 3.0,
            dora: r(1_000, 1_000_000, 600.0),
            dora_secs: 3,
            clients: 50_000,
            perfdhcp: RampCfg {
                refine: 4,
                max_steps: 20,
                ..r(1_000, MAX_NEW_CLIENTS, 400.0)
            },
            perfdhcp_secs: 5,
        }
    }
}

/// DORA ramp: a fresh server and store per step, `rate × secs` new clients
/// (at most [`MAX_NEW_CLIENTS`], the step then shorter).
fn dora_ramp(
    lab: &BenchLab,
    bin: &Path,
    system: System,
    xdp: &str,
    plan: &BenchPlan,
) -> Result<(Vec<Pt>, Outcome)> {
    let mut ramp = plan.dora.ramp();
    let started = Instant::now();
    let mut pts = Vec::new();
    while let Some(rate) = ramp.next_rate() {
        let stage = ramp.stage();
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
        let p = points(&r, "dora")
            .into_iter()
            .next()
            .context("loadgen reported no DORA phase")?;
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

/// DORA for `plan.clients`, then a renewal ramp with `engine`.
struct RenewRamp<'a> {
    system: System,
    /// The server's `xdp` setting.
    xdp: &'a str,
    /// loadgen's engine for the renewals.
    engine: &'a str,
    ramp: &'a RampCfg,
    secs: f64,
    clients: u32,
}

/// Returns the steps, how the ramp ended and the server's RSS (KiB).
fn renew_ramp(
    lab: &BenchLab,
    bin: &Path,
    rr: RenewRamp,
) -> Result<(Vec<Pt>, Outcome, Option<u64>)> {
    let RenewRamp {
        system,
        xdp,
        engine,
        ramp,
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
        s("--count"),
        s(1_000_000_000u64),
        s("--step-duration"),
        s(secs),
        s("--threads"),
        s(std::thread::available_parallelism().map_or(1, |n| n.get())),
    ];
    args.extend(ramp.loadgen_args());
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
    Ok((points(&r, "renew"), loadgen_outcome(&r, "renew")?, rss))
}

/// Series colours: ten distinct ones, then golden-angle hues, so no two
/// series share one however many there are.
fn colour(k: usize) -> String {
    const PALETTE: [&str; 10] = [
        "#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
        "#17becf", "#bcbd22",
    ];
    match PALETTE.get(k) {
        Some(c) => (*c).into(),
        None => format!(
            "hsl({:.1},70%,40%)",
            (k - PALETTE.len()) as f64 * 137.508 % 360.0
        ),
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A rate as "2.70M", "36.0k", "950".
fn short_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `text` in lines of at most `width` characters (broken at spaces; the
/// lines after the first indented).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
            cur.push_str("    ");
        }
        if !cur.is_empty() && !cur.ends_with("    ") {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    lines.push(cur);
    lines
}

/// Answered vs offered, log-log, one polyline and colour per system; the
/// legend gives each figure and how its ramp ended, the notes under the
/// plot the ratios with their status.
fn svg(curves: &[Curve], notes: &[String]) -> String {
    let (w, plot_h, m) = (900.0, 560.0, 70.0);
    let notes: Vec<String> = notes.iter().flat_map(|n| wrap(n, 125)).collect();
    let h = plot_h + 10.0 + 16.0 * notes.len() as f64;
    let (lo, hi) = (2.0f64, 7.0f64); // 100/s .. 10M/s
    let x = |v: f64| m + (v.max(100.0).log10() - lo) / (hi - lo) * (w - 2.0 * m);
    let y = |v: f64| plot_h - m - (v.max(100.0).log10() - lo) / (hi - lo) * (plot_h - 2.0 * m);
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
            plot_h - m,
            plot_h - m + 16.0
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
        plot_h - 24.0,
        plot_h / 2.0,
        plot_h / 2.0
    );
    for (k, c) in curves.iter().enumerate() {
        let col = colour(k);
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .map(|p| (x(p.offered), y(p.answered)))
            .collect();
        // The line joins the steps by offered rate, not in the order run
        // (a refinement goes back and forth).
        let mut by_offered = pts.clone();
        by_offered.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<String> = by_offered
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        for (p, (px, py)) in c.points.iter().zip(&pts) {
            // Refinement steps hollow, probing steps filled.
            let fill = if p.refine { "white" } else { col.as_str() };
            let _ = writeln!(
                o,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{fill}\" stroke=\"{col}\"/>"
            );
        }
        let ly = m + 10.0 + 16.0 * k as f64;
        let figure = c
            .outcome
            .figure
            .map_or("no step within 1% loss".into(), |f| {
                format!("{}/s", short_rate(f))
            });
        let _ = writeln!(
            o,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            m + 10.0,
            m + 30.0,
            m + 36.0,
            ly + 4.0,
            esc(&format!("{}: {figure}, {}", c.key.label(), c.outcome.end))
        );
    }
    for (i, n) in notes.iter().enumerate() {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            m,
            plot_h + 6.0 + 16.0 * i as f64,
            esc(n)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// Table rows: label, curve, and the peer it is compared with.
const ROWS: [(&str, Key, Option<Key>); 10] = [
    ("1. ceiling: bare XDP bounce", Key::Ceiling, None),
    (
        "2. xdhcp renewals, fast path (XDP)",
        Key::FastPath,
        Some(Key::KeaRenew),
    ),
    (
        "3. xdhcp renewals, fast path off (control plane, SQLite fsync)",
        Key::ControlPlane,
        Some(Key::KeaRenew),
    ),
    (
        "4. xdhcp DORA, durable leases",
        Key::XdhcpDora,
        Some(Key::KeaDora),
    ),
    (
        "   Kea 2.2 DORA (memfile, 2 threads), loadgen",
        Key::KeaDora,
        None,
    ),
    ("   Kea 2.2 renewals, loadgen", Key::KeaRenew, None),
    ("5. perfdhcp DORA: Kea", Key::PerfDoraKea, None),
    (
        "5. perfdhcp DORA: xdhcp",
        Key::PerfDoraXdhcp,
        Some(Key::PerfDoraKea),
    ),
    ("5. perfdhcp renewals: Kea", Key::PerfRenewKea, None),
    (
        "5. perfdhcp renewals: xdhcp",
        Key::PerfRenewXdhcp,
        Some(Key::PerfRenewKea),
    ),
];

/// The issue's targets: (what, numerator, denominator, role, at least).
const TARGETS: [(&str, Key, Key, Role, f64, Style); 3] = [
    (
        "fast-path renewals >= 70% of the bare ceiling",
        Key::FastPath,
        Key::Ceiling,
        Role::Ceiling,
        0.70,
        Style::Percent,
    ),
    (
        "fast-path renewals >= 300x Kea's renewals (same generator)",
        Key::FastPath,
        Key::KeaRenew,
        Role::Peer,
        300.0,
        Style::Times,
    ),
    (
        "control-plane DORA >= 3x Kea's, durable leases (same generator)",
        Key::XdhcpDora,
        Key::KeaDora,
        Role::Peer,
        3.0,
        Style::Times,
    ),
];

fn curve(curves: &[Curve], key: Key) -> Option<&Curve> {
    curves.iter().find(|c| c.key == key)
}

/// `num / den` with its status, by the reporting rule.
fn ratio_of(curves: &[Curve], num: Key, den: Key, role: Role) -> Option<Ratio> {
    let (n, d) = (curve(curves, num)?, curve(curves, den)?);
    n.outcome.figure?;
    ratio(n.figure(), d.figure(), role)
}

fn ratio_text(curves: &[Curve], num: Key, den: Key, role: Role, style: Style) -> String {
    ratio_of(curves, num, den, role).map_or("-".into(), |r| r.text(style, num.short(), den.short()))
}

fn bound_name(b: Bound) -> &'static str {
    match b {
        Bound::Measured => "measured",
        Bound::AtLeast => "at_least",
        Bound::AtMost => "at_most",
        Bound::Neither => "no_bound",
    }
}

/// The results table; every ratio carries its status.
fn table(curves: &[Curve]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| measurement (highest answered/s with <= 1% loss) | answered/s | ramp ended | vs ceiling | vs Kea (same generator) |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|");
    for (label, key, kea) in ROWS {
        let Some(c) = curve(curves, key) else {
            continue;
        };
        let vs_ceiling = if key == Key::Ceiling {
            "(the ceiling)".into()
        } else {
            ratio_text(curves, key, Key::Ceiling, Role::Ceiling, Style::Percent)
        };
        let vs_kea = kea.map_or("-".into(), |k| {
            ratio_text(curves, key, k, Role::Peer, Style::Times)
        });
        let _ = writeln!(
            t,
            "| {label} | {} | {} | {vs_ceiling} | {vs_kea} |",
            c.outcome.figure.map_or("-".into(), xdhcp_ramp::thousands),
            c.outcome.describe()
        );
    }
    t
}

/// One line per target: the ratio with its status, and whether the rule
/// lets it count as met. On a machine that was `busy`, a target met by the
/// rule is flagged as no claim.
fn target_lines(curves: &[Curve], busy: bool) -> Vec<String> {
    TARGETS
        .iter()
        .map(
            |&(what, num, den, role, at_least, style)| match ratio_of(curves, num, den, role) {
                Some(r) => {
                    let v = r.against(at_least);
                    format!(
                        "{what}: {} -> {}{}",
                        r.text(style, num.short(), den.short()),
                        v.name(),
                        if busy && v == Verdict::Met {
                            " by the rule, but the machine was busy: not a claim"
                        } else {
                            ""
                        }
                    )
                }
                None => format!("{what}: no figure -> undecided"),
            },
        )
        .collect()
}

/// The run as JSON: curves with their ends, ratios with their status.
fn json_report(curves: &[Curve], quick: bool, busy: bool) -> Value {
    let mut ratios = Vec::new();
    for (_, key, kea) in ROWS {
        let mut pairs = vec![(Key::Ceiling, Role::Ceiling, Style::Percent)];
        pairs.extend(kea.map(|k| (k, Role::Peer, Style::Times)));
        for (den, role, style) in pairs {
            if key == den {
                continue;
            }
            if let Some(r) = ratio_of(curves, key, den, role) {
                ratios.push(serde_json::json!({
                    "num": num_label(key),
                    "den": num_label(den),
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
    let targets: Vec<Value> = TARGETS
        .iter()
        .zip(target_lines(curves, busy))
        .map(|(&(what, num, den, role, at_least, _), line)| {
            serde_json::json!({
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
        .collect();
    serde_json::json!({
        "run": if quick { "quick" } else { "full" },
        "max_loss_pct": MAX_LOSS_PCT,
        "curves": curves.iter().map(|c| serde_json::json!({
            "label": c.key.label(),
            "end": c.outcome.end.name(),
            "ended": c.outcome.describe(),
            "figure_per_s": c.outcome.figure,
            "knee_offered_per_s": c.outcome.knee.map(|(a, b)| [a, b]),
            "knee_target_per_s": c.outcome.knee_targets.map(|(a, b)| [a, b]),
            "steps": c.points.iter().map(|p| serde_json::json!({
                "target_per_s": p.target,
                "offered_per_s": p.offered,
                "answered_per_s": p.answered,
                "loss_pct": p.loss_pct,
                "stage": if p.refine { "refine" } else { "probe" },
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ratios": ratios,
        "targets": targets,
    })
}

fn num_label(key: Key) -> &'static str {
    ROWS.iter()
        .find(|r| r.1 == key)
        .map_or("?", |r| r.0.trim_start())
}

pub fn bench(quick: bool) -> Result<()> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let lab = lab()?;
    let plan = if quick {
        BenchPlan::quick()
    } else {
        BenchPlan::full()
    };
    let mut curves: Vec<Curve> = Vec::new();

    // 1. The ceiling: the bare program bounces each request (parse, one
    // lookup in a map of all clients' keys, swap, XDP_TX).
    eprintln!("== 1. ceiling: bare XDP bounce (parse + lookup + swap + XDP_TX), xdp engine, {ncpu} sending threads");
    {
        let mut cmd = Command::new(bin.with_file_name("xdhcp-loadgen"));
        cmd.args(["lab-bounce", "srv0", "--clients", &plan.clients.to_string()]);
        let b = Logged::spawn(&lab.srv, &cmd, None)?;
        b.wait_for("bounce program attached", Duration::from_secs(60))?;
        let mut args = vec![
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
            s("--count"),
            s(1_000_000_000u64),
            s("--step-duration"),
            s(plan.xdp_secs),
        ];
        args.extend(plan.xdp.loadgen_args());
        let r = loadgen(&lab, &bin, &args)?;
        drop(b);
        curves.push(Curve::new(
            Key::Ceiling,
            (points(&r, "renew"), loadgen_outcome(&r, "renew")?),
        ));
    }

    // 2. Renewals answered by the fast path.
    eprintln!(
        "== 2. xdhcp renewals, fast path on ({} clients leased by DORA first)",
        plan.clients
    );
    let (points, outcome, rss_fast) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Xdhcp,
            xdp: "native",
            engine: "xdp",
            ramp: &plan.xdp,
            secs: plan.xdp_secs,
            clients: plan.clients,
        },
    )?;
    curves.push(Curve::new(Key::FastPath, (points, outcome)));

    // 3. Renewals answered by the control plane.
    eprintln!("== 3. xdhcp renewals, fast path off (control plane, SQLite fsync)");
    let (points, outcome, _) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Xdhcp,
            xdp: "off",
            engine: "packet",
            ramp: &plan.cp,
            secs: plan.cp_secs,
            clients: plan.clients / 4,
        },
    )?;
    curves.push(Curve::new(Key::ControlPlane, (points, outcome)));

    // 4. DORA, xdhcp and Kea, same generator.
    eprintln!(
        "== 4. DORA: fresh server and store per step, rate × {} s new clients (at most {MAX_NEW_CLIENTS})",
        plan.dora_secs
    );
    curves.push(Curve::new(
        Key::XdhcpDora,
        dora_ramp(&lab, &bin, System::Xdhcp, "native", &plan)?,
    ));
    curves.push(Curve::new(
        Key::KeaDora,
        dora_ramp(&lab, &bin, System::Kea, "off", &plan)?,
    ));
    eprintln!("== 4b. Kea renewals, same generator");
    let (points, outcome, _) = renew_ramp(
        &lab,
        &bin,
        RenewRamp {
            system: System::Kea,
            xdp: "off",
            engine: "packet",
            ramp: &plan.cp,
            secs: plan.cp_secs,
            clients: plan.clients / 4,
        },
    )?;
    curves.push(Curve::new(Key::KeaRenew, (points, outcome)));

    // 5. The same perfdhcp command against both (relay mode).
    eprintln!(
        "== 5. perfdhcp (relay mode), {} s per step (fewer when rate × period outgrows the pool), fresh server and store each step",
        plan.perfdhcp_secs
    );
    for load in [Load::Dora, Load::Renew] {
        for system in [System::Kea, System::Xdhcp] {
            let ramp = perf_ramp(&lab, system, &bin, load, &plan.perfdhcp, plan.perfdhcp_secs)?;
            let key = match (load, system) {
                (Load::Dora, System::Kea) => Key::PerfDoraKea,
                (Load::Dora, System::Xdhcp) => Key::PerfDoraXdhcp,
                (Load::Renew, System::Kea) => Key::PerfRenewKea,
                (Load::Renew, System::Xdhcp) => Key::PerfRenewXdhcp,
            };
            curves.push(Curve::new(key, ramp));
        }
    }
    mass_reconnect(&lab, &bin, quick)?;
    let _ = std::fs::remove_dir_all(&lab.dir);

    let machine = Machine {
        cpus: ncpu,
        load_before,
        load_after: load_average(),
    };
    write_report(&curves, quick, &machine, false)?;
    if let Some(kib) = rss_fast {
        println!(
            "xdhcp RSS after the fast-path run ({} leases): {:.1} MiB",
            plan.clients,
            kib as f64 / 1024.0
        );
    }

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
        "xdhcp-loadgen",
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
/// Section 7, mass reconnect, xdhcp and Kea: prints the table and writes
/// `bench/reconnect.json` (`reconnect-quick.json` with --quick).
fn mass_reconnect(lab: &BenchLab, bin: &Path, quick: bool) -> Result<()> {
    let n = if quick { 20_000 } else { MAX_NEW_CLIENTS };
    eprintln!("== 7. mass reconnect: {n} bound subscribers come back at once (half DISCOVER+REQUEST, half INIT-REBOOT)");
    // DORA first at rates each server takes without loss, so all are bound.
    let rs = vec![
        reconnect::run(lab, bin, System::Xdhcp, n, 10_000)?,
        reconnect::run(lab, bin, System::Kea, n, 3_000)?,
    ];
    println!("\n{}", reconnect::table(&rs));
    let name = if quick {
        "reconnect-quick.json"
    } else {
        "reconnect.json"
    };
    let path = root_dir().join("bench").join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&reconnect::json(&rs))?)?;
    eprintln!("reconnect report: {}", path.display());
    Ok(())
}

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

/// `cargo xtask bench --reconnect-only`: section 7 on its own lab.
pub fn reconnect_only(quick: bool) -> Result<()> {
    ensure_peer_packages()?;
    let _rmem = RmemGuard::raise();
    let bin = release_bin()?;
    let lab = lab()?;
    let r = mass_reconnect(&lab, &bin, quick);
    let _ = std::fs::remove_dir_all(&lab.dir);
    r
}

/// The machine's state around the run.
struct Machine {
    cpus: usize,
    load_before: Option<f64>,
    load_after: Option<f64>,
}

impl Machine {
    /// Busy before the bench started: a 1-minute load above half its CPUs.
    fn busy(&self) -> bool {
        self.load_before.is_some_and(|l| l > 0.5 * self.cpus as f64)
    }
}

/// Prints the table, the targets and the load caveat; writes the plot, its
/// points (.txt) and the report (.json) to bench/.
/// `replayed`: the curves are an old run's fixed ramps, classified by
/// [`replay`].
fn write_report(curves: &[Curve], quick: bool, machine: &Machine, replayed: bool) -> Result<()> {
    let t = table(curves);
    let targets = target_lines(curves, machine.busy());
    let load = load_note(machine);
    println!("\n{t}");
    println!("Targets (by the reporting rule: a figure is bounded above by its knee, a ceiling that plateaued is the ceiling, anything else is a lower bound):");
    for l in &targets {
        println!("- {l}");
    }
    println!("{load}");
    let out_dir = root_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let plot = out_dir.join(if quick {
        "answered-vs-offered-quick.svg"
    } else {
        "answered-vs-offered.svg"
    });
    let ramps = if replayed {
        format!(
            "ramps: the run's fixed rate lists, each ended by the rule (> {MAX_LOSS_PCT}% loss, plateau, or the list's end: capped) when redrawn"
        )
    } else {
        format!(
            "ramps: up until > {MAX_LOSS_PCT}% loss or a plateau of the offered rate, then bisected; filled dots probe, hollow dots refine"
        )
    };
    let mut notes = vec![ramps.clone()];
    notes.extend(targets.iter().cloned());
    notes.push(load.clone());
    std::fs::write(&plot, svg(curves, &notes))?;
    let mut raw = format!("{t}\n");
    for l in &targets {
        let _ = writeln!(raw, "- {l}");
    }
    let _ = writeln!(raw, "{load}\n");
    for c in curves {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|p| {
                format!(
                    "{}{}/{:.0}/{:.0}/{:.2}%",
                    if p.refine { "r:" } else { "" },
                    p.target,
                    p.offered,
                    p.answered,
                    p.loss_pct
                )
            })
            .collect();
        let _ = writeln!(
            raw,
            "{}: ended {}; steps (target/offered/answered/loss, r: = refinement): {}",
            c.key.label(),
            c.outcome.describe(),
            pts.join(" ")
        );
    }
    std::fs::write(plot.with_extension("txt"), &raw)?;
    let mut j = json_report(curves, quick, machine.busy());
    j["ramps"] = ramps.into();
    j["machine"] = serde_json::json!({
        "cpus": machine.cpus,
        "load_average_before": machine.load_before,
        "load_average_after": machine.load_after,
        "note": load,
    });
    std::fs::write(
        plot.with_extension("json"),
        serde_json::to_string_pretty(&j)?,
    )?;
    println!(
        "plot: {} (points: .txt, report: .json beside it)",
        plot.display()
    );
    Ok(())
}

/// Redraws a run's plot, points and report from its JSON report (after a
/// change to the report, without running the bench again).
pub fn replot(path: &Path) -> Result<()> {
    let j: Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let mut curves = Vec::new();
    let mut replayed = false;
    for c in j["curves"].as_array().context("no curves in the report")? {
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
            .map(|p| Pt {
                target: p["target_per_s"].as_u64().unwrap_or(0),
                offered: p["offered_per_s"].as_f64().unwrap_or(0.0),
                answered: p["answered_per_s"].as_f64().unwrap_or(0.0),
                loss_pct: p["loss_pct"].as_f64().unwrap_or(100.0),
                refine: p["stage"] == "refine",
            })
            .collect();
        let pair = |k: &str| {
            c[k].as_array()
                .and_then(|v| Some((v.first()?.as_f64()?, v.get(1)?.as_f64()?)))
        };
        let outcome = match c["end"].as_str() {
            Some(end) => Outcome {
                end: End::parse(end).with_context(|| format!("{label}: end {end:?}"))?,
                figure: c["figure_per_s"].as_f64(),
                knee: pair("knee_offered_per_s"),
                knee_targets: pair("knee_target_per_s").map(|(a, b)| (a as u64, b as u64)),
                steps: points.len() as u32,
            },
            // A report without ends (a run from before ramps reported
            // them): its steps classified as the fixed ramp they were.
            None => {
                replayed = true;
                replay(label, &points)
            }
        };
        curves.push(Curve::new(key, (points, outcome)));
    }
    let m = &j["machine"];
    let machine = Machine {
        // 0: not recorded.
        cpus: m["cpus"].as_u64().unwrap_or(0) as usize,
        load_before: m["load_average_before"].as_f64(),
        load_after: m["load_average_after"].as_f64(),
    };
    let replayed = replayed || j["ramps"].as_str().is_some_and(|r| r.contains("fixed"));
    write_report(&curves, j["run"] == "quick", &machine, replayed)
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

/// The host's 1-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The run's caveat on machine load: figures from a machine that was busy
/// before the bench started (1-minute load above half its CPUs) are not
/// fit for claims, whatever the rule lets their ratios say.
fn load_note(m: &Machine) -> String {
    let f = |v: Option<f64>| v.map_or("unknown".into(), |v| format!("{v:.2}"));
    let (ncpu, before, after) = (m.cpus, m.load_before, m.load_after);
    if ncpu == 0 {
        return "Machine load: not recorded by this run".into();
    }
    if m.busy() {
        format!(
            "WARNING: the machine was busy before the bench started (load average {} on {ncpu} CPUs, {} at the end): these figures are noisy; base no claim on them",
            f(before),
            f(after)
        )
    } else {
        format!(
            "Machine load: load average {} before the bench, {} at the end ({ncpu} CPUs); load is not controlled, figures are noisy",
            f(before),
            f(after)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve_of(key: Key, figure: f64, end: End) -> Curve {
        Curve {
            key,
            points: vec![Pt {
                target: figure as u64,
                offered: figure,
                answered: figure,
                loss_pct: 0.0,
                refine: false,
            }],
            outcome: Outcome {
                end,
                figure: Some(figure),
                knee: None,
                knee_targets: None,
                steps: 1,
            },
        }
    }

    /// The issue's full run: ceiling and fast path both ended at the top
    /// step without loss. The table and the targets must not read 73.9% as
    /// a met target.
    #[test]
    fn the_issue_full_run_reports_bounds_not_a_met_target() {
        let curves = vec![
            curve_of(Key::Ceiling, 3_153_237.0, End::Capped),
            curve_of(Key::FastPath, 2_329_430.0, End::Capped),
            curve_of(Key::KeaRenew, 8_000.0, End::Loss),
            curve_of(Key::XdhcpDora, 19_992.0, End::Loss),
            curve_of(Key::KeaDora, 6_000.0, End::Loss),
        ];
        let t = table(&curves);
        assert!(
            t.contains("| 73.9%, no bound (fast path capped, ceiling capped) |"),
            "{t}"
        );
        assert!(t.contains("≥ 291.2x (fast path capped)"), "{t}");
        assert!(t.contains("| 3.3x |"), "{t}");
        let l = target_lines(&curves, false);
        assert!(
            l[0].ends_with("-> undecided (its bound or range does not settle it)"),
            "{l:?}"
        );
        assert!(
            l[1].ends_with("-> undecided (its bound or range does not settle it)"),
            "{l:?}"
        );
        assert!(l[2].ends_with("-> met"), "{l:?}");
        let j = json_report(&curves, false, false);
        let r = &j["ratios"][0];
        assert_eq!(r["bound"], "no_bound", "{j}");
        assert_eq!(j["targets"][0]["verdict"], "undecided");
    }

    #[test]
    fn a_ceiling_plateau_counts_and_says_so() {
        let curves = vec![
            curve_of(Key::Ceiling, 2.7e6, End::Plateau),
            curve_of(Key::FastPath, 2.0e6, End::Loss),
        ];
        let l = target_lines(&curves, false);
        assert_eq!(
            l[0],
            "fast-path renewals >= 70% of the bare ceiling: 74.1% (ceiling plateau) -> met"
        );
        let curves = vec![
            curve_of(Key::Ceiling, 2.7e6, End::Capped),
            curve_of(Key::FastPath, 2.636e6, End::Loss),
        ];
        assert!(table(&curves).contains("| ≤ 97.6% (ceiling capped) |"));
    }

    #[test]
    fn a_busy_machine_is_flagged() {
        let m = |before, after| Machine {
            cpus: 2,
            load_before: before,
            load_after: after,
        };
        assert!(load_note(&m(Some(6.9), Some(8.2))).starts_with("WARNING"));
        assert!(load_note(&m(Some(0.3), Some(2.1))).starts_with("Machine load"));
        assert!(load_note(&m(None, None)).contains("unknown"));
        let unrecorded = Machine {
            cpus: 0,
            load_before: None,
            load_after: None,
        };
        assert!(!unrecorded.busy());
        assert_eq!(
            load_note(&unrecorded),
            "Machine load: not recorded by this run"
        );
        // A target met by the rule on a busy machine is no claim.
        let curves = vec![
            curve_of(Key::Ceiling, 2.7e6, End::Loss),
            curve_of(Key::FastPath, 2.0e6, End::Loss),
        ];
        assert!(target_lines(&curves, true)[0]
            .ends_with("-> met by the rule, but the machine was busy: not a claim"));
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

    #[test]
    fn long_notes_are_wrapped() {
        let w = wrap("aaa bbb ccc ddd", 8);
        assert_eq!(w, ["aaa bbb", "    ccc", "    ddd"]);
        assert_eq!(wrap("short", 80), ["short"]);
    }

    #[test]
    fn every_series_has_its_own_colour() {
        let c: Vec<String> = (0..40).map(colour).collect();
        let unique: std::collections::HashSet<&String> = c.iter().collect();
        assert_eq!(unique.len(), c.len(), "{c:?}");
        // The bench's ten series, each its own colour and legend entry.
        let curves: Vec<Curve> = ROWS.iter().map(|r| curve_of(r.1, 1e4, End::Loss)).collect();
        let svg = svg(&curves, &["note".into()]);
        for k in 0..curves.len() {
            let stroke = format!("<polyline fill=\"none\" stroke=\"{}\"", colour(k));
            assert_eq!(svg.matches(&stroke).count(), 1, "{k}");
        }
        assert_eq!(svg.matches("stroke-width=\"2\"/><text").count(), 10);
    }
}
