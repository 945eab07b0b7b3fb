//! `xdhcp serve`: the daemon. Attaches the XDP program, receives DHCP
//! requests as frames on each interface, runs the state machine, persists
//! with group commit and only then sends ACKs, reclaims expired leases, and
//! on SIGINT/SIGTERM finishes its pending commits and detaches everything.
//!
//! `start` brings every part up in the order the invariant needs, `event_loop`
//! serves until told to stop, and `stop` writes the last changes and marks
//! the store.

mod event_loop;
mod following;
mod start;
mod stop;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::Signal,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    api::control::{self, Pending},
    config::Config,
    daemon::auditor::{Auditor, Reading, Repair},
    daemon::backlog::Backlog,
    daemon::commit::{CommitQueue, Committer, Written},
    daemon::engine::Engine,
    daemon::sockets::{self, PacketSocket},
    daemon::transmit::Egress,
    store::postgres::follow::Followed,
    store::StoreHealth,
    store::StoreOp,
    xdp::loader::Fastpath,
    xdp::map_sync::{LeaseReader, MapReport, SyncStats},
    xdp::rate_limits::RateMaps,
};

pub use crate::daemon::engine::Overrides;
pub use crate::daemon::transmit::Wire;
pub use crate::xdp::clock::unix_now;

/// How often renewals answered by the XDP program are collected.
pub const EVENT_POLL: Duration = Duration::from_millis(100);
/// Frames read per socket wake-up before the others get a turn.
const READ_BUDGET: usize = 1024;
/// Requests handled per turn of the loop.
const HANDLE_BUDGET: usize = 64;

/// Runs the daemon until SIGINT, SIGTERM or the control API's `shutdown`.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    overrides: Overrides,
    debug_xdp_logs: bool,
) -> Result<()> {
    let (mut daemon, mut wake) =
        start::start(config, config_path, overrides, debug_xdp_logs).await?;
    let keep_fast_path = daemon.serve(&mut wake).await?;
    daemon.stop(wake, keep_fast_path)
}

/// What the loop works on. Apart from [`Wake`], so a handler may take the
/// whole of it while the loop's futures borrow the channels.
struct Daemon {
    config: Config,
    engine: Engine,
    fastpath: Fastpath,
    events: RingBuf<MapData>,
    sockets: Vec<Arc<PacketSocket>>,
    names: Vec<String>,
    /// Sockets whose last read stopped at its budget, not at empty.
    unread: Vec<bool>,
    buf: dhcp_common::packet_socket::RecvBatch,
    backlog: Backlog,
    egress: Egress,
    tx: Arc<Transmitter>,
    commit_tx: CommitQueue<Wire>,
    committer_thread: std::thread::JoinHandle<(bool, Committer)>,
    stopping: Arc<AtomicBool>,
    sync_stats: Arc<Mutex<SyncStats>>,
    store_health: Arc<Mutex<StoreHealth>>,
    rate_maps: RateMaps,
    rate_ifaces: std::collections::HashMap<String, u32>,
    /// The auditor's and the API's own handle on the lease map.
    lease_reader: Arc<LeaseReader>,
    auditor: Auditor,
    started: Instant,
    lease_db: String,
    /// Stops the follower of the other nodes (a shared store only).
    follow_stop: Option<Arc<AtomicBool>>,
}

/// Everything the loop waits on, and the tasks that feed it.
struct Wake {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    /// Readiness of every packet socket, funnelled into one channel so the
    /// state machine stays on the main task, without locks.
    ready_rx: mpsc::Receiver<usize>,
    watchers: Vec<JoinHandle<()>>,
    control_rx: mpsc::Receiver<Pending>,
    report_rx: mpsc::UnboundedReceiver<MapReport>,
    audit_rx: mpsc::Receiver<Reading>,
    event_poll: tokio::time::Interval,
    reclaim: tokio::time::Interval,
    log_fd: Option<AsyncFd<i32>>,
    /// The other nodes' changes (a shared store only).
    follow_rx: Option<mpsc::UnboundedReceiver<Followed>>,
    control_task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
    socket_path: std::path::PathBuf,
}

/// One UDP socket on port 67 that keeps the port open, so unicast requests
/// never draw an ICMP port-unreachable. It sends and receives nothing: the
/// AF_PACKET sockets do both (replies to relays too, see `egress`).
pub fn port_67_socket() -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    sockets::attach_filter(s.as_raw_fd(), &mut sockets::drop_all_filter())
        .context("filter on the UDP socket")?;
    let addr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        dhcp_common::DHCP_SERVER_PORT,
    ));
    s.bind(&addr.into())
        .context("binding UDP port 67 (another DHCP server running?)")?;
    Ok(s.into())
}

/// Sends replies on the interface their request came in on.
pub struct Transmitter {
    packet: Vec<Arc<PacketSocket>>,
    /// Held for as long as we serve (`port_67_socket`).
    _port_67: UdpSocket,
}

impl Transmitter {
    /// Sends `ws` in order, each run on one interface a batch per system
    /// call (`sendmmsg`).
    pub fn send_all(&self, ws: &[&Wire]) {
        let mut frames: Vec<&[u8]> = Vec::with_capacity(ws.len());
        let mut i = 0;
        while i < ws.len() {
            let Wire::Frame { iface, .. } = ws[i];
            frames.clear();
            while let Some(Wire::Frame { iface: j, bytes }) = ws.get(i) {
                if j != iface {
                    break;
                }
                frames.push(bytes);
                i += 1;
            }
            self.packet[*iface].send_all(&frames, |e| tracing::warn!("sending a reply: {e}"));
        }
    }
}

/// Answers `reply` once the batch holding `ops` is written (the change is
/// then in the store and the lease map), or says that the store refused it
/// and that it is retried.
fn reply_after_commit(
    engine: &mut Engine,
    commit_tx: &CommitQueue<Wire>,
    ops: Vec<StoreOp>,
    response: control::Response,
    reply: oneshot::Sender<control::Response>,
) {
    let (done_tx, done_rx) = oneshot::channel();
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
