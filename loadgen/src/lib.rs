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

pub mod flood;
pub mod packet;
pub mod programs;
pub mod xdp;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Result};
use dhcp_common::gen::{bucket_floor_ns, bucket_of, LATENCY_BUCKETS, MAX_CLIENTS};
use dhcp_common::layout::{bootp, msg, opt};
use serde::Serialize;
use serde_json::Value;

use xdhcp::{api::control, proto};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// DISCOVER, OFFER, REQUEST, ACK for every client; addresses checked
    /// unique. Later phases use the leases it obtained.
    Dora,
    /// DHCPREQUEST in RENEWING: unicast to the server, ciaddr set.
    Renew,
    /// DHCPREQUEST in REBINDING: broadcast, ciaddr set.
    Rebind,
    /// DHCPREQUEST in INIT-REBOOT: broadcast, requested address option.
    InitReboot,
    /// DISCOVERs from clients that never request (OFFERs counted).
    Discover,
    /// Every leased client releases its address (no reply expected).
    /// Later phases still use it: a server must then refuse them.
    Release,
    /// Every leased client declines its address (no reply expected).
    Decline,
    /// Every leased client comes back at once, as after an outage: even
    /// clients DISCOVER then REQUEST, odd ones INIT-REBOOT. Each must get
    /// its own address back (another one counts wrong). Sent as fast as
    /// the engine goes (`--rate` does not apply); clients still
    /// unanswered after `--timeout-ms` ask again until `--duration` has
    /// passed after the last first request.
    Reconnect,
    /// SELECTING REQUESTs and DISCOVERs from random MACs, relayed through
    /// one line (--flood-giaddr, --flood-circuit), by the xdp engine; no
    /// reply expected. Requested addresses are the clients' (--synthetic).
    Flood,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Dora => "dora",
            Phase::Renew => "renew",
            Phase::Rebind => "rebind",
            Phase::InitReboot => "init-reboot",
            Phase::Discover => "discover",
            Phase::Release => "release",
            Phase::Decline => "decline",
            Phase::Reconnect => "reconnect",
            Phase::Flood => "flood",
        }
    }

    fn is_renewal(self) -> bool {
        matches!(self, Phase::Renew | Phase::Rebind | Phase::InitReboot)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Packet,
    Xdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    /// A DHCPACK for the client's address.
    Ack,
    /// The request bounced back unchanged but for addresses (the
    /// benchmark's bare ceiling program).
    Bounce,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Interface the clients sit on (in the current network namespace).
    #[arg(long)]
    pub iface: String,
    /// Number of emulated clients (at most 16,777,216).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Phases, in order (repeat the flag).
    #[arg(long = "phase", value_enum, default_values_t = [Phase::Dora, Phase::Renew])]
    pub phases: Vec<Phase>,
    /// Engine for renewal phases (DORA and the others always use packet).
    #[arg(long, value_enum, default_value_t = Engine::Packet)]
    pub engine: Engine,
    /// Requests per second to offer; 0 = as fast as the engine goes.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Ramp: run each renewal or discover phase once per rate (requests/s,
    /// comma-separated, ascending), stopping after the first step whose
    /// loss exceeds --max-loss or when the achieved offered rate stops
    /// rising (see --ramp-from). Overrides --rate for those phases.
    #[arg(long, value_delimiter = ',', conflicts_with = "ramp_from")]
    pub rates: Vec<u64>,
    /// Adaptive ramp from this rate for renewal and discover phases: each
    /// step --ramp-factor times the last until a step loses more than
    /// --max-loss (then --ramp-refine bisections between the last step
    /// within it and the first beyond) or the achieved offered rate stops
    /// rising (a plateau: under 3% gain twice in a row). Bounded by
    /// --ramp-max-steps, --ramp-max-secs and --ramp-max-rate; the last
    /// step's report says how the ramp ended: loss, plateau or capped.
    #[arg(long)]
    pub ramp_from: Option<u64>,
    /// Each probing step's rate over the last's (1.1..=10).
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Bisections between the last step within --max-loss and the first
    /// beyond it.
    #[arg(long, default_value_t = 4)]
    pub ramp_refine: u32,
    /// Steps of a ramp in all (--rates and --ramp-from).
    #[arg(long, default_value_t = 20)]
    pub ramp_max_steps: u32,
    /// Wall time (seconds) after which no ramp step starts.
    #[arg(long, default_value_t = 300.0)]
    pub ramp_max_secs: f64,
    /// Highest rate a --ramp-from ramp offers.
    #[arg(long, default_value_t = 50_000_000)]
    pub ramp_max_rate: u64,
    /// Sending time of each ramp step, in seconds (default: --duration).
    #[arg(long)]
    pub step_duration: Option<f64>,
    /// Loss (percent) that ends a ramp.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss: f64,
    /// Requests per renewal or discover phase (default: one per client).
    #[arg(long)]
    pub count: Option<u64>,
    /// Upper bound on each phase's sending time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// A reply later than this is counted late; the run waits twice this
    /// after the last request for stragglers, then counts the rest lost.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Sending threads of the xdp engine (one per CPU, each pinned).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// The server's control socket: its counters before and after each
    /// phase tell which path answered (XDP or control plane).
    #[arg(long)]
    pub server_socket: Option<PathBuf>,
    /// Skip DORA: client i holds this address + i (with --server).
    #[arg(long)]
    pub synthetic: Option<Ipv4Addr>,
    /// Server identifier, when no DORA phase learns it.
    #[arg(long)]
    pub server: Option<Ipv4Addr>,
    /// The server's MAC, when no DORA phase learns it (default broadcast).
    #[arg(long)]
    pub server_mac: Option<String>,
    /// What a reply must be.
    #[arg(long, value_enum, default_value_t = Expect::Ack)]
    pub expect: Expect,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Client i's MAC is that of client i + this (packet engine): a second
    /// generator on the same link emulates other clients.
    #[arg(long, default_value_t = 0)]
    pub mac_offset: u32,
    /// The flood's relay address (giaddr and IPv4 source).
    #[arg(long)]
    pub flood_giaddr: Option<Ipv4Addr>,
    /// The flood's option 82 circuit-id.
    #[arg(long, default_value = "flood")]
    pub flood_circuit: String,
}

