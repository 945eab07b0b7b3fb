//! The XDP engine: renewals built and sent in the kernel (live frames),
//! replies matched and checked by an XDP program on the same interface.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread::ScopedJoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dhcp_common::gen::{
    self, expect, kind, stat, GenConfig, LATENCY_BUCKETS, MAX_FRAME_LEN, MIN_TEMPLATE_LEN,
};
use dhcp_common::layout::{bootp, eth, ipv4, opt, udp};
use indicatif::ProgressBar;

use super::{
    packet::request_spec, progress_bar, Args, Bindings, Counts, Expect, PhaseReport, RequestSpec,
    ServerInfo, Shape,
};
use crate::{build_request, programs::GEN_OBJECT, Phase};
use xdhcp::xdp::loader::{self, XdpMd};

/// Frames per BPF_PROG_TEST_RUN call when sending flat out: each call
/// costs a page-pool set-up, so calls are few and long.
const FLAT_OUT_CALL: u64 = 1 << 18;

fn sum_percpu(map: &PerCpuArray<&MapData, u64>, idx: u32) -> u64 {
    map.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

pub fn run_phase(
    args: &Args,
    phase: Phase,
    epoch: u32,
    bindings: &Bindings,
) -> Result<PhaseReport> {
    let (fallback_ip, server) = leases_and_server(phase, bindings)?;
    let ifindex = loader::ifindex(&args.iface)?;
    let total = args.count.unwrap_or(args.clients as u64);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(gen::MAP_CLIENTS, args.clients)
        .map_max_entries(gen::MAP_SENT, args.clients)
        .load(GEN_OBJECT)
        .context("loading the XDP object (loadgen's xdp engine needs root and BPF)")?;
    let frame_len = write_maps(&mut ebpf, args, phase, epoch, bindings, fallback_ip, server)?;
    load_programs(&mut ebpf, ifindex, &args.iface)?;

    let tx: &Xdp = ebpf.program(gen::TX_PROGRAM).unwrap().try_into()?;
    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(gen::MAP_STATS).context("stats map")?)?;
    let lat: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(gen::MAP_LATENCY).context("latency map")?)?;
    let pb = progress_bar(total, phase.name(), args.json);
    let send_secs = send_all(args, tx, &stats, total, (ifindex, frame_len), &pb)?;
    wait_for_stragglers(args, phase, &stats);
    pb.finish_and_clear();
    Ok(counts(&stats, &lat, phase, send_secs).report(phase, "xdp"))
}

/// The address a client without a lease renews (the first bound one),
/// and the server: a renewal phase needs both.
fn leases_and_server(phase: Phase, bindings: &Bindings) -> Result<(Ipv4Addr, ServerInfo)> {
    let Some(&(_, fallback_ip)) = bindings.bound().first() else {
        bail!(
            "phase {} needs leases: run a dora phase first or give --synthetic",
            phase.name()
        );
    };
    let server = bindings.server.ok_or_else(|| {
        anyhow!(
            "phase {} needs the server: a dora phase or --server",
            phase.name()
        )
    })?;
    Ok((fallback_ip, server))
}

/// Fills the generator's configuration (the phase's template and where
/// its per-client fields go) and every client's address; returns the
/// template's length (every frame of the run is that long).
fn write_maps(
    ebpf: &mut Ebpf,
    args: &Args,
    phase: Phase,
    epoch: u32,
    bindings: &Bindings,
    fallback_ip: Ipv4Addr,
    server: ServerInfo,
) -> Result<usize> {
    let cfg = gen_config(args, phase, epoch, server)?;
    let frame_len = cfg.frame_len as usize;
    let mut m: Array<_, GenConfig> =
        Array::try_from(ebpf.map_mut(gen::MAP_CONFIG).context("config map")?)?;
    m.set(0, cfg, 0)?;
    // Clients without a lease renew someone else's address: the server
    // must refuse (NAK or pass), which the counts show as not ok.
    let mut clients: Array<_, u32> =
        Array::try_from(ebpf.map_mut(gen::MAP_CLIENTS).context("clients map")?)?;
    for (i, ip) in bindings.ips.iter().enumerate() {
        let ip = ip.unwrap_or(fallback_ip);
        clients.set(i as u32, u32::from_ne_bytes(ip.octets()), 0)?;
    }
    Ok(frame_len)
}

