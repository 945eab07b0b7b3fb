//! `xdhcp-loadgen`: emulates many DHCP clients on one interface and
//! measures how a server answers them. Its own crate, with the lab's XDP
//! programs and the benchmark's loader (`programs`): the daemon carries
//! none of them.
//!
//! Client `i` has hardware address 02:44:i (24 bits) and puts `i` in the
//! low 24 bits of its xid, the run's epoch above: replies are matched by
//! xid and checked against what that client should get.
//!
//! Two engines:
//! - `packet` (AF_PACKET, one thread): every phase, including DORA (which
//!   needs to answer each OFFER with a REQUEST). Sends ~1M frames/s here,
//!   far above any control plane's rate.
//! - `xdp`: renewals only, for the fast path's rates. Frames are built and
//!   sent by an XDP program run with `BPF_PROG_TEST_RUN` in live-frames mode
//!   (no socket, no per-frame syscall), one thread per CPU, and replies are
//!   matched, checked and timed by an XDP program on the same interface.
//!   Its leases come from a `packet` DORA phase of the same run (or
//!   `--synthetic`).

mod args;
pub mod bindings;
pub mod flood;
pub mod packet;
pub mod programs;
mod report;
mod requests;
pub mod xdp;

pub use args::*;
pub use report::*;
pub use requests::*;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Result};
use dhcp_common::gen::{bucket_floor_ns, bucket_of, LATENCY_BUCKETS, MAX_CLIENTS};
use dhcp_common::layout::{bootp, eth, ipv4, msg, opt, udp, ETH_P_8021AD, ETH_P_8021Q};
use serde::Serialize;
use serde_json::Value;

use xdhcp::{api::control, proto};

pub use dhcp_common::gen::client_mac;

/// `--mac-offset`, set once per run.
static MAC_OFFSET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A snapshot of the counters `ServerDelta` is made of.
fn server_counters(socket: &std::path::Path) -> Option<Value> {
    control::call(socket, "statistic-get-all", serde_json::json!({}))
        .ok()
        .map(|r| r.arguments)
}

fn delta(before: &Value, after: &Value) -> ServerDelta {
    let get = |v: &Value, path: &[&str]| -> u64 {
        let mut x = v;
        for p in path {
            x = &x[*p];
        }
        x.as_u64().unwrap_or(0)
    };
    let d = |path: &[&str]| get(after, path).saturating_sub(get(before, path));
    let sum = |v: &Value, key: &str, pred: &dyn Fn(&str) -> bool| -> u64 {
        v[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| pred(k))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let ds = |key: &str, pred: &dyn Fn(&str) -> bool| {
        sum(after, key, pred).saturating_sub(sum(before, key, pred))
    };
    ServerDelta {
        fast_path_acks: ds("xdp", &|k| k.starts_with("fp_ack_")),
        fast_path_offers: ds("xdp", &|k| k == "fp_offer"),
        control_plane_acks: d(&["sent", "ACK"]),
        control_plane_naks: d(&["sent", "NAK"]),
        control_plane_offers: d(&["sent", "OFFER"]),
        control_plane_received: ds("received", &|_| true),
        xdp_passed: ds("xdp", &|k| k.starts_with("pass_")),
        xdp_rate_limited: ds("xdp", &|k| k.starts_with("rate_limited_")),
    }
}

/// The leases the clients hold, by client index.
pub struct Bindings {
    pub ips: Vec<Option<Ipv4Addr>>,
    pub server: Option<ServerInfo>,
}

impl Bindings {
    pub fn bound(&self) -> Vec<(u32, Ipv4Addr)> {
        self.ips
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| ip.map(|ip| (i as u32, ip)))
            .collect()
    }
}

pub fn run(args: &Args) -> Result<Vec<PhaseReport>> {
    check_args(args)?;
    MAC_OFFSET.store(args.mac_offset, std::sync::atomic::Ordering::Relaxed);
    let shape_at = Shape::ALL
        .iter()
        .position(|&s| s == args.shape)
        .unwrap_or(0);
    SHAPE.store(shape_at as u8, std::sync::atomic::Ordering::Relaxed);
    if let (Some(giaddr), Some(server)) = (args.giaddr, args.server) {
        let r = (u64::from(u32::from(giaddr)) << 32) | u64::from(u32::from(server));
        RELAY.store(r, std::sync::atomic::Ordering::Relaxed);
    }
    let bindings = match &args.bindings_in {
        Some(path) => bindings::load(path, args.clients)?,
        None => initial_bindings(args)?,
    };
    if args.ramp_from.is_some() && !(1.1..=10.0).contains(&args.ramp_factor) {
        bail!("--ramp-factor must be within 1.1..=10");
    }
    let mut steps = Steps {
        args,
        engine: Some(packet::PacketEngine::open(&args.iface, args.shape)?),
        bindings,
        epoch: run_epoch(),
        step: 0,
    };
    let mut reports = Vec::new();
    for &phase in &args.phases {
        let ramped = (!args.rates.is_empty() || args.ramp_from.is_some())
            && (phase.is_renewal() || phase == Phase::Discover || phase.xdp_only());
        if ramped {
            steps.ramp(phase, &mut reports)?;
        } else {
            reports.push(steps.step(phase, args.rate, args.duration)?);
        }
    }
    if let Some(path) = &args.bindings_out {
        bindings::save(path, &steps.bindings)?;
    }
    Ok(reports)
}

