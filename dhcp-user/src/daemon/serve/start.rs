//! Bringing the daemon up: the store is recovered before the fast path is
//! touched, what the kernel renewed while no daemon ran is stored before
//! the lease map is rebuilt, and a converted fast path is swapped in only
//! once its map is written.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, mpsc as std_mpsc, Arc},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use dhcp_common::MAP_EVENTS;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::JoinHandle,
};

use super::{
    following::follow_other_nodes, port_67_socket, unix_now, Daemon, Transmitter, Wake, Wire,
    EVENT_POLL,
};
use crate::{
    api::control::{self, Pending},
    config::{Config, MetricsAddress, XdpSetting},
    daemon::auditor::{self, Auditor},
    daemon::backlog::Backlog,
    daemon::commit::{Commit, CommitQueue, Committer},
    daemon::engine::{read_ring, Engine, Overrides},
    daemon::sockets::PacketSocket,
    daemon::transmit::Egress,
    store::LeaseStore,
    xdp::loader::Fastpath,
    xdp::map_sync::{FastIface, FastMaps, MapReport},
    xdp::pins::{self, PinnedLayout},
    xdp::rate_limits::RateMaps,
    xdp::upgrade::OldFastPath,
};

pub(super) async fn start(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    overrides: Overrides,
    debug_xdp_logs: bool,
) -> Result<(Daemon, Wake)> {
    // Before the store is opened or recovered: pins this build cannot use
    // are refused while nothing, there or in the store, has changed.
    let pinned = match &config.server.pin_dir {
        Some(dir) => Some(pins::check_layout(dir)?),
        None => None,
    };
    let mut store = crate::store::open(&config)?;
    // The change feed's position before the leases are read: the follower
    // starts there, so nothing another node writes in between is missed.
    let since = store
        .change_seq()
        .context("reading the shared store's change feed")?;
    let mut engine = Engine::start(&mut *store, config, config_path, overrides, unix_now())?;
    let config = engine.config.clone();
    let up = bring_up_fast_path(&config, pinned, debug_xdp_logs, &mut engine, &mut *store)?;
    let (fastpath, maps, sockets) = (up.fastpath, up.maps, up.sockets);
    // The auditor's own handle on the lease map, taken before the maps go
    // to the committer, the only writer.
    let lease_reader = Arc::new(maps.reader()?);
    let (auditor, audit_rx) = Auditor::spawn(
        lease_reader.clone(),
        maps.eligibility(),
        auditor::Settings::from_config(&config.server),
    )?;
    let tx = Arc::new(Transmitter {
        packet: sockets.clone(),
        _port_67: port_67_socket()?,
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let (commit_tx, committer_thread, report_rx, sync_stats, store_health) =
        spawn_committer(store, maps, &config, &tx, &stopping)?;
    let (follow_rx, follow_stop) = follow_other_nodes(&config, since, &store_health)?;
    let ready = watch_sockets(&sockets)?;
    let log_fd = match fastpath.log_fd() {
        // SAFETY: the fd belongs to the logger inside `fastpath`, which
        // outlives this AsyncFd (`Wake` is dropped in `stop` first).
        Some(fd) => Some(unsafe { AsyncFd::register(fd)? }),
        None => None,
    };
    let control = open_control(&config).await?;
    let mut wake = wake(&config, ready, control, report_rx, audit_rx, log_fd)?;
    wake.follow_rx = follow_rx;
    tracing::info!(server_id = %config.server.server_id, "xdhcp serving");
    if engine.server.relays_open() {
        tracing::warn!("no relay listed (subnet relays or [[relay]]): relayed requests, options 118 and 82.5 are trusted from any source; list the relays to serve only theirs");
    }
    let daemon = Daemon {
        unread: vec![false; sockets.len()],
        buf: Default::default(),
        backlog: Backlog::new(config.server.request_queue as usize),
        egress: Egress::new(config.server.server_id),
        lease_db: config.server.lease_db.display().to_string(),
        started: std::time::Instant::now(),
        names: config.interfaces.iter().map(|i| i.name.clone()).collect(),
        config,
        engine,
        fastpath,
        events: up.events,
        sockets,
        tx,
        commit_tx,
        committer_thread,
        stopping,
        sync_stats,
        store_health,
        rate_maps: up.rate_maps,
        rate_ifaces: up.rate_ifaces,
        lease_reader,
        auditor,
        follow_stop,
    };
    Ok((daemon, wake))
}

/// The fast path loaded, attached, its rate limits written and its lease
/// map filled from the store, with the sockets of its interfaces.
struct FastPathUp {
    fastpath: Fastpath,
    events: RingBuf<MapData>,
    sockets: Vec<Arc<PacketSocket>>,
    rate_maps: RateMaps,
    rate_ifaces: HashMap<String, u32>,
    maps: FastMaps,
}

fn bring_up_fast_path(
    config: &Config,
    pinned: Option<PinnedLayout>,
    debug_xdp_logs: bool,
    engine: &mut Engine,
    store: &mut dyn LeaseStore,
) -> Result<FastPathUp> {
    let (mut fastpath, old) = load_fast_path(config, pinned, debug_xdp_logs)?;
    // Converting, the new program goes in only once its map is written.
    let adopted = if old.is_none() {
        attach_all(&mut fastpath, config)?
    } else {
        false
    };
    let mut events = RingBuf::try_from(fastpath.take_map(MAP_EVENTS)?)?;
    let (sockets, fast_ifaces) = open_sockets(config)?;
    let rate_ifaces: HashMap<String, u32> = fast_ifaces
        .iter()
        .map(|i| (i.name.clone(), i.ifindex))
        .collect();
    let mut rate_maps = RateMaps::take(&mut fastpath)?;
    rate_maps
        .apply(config, &rate_ifaces)
        .context("writing the rate limits")?;
    let mut maps = FastMaps::new(&mut fastpath, &fast_ifaces, config.server.server_id)?;
    // Only a shared store has other nodes waiting out stored end + MCLT;
    // one node's crash recovery covers what its own kernel granted.
    maps.set_mclt(config.database.as_ref().map(|d| d.mclt_secs));
    let t0 = std::time::Instant::now();
    if adopted {
        store_adopted_renewals(engine, &mut events, &mut maps, store)?;
    }
    let in_map = engine.load_map(&mut maps);
    tracing::info!(
        bindings = in_map,
        capacity = config.server.lease_map_entries,
        ms = t0.elapsed().as_millis() as u64,
        "XDP lease map loaded"
    );
    if let (Some(old), Some(dir)) = (old, &config.server.pin_dir) {
        finish_conversion(old, dir, &mut fastpath, config, engine, store)?;
    }
    Ok(FastPathUp {
        fastpath,
        events,
        sockets,
        rate_maps,
        rate_ifaces,
        maps,
    })
}

/// The control socket and the metrics endpoint, listening.
struct ControlUp {
    rx: mpsc::Receiver<Pending>,
    task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
    socket_path: std::path::PathBuf,
}

async fn open_control(config: &Config) -> Result<ControlUp> {
    let (control_tx, rx) = mpsc::channel::<Pending>(64);
    let socket_path = control::socket_path(config.server.control_socket.clone());
    let metrics_task = start_metrics(config, &control_tx).await?;
    let task = control::listen(&socket_path, control_tx)?;
    tracing::info!(socket = %socket_path.display(), "control API listening");
    Ok(ControlUp {
        rx,
        task,
        metrics_task,
        socket_path,
    })
}

/// What the loop waits on. Called before "serving" is logged: a signal
/// that follows it must find the handlers in place, not the default
/// action (death by SIGTERM, no clean stop).
fn wake(
    config: &Config,
    (ready_rx, watchers): (mpsc::Receiver<usize>, Vec<JoinHandle<()>>),
    control: ControlUp,
    report_rx: mpsc::UnboundedReceiver<MapReport>,
    audit_rx: mpsc::Receiver<auditor::Reading>,
    log_fd: Option<AsyncFd<i32>>,
) -> Result<Wake> {
    Ok(Wake {
        sigint: signal(SignalKind::interrupt())?,
        sigterm: signal(SignalKind::terminate())?,
        sighup: signal(SignalKind::hangup())?,
        ready_rx,
        watchers,
        control_rx: control.rx,
        report_rx,
        audit_rx,
        // The XDP program submits renewal events without waking anyone
        // (the wakeup check would cost every renewal); they are collected
        // on this tick, so one reaches the store within EVENT_POLL plus a
        // commit.
        event_poll: tokio::time::interval(EVENT_POLL),
        reclaim: tokio::time::interval(Duration::from_secs(u64::from(
            config.server.reclaim_interval_secs.max(1),
        ))),
        log_fd,
        follow_rx: None,
        control_task: control.task,
        metrics_task: control.metrics_task,
        socket_path: control.socket_path,
    })
}

/// The program from the embedded object: over pinned maps when `pin_dir`
/// is set, converting them when they have another layout.
fn load_fast_path(
    config: &Config,
    pinned: Option<PinnedLayout>,
    debug_xdp_logs: bool,
) -> Result<(Fastpath, Option<OldFastPath>)> {
    let entries = config.server.lease_map_entries;
    Ok(match (&config.server.pin_dir, pinned) {
        (Some(dir), Some(layout)) if layout.converted() => {
            let old = OldFastPath::open(dir, layout == PinnedLayout::Previous)?;
            (
                Fastpath::load_converting(debug_xdp_logs, entries, dir)?,
                Some(old),
            )
        }
        (Some(dir), _) => (Fastpath::load_pinned(debug_xdp_logs, entries, dir)?, None),
        (None, _) => (Fastpath::load_sized(debug_xdp_logs, entries)?, None),
    })
}

/// One AF_PACKET socket per interface, and the interfaces the fast path
/// serves.
fn open_sockets(config: &Config) -> Result<(Vec<Arc<PacketSocket>>, Vec<FastIface>)> {
    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        let s = PacketSocket::open(&iface.name)
            .with_context(|| format!("DHCP socket on {}", iface.name))?;
        sockets.push(Arc::new(s));
    }
    let fast_ifaces = config
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
    Ok((sockets, fast_ifaces))
}

/// What the kernel renewed while no daemon ran goes into the store before
/// the lease map is rebuilt from it: the events waiting in the ring, then
/// what each entry holds. Until the map is rebuilt, requests pass to the
/// control plane, whose sockets queue them.
fn store_adopted_renewals(
    engine: &mut Engine,
    events: &mut RingBuf<aya::maps::MapData>,
    maps: &mut FastMaps,
    store: &mut dyn LeaseStore,
) -> Result<()> {
    let now = unix_now();
    let mut grants = read_ring(events);
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
        .context("storing renewals made while no daemon ran")
}

/// Swaps the new program in over the previous layout's, then stores what
/// the old one answered until the swap and unpins its maps.
fn finish_conversion(
    mut old: OldFastPath,
    dir: &std::path::Path,
    fastpath: &mut Fastpath,
    config: &Config,
    engine: &mut Engine,
    store: &mut dyn LeaseStore,
) -> Result<()> {
    let old_prev = old.is_previous();
    let old_entries = old.len();
    attach_all(fastpath, config)?;
    std::thread::sleep(crate::xdp::upgrade::SWAP_GRACE);
    let (read, grants) = old.drain();
    let ops = engine.kernel_tick(grants, unix_now());
    store
        .apply(&ops)
        .context("storing the renewals the previous layout's program answered")?;
    drop(old);
    crate::xdp::upgrade::finish(dir)?;
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
    Ok(())
}

type CommitterParts = (
    CommitQueue<Wire>,
    std::thread::JoinHandle<(bool, Committer)>,
    mpsc::UnboundedReceiver<MapReport>,
    Arc<std::sync::Mutex<crate::xdp::map_sync::SyncStats>>,
    Arc<std::sync::Mutex<crate::store::StoreHealth>>,
);

/// The committer thread, the only writer of the store and the maps.
fn spawn_committer(
    store: Box<dyn LeaseStore>,
    maps: FastMaps,
    config: &Config,
    tx: &Arc<Transmitter>,
    stopping: &Arc<AtomicBool>,
) -> Result<CommitterParts> {
    let (commit_tx, commit_rx) = std_mpsc::channel::<Commit<Wire>>();
    let (report_tx, report_rx) = mpsc::unbounded_channel::<MapReport>();
    let mut committer = Committer::new(store, Some(maps));
    let commit_tx = CommitQueue::new(
        commit_tx,
        committer.queued.clone(),
        config.server.commit_queue as usize,
    );
    let sync_stats = committer.sync.clone();
    let store_health = committer.health.clone();
    let tx = tx.clone();
    let stopping = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("xdhcp-commit".into())
        .spawn(move || {
            let all = committer.run(
                commit_rx,
                |r| {
                    let _ = report_tx.send(r);
                },
                |ws| tx.send_all(ws),
                &stopping,
                Duration::from_secs(10),
            );
            (all, committer)
        })?;
    Ok((commit_tx, thread, report_rx, sync_stats, store_health))
}

/// A task per packet socket that reports its readiness on one channel.
fn watch_sockets(
    sockets: &[Arc<PacketSocket>],
) -> Result<(mpsc::Receiver<usize>, Vec<JoinHandle<()>>)> {
    let (ready_tx, ready_rx) = mpsc::channel::<usize>(sockets.len() * 4);
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
    Ok((ready_rx, watchers))
}

async fn start_metrics(
    config: &Config,
    control_tx: &mpsc::Sender<Pending>,
) -> Result<Option<JoinHandle<()>>> {
    match config.server.metrics_address {
        MetricsAddress::Off => Ok(None),
        MetricsAddress::At(addr) => {
            let t = crate::api::metrics::serve(addr, control_tx.clone()).await?;
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            Ok(Some(t))
        }
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
        if mode == crate::xdp::loader::AttachedMode::Adopted {
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