/// What the server said it did during a phase (its counters' deltas).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerDelta {
    pub fast_path_acks: u64,
    /// OFFERs the XDP program made (known clients' DISCOVERs).
    pub fast_path_offers: u64,
    pub control_plane_acks: u64,
    pub control_plane_naks: u64,
    pub control_plane_offers: u64,
    pub control_plane_received: u64,
    pub xdp_passed: u64,
    /// Dropped by the XDP program's rate limits.
    pub xdp_rate_limited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub engine: &'static str,
    /// The rate asked for (0 = as fast as the engine goes).
    pub target_per_s: u64,
    pub sent: u64,
    /// Replies that matched a request and passed every check.
    pub ok: u64,
    pub nak: u64,
    pub wrong: u64,
    pub duplicate: u64,
    pub stray: u64,
    pub late: u64,
    /// Requests with no reply (phases that expect one).
    pub lost: u64,
    pub send_secs: f64,
    pub offered_per_s: f64,
    pub answered_per_s: f64,
    pub loss_pct: f64,
    pub latency_us_p50: Option<f64>,
    pub latency_us_p99: Option<f64>,
    pub latency_us_p999: Option<f64>,
    /// DORA: addresses handed to more than one client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_addresses: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Reconnect: when the last client had its address back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_back_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerDelta>,
    /// The step's place in a ramp (--rates, --ramp-from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampStep>,
}

/// A ramp step: its number (from 1), stage, and on the ramp's last step
/// how the ramp ended.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub step: u32,
    /// "probe" (raising the rate) or "refine" (bisecting at the knee).
    pub stage: &'static str,
    /// After a step beyond the loss threshold: the wait until the
    /// interface went quiet, before the next step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<RampEnd>,
}