fn gen_config(args: &Args, phase: Phase, epoch: u32, server: ServerInfo) -> Result<GenConfig> {
    let spec_kind = match phase {
        Phase::Renew => kind::RENEWING,
        Phase::Rebind => kind::REBINDING,
        Phase::InitReboot => kind::INIT_REBOOT,
        Phase::Flood => kind::FLOOD,
        Phase::DiscoverKnown => kind::DISCOVER,
        Phase::Selecting => kind::SELECTING,
        other => bail!(
            "the xdp engine sends renewals, known clients' DISCOVERs and SELECTING REQUESTs, and floods, not {}",
            other.name()
        ),
    };
    let (frame, req_off, type_off, sid_off) = request_template(args, phase, server)?;
    let mut cfg: GenConfig = bytemuck::Zeroable::zeroed();
    cfg.timeout_ns = args.timeout_ms * 1_000_000;
    cfg.clients = args.clients;
    cfg.stride = args.threads.max(1);
    cfg.epoch = epoch;
    cfg.kind = spec_kind;
    cfg.expect = match args.expect {
        Expect::Ack if phase == Phase::DiscoverKnown => expect::OFFER,
        Expect::Ack => expect::ACK,
        Expect::Bounce => expect::BOUNCE,
    };
    cfg.requested_ip_off = if matches!(spec_kind, kind::RENEWING | kind::REBINDING) {
        0
    } else {
        req_off as u32
    };
    cfg.msg_type_off = type_off as u16;
    cfg.server_id_off = sid_off as u16;
    cfg.server_ip = u32::from_ne_bytes(server.ip.octets());
    cfg.mac_offset = args.mac_offset;
    cfg.frame_len = frame.len() as u16;
    cfg.ip_off = ip_offset(args.shape) as u16;
    cfg.client_id_off =
        option_value_at(&frame, cfg.ip_off as usize, opt::CLIENT_ID).unwrap_or(0) as u16;
    // Option 82's first sub-option is the circuit-id, one per client in
    // the relayed shape only: the flood's option 82 names its one line
    // and must stay so (the line's rate limit is what it tests).
    cfg.circuit_id_off = if args.shape == Shape::Relayed {
        option_value_at(&frame, cfg.ip_off as usize, opt::RELAY_AGENT_INFO).map_or(0, |v| v + 2)
            as u16
    } else {
        0
    };
    cfg.frame[..frame.len()].copy_from_slice(&frame);
    Ok(cfg)
}

/// The phase's request with every per-client field zero, and the offsets
/// of its requested address, message type and server id (0: the sender
/// leaves them). Its UDP checksum is 0 ("not computed", valid for IPv4)
/// since the kernel changes the payload.
fn request_template(
    args: &Args,
    phase: Phase,
    server: ServerInfo,
) -> Result<(Vec<u8>, usize, usize, usize)> {
    let (mut frame, req_off, type_off, sid_off) = if phase == Phase::Flood {
        let giaddr = args
            .flood_giaddr
            .ok_or_else(|| anyhow!("--phase flood needs --flood-giaddr"))?;
        super::flood::template(server, giaddr, args.flood_circuit.as_bytes())?
    } else {
        let spec = request_spec(phase, 0, 0, Ipv4Addr::UNSPECIFIED, server.ip, server.mac);
        let (f, r) = build_request(&RequestSpec {
            mac: [0; 6],
            xid: 0,
            ..spec
        });
        (f, r, 0, 0)
    };
    if !(MIN_TEMPLATE_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
        bail!(
            "template is {} bytes, not {MIN_TEMPLATE_LEN}..={MAX_FRAME_LEN}",
            frame.len()
        );
    }
    let udp_at = ip_offset(args.shape) + ipv4::MIN_HEADER_LEN;
    frame[udp_at + udp::CHECKSUM.start..udp_at + udp::CHECKSUM.end].fill(0);
    Ok((frame, req_off, type_off, sid_off))
}

/// Where the shape's IPv4 header starts (after its tags).
fn ip_offset(shape: Shape) -> usize {
    eth::HEADER_LEN + shape.tags().len() * eth::VLAN_TAG_LEN
}

/// Offset in `frame` of option `code`'s value, if the request has it.
fn option_value_at(frame: &[u8], ip_at: usize, code: u8) -> Option<usize> {
    let mut at = ip_at + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + bootp::OPTIONS;
    while let Some(&c) = frame.get(at) {
        match c {
            opt::END => return None,
            opt::PAD => at += 1,
            c if c == code => return Some(at + 2),
            _ => at += 2 + *frame.get(at + 1)? as usize,
        }
    }
    None
}

