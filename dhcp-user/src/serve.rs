//! `xdhcp serve`: the daemon. Attaches the XDP program, receives DHCP
//! requests as frames on each interface, runs the state machine, persists
//! with group commit and only then sends ACKs, reclaims expired leases, and
//! on SIGINT/SIGTERM finishes its pending commits and detaches everything.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use aya::maps::RingBuf;
use dhcp_common::MAP_EVENTS;

use crate::{
    auditor::{self, Auditor, Repair},
    backlog::{self, Backlog, Queued},
    commands,
    commit::{Commit, CommitQueue, Committer, Written},
    config::{Config, MetricsAddress, XdpSetting},
    control::{self, Pending},
    egress::Egress,
    engine::{read_ring, Engine},
    fastmap::{FastIface, FastMaps, MapReport},
    fastpath::Fastpath,
    packet::{self, PacketSocket},
    pins::{self, PinnedLayout},
    server::{Arrival, Server},
    store::StoreOp,
    upgrade::OldFastPath,
    wire::{self, msg},
};

pub use crate::egress::Wire;

/// How often renewals answered by the XDP program are collected.
pub const EVENT_POLL: Duration = Duration::from_millis(100);

pub use crate::clock::unix_now;
pub use crate::engine::Overrides;

/// One UDP socket on port 67 that keeps the port open, so unicast requests
/// never draw an ICMP port-unreachable. It sends and receives nothing: the
/// AF_PACKET sockets do both (replies to relays too, see `egress`).
pub fn port_67_socket() -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    packet::attach_filter(s.as_raw_fd(), &mut packet::drop_all_filter())
        .context("filter on the UDP socket")?;
    let addr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        dhcp_common::DHCP_SERVER_PORT,
    ));
    s.bind(&addr.into())
        .context("binding UDP port 67 (another DHCP server running?)")?;
    Ok(s.into())
}

pub struct Transmitter {
    packet: Vec<Arc<PacketSocket>>,
    /// Held for as long as we serve (`port_67_socket`).
    _port_67: UdpSocket,
}

impl Transmitter {
    pub fn send(&self, w: &Wire) {
        let Wire::Frame { iface, bytes } = w;
        if let Err(e) = self.packet[*iface].send(bytes) {
            tracing::warn!("sending a reply: {e}");
        }
    }
}