/// How a ramp ended (`xdhcp_ramp::Outcome`).
#[derive(Debug, Clone, Serialize)]
pub struct RampEnd {
    /// "loss" (a measured knee), "plateau" (the generator's limit: a lower
    /// bound on the server) or "capped" (a limit came first: a bound, not
    /// a measurement).
    pub end: &'static str,
    /// Highest answered rate of a step within --max-loss.
    pub figure_per_s: Option<f64>,
    /// For "loss": offered rates of the last step within and the first
    /// beyond the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knee_offered_per_s: Option<[f64; 2]>,
    /// The targets of those two steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knee_target_per_s: Option<[u64; 2]>,
    pub steps: u32,
    pub summary: String,
}

impl RampEnd {
    pub fn of(o: &xdhcp_ramp::Outcome) -> RampEnd {
        RampEnd {
            end: o.end.name(),
            figure_per_s: o.figure,
            knee_offered_per_s: o.knee.map(|(a, b)| [a, b]),
            knee_target_per_s: o.knee_targets.map(|(a, b)| [a, b]),
            steps: o.steps,
            summary: o.describe(),
        }
    }
}

/// Latency histogram, same buckets as the XDP receiver's.
#[derive(Clone)]
pub struct Latency(pub Vec<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(vec![0; LATENCY_BUCKETS as usize])
    }
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.0[bucket_of(ns) as usize] += 1;
    }

    /// The bucket's upper edge at quantile `q`, in µs (an over-estimate of
    /// at most a quarter of the value).
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(bucket_floor_ns(b as u32 + 1) as f64 / 1000.0);
            }
        }
        None
    }
}

/// Raw counts of a phase, before rates.
#[derive(Default, Clone)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub nak: u64,
    pub wrong: u64,
    pub duplicate: u64,
    pub stray: u64,
    pub late: u64,
    pub send_secs: f64,
    pub latency: Latency,
    pub expects_reply: bool,
    pub duplicate_addresses: Option<u64>,
    /// Reconnect: requests sent again to clients still unanswered after
    /// `--timeout-ms` (real clients retransmit), not counted in `sent`.
    pub retries: Option<u64>,
    /// Reconnect: seconds from the phase's start until the last client
    /// had its address back; none if some never did.
    pub all_back_secs: Option<f64>,
}

impl Counts {
    pub fn report(&self, phase: Phase, engine: &'static str) -> PhaseReport {
        let answered = self.ok + self.nak + self.wrong;
        let lost = if self.expects_reply {
            self.sent.saturating_sub(answered)
        } else {
            0
        };
        let secs = self.send_secs.max(1e-9);
        PhaseReport {
            phase,
            engine,
            target_per_s: 0,
            sent: self.sent,
            ok: self.ok,
            nak: self.nak,
            wrong: self.wrong,
            duplicate: self.duplicate,
            stray: self.stray,
            late: self.late,
            lost,
            send_secs: self.send_secs,
            offered_per_s: self.sent as f64 / secs,
            answered_per_s: self.ok as f64 / secs,
            loss_pct: if self.expects_reply && self.sent > 0 {
                100.0 * (self.sent - self.ok.min(self.sent)) as f64 / self.sent as f64
            } else {
                0.0
            },
            latency_us_p50: self.latency.quantile_us(0.5),
            latency_us_p99: self.latency.quantile_us(0.99),
            latency_us_p999: self.latency.quantile_us(0.999),
            duplicate_addresses: self.duplicate_addresses,
            retries: self.retries,
            all_back_secs: self.all_back_secs,
            server: None,
            ramp: None,
        }
    }
}

pub use dhcp_common::gen::client_mac;

