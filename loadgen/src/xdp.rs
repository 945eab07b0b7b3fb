//! The XDP engine: renewals built and sent in the kernel (live frames),
//! replies matched and checked by an XDP program on the same interface.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    EbpfLoader,
};
use dhcp_common::gen::{self, expect, kind, stat, GenConfig, FRAME_LEN, LATENCY_BUCKETS};

use super::{packet::request_spec, progress_bar, Args, Bindings, Counts, Expect, PhaseReport};
use crate::{build_request, programs::GEN_OBJECT, Phase};
use xdhcp::xdp::loader::{self, XdpMd};

/// Frames per BPF_PROG_TEST_RUN call when sending flat out: each call
/// costs a page-pool set-up, so calls are few and long.
const FLAT_OUT_CALL: u64 = 1 << 18;

fn sum_percpu(map: &PerCpuArray<&aya::maps::MapData, u64>, idx: u32) -> u64 {
    map.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

pub fn run_phase(
    args: &Args,
    phase: Phase,
    epoch: u32,
    bindings: &Bindings,
) -> Result<PhaseReport> {
    let bound = bindings.bound();
    if bound.is_empty() {
        bail!(
            "phase {} needs leases: run a dora phase first or give --synthetic",
            phase.name()
        );
    }
    let server = bindings.server.ok_or_else(|| {
        anyhow!(
            "phase {} needs the server: a dora phase or --server",
            phase.name()
        )
    })?;
    let n = args.clients;
    let ifindex = loader::ifindex(&args.iface)?;
    let threads = args.threads.max(1);
    let total = args.count.unwrap_or(n as u64);

    let mut ebpf = EbpfLoader::new()
        .map_max_entries(gen::MAP_CLIENTS, n)
        .map_max_entries(gen::MAP_SENT, n)
        .load(GEN_OBJECT)
        .context("loading the XDP object (loadgen's xdp engine needs root and BPF)")?;
    {
        let spec_kind = match phase {
            Phase::Renew => kind::RENEWING,
            Phase::Rebind => kind::REBINDING,
            Phase::InitReboot => kind::INIT_REBOOT,
            Phase::Flood => kind::FLOOD,
            other => bail!("the xdp engine sends renewals only, not {}", other.name()),
        };
        // The template: every per-client field zero, UDP checksum 0 ("not
        // computed", valid for IPv4) since the kernel changes the payload.
        let spec = request_spec(phase, 0, 0, Ipv4Addr::UNSPECIFIED, server.ip, server.mac);
        let spec = super::RequestSpec {
            mac: [0; 6],
            xid: 0,
            ..spec
        };
        let (mut frame, req_off, type_off, sid_off) = if phase == Phase::Flood {
            let giaddr = args
                .flood_giaddr
                .ok_or_else(|| anyhow!("--phase flood needs --flood-giaddr"))?;
            super::flood::template(server, giaddr, args.flood_circuit.as_bytes())?
        } else {
            let (f, r) = build_request(&spec);
            (f, r, 0, 0)
        };
        if frame.len() != FRAME_LEN {
            bail!("template is {} bytes, not {FRAME_LEN}", frame.len());
        }
        frame[40] = 0;
        frame[41] = 0;
        let mut cfg: GenConfig = bytemuck::Zeroable::zeroed();
        cfg.timeout_ns = args.timeout_ms * 1_000_000;
        cfg.clients = n;
        cfg.stride = threads;
        cfg.epoch = epoch;
        cfg.kind = spec_kind;
        cfg.expect = match args.expect {
            Expect::Ack => expect::ACK,
            Expect::Bounce => expect::BOUNCE,
        };
        cfg.requested_ip_off = if spec_kind == kind::INIT_REBOOT || spec_kind == kind::FLOOD {
            req_off as u32
        } else {
            0
        };
        cfg.msg_type_off = type_off as u16;
        cfg.server_id_off = sid_off as u16;
        cfg.server_ip = u32::from_ne_bytes(server.ip.octets());
        cfg.frame[..FRAME_LEN].copy_from_slice(&frame);
        let mut m: Array<_, GenConfig> =
            Array::try_from(ebpf.map_mut(gen::MAP_CONFIG).context("config map")?)?;
        m.set(0, cfg, 0)?;
        // Clients without a lease renew someone else's address: the server
        // must refuse (NAK or pass), which the counts show as not ok.
        let mut clients: Array<_, u32> =
            Array::try_from(ebpf.map_mut(gen::MAP_CLIENTS).context("clients map")?)?;
        let fallback = bound[0].1;
        for (i, ip) in bindings.ips.iter().enumerate() {
            let ip = ip.unwrap_or(fallback);
            clients.set(i as u32, u32::from_ne_bytes(ip.octets()), 0)?;
        }
    }
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
            format!(
                "attaching the reply matcher to {} (another XDP program there?)",
                args.iface
            )
        })?;

    let tx: &Xdp = ebpf.program(gen::TX_PROGRAM).unwrap().try_into()?;
    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(gen::MAP_STATS).context("stats map")?)?;
    let lat: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(gen::MAP_LATENCY).context("latency map")?)?;

    let per_thread_rate = args.rate as f64 / threads as f64;
    // Paced calls cover ~20 ms each (the call's fixed cost is ~0.1 ms).
    let paced_call = ((per_thread_rate * 0.02) as u64).max(1);
    let claimed = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let max_send = Duration::from_secs_f64(args.duration);
    let pb = progress_bar(total, phase.name(), args.json);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let frame = vec![0u8; FRAME_LEN];
    // Each thread sends on its own queue when the interface has several:
    // one veth queue per thread keeps the threads off each other's ring.
    let queues = std::fs::read_dir(format!("/sys/class/net/{}/queues", args.iface))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1);
    let start = Instant::now();
    let errors = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (claimed, done, failed, frame) = (&claimed, &done, &failed, &frame);
            handles.push(s.spawn(move || -> Result<()> {
                pin_to_cpu(t as usize % ncpu);
                let ctx = XdpMd {
                    data_end: FRAME_LEN as u32,
                    ingress_ifindex: ifindex,
                    rx_queue_index: t % queues,
                    ..Default::default()
                };
                let mut mine = 0u64;
                loop {
                    if failed.load(Ordering::Relaxed) || start.elapsed() >= max_send {
                        return Ok(());
                    }
                    let want = if args.rate > 0 {
                        paced_call
                    } else {
                        FLAT_OUT_CALL
                    };
                    let first = claimed.fetch_add(want, Ordering::Relaxed);
                    if first >= total {
                        return Ok(());
                    }
                    let batch = want.min(total - first);
                    if args.rate > 0 {
                        // This thread's share is due at mine / per_thread_rate.
                        let due = Duration::from_secs_f64(mine as f64 / per_thread_rate);
                        if let Some(w) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(w);
                        }
                    }
                    let opts = TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(bytemuck::bytes_of(&ctx)),
                        repeat: batch as u32,
                        attrs: TestRunAttrs::new().xdp_live_frames(64),
                        ..Default::default()
                    };
                    if let Err(e) = tx.test_run(opts) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(anyhow!(e).context("BPF_PROG_TEST_RUN (live frames)"));
                    }
                    mine += batch;
                    done.fetch_add(batch, Ordering::Relaxed);
                }
            }));
        }
        let mut last = 0;
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            let d = done.load(Ordering::Relaxed);
            if d != last {
                pb.set_position(sum_percpu(&stats, stat::OK));
                last = d;
            }
        }
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(|r| r.err()))
            .collect::<Vec<_>>()
    });
    let send_secs = start.elapsed().as_secs_f64();
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    // Stragglers: until every request is answered or twice the timeout.
    // A flood expects no reply.
    let drain_ms = if phase == Phase::Flood {
        0
    } else {
        args.timeout_ms * 2
    };
    let drain_until = Instant::now() + Duration::from_millis(drain_ms);
    loop {
        let sent = sum_percpu(&stats, stat::SENT);
        let answered: u64 = [stat::OK, stat::NAK, stat::WRONG]
            .iter()
            .map(|&i| sum_percpu(&stats, i))
            .sum();
        if answered >= sent || Instant::now() >= drain_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pb.finish_and_clear();
    let mut c = Counts {
        sent: sum_percpu(&stats, stat::SENT),
        ok: sum_percpu(&stats, stat::OK),
        nak: sum_percpu(&stats, stat::NAK),
        wrong: sum_percpu(&stats, stat::WRONG),
        duplicate: sum_percpu(&stats, stat::DUPLICATE),
        stray: sum_percpu(&stats, stat::STRAY),
        late: sum_percpu(&stats, stat::LATE),
        send_secs,
        expects_reply: phase != Phase::Flood,
        ..Default::default()
    };
    let send_failed = sum_percpu(&stats, stat::SEND_FAILED);
    if send_failed > 0 {
        tracing::warn!("{send_failed} frames could not be built");
    }
    for b in 0..LATENCY_BUCKETS {
        c.latency.0[b as usize] = sum_percpu(&lat, b);
    }
    Ok(c.report(phase, "xdp"))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