fn log_counters(server: &Server) {
    let c = &server.counters;
    let fmt = |a: &[u64; 9]| {
        (1..=8u8)
            .filter(|t| a[usize::from(*t)] > 0)
            .map(|t| format!("{}={}", msg::name(t), a[usize::from(t)]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dropped = c
        .dropped
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let malformed = c
        .malformed
        .iter()
        .map(|(k, v)| format!("{}={v}", k.name()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        "control plane: received [{}] sent [{}] dropped [{}] malformed [{}] leases={} fast_path_renewals_stored={}",
        fmt(&c.received),
        fmt(&c.sent),
        dropped,
        malformed,
        server.leases.len(),
        c.fast_renewals
    );
}

/// Answers `reply` once the batch holding `ops` is written (the change is
/// then in the store and the lease map), or says that the store refused it
/// and that it is retried.
fn reply_after_commit(
    engine: &mut Engine,
    commit_tx: &CommitQueue<Wire>,
    ops: Vec<StoreOp>,
    response: control::Response,
    reply: tokio::sync::oneshot::Sender<control::Response>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    commit_tx.send(engine.commit(ops, Vec::new(), Some(done_tx)));
    tokio::spawn(async move {
        let r = match done_rx.await {
            Ok(Written::Durable) => response,
            Ok(Written::Retrying(e)) => control::Response::error(format!(
                "the lease store refused the write ({e}): the change is applied in memory and in the XDP map, and is written when the store takes it (retrying)"
            )),
            Err(_) => control::Response::error("the daemon stopped before the change was written"),
        };
        let _ = reply.send(r);
    });
}

/// The auditor's repairs, to the committer (`FastMaps::unmap`).
fn send_repair(engine: &mut Engine, commit_tx: &CommitQueue<Wire>, fix: Option<Repair>) {
    if let Some(f) = fix {
        commit_tx.send(engine.repair(f.ops, f.unmap));
    }
}

/// Frames read per socket wake-up before the others get a turn.
const READ_BUDGET: usize = 1024;
/// Requests handled per turn of the loop.
const HANDLE_BUDGET: usize = 64;

/// Where a handled request's answer goes.
struct Out<'a> {
    sockets: &'a [Arc<PacketSocket>],
    names: &'a [String],
    tx: &'a Transmitter,
    commits: &'a CommitQueue<Wire>,
}

/// Runs one queued request through the state machine: its reply leaves
/// now, or after its lease changes are durable.
fn handle_queued(q: Queued, engine: &mut Engine, egress: &mut Egress, out: &Out<'_>) {
    let i = q.iface;
    let server = &mut engine.server;
    let frame = match wire::parse_frame(&q.frame, q.stripped_tag, q.check_udp) {
        Ok(f) => f,
        Err(m) => return server.count_malformed(m),
    };
    let req = match wire::parse_dhcp(frame.payload) {
        Ok(r) => r,
        Err(m) => return server.count_malformed(m),
    };
    let arrival = Arrival {
        iface: &out.names[i],
        tags: &frame.tags,
        src_mac: frame.src_mac,
        src_ip: frame.src_ip,
    };
    let o = server.handle(&req, &arrival, unix_now());
    tracing::debug!(
        interface = %out.names[i], xid = format_args!("{:#010x}", req.xid),
        "{} -> {}", msg::name(req.msg_type),
        o.reply.as_ref().map_or(o.dropped.unwrap_or("-"), |r| msg::name(r.msg_type))
    );
    let mac = out.sockets[i].mac;
    let wire = o
        .reply
        .map(|r| egress.frame_for(&r.dest, &frame, mac, r.payload, i));
    if o.store.is_empty() {
        if let Some(w) = &wire {
            out.tx.send(w);
        }
    } else {
        out.commits
            .send(engine.commit(o.store, wire.into_iter().collect(), None));
    }
}

/// Attaches (or, over a pinned link, swaps in) the program on every
/// interface with XDP on, then drops pinned links of the others; says
/// whether it adopted a running fast path.
fn attach_all(fastpath: &mut Fastpath, config: &Config) -> Result<bool> {
    let mut adopted = false;
    for iface in &config.interfaces {
        if iface.xdp == XdpSetting::Off {
            tracing::info!(interface = %iface.name, "XDP off by configuration");
            continue;
        }
        let mode = fastpath.attach(&iface.name, iface.xdp)?;
        if mode == crate::fastpath::AttachedMode::Adopted {
            adopted = true;
            tracing::info!(interface = %iface.name, "adopted the running XDP fast path: program replaced atomically, renewals never stopped");
        } else {
            tracing::info!(interface = %iface.name, %mode, "XDP program attached");
        }
    }
    let serving: Vec<String> = config
        .interfaces
        .iter()
        .filter(|i| i.xdp != XdpSetting::Off)
        .map(|i| i.name.clone())
        .collect();
    for ifname in fastpath.detach_stale_pins(&serving)? {
        tracing::warn!(interface = %ifname, "detached a fast path a previous daemon left on an interface no longer configured");
    }
    if config.server.pin_dir.is_some() {
        match fastpath.hitless_stop() {
            Ok(why) => {
                tracing::info!("a hitless stop (xdhcp stop --keep-fast-path) is possible: {why}")
            }
            Err(why) => tracing::warn!(
                "pin_dir is set, but `xdhcp stop --keep-fast-path` will be refused: {why}"
            ),
        }
    }
    Ok(adopted)
}

pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    overrides: Overrides,
    debug_xdp_logs: bool,
) -> Result<()> {
    // Before the store is opened or recovered: pins this build cannot use
    // are refused while nothing, there or in the store, has changed.
    let pinned = match &config.server.pin_dir {
        Some(dir) => Some(pins::check_layout(dir)?),
        None => None,
    };
    let mut store = crate::store::open(&config)?;
    let mut engine = Engine::start(&mut *store, config, config_path, overrides, unix_now())?;
    let config = engine.config.clone();

    let mut old = None;
    let mut fastpath = match (&config.server.pin_dir, pinned) {
        (Some(dir), Some(layout)) if layout.converted() => {
            old = Some(OldFastPath::open(dir, layout == PinnedLayout::Previous)?);
            Fastpath::load_converting(debug_xdp_logs, config.server.lease_map_entries, dir)?
        }
        (Some(dir), _) => {
            Fastpath::load_pinned(debug_xdp_logs, config.server.lease_map_entries, dir)?
        }
        (None, _) => Fastpath::load_sized(debug_xdp_logs, config.server.lease_map_entries)?,
    };
    // Converting, the new program goes in only once its map is written.
    let adopted = if old.is_none() {
        attach_all(&mut fastpath, &config)?
    } else {
        false
    };
    let mut events = RingBuf::try_from(fastpath.take_map(MAP_EVENTS)?)?;

    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        let s = PacketSocket::open(&iface.name)
            .with_context(|| format!("DHCP socket on {}", iface.name))?;
        sockets.push(Arc::new(s));
    }
    let names: Vec<String> = config.interfaces.iter().map(|i| i.name.clone()).collect();
    let fast_ifaces: Vec<FastIface> = config
        .interfaces
        .iter()
        .zip(&sockets)
        .filter(|(i, _)| i.xdp != XdpSetting::Off)
        .map(|(i, s)| FastIface {
            name: i.name.clone(),
            ifindex: s.ifindex,
            mac: s.mac,
        })
        .collect();
    let rate_ifaces: std::collections::HashMap<String, u32> = fast_ifaces
        .iter()
        .map(|i| (i.name.clone(), i.ifindex))
        .collect();
    let mut rate_maps = crate::ratelimit::RateMaps::take(&mut fastpath)?;
    rate_maps
        .apply(&config, &rate_ifaces)
        .context("writing the rate limits")?;
    let mut maps = FastMaps::new(&mut fastpath, &fast_ifaces, config.server.server_id)?;
    let t0 = std::time::Instant::now();
    if adopted {
        // What the kernel renewed while no daemon ran goes into the store
        // before the lease map is rebuilt from it: the events waiting in
        // the ring, then what each entry holds. Until the map is rebuilt,
        // requests pass to the control plane, whose sockets queue them.
        let now = unix_now();
        let mut grants = read_ring(&mut events);
        let read = grants.len();
        grants.extend(maps.clear()?);
        let ops = engine.kernel_tick(grants, now);
        tracing::info!(
            events = read,
            extending = ops.len(),
            "renewals answered while no daemon ran, stored; adopted lease map cleared for rebuilding"
        );
        store
            .apply(&ops)
            .context("storing renewals made while no daemon ran")?;
    }
    let in_map = engine.load_map(&mut maps);
    tracing::info!(
        bindings = in_map,
        capacity = config.server.lease_map_entries,
        ms = t0.elapsed().as_millis() as u64,
        "XDP lease map loaded"
    );
    if let (Some(mut old), Some(dir)) = (old, &config.server.pin_dir) {
        let old_prev = old.is_previous();
        let old_entries = old.len();
        attach_all(&mut fastpath, &config)?;
        std::thread::sleep(crate::upgrade::SWAP_GRACE);
        let (read, grants) = old.drain();
        let ops = engine.kernel_tick(grants, unix_now());
        store
            .apply(&ops)
            .context("storing the renewals the previous layout's program answered")?;
        drop(old);
        crate::upgrade::finish(dir)?;
        let from = if old_prev {
            format!(
                "the previous layout (no layout record, lease key {} B)",
                dhcp_common::prev::LAYOUT.lease_key
            )
        } else {
            "this layout with other counters".to_string()
        };
        tracing::info!(
            old_bindings = old_entries,
            events = read,
            extending = ops.len(),
            "converted the fast path pinned with {from} to {}: program replaced atomically, renewals never stopped; its renewals stored, its maps unpinned",
            dhcp_common::Layout::CURRENT
        );
    }
    // The auditor's own handle on the lease map, taken before the maps go
    // to the committer, the only writer.
    let lease_reader = Arc::new(maps.reader()?);
    let (mut auditor, mut audit_rx) = Auditor::spawn(
        lease_reader.clone(),
        maps.eligibility(),
        auditor::Settings::from_config(&config.server),
    )?;
    // The XDP program submits renewal events without waking anyone (the
    // wakeup check would cost every renewal); they are collected on this
    // tick, so one reaches the store within EVENT_POLL plus a commit.
    let mut event_poll = tokio::time::interval(EVENT_POLL);
    let tx = Arc::new(Transmitter {
        packet: sockets.clone(),
        _port_67: port_67_socket()?,
    });
    let (commit_tx, commit_rx) = mpsc::channel::<Commit<Wire>>();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<MapReport>();
    let stopping = Arc::new(AtomicBool::new(false));
    let mut committer = Committer::new(store, Some(maps));
    let mut commit_tx = CommitQueue::new(
        commit_tx,
        committer.queued.clone(),
        config.server.commit_queue as usize,
    );
    let mut backlog = Backlog::new(config.server.request_queue as usize);
    // Sockets whose last read stopped at its budget, not at empty.
    let mut unread = vec![false; sockets.len()];
    let sync_stats = committer.sync.clone();
    let store_health = committer.health.clone();
    let committer_thread = {
        let tx = tx.clone();
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("xdhcp-commit".into())
            .spawn(move || {
                let all = committer.run(
                    commit_rx,
                    |r| {
                        let _ = report_tx.send(r);
                    },
                    |w| tx.send(w),
                    &stopping,
                    Duration::from_secs(10),
                );
                (all, committer)
            })?
    };

    // Readiness of every packet socket funnels into one channel so the
    // state machine stays on this task, without locks.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<usize>(sockets.len() * 4);
    let mut watchers = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        // SAFETY: the Arc keeps the socket (and its fd) alive as long as
        // the AsyncFd that owns this clone.
        let afd = unsafe { AsyncFd::register_with_interest(s.clone(), Interest::READABLE)? };
        let ready_tx = ready_tx.clone();
        watchers.push(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                guard.clear_ready();
                if ready_tx.send(i).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(ready_tx);

    let log_fd = match fastpath.log_fd() {
        // SAFETY: the fd belongs to the logger inside `fastpath`, which
        // outlives this AsyncFd (declared later, so dropped first).
        Some(fd) => Some(unsafe { AsyncFd::register(fd)? }),
        None => None,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut reclaim = tokio::time::interval(Duration::from_secs(u64::from(
        config.server.reclaim_interval_secs.max(1),
    )));
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel::<Pending>(64);
    let socket_path = control::socket_path(config.server.control_socket.clone());
    let metrics_task = match config.server.metrics_address {
        MetricsAddress::Off => None,
        MetricsAddress::At(addr) => {
            let t = crate::metrics::serve(addr, control_tx.clone()).await?;
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            Some(t)
        }
    };
    let control_task = control::listen(&socket_path, control_tx)?;
    tracing::info!(socket = %socket_path.display(), "control API listening");
    let started = std::time::Instant::now();
    let mut keep_fast_path = false;
    let lease_db = config.server.lease_db.display().to_string();
    tracing::info!(server_id = %config.server.server_id, "xdhcp serving");
    if engine.server.relays_open() {
        tracing::warn!("no relay listed (subnet relays or [[relay]]): relayed requests, options 118 and 82.5 are trusted from any source; list the relays to serve only theirs");
    }
    let mut buf = vec![0u8; 65536];
    let mut egress = Egress::new(config.server.server_id);
    loop {
        let audit_due = auditor.due();
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            Some(i) = ready_rx.recv() => {
                unread[i] = backlog::read(&sockets[i], i, &names[i], &mut buf, &mut engine.server, &mut backlog, READ_BUDGET);
            }
            _ = std::future::ready(()), if unread.contains(&true) => {
                for (i, more) in unread.iter_mut().enumerate().filter(|(_, m)| **m) {
                    *more = backlog::read(&sockets[i], i, &names[i], &mut buf, &mut engine.server, &mut backlog, READ_BUDGET);
                }
            }
            // Requests wait while the store has a full queue of commits:
            // the backlog, not memory, takes the pressure.
            _ = std::future::ready(()), if !backlog.is_empty() && commit_tx.has_room() => {
                let out = Out { sockets: &sockets, names: &names, tx: &tx, commits: &commit_tx };
                for _ in 0..HANDLE_BUDGET {
                    if !out.commits.has_room() {
                        break;
                    }
                    let Some(q) = backlog.pop() else { break };
                    handle_queued(q, &mut engine, &mut egress, &out);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(5)), if !backlog.is_empty() && !commit_tx.has_room() => {}
            _ = sighup.recv() => {
                match engine.reload() {
                    Ok((text, ops)) => {
                        tracing::info!("SIGHUP: {text}");
                        if let Err(e) = rate_maps.apply(&engine.config, &rate_ifaces) {
                            tracing::error!("SIGHUP: rate limits kept as they were: {e:#}");
                        }
                        auditor.set_settings(auditor::Settings::from_config(&engine.config.server));
                        backlog.set_cap(engine.config.server.request_queue as usize);
                        commit_tx.set_cap(engine.config.server.commit_queue as usize);
                        if !ops.is_empty() {
                            commit_tx.send(engine.commit(ops, Vec::new(), None));
                        }
                    }
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                }
            }
            Some(p) = control_rx.recv() => {
                if p.request.command == "shutdown" {
                    keep_fast_path = p.request.arguments.get("keep-fast-path").and_then(serde_json::Value::as_bool).unwrap_or(false);
                    if let (true, Err(why)) = (keep_fast_path, fastpath.hitless_stop()) {
                        keep_fast_path = false;
                        tracing::warn!("refused to stop keeping the fast path: {why}");
                        let _ = p.reply.send(control::Response::error(format!("refused: the fast path would not outlive the daemon: {why}; still serving (stop without --keep-fast-path to stop anyway)")));
                        continue;
                    }
                    tracing::info!(keep_fast_path, "shutdown requested through the control API");
                    let _ = p.reply.send(control::Response::ok(
                        if keep_fast_path { "stopping; the XDP fast path keeps answering renewals" } else { "stopping" },
                        serde_json::Value::Null,
                    ));
                    break;
                }
                if p.request.command.starts_with("reservation-") {
                    match engine.reservation_command(&p.request, unix_now()) {
                        Ok((response, ops)) if ops.is_empty() => { let _ = p.reply.send(response); }
                        Ok((response, ops)) => reply_after_commit(&mut engine, &commit_tx, ops, response, p.reply),
                        Err(e) => { let _ = p.reply.send(control::Response::error(e)); }
                    }
                    continue;
                }
                if p.request.command == "lease4-audit" {
                    let repair = p.request.arguments.get("repair").and_then(serde_json::Value::as_bool).unwrap_or(false);
                    let fix = auditor.request(p.reply, repair, &mut engine);
                    send_repair(&mut engine, &commit_tx, fix);
                    continue;
                }
                if p.request.command == "lease4-get-all" {
                    // The kernel's view of many leases reads the whole map:
                    // off this task.
                    match commands::lease_rows(&engine.server, &p.request.arguments) {
                        Ok(rows) => {
                            let reader = lease_reader.clone();
                            let reply = p.reply;
                            tokio::task::spawn_blocking(move || {
                                let _ = reply.send(commands::lease_list(rows, Some(&reader)));
                            });
                        }
                        Err(r) => { let _ = p.reply.send(r); }
                    }
                    continue;
                }
                if p.request.command == "config-reload" {
                    match engine.reload() {
                        Ok((text, ops)) => {
                            tracing::info!("{text}");
                            if let Err(e) = rate_maps.apply(&engine.config, &rate_ifaces) {
                                tracing::error!("reload: rate limits kept as they were: {e:#}");
                            }
                            auditor.set_settings(auditor::Settings::from_config(&engine.config.server));
                            backlog.set_cap(engine.config.server.request_queue as usize);
                            commit_tx.set_cap(engine.config.server.commit_queue as usize);
                            let response = control::Response::ok(text, serde_json::Value::Null);
                            reply_after_commit(&mut engine, &commit_tx, ops, response, p.reply);
                        }
                        Err(e) => {
                            tracing::error!("reload: {e}");
                            let _ = p.reply.send(control::Response::error(e));
                        }
                    }
                    continue;
                }
                let mut cx = commands::Context {
                    store_health: &store_health,
                    server: &mut engine.server,
                    fastpath: &fastpath,
                    sync: &sync_stats,
                    started,
                    lease_db: lease_db.clone(),
                    lease_map_capacity: config.server.lease_map_entries,
                    now: unix_now(),
                    kernel: Some(&lease_reader),
                    audit: Some(&auditor),
                };
                let (response, ops) = commands::execute(&p.request, &mut cx);
                if ops.is_empty() {
                    let _ = p.reply.send(response);
                } else {
                    reply_after_commit(&mut engine, &commit_tx, ops, response, p.reply);
                }
            }
            Some(r) = report_rx.recv() => {
                engine.map_report(r);
                let fix = auditor.poll(&mut engine);
                send_repair(&mut engine, &commit_tx, fix);
            }
            Some(r) = audit_rx.recv() => {
                let fix = auditor.on_reading(r, &mut engine);
                send_repair(&mut engine, &commit_tx, fix);
            }
            // The store's side of an audit pass, a chunk per wake-up.
            _ = std::future::ready(()), if auditor.has_step() => {
                let fix = auditor.step(&mut engine);
                send_repair(&mut engine, &commit_tx, fix);
            }
            _ = tokio::time::sleep_until(audit_due.unwrap_or_else(std::time::Instant::now).into()), if audit_due.is_some() => {
                let fix = auditor.poll(&mut engine);
                send_repair(&mut engine, &commit_tx, fix);
            }
            _ = reclaim.tick() => {
                // Renewals the kernel answered first: reclaim must not
                // expire what it renewed.
                let now = unix_now();
                let ops = engine.reclaim(read_ring(&mut events), now);
                if !ops.is_empty() {
                    tracing::debug!(ops = ops.len(), "renewals stored, leases reclaimed");
                    commit_tx.send(engine.commit(ops, Vec::new(), None));
                }
            }
            _ = event_poll.tick() => {
                let now = unix_now();
                let ops = engine.kernel_tick(read_ring(&mut events), now);
                if !ops.is_empty() {
                    commit_tx.send(engine.commit(ops, Vec::new(), None));
                }
                let fix = auditor.poll(&mut engine);
                send_repair(&mut engine, &commit_tx, fix);
            }
            ready = async { log_fd.as_ref().unwrap().readable().await }, if log_fd.is_some() => {
                let mut guard = ready?;
                fastpath.flush_logs();
                guard.clear_ready();
            }
        }
    }
    for w in watchers {
        w.abort();
    }
    control_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    if keep_fast_path {
        // The kernel keeps answering renewals; their events wait in the
        // pinned ring for the next daemon.
        fastpath.keep_attached()?;
    } else {
        // No renewals in the kernel from here on; the last ones are stored.
        fastpath.detach_all()?;
    }
    let now = unix_now();
    let ops = engine.kernel_tick(read_ring(&mut events), now);
    if !ops.is_empty() {
        commit_tx.send(engine.commit(ops, Vec::new(), None));
    }
    // Every change handed to the committer is written before we exit (or,
    // with the store failing, given up on after a while).
    stopping.store(true, Ordering::SeqCst);
    drop(commit_tx);
    let (all_written, mut committer) = committer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("committer panicked"))?;
    let mut clean = all_written && !keep_fast_path;
    if clean {
        // Renewals the kernel answered without reporting them (within
        // lease/8 of the last report) go into the store too, so a clean
        // store is exact and the next start needs no recovery.
        if let Some(m) = committer.maps.as_ref() {
            let grants = m.unreported();
            let ops = engine.kernel_tick(grants, unix_now());
            if let Err(e) = committer.store.apply(&ops) {
                tracing::error!("storing the kernel's last renewals: {e:#}; the next start recovers as after a crash");
                clean = false;
            }
        }
    }
    // With the fast path left running, renewals go on without a daemon to
    // store them: the next start must recover as after a crash.
    if let Err(e) = committer.store.set_clean(clean) {
        tracing::error!("marking the lease store: {e:#}; the next start recovers as after a crash");
    }
    let health = store_health.lock().unwrap().clone();
    tracing::info!(
        batches = health.batches,
        failed_writes = health.failed_writes,
        clean,
        "lease store flushed"
    );
    if let Some(m) = committer.maps.as_ref() {
        tracing::info!("XDP lease map: {:?}", m.stats);
    }
    log_counters(&engine.server);
    fastpath.flush_logs();
    let stats = fastpath.stats()?;
    let received: u64 = engine.server.counters.received.iter().sum();
    tracing::info!(control_plane_received = received, "xdp counters: {stats}");
    if keep_fast_path {
        tracing::info!(
            "XDP fast path left attached and pinned in {}; the next xdhcp serve adopts it (xdhcp detach removes it); bye",
            config.server.pin_dir.as_deref().map_or("?".into(), |d| d.display().to_string())
        );
    } else {
        tracing::info!("XDP programs detached; bye");
    }
    if !all_written {
        // An init system should know: the store was left as after a crash.
        anyhow::bail!(
            "stopped with lease changes the store refused to take ({}): the next start recovers as after a crash",
            health.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}