/// `--mac-offset`, set once per run.
static MAC_OFFSET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Client `i`'s MAC in the packet engine: `client_mac(i + --mac-offset)`,
/// so a second generator's clients are other clients (xids still carry `i`).
pub fn mac_of(i: u32) -> [u8; 6] {
    client_mac(i.wrapping_add(MAC_OFFSET.load(std::sync::atomic::Ordering::Relaxed)))
}

pub fn xid(epoch: u32, i: u32) -> u32 {
    (epoch << 24) | (i & (MAX_CLIENTS - 1))
}

/// Parameter request list every emulated client sends (DORA and renewals
/// alike: the fast path answers requests shaped like the one it bound).
pub const PRL: [u8; 6] = [1, 3, 6, 15, 51, 54];
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// A client message as a frame. `ciaddr`, `requested` and `server_id`
/// go where RFC 2131 table 5 puts them for `msg_type` and `phase`.
pub struct RequestSpec {
    pub msg_type: u8,
    pub xid: u32,
    pub mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
}

/// Returns the frame and the offset of option 50's value (0 if absent).
pub fn build_request(r: &RequestSpec) -> (Vec<u8>, usize) {
    let mut p = vec![0u8; bootp::FIXED_LEN];
    p[bootp::OP] = bootp::BOOTREQUEST;
    p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
    p[bootp::HLEN] = 6;
    p[bootp::XID].copy_from_slice(&r.xid.to_be_bytes());
    p[bootp::CIADDR].copy_from_slice(&r.ciaddr.octets());
    p[bootp::CHADDR.start..bootp::CHADDR.start + 6].copy_from_slice(&r.mac);
    p.extend_from_slice(&bootp::MAGIC_COOKIE);
    p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, r.msg_type]);
    let mut requested_off = 0;
    if let Some(ip) = r.requested {
        p.extend_from_slice(&[opt::REQUESTED_IP, 4]);
        requested_off = p.len();
        p.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = r.server_id {
        p.extend_from_slice(&[opt::SERVER_ID, 4]);
        p.extend_from_slice(&ip.octets());
    }
    if matches!(r.msg_type, msg::DISCOVER | msg::REQUEST) {
        p.extend_from_slice(&[opt::PARAMETER_REQUEST_LIST, PRL.len() as u8]);
        p.extend_from_slice(&PRL);
    }
    p.push(opt::END);
    p.resize(300, 0);
    let h = proto::FrameHeader {
        src_mac: r.mac,
        dst_mac: r.dst_mac,
        tags: Vec::new(),
        src_ip: r.ciaddr,
        dst_ip: r.dst_ip,
        src_port: 68,
        dst_port: 67,
    };
    (proto::build_frame(&h, &p), 42 + requested_off)
}