/// Loads the sender and the reply matcher, and attaches the matcher.
fn load_programs(ebpf: &mut Ebpf, ifindex: u32, iface: &str) -> Result<()> {
    for name in [gen::TX_PROGRAM, gen::RX_PROGRAM] {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("{name} missing from the XDP object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    let rx: &mut Xdp = ebpf.program_mut(gen::RX_PROGRAM).unwrap().try_into()?;
    rx.attach_to_if_index(ifindex, XdpMode::Driver)
        .with_context(|| {
            format!("attaching the reply matcher to {iface} (another XDP program there?)")
        })?;
    Ok(())
}

/// What the sending threads share: the requests are claimed in batches
/// from one counter, so together they send `total` at most.
struct Sender<'a> {
    tx: &'a Xdp,
    total: u64,
    rate: u64,
    per_thread_rate: f64,
    paced_call: u64,
    max_send: Duration,
    start: Instant,
    claimed: AtomicU64,
    done: AtomicU64,
    failed: AtomicBool,
    frame: Vec<u8>,
}

/// Sends the phase's requests from --threads threads, each pinned to a
/// CPU; returns how many seconds the sending took.
fn send_all(
    args: &Args,
    tx: &Xdp,
    stats: &PerCpuArray<&MapData, u64>,
    total: u64,
    (ifindex, frame_len): (u32, usize),
    pb: &ProgressBar,
) -> Result<f64> {
    let threads = args.threads.max(1);
    let per_thread_rate = args.rate as f64 / threads as f64;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Each thread sends on its own queue when the interface has several:
    // one veth queue per thread keeps the threads off each other's ring.
    let queues = rx_queues(&args.iface);
    let sender = Sender {
        tx,
        total,
        rate: args.rate,
        per_thread_rate,
        // Paced calls cover ~20 ms each (the call's fixed cost is ~0.1 ms).
        paced_call: ((per_thread_rate * 0.02) as u64).max(1),
        max_send: Duration::from_secs_f64(args.duration),
        start: Instant::now(),
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        frame: vec![0u8; frame_len],
    };
    let errors = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let sender = &sender;
                s.spawn(move || {
                    pin_to_cpu(t as usize % ncpu);
                    let ctx = XdpMd {
                        data_end: frame_len as u32,
                        ingress_ifindex: ifindex,
                        rx_queue_index: t % queues,
                        ..Default::default()
                    };
                    sender.send_share(&ctx)
                })
            })
            .collect();
        show_progress(&handles, &sender.done, stats, pb);
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(|r| r.err()))
            .collect::<Vec<_>>()
    });
    let send_secs = sender.start.elapsed().as_secs_f64();
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(send_secs)
}

/// The interface's receive queues (1 if it cannot tell).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

impl Sender<'_> {
    /// One thread's part: batches claimed and sent, paced to its share of
    /// the rate, until all are claimed, time is up or a thread failed.
    fn send_share(&self, ctx: &XdpMd) -> Result<()> {
        let mut mine = 0u64;
        loop {
            if self.failed.load(Ordering::Relaxed) || self.start.elapsed() >= self.max_send {
                return Ok(());
            }
            let want = if self.rate > 0 {
                self.paced_call
            } else {
                FLAT_OUT_CALL
            };
            let first = self.claimed.fetch_add(want, Ordering::Relaxed);
            if first >= self.total {
                return Ok(());
            }
            let batch = want.min(self.total - first);
            if self.rate > 0 {
                // This thread's share is due at mine / per_thread_rate.
                let due = Duration::from_secs_f64(mine as f64 / self.per_thread_rate);
                if let Some(w) = due.checked_sub(self.start.elapsed()) {
                    std::thread::sleep(w);
                }
            }
            let opts = TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(bytemuck::bytes_of(ctx)),
                repeat: batch as u32,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            };
            if let Err(e) = self.tx.test_run(opts) {
                self.failed.store(true, Ordering::Relaxed);
                return Err(anyhow!(e).context("BPF_PROG_TEST_RUN (live frames)"));
            }
            mine += batch;
            self.done.fetch_add(batch, Ordering::Relaxed);
        }
    }
}

/// While any sender runs, the progress bar follows the replies matched.
fn show_progress<T>(
    handles: &[ScopedJoinHandle<'_, T>],
    done: &AtomicU64,
    stats: &PerCpuArray<&MapData, u64>,
    pb: &ProgressBar,
) {
    let mut last = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let d = done.load(Ordering::Relaxed);
        if d != last {
            pb.set_position(sum_percpu(stats, stat::OK));
            last = d;
        }
    }
}

/// Stragglers: until every request is answered or twice the timeout.
/// A flood expects no reply.
fn wait_for_stragglers(args: &Args, phase: Phase, stats: &PerCpuArray<&MapData, u64>) {
    let drain_ms = if phase == Phase::Flood {
        0
    } else {
        args.timeout_ms * 2
    };
    let drain_until = Instant::now() + Duration::from_millis(drain_ms);
    loop {
        let sent = sum_percpu(stats, stat::SENT);
        let answered: u64 = [stat::OK, stat::NAK, stat::WRONG]
            .iter()
            .map(|&i| sum_percpu(stats, i))
            .sum();
        if answered >= sent || Instant::now() >= drain_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The matcher's counters and latency histogram, summed over CPUs.
fn counts(
    stats: &PerCpuArray<&MapData, u64>,
    lat: &PerCpuArray<&MapData, u64>,
    phase: Phase,
    send_secs: f64,
) -> Counts {
    let mut c = Counts {
        sent: sum_percpu(stats, stat::SENT),
        ok: sum_percpu(stats, stat::OK),
        nak: sum_percpu(stats, stat::NAK),
        wrong: sum_percpu(stats, stat::WRONG),
        duplicate: sum_percpu(stats, stat::DUPLICATE),
        stray: sum_percpu(stats, stat::STRAY),
        late: sum_percpu(stats, stat::LATE),
        send_secs,
        expects_reply: phase != Phase::Flood,
        ..Default::default()
    };
    let send_failed = sum_percpu(stats, stat::SEND_FAILED);
    if send_failed > 0 {
        tracing::warn!("{send_failed} frames could not be built");
    }
    for b in 0..LATENCY_BUCKETS {
        c.latency.0[b as usize] = sum_percpu(lat, b);
    }
    c
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