/// The checks on the command line that need nothing opened.
fn check_args(args: &Args) -> Result<()> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be 1..={MAX_CLIENTS}");
    }
    if args.shape != Shape::Plain && args.phases.contains(&Phase::Flood) {
        bail!("--phase flood builds its own relayed requests: no --shape");
    }
    if args.shape == Shape::Relayed && (args.giaddr.is_none() || args.server.is_none()) {
        bail!("--shape relayed needs --giaddr (the relay) and --server (where it relays to)");
    }
    if args.giaddr.is_some() && args.shape != Shape::Relayed {
        bail!("--giaddr is for --shape relayed");
    }
    if args.phases.is_empty() {
        bail!("no --phase given");
    }
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    Ok(())
}

/// What the clients hold before the first phase: nothing, or with
/// --synthetic consecutive addresses from a server given by --server.
fn initial_bindings(args: &Args) -> Result<Bindings> {
    let given_server = match (args.server, &args.server_mac) {
        (Some(ip), mac) => Some(ServerInfo {
            ip,
            mac: mac
                .as_deref()
                .map(parse_mac)
                .transpose()?
                .unwrap_or(BROADCAST_MAC),
        }),
        (None, Some(_)) => bail!("--server-mac needs --server"),
        (None, None) => None,
    };
    let mut bindings = Bindings {
        ips: vec![None; args.clients as usize],
        server: given_server,
    };
    if let Some(base) = args.synthetic {
        if given_server.is_none() {
            bail!("--synthetic needs --server");
        }
        for (i, ip) in bindings.ips.iter_mut().enumerate() {
            *ip = Some(Ipv4Addr::from(u32::from(base).wrapping_add(i as u32)));
        }
    }
    Ok(bindings)
}

/// A different epoch per run: replies to an earlier run are strays.
fn run_epoch() -> u32 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 255) as u32
        + 1
}

/// The run's steps, one phase at one rate each, and what they share: the
/// packet engine (closed while the XDP engine has the interface) and the
/// clients' leases.
struct Steps<'a> {
    args: &'a Args,
    engine: Option<packet::PacketEngine>,
    bindings: Bindings,
    epoch: u32,
    step: u32,
}

impl Steps<'_> {
    /// One step of `phase` at `rate` for `duration` seconds.
    fn step(&mut self, phase: Phase, rate: u64, duration: f64) -> Result<PhaseReport> {
        let args = self.args;
        let mut a = args.clone();
        a.rate = rate;
        a.duration = duration;
        let before = args.server_socket.as_deref().and_then(server_counters);
        // Each step its own epoch: a previous step's late replies are strays.
        let phase_epoch = (self.epoch + self.step) % 255 + 1;
        self.step += 1;
        let mut report = self.run_engine(&a, phase, phase_epoch)?;
        report.target_per_s = rate;
        if let (Some(b), Some(sock)) = (before, args.server_socket.as_deref()) {
            // Renewal events and counters settle within the daemon's poll.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(a) = server_counters(sock) {
                report.server = Some(delta(&b, &a));
            }
        }
        if !args.json {
            eprintln!("{}", render_one(&report));
        }
        Ok(report)
    }

    /// The phase on the engine that sends it.
    fn run_engine(&mut self, a: &Args, phase: Phase, epoch: u32) -> Result<PhaseReport> {
        let xdp = (phase.is_renewal() && a.engine == Engine::Xdp) || phase.xdp_only();
        if !xdp {
            let e = self
                .engine
                .as_mut()
                .expect("packet engine open between steps");
            return e.run_phase(a, phase, epoch, &mut self.bindings);
        }
        // The XDP engine attaches its reply matcher where the packet
        // engine holds its peer program.
        drop(self.engine.take());
        let r = xdp::run_phase(a, phase, epoch, &self.bindings);
        self.engine = Some(packet::PacketEngine::open(&self.args.iface, a.shape)?);
        r
    }

    /// `phase` stepped through the rates of --rates or --ramp-from, each
    /// step's report appended to `reports`, the last with how it ended.
    fn ramp(&mut self, phase: Phase, reports: &mut Vec<PhaseReport>) -> Result<()> {
        let args = self.args;
        let mut ramp = xdhcp_ramp::Ramp::new(ramp_plan(args), ramp_limits(args));
        let started = Instant::now();
        let first = reports.len();
        while let Some(rate) = ramp.next_rate() {
            let stage = ramp.stage();
            let mut report = self.step(phase, rate, args.step_duration.unwrap_or(args.duration))?;
            ramp.record(
                rate,
                report.offered_per_s,
                report.answered_per_s,
                report.loss_pct,
                started.elapsed().as_secs_f64(),
            );
            // After a step beyond the threshold the server may still be
            // answering its backlog, which would count against the next
            // step: wait until the interface has gone quiet.
            let settle_secs = (report.loss_pct > args.max_loss && ramp.next_rate().is_some())
                .then(|| settle(&args.iface).as_secs_f64());
            report.ramp = Some(RampStep {
                step: ramp.steps().len() as u32,
                stage: stage.name(),
                settle_secs,
                end: None,
            });
            reports.push(report);
        }
        if let Some(r) = reports[first..].last_mut().and_then(|r| r.ramp.as_mut()) {
            r.end = Some(RampEnd::of(&ramp.outcome()));
        }
        Ok(())
    }
}