/// Who the clients talk to, learned in DORA or given.
#[derive(Clone, Copy, Debug)]
pub struct ServerInfo {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    dhcp_common::hex::parse_mac(s)
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

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
    if args.mac_offset != 0 && args.engine == Engine::Xdp {
        bail!("--mac-offset is for the packet engine only");
    }
    MAC_OFFSET.store(args.mac_offset, std::sync::atomic::Ordering::Relaxed);
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be 1..={MAX_CLIENTS}");
    }
    if args.phases.is_empty() {
        bail!("no --phase given");
    }
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
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
    // A different epoch per run: replies to an earlier run are strays.
    let epoch = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 255) as u32
        + 1;
    if args.ramp_from.is_some() && !(1.1..=10.0).contains(&args.ramp_factor) {
        bail!("--ramp-factor must be within 1.1..=10");
    }
    let mut engine = Some(packet::PacketEngine::open(&args.iface)?);
    let mut reports = Vec::new();
    let mut step = 0u32;
    // One step of `phase` at `rate` for `duration` seconds.
    let mut run_step = |phase: Phase, rate: u64, duration: f64| -> Result<PhaseReport> {
        let mut a = args.clone();
        a.rate = rate;
        a.duration = duration;
        let before = args.server_socket.as_deref().and_then(server_counters);
        // Each step its own epoch: a previous step's late replies are strays.
        let phase_epoch = (epoch + step) % 255 + 1;
        step += 1;
        let xdp = (phase.is_renewal() && args.engine == Engine::Xdp) || phase == Phase::Flood;
        let mut report = if xdp {
            drop(engine.take());
            let r = xdp::run_phase(&a, phase, phase_epoch, &bindings);
            engine = Some(packet::PacketEngine::open(&args.iface)?);
            r?
        } else {
            let e = engine.as_mut().expect("packet engine open between steps");
            e.run_phase(&a, phase, phase_epoch, &mut bindings)?
        };
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
    };
    for &phase in &args.phases {
        let ramped = (!args.rates.is_empty() || args.ramp_from.is_some())
            && (phase.is_renewal() || phase == Phase::Discover);
        if !ramped {
            reports.push(run_step(phase, args.rate, args.duration)?);
            continue;
        }
        let mut ramp = xdhcp_ramp::Ramp::new(ramp_plan(args), ramp_limits(args));
        let started = Instant::now();
        let first = reports.len();
        while let Some(rate) = ramp.next_rate() {
            let stage = ramp.stage();
            let mut report = run_step(phase, rate, args.step_duration.unwrap_or(args.duration))?;
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
    }
    Ok(reports)
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

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v >= 1000.0 {
            format!("{:.1} ms", v / 1000.0)
        } else {
            format!("{v:.0} µs")
        }
    })
}

fn render_one(r: &PhaseReport) -> String {
    format!(
        "loadgen: {} ({}) sent {} ok {} in {:.2} s",
        r.phase.name(),
        r.engine,
        r.sent,
        r.ok,
        r.send_secs
    )
}

/// The end-of-run table.
pub fn render(reports: &[PhaseReport]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:<7} {:>10} {:>10} {:>10} {:>12} {:>12} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  answered by",
        "phase", "engine", "target/s", "sent", "ok", "offered/s", "answered/s", "loss", "nak", "wrong", "late",
        "p50", "p99", "p99.9"
    );
    for r in reports {
        let path = r.server.as_ref().map_or("-".to_string(), |s| {
            format!(
                "xdp {} ack {} offer / control plane {} ack {} nak {} offer",
                s.fast_path_acks,
                s.fast_path_offers,
                s.control_plane_acks,
                s.control_plane_naks,
                s.control_plane_offers
            )
        });
        let mut extra = String::new();
        if let Some(d) = r.duplicate_addresses {
            extra = format!("  (duplicate addresses: {d})");
        }
        if let Some(n) = r.retries {
            extra += &match r.all_back_secs {
                Some(t) => format!("  (all back in {t:.3} s, {n} retransmissions)"),
                None => format!("  (NOT all back; {n} retransmissions)"),
            };
        }
        let _ = writeln!(
            t,
            "{:<12} {:<7} {:>10} {:>10} {:>10} {:>12.0} {:>12.0} {:>6.2}% {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  {}{}",
            r.phase.name(),
            r.engine,
            if r.target_per_s == 0 { "max".to_string() } else { r.target_per_s.to_string() },
            r.sent,
            r.ok,
            r.offered_per_s,
            r.answered_per_s,
            r.loss_pct,
            r.nak,
            r.wrong,
            r.late,
            fmt_us(r.latency_us_p50),
            fmt_us(r.latency_us_p99),
            fmt_us(r.latency_us_p999),
            path,
            extra
        );
    }
    for r in reports {
        if let Some(e) = r.ramp.as_ref().and_then(|s| s.end.as_ref()) {
            let _ = writeln!(
                t,
                "ramp {}: {} steps, figure {}/s, ended: {}",
                r.phase.name(),
                e.steps,
                e.figure_per_s.map_or("-".into(), xdhcp_ramp::thousands),
                e.summary
            );
        }
    }
    t
}

/// A progress bar on stderr, hidden for `--json`.
pub fn progress_bar(total: u64, label: &str, json: bool) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
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
