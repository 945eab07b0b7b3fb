//! `xdhcp serve`: the daemon. Attaches the XDP program, receives DHCP
//! requests as frames on each interface, runs the state machine, persists
//! with group commit and only then sends ACKs, reclaims expired leases, and
//! on SIGINT/SIGTERM finishes its pending commits and detaches everything.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use aya::maps::{MapData, RingBuf};
use dhcp_common::{RenewEvent, MAP_EVENTS};

use crate::{
    commands,
    config::{Config, XdpSetting},
    control::{self, Pending},
    egress::Egress,
    fastmap::{client_key, mono_ns_to_unix, FastIface, FastMaps, SyncStats},
    fastpath::Fastpath,
    packet::{self, PacketSocket},
    server::{Arrival, Server},
    store::{ApiReservation, LeaseStore, SqliteStore, StoreOp},
    wire::{self, msg},
};

pub use crate::egress::Wire;

/// How often renewals answered by the XDP program are collected.
pub const EVENT_POLL: Duration = Duration::from_millis(100);

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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

/// Work for the committer thread: lease changes, then the replies that
/// may only leave once those changes are durable.
struct Commit {
    ops: Vec<StoreOp>,
    replies: Vec<Wire>,
    /// Told whether the batch holding these changes was written.
    done: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Commit {
    fn new(ops: Vec<StoreOp>, replies: Vec<Wire>) -> Commit {
        Commit {
            ops,
            replies,
            done: None,
        }
    }
}

/// Group commit: everything that queued up while the previous transaction
/// was being written goes into the next one.
fn committer(
    mut store: Box<dyn LeaseStore>,
    mut maps: Option<FastMaps>,
    shared: Arc<Mutex<SyncStats>>,
    health: Arc<Mutex<commands::StoreHealth>>,
    rx: mpsc::Receiver<Commit>,
    tx: Arc<Transmitter>,
) -> (u64, u64, Box<dyn LeaseStore>, Option<FastMaps>) {
    let (mut batches, mut failed) = (0u64, 0u64);
    while let Ok(first) = rx.recv() {
        let mut ops = first.ops;
        let mut replies = first.replies;
        let mut done: Vec<_> = first.done.into_iter().collect();
        while let Ok(more) = rx.try_recv() {
            ops.extend(more.ops);
            replies.extend(more.replies);
            done.extend(more.done);
            if ops.len() >= 4096 {
                break;
            }
        }
        // The kernel stops answering for what this batch ends before it is
        // written, and starts answering for what it binds once durable.
        if let Some(m) = maps.as_mut() {
            m.before_commit(&ops);
        }
        let written = store.apply(&ops);
        if let Some(m) = maps.as_mut() {
            if written.is_ok() {
                m.after_commit(&ops);
            }
            *shared.lock().unwrap() = m.stats;
        }
        for d in done {
            let _ = d.send(written.is_ok());
        }
        {
            let mut h = health.lock().unwrap();
            match &written {
                Ok(()) => {
                    h.batches += 1;
                    h.last_write = unix_now();
                    h.last_error = None;
                }
                Err(e) => {
                    h.failed_batches += 1;
                    h.last_error = Some(format!("{e:#}"));
                }
            }
        }
        match written {
            Ok(()) => {
                batches += 1;
                for r in &replies {
                    tx.send(r);
                }
            }
            Err(e) => {
                // Never an ACK for a lease that is not durable.
                failed += replies.len() as u64;
                tracing::error!(
                    "lease store write failed, {} replies withheld: {e:#}",
                    replies.len()
                );
            }
        }
    }
    (batches, failed, store, maps)
}

/// What the replies depend on: server identifier, options, subnets.
fn reply_config_fingerprint(config: &Config) -> i64 {
    let text = format!(
        "{:?}|{:?}|{:?}",
        config.server.server_id, config.options, config.subnets
    );
    i64::from(dhcp_common::fnv1a(text.as_bytes()))
}

/// Renewals the XDP program answered, as store changes (those that
/// extend what the control plane knows), and how many events were read.
fn renewals_counted(events: &mut RingBuf<MapData>, server: &mut Server) -> (Vec<StoreOp>, usize) {
    let mut ops = Vec::new();
    let mut read = 0;
    while let Some(item) = events.next() {
        read += 1;
        if item.len() < std::mem::size_of::<RenewEvent>() {
            continue;
        }
        let ev: RenewEvent =
            bytemuck::pod_read_unaligned(&item[..std::mem::size_of::<RenewEvent>()]);
        let Some(key) = client_key(&ev.key) else {
            continue;
        };
        let ip = Ipv4Addr::from(ev.ip.to_ne_bytes());
        let expires = mono_ns_to_unix(ev.expires_mono_ns);
        if let Some(op) = server.renewed(&key, ip, expires) {
            tracing::debug!(%ip, expires, "renewed by the XDP program");
            server.counters.fast_renewals += 1;
            ops.push(op);
        }
    }
    (ops, read)
}

fn renewals(events: &mut RingBuf<MapData>, server: &mut Server) -> Vec<StoreOp> {
    renewals_counted(events, server).0
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

/// The file's configuration with the API's reservations added to their
/// subnets (those of subnets no longer configured are kept in the store,
/// unused).
fn with_reservations(file: &Config, extras: &[ApiReservation]) -> Config {
    let mut c = file.clone();
    for r in extras {
        if let Some(sn) = c.subnets.iter_mut().find(|s| s.id == r.subnet_id) {
            sn.reservations.push(crate::config::Reservation {
                hw_address: r.hw_address.clone(),
                client_id: r.client_id.clone(),
                ip: r.ip,
                options: Default::default(),
            });
        }
    }
    c
}

/// reservation-get-all / reservation-add / reservation-del. A change
/// rebuilds the state machine on the new reservation set (as a reload
/// does) and is answered once stored. Other clients' replies do not
/// change, so their bindings stay in the XDP map.
fn reservation_command(
    req: &control::Request,
    file_config: &Config,
    extras: &mut Vec<ApiReservation>,
    running: &mut Config,
    server: &mut Server,
    now: u64,
) -> std::result::Result<(control::Response, Vec<StoreOp>), String> {
    use serde_json::{json, Value};
    let a = &req.arguments;
    let ip_arg = || -> std::result::Result<Ipv4Addr, String> {
        a.get("ip-address")
            .and_then(Value::as_str)
            .ok_or("ip-address is required")?
            .parse()
            .map_err(|e| format!("ip-address: {e}"))
    };
    match req.command.as_str() {
        "reservation-get-all" => {
            let mut list = Vec::new();
            for sn in &running.subnets {
                for r in &sn.reservations {
                    let api = extras.iter().any(|e| e.subnet_id == sn.id && e.ip == r.ip);
                    list.push(json!({
                        "subnet-id": sn.id,
                        "ip-address": r.ip.to_string(),
                        "hw-address": r.hw_address,
                        "client-id": r.client_id,
                        "source": if api { "api" } else { "config" },
                    }));
                }
            }
            let n = list.len();
            Ok((
                if n == 0 {
                    control::Response::empty("0 reservations")
                } else {
                    control::Response::ok(
                        format!("{n} reservations"),
                        json!({ "reservations": list }),
                    )
                },
                Vec::new(),
            ))
        }
        "reservation-add" => {
            let ip = ip_arg()?;
            let subnet_id = server
                .subnet_of(ip)
                .ok_or_else(|| format!("{ip} is in no configured subnet"))?;
            let (key, _) = commands::client_of(a)?;
            let sn = running
                .subnets
                .iter()
                .find(|s| s.id == subnet_id)
                .expect("subnet_of");
            if sn.reservations.iter().any(|r| r.ip == ip) {
                return Err(format!("{ip} is already reserved"));
            }
            if let Some(l) = server.leases.get(ip) {
                if l.holds_address(now) && !l.is_client(&key) {
                    return Err(format!(
                        "{ip} is leased to another client; delete that lease first"
                    ));
                }
            }
            let r = ApiReservation {
                subnet_id,
                ip,
                hw_address: a
                    .get("hw-address")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                client_id: a
                    .get("client-id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
            let mut next = extras.clone();
            next.push(r.clone());
            let candidate = with_reservations(file_config, &next);
            // The same checks as a file's reservations (format, duplicates).
            candidate
                .validate_reservations()
                .map_err(|e| format!("refused: {e}"))?;
            *extras = next;
            rebuild(candidate, current_leases(server), running, server);
            tracing::info!(%ip, subnet_id, "reservation added by the control API");
            Ok((
                control::Response::ok(format!("{ip} reserved in subnet {subnet_id}"), Value::Null),
                vec![
                    StoreOp::PutReservation(r),
                    StoreOp::Meta("reply_config", reply_config_fingerprint(running)),
                ],
            ))
        }
        "reservation-del" => {
            let ip = ip_arg()?;
            let Some(pos) = extras.iter().position(|e| e.ip == ip) else {
                if running
                    .subnets
                    .iter()
                    .any(|s| s.reservations.iter().any(|r| r.ip == ip))
                {
                    return Err(format!(
                        "{ip} is reserved in the configuration file: edit it and reload"
                    ));
                }
                return Ok((
                    control::Response::empty(format!("{ip} is not reserved")),
                    Vec::new(),
                ));
            };
            let r = extras.remove(pos);
            let candidate = with_reservations(file_config, extras);
            rebuild(candidate, current_leases(server), running, server);
            tracing::info!(%ip, "reservation deleted by the control API");
            Ok((
                control::Response::ok(format!("reservation of {ip} deleted"), Value::Null),
                vec![
                    StoreOp::DeleteReservation {
                        subnet_id: r.subnet_id,
                        ip,
                    },
                    StoreOp::Meta("reply_config", reply_config_fingerprint(running)),
                ],
            ))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Replaces the state machine with one built on `candidate` around
/// `leases`, keeping the counters.
fn rebuild(
    candidate: Config,
    leases: Vec<crate::leases::Lease>,
    running: &mut Config,
    server: &mut Server,
) {
    let counters = std::mem::take(&mut server.counters);
    *server = Server::new(&candidate, leases);
    server.counters = counters;
    *running = candidate;
}

fn current_leases(server: &Server) -> Vec<crate::leases::Lease> {
    server.leases.iter().cloned().collect()
}

/// Answers `reply` once the batch holding `ops` is written (the change is
/// then in the store and the lease map), or with an error if it failed.
fn reply_after_commit(
    commit_tx: &mpsc::Sender<Commit>,
    ops: Vec<StoreOp>,
    response: control::Response,
    reply: tokio::sync::oneshot::Sender<control::Response>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = commit_tx.send(Commit {
        ops,
        replies: Vec::new(),
        done: Some(done_tx),
    });
    tokio::spawn(async move {
        let r = match done_rx.await {
            Ok(true) => response,
            _ => control::Response::error(
                "the lease store refused the change; nothing was changed on disk",
            ),
        };
        let _ = reply.send(r);
    });
}

/// What the command line sets over the configuration file; applied to
/// every reading of it (start and reload), so a reload never mistakes a
/// command-line value for a change in the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub lease_db: Option<std::path::PathBuf>,
    pub control_socket: Option<std::path::PathBuf>,
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.lease_db {
            c.server.lease_db = v.clone();
        }
        if let Some(v) = &self.control_socket {
            c.server.control_socket = Some(v.clone());
        }
        if let Some(v) = &self.pin_dir {
            c.server.pin_dir = Some(v.clone());
        }
    }
}

/// Applies the configuration at `path` to the running server: subnets,
/// pools, options and reservations change in place; what needs new
/// sockets, programs or maps (interfaces, server identifier, lease store,
/// map size, control socket) is refused. When the replies change, every
/// binding leaves the XDP lease map (written to the store in the same
/// batch) so its next renewal is answered, and rebound, by the control
/// plane with the new options.
fn reload(
    path: Option<&std::path::Path>,
    overrides: &Overrides,
    running: &mut Config,
    file_config: &mut Config,
    extras: &[ApiReservation],
    server: &mut Server,
) -> std::result::Result<(String, Vec<StoreOp>), String> {
    let path = path.ok_or("running on the embedded default configuration: nothing to reload")?;
    let mut new_file = Config::from_file(path)
        .map_err(|e| format!("refused, the running configuration stays: {e}"))?;
    overrides.apply(&mut new_file);
    let new = with_reservations(&new_file, extras);
    let restart = |what: &str| Err(format!("refused: {what} changed; that needs a restart"));
    if new.interfaces != running.interfaces {
        return restart("[[interface]]");
    }
    let (a, b) = (&new.server, &running.server);
    if a.server_id != b.server_id {
        return restart("server_id");
    }
    if a.lease_db != b.lease_db || a.lease_db_sync != b.lease_db_sync {
        return restart("the lease store");
    }
    if a.lease_map_entries != b.lease_map_entries {
        return restart("lease_map_entries");
    }
    if a.pin_dir != b.pin_dir
        || a.control_socket != b.control_socket
        || a.metrics_address != b.metrics_address
    {
        return restart("pin_dir, control_socket or metrics_address");
    }
    let mut leases: Vec<crate::leases::Lease> = server.leases.iter().cloned().collect();
    let mut ops = Vec::new();
    let fingerprint = reply_config_fingerprint(&new);
    if fingerprint != reply_config_fingerprint(running) {
        for l in &mut leases {
            if l.fast.take().is_some() {
                ops.push(StoreOp::Put(l.clone()));
            }
        }
        ops.push(StoreOp::Meta("reply_config", fingerprint));
    }
    let moved = ops.len().saturating_sub(1);
    rebuild(new, leases, running, server);
    *file_config = new_file;
    Ok((
        format!(
            "configuration reloaded from {}: {} subnets; {moved} bindings answered by the control plane at their next renewal",
            path.display(),
            running.subnets.len()
        ),
        ops,
    ))
}

pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    overrides: Overrides,
    debug_xdp_logs: bool,
) -> Result<()> {
    let mut store = SqliteStore::open(&config.server.lease_db, config.server.lease_db_sync)?;
    // Reservations added through the control API join the file's.
    let mut extras = store.reservations().context("loading reservations")?;
    let mut file_config = config;
    let mut config = with_reservations(&file_config, &extras);
    let mut stored = store.load().context("loading leases")?;
    let loaded = stored.len();
    // Reply templates were built under the configuration of their ACK; one
    // that changed since must not answer from the kernel until the control
    // plane has ACKed (and so rebuilt) each binding again.
    let fingerprint = reply_config_fingerprint(&config);
    if store.meta("reply_config")? != Some(fingerprint) {
        let ops: Vec<StoreOp> = stored
            .iter_mut()
            .filter_map(|l| l.fast.take().map(|_| StoreOp::Put(l.clone())))
            .collect();
        if !ops.is_empty() {
            tracing::info!(
                bindings = ops.len(),
                "configuration changed since these bindings were made: their next renewal goes through the control plane"
            );
            store
                .apply(&ops)
                .context("storing bindings without their templates")?;
        }
        store.set_meta("reply_config", fingerprint)?;
    }
    let mut server = Server::new(&config, stored);
    tracing::info!(leases = loaded, db = %config.server.lease_db.display(), "lease store open");
    if !store.take_clean()? {
        let ops = server.recover_unclean(unix_now());
        tracing::warn!(
            extended = ops.len(),
            "the last run did not stop cleanly: renewals the XDP program answered may not have been stored, so bindings it could have renewed are held until now + their lease time"
        );
        store.apply(&ops).context("storing recovered leases")?;
    }

    let mut fastpath = match &config.server.pin_dir {
        Some(dir) => Fastpath::load_pinned(debug_xdp_logs, config.server.lease_map_entries, dir)?,
        None => Fastpath::load_sized(debug_xdp_logs, config.server.lease_map_entries)?,
    };
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
    let mut events = RingBuf::try_from(fastpath.take_map(MAP_EVENTS)?)?;
    if adopted {
        // What the kernel renewed while no daemon ran goes into the store
        // before the lease map is rebuilt from it.
        let (ops, read) = renewals_counted(&mut events, &mut server);
        tracing::info!(
            events = read,
            extending = ops.len(),
            "renewals answered while no daemon ran, stored"
        );
        store
            .apply(&ops)
            .context("storing renewals made while no daemon ran")?;
    }

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
    let mut maps = FastMaps::new(&mut fastpath, &fast_ifaces, config.server.server_id)?;
    let t0 = std::time::Instant::now();
    if adopted {
        // Rebuilt from the store: entries and template slots as this
        // daemon accounts for them. Until then requests pass to the
        // control plane, whose sockets already queue them.
        let n = maps.clear()?;
        tracing::info!(entries = n, "adopted lease map cleared for rebuilding");
    }
    let in_map = maps.load(server.leases.iter());
    tracing::info!(
        bindings = in_map,
        capacity = config.server.lease_map_entries,
        ms = t0.elapsed().as_millis() as u64,
        "XDP lease map loaded"
    );
    let sync_stats = Arc::new(Mutex::new(maps.stats));
    let store_health = Arc::new(Mutex::new(commands::StoreHealth::default()));
    // The XDP program submits renewal events without waking anyone (the
    // wakeup check would cost every renewal); they are collected on this
    // tick, so one reaches the store within EVENT_POLL plus a commit.
    let mut event_poll = tokio::time::interval(EVENT_POLL);
    let tx = Arc::new(Transmitter {
        packet: sockets.clone(),
        _port_67: port_67_socket()?,
    });
    let (commit_tx, commit_rx) = mpsc::channel::<Commit>();
    let committer_thread = {
        let tx = tx.clone();
        let shared = sync_stats.clone();
        let health = store_health.clone();
        std::thread::Builder::new()
            .name("xdhcp-commit".into())
            .spawn(move || committer(Box::new(store), Some(maps), shared, health, commit_rx, tx))?
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
    let metrics_task = match config.server.metrics_address.as_str() {
        "off" => None,
        a => {
            let addr: std::net::SocketAddr = a
                .parse()
                .with_context(|| format!("server.metrics_address {a:?}"))?;
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
    let mut buf = vec![0u8; 65536];
    let mut egress = Egress::new(config.server.server_id);
    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            Some(i) = ready_rx.recv() => {
                let sock = &sockets[i];
                // Drain: many requests per wake-up under load.
                loop {
                    let meta = match sock.recv(&mut buf) {
                        Ok(m) => m,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => { tracing::warn!(interface = %names[i], "recv: {e}"); break; }
                    };
                    if !meta.for_us {
                        server.count_not_for_us();
                        continue;
                    }
                    let frame = match wire::parse_frame(&buf[..meta.len], meta.stripped_tag, meta.check_udp) {
                        Ok(f) => f,
                        Err(m) => { server.count_malformed(m); continue; }
                    };
                    let req = match wire::parse_dhcp(frame.payload) {
                        Ok(r) => r,
                        Err(m) => { server.count_malformed(m); continue; }
                    };
                    let arrival = Arrival { iface: &names[i], tags: &frame.tags, src_mac: frame.src_mac };
                    let now = unix_now();
                    let out = server.handle(&req, &arrival, now);
                    tracing::debug!(
                        interface = %names[i], xid = format_args!("{:#010x}", req.xid),
                        "{} -> {}", msg::name(req.msg_type),
                        out.reply.as_ref().map_or(out.dropped.unwrap_or("-"), |r| msg::name(r.msg_type))
                    );
                    let wire = out.reply.map(|r| egress.frame_for(&r.dest, &frame, sock.mac, r.payload, i));
                    if out.store.is_empty() {
                        if let Some(w) = &wire {
                            tx.send(w);
                        }
                    } else {
                        let _ = commit_tx.send(Commit::new(out.store, wire.into_iter().collect()));
                    }
                }
            }
            _ = sighup.recv() => {
                match reload(config_path.as_deref(), &overrides, &mut config, &mut file_config, &extras, &mut server) {
                    Ok((text, ops)) => {
                        tracing::info!("SIGHUP: {text}");
                        if !ops.is_empty() {
                            let _ = commit_tx.send(Commit::new(ops, Vec::new()));
                        }
                    }
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                }
            }
            Some(p) = control_rx.recv() => {
                if p.request.command == "shutdown" {
                    keep_fast_path = p.request.arguments.get("keep-fast-path").and_then(serde_json::Value::as_bool).unwrap_or(false);
                    if keep_fast_path && config.server.pin_dir.is_none() {
                        keep_fast_path = false;
                        let _ = p.reply.send(control::Response::error("no pin_dir configured: the fast path cannot outlive the daemon (stop without --keep-fast-path, or set server.pin_dir)"));
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
                    match reservation_command(&p.request, &file_config, &mut extras, &mut config, &mut server, unix_now()) {
                        Ok((response, ops)) if ops.is_empty() => { let _ = p.reply.send(response); }
                        Ok((response, ops)) => reply_after_commit(&commit_tx, ops, response, p.reply),
                        Err(e) => { let _ = p.reply.send(control::Response::error(e)); }
                    }
                    continue;
                }
                if p.request.command == "config-reload" {
                    match reload(config_path.as_deref(), &overrides, &mut config, &mut file_config, &extras, &mut server) {
                        Ok((text, ops)) => {
                            tracing::info!("{text}");
                            let response = control::Response::ok(text, serde_json::Value::Null);
                            reply_after_commit(&commit_tx, ops, response, p.reply);
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
                    server: &mut server,
                    fastpath: &fastpath,
                    sync: &sync_stats,
                    started,
                    lease_db: lease_db.clone(),
                    lease_map_capacity: config.server.lease_map_entries,
                    now: unix_now(),
                };
                let (response, ops) = commands::execute(&p.request, &mut cx);
                if ops.is_empty() {
                    let _ = p.reply.send(response);
                } else {
                    reply_after_commit(&commit_tx, ops, response, p.reply);
                }
            }
            _ = reclaim.tick() => {
                let ops = server.reclaim(unix_now());
                if !ops.is_empty() {
                    tracing::debug!(expired = ops.len(), "leases reclaimed");
                    let _ = commit_tx.send(Commit::new(ops, Vec::new()));
                }
            }
            _ = event_poll.tick() => {
                let ops = renewals(&mut events, &mut server);
                if !ops.is_empty() {
                    let _ = commit_tx.send(Commit::new(ops, Vec::new()));
                }
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
    let ops = renewals(&mut events, &mut server);
    if !ops.is_empty() {
        let _ = commit_tx.send(Commit::new(ops, Vec::new()));
    }
    // Every change handed to the committer is written before we exit.
    drop(commit_tx);
    let (batches, withheld, mut store, maps) = committer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("committer panicked"))?;
    // With the fast path left running, renewals go on without a daemon to
    // store them: the next start must recover as after a crash.
    store.set_clean(!keep_fast_path)?;
    tracing::info!(batches, withheld, "lease store flushed");
    if let Some(m) = maps {
        tracing::info!("XDP lease map: {:?}", m.stats);
    }
    log_counters(&server);
    fastpath.flush_logs();
    let stats = fastpath.stats()?;
    let received: u64 = server.counters.received.iter().sum();
    tracing::info!(control_plane_received = received, "xdp counters: {stats}");
    if keep_fast_path {
        tracing::info!(
            "XDP fast path left attached and pinned in {}; the next xdhcp serve adopts it (xdhcp detach removes it); bye",
            config.server.pin_dir.as_deref().map_or("?".into(), |d| d.display().to_string())
        );
    } else {
        tracing::info!("XDP programs detached; bye");
    }
    Ok(())
}