/// Frames received by `iface` (this network namespace's /proc/net/dev).
fn rx_packets(iface: &str) -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    dev.lines().find_map(|l| {
        let (name, counters) = l.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        // bytes, then packets.
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Waits until `iface` has received nothing for half a second, at most
/// 20 s; returns the time waited.
fn settle(iface: &str) -> Duration {
    const QUIET: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(20);
    let start = Instant::now();
    let mut last = rx_packets(iface);
    let mut since = Instant::now();
    while start.elapsed() < MAX && last.is_some() {
        std::thread::sleep(Duration::from_millis(50));
        let now = rx_packets(iface);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            break;
        }
    }
    start.elapsed()
}

/// The ramp --rates or --ramp-from asks for.
pub fn ramp_plan(args: &Args) -> xdhcp_ramp::Plan {
    match args.ramp_from {
        Some(start) => xdhcp_ramp::Plan::Geometric {
            start,
            factor: args.ramp_factor,
            refine: args.ramp_refine,
        },
        None => xdhcp_ramp::Plan::Fixed(args.rates.clone()),
    }
}

pub fn ramp_limits(args: &Args) -> xdhcp_ramp::Limits {
    xdhcp_ramp::Limits {
        max_loss_pct: args.max_loss,
        max_steps: args.ramp_max_steps.max(1),
        max_secs: args.ramp_max_secs,
        max_rate: args.ramp_max_rate.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_counters_are_read_from_proc() {
        assert!(rx_packets("lo").is_some());
        assert_eq!(rx_packets("no-such-if0"), None);
        // Nothing to wait for on an interface that does not exist.
        assert!(settle("no-such-if0") < Duration::from_millis(100));
    }

    #[test]
    fn latency_quantiles_are_upper_bucket_edges() {
        let mut l = Latency::default();
        for ns in [10_000u64; 98] {
            l.record(ns);
        }
        l.record(1_000_000);
        l.record(5_000_000);
        let p50 = l.quantile_us(0.5).unwrap();
        assert!((10.0..=12.5).contains(&p50), "{p50}");
        let p999 = l.quantile_us(0.999).unwrap();
        assert!((5_000.0..=6_300.0).contains(&p999), "{p999}");
        assert_eq!(Latency::default().quantile_us(0.5), None);
    }

    #[test]
    fn loss_counts_unanswered_and_naks_against_the_rate() {
        let c = Counts {
            sent: 1000,
            ok: 980,
            nak: 5,
            wrong: 5,
            send_secs: 2.0,
            expects_reply: true,
            ..Default::default()
        };
        let r = c.report(Phase::Renew, "packet");
        assert_eq!(r.lost, 10);
        assert!((r.loss_pct - 2.0).abs() < 1e-9);
        assert!((r.answered_per_s - 490.0).abs() < 1e-9);
        assert!((r.offered_per_s - 500.0).abs() < 1e-9);
    }

    #[test]
    fn requests_carry_their_fields_where_rfc2131_puts_them() {
        let (f, off) = build_request(&RequestSpec {
            msg_type: 3,
            xid: xid(7, 42),
            mac: client_mac(42),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(198, 18, 1, 9)),
            server_id: None,
            dst_mac: BROADCAST_MAC,
            dst_ip: Ipv4Addr::BROADCAST,
        });
        assert_eq!(f.len(), 342);
        assert_eq!(&f[off..off + 4], &[198, 18, 1, 9]);
        let rx = proto::parse_frame(&f, None, true).unwrap();
        let req = proto::parse_dhcp(rx.payload).unwrap();
        assert_eq!(req.msg_type, 3);
        assert_eq!(req.chaddr(), &client_mac(42));
        assert_eq!(
            u32::from_be_bytes(f[46..50].try_into().unwrap()),
            (7 << 24) | 42
        );
    }
}
