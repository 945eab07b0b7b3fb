//! The model-based test of the one invariant (see `xdhcp::daemon::engine`): random
//! sequences of operations drive the real engine (state machine, lease
//! table, kernel holds), committer, SQLite store and map sync, and the
//! real XDP program answers renewals from the real lease map through
//! BPF_PROG_TEST_RUN. After every step:
//! - every map entry is a Bound lease in the store on disk, for the same
//!   client and subnet, and no live kernel end lies beyond what a
//!   crash-recovered store would grant (`xdhcp::audit::check`);
//! - no address is held by two clients at once, where a client holds what
//!   its last ACK (from either plane, as it reached the client) granted
//!   until that runs out, or until it released or declined it, or an
//!   operator took it away.
//!
//! proptest shrinks a failing sequence to a short one. The number of
//! sequences: `XDHCP_MODEL_CASES` (default 2000; the soak mode in
//! RELIABILITY.md runs far more).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use proptest::prelude::*;
use serde_json::json;
use xdhcp::{
    api::commands,
    api::control::Request,
    audit,
    config::Config,
    daemon::commit::{Commit, Committer},
    daemon::engine::{read_ring, Engine, Overrides},
    daemon::transmit::{Egress, Wire},
    dhcp::server::Arrival,
    lease::{Lease, LeaseState},
    proto,
    store::{FlakyStore, LeaseStore, SqliteStore, StoreOp},
    xdp::clock::{self, unix_now},
    xdp::loader::{Fastpath, XDP_PASS, XDP_TX},
    xdp::map_sync::{FastIface, FastMaps, KernelGrant, MapReport},
};
use xdhcp_lab::{dhcp::Msg, frame::FrameSpec};

const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const SERVER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IFINDEX: u32 = 1;
const CLIENTS: u8 = 6;
/// Subnet 1's pool (2 addresses for 4 clients: every freed address is
/// wanted at once) and two outside it, for reservations and
/// operator-added leases.
const ADDRS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 18, 0, 100),
    Ipv4Addr::new(198, 18, 0, 101),
    Ipv4Addr::new(198, 18, 0, 102),
    Ipv4Addr::new(198, 18, 0, 110),
];

/// Configuration variants: the base, changed options, subnet 2 removed, and
/// T1 beyond 7/8 of the lease (so T1 renewals move the end by less than
/// lease/8 and the kernel reports none of them).
fn config_text(variant: u8, db: &str) -> String {
    let dns = if variant == 1 {
        "198.18.0.54"
    } else {
        "198.18.0.53"
    };
    let t1 = if variant == 3 {
        "renewal_time = 590\nrebinding_time = 595\n"
    } else {
        ""
    };
    let mut s = format!(
        r#"
[server]
server_id = "198.18.0.1"
lease_db = "{db}"
decline_probation_secs = 300
offer_hold_secs = 30

[[interface]]
name = "lo"

[options]
lease_time = 600
{t1}dns_servers = ["{dns}"]

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "lo"
rapid_commit = true
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.101"
"#
    );
    if variant != 2 {
        s.push_str(
            r#"
[[subnet]]
id = 2
subnet = "198.18.1.0/24"
interface = "lo"
vlan = 7
[[subnet.pool]]
start = "198.18.1.100"
end = "198.18.1.101"
"#,
        );
    }
    s
}

#[derive(Debug, Clone)]
enum Op {
    Dora(u8),
    /// A DISCOVER with rapid commit (80): where the subnet allows it
    /// (subnet 1) the kernel ACKs a known client's and the control plane
    /// binds an unknown one at once, mapping the binding for the kernel's
    /// later renewals; elsewhere it is offered, by either plane.
    RapidDora(u8),
    /// RENEWING, to the kernel first (the control plane gets what it passes).
    Renew(u8),
    /// Two renewals, the second some seconds after the first: it moves
    /// the end by less than lease/8, so the kernel does not report it.
    RenewTwice(u8, u8),
    Rebind(u8),
    InitReboot(u8),
    Release(u8),
    /// A RELEASE the control plane reads late: the client sends it, then
    /// DORAs again at once (the kernel, whose entry is still there, may
    /// answer; anything it passes queues behind the RELEASE), the ring is
    /// read, and only some seconds later is the RELEASE handled, as of
    /// when it arrived.
    LateRelease(u8, u8),
    Decline(u8),
    AdminAdd(u8, u8),
    AdminDel(u8),
    AdminRelease(u8),
    ResAdd(u8, u8),
    ResDel(u8),
    Reload(u8),
    Advance(u16),
    /// The 100 ms tick: the ring is read, settled map reports applied.
    Tick,
    /// serve's reclaim timer (reads the ring first).
    Reclaim,
    /// A reclaim while the ring was not read (a stalled main loop, or the
    /// inline reclaim of an exhausted pool).
    ReclaimStalled,
    /// The committer takes everything queued as one batch.
    Flush,
    /// The store refuses the next writes.
    FailWrites(u8),
    Restart,
    /// kill -9, then a start with configuration `variant`.
    Crash(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let a = 0..ADDRS.len() as u8;
    prop_oneof![
        6 => c.clone().prop_map(Op::Dora),
        2 => c.clone().prop_map(Op::RapidDora),
        6 => c.clone().prop_map(Op::Renew),
        3 => (c.clone(), 1u8..70).prop_map(|(c, s)| Op::RenewTwice(c, s)),
        2 => c.clone().prop_map(Op::Rebind),
        2 => c.clone().prop_map(Op::InitReboot),
        2 => c.clone().prop_map(Op::Release),
        1 => (c.clone(), 1u8..4).prop_map(|(c, s)| Op::LateRelease(c, s)),
        1 => c.clone().prop_map(Op::Decline),
        1 => (c.clone(), a.clone()).prop_map(|(c, a)| Op::AdminAdd(c, a)),
        1 => a.clone().prop_map(Op::AdminDel),
        1 => a.clone().prop_map(Op::AdminRelease),
        1 => (c, a.clone()).prop_map(|(c, a)| Op::ResAdd(c, a)),
        1 => a.prop_map(Op::ResDel),
        2 => (0u8..4).prop_map(Op::Reload),
        5 => prop_oneof![1u16..80, 280u16..320, 520u16..610, 600u16..700].prop_map(Op::Advance),
        3 => Just(Op::Tick),
        2 => Just(Op::Reclaim),
        1 => Just(Op::ReclaimStalled),
        6 => Just(Op::Flush),
        1 => (1u8..4).prop_map(Op::FailWrites),
        1 => Just(Op::Restart),
        1 => (0u8..4).prop_map(Op::Crash),
    ]
}

/// A reply waiting for its batch: (commit, decided at, frame).
type Reply = (u64, u64, Wire);

/// A batch the store refused, as the committer holds it while retrying.
struct Refused {
    seq: u64,
    ops: Vec<StoreOp>,
    op_ns: Vec<u64>,
    /// The daemon's own ops (no reply, no waiter): foldable.
    internal: Vec<bool>,
    /// The bindings its deletes end, as the kernel had them.
    deleted: Vec<Lease>,
    replies: Vec<Reply>,
    report: MapReport,
}

/// What a client believes it holds.
#[derive(Debug, Clone, Copy, Default)]
struct Belief {
    ip: Option<Ipv4Addr>,
    until: u64,
    /// Given up: the client sent a DISCOVER after the request this ACK
    /// answered. A real client in INIT holds nothing (RFC 2131 4.4.1) and
    /// ignores such an ACK, so the address is no longer its: the server
    /// may end the binding when it offers the client another address.
    stale: bool,
}

/// The loaded XDP program and its maps: loaded once, reused (emptied) by
/// every sequence.
struct Kernel {
    fp: Fastpath,
    events: RingBuf<MapData>,
    maps: Option<FastMaps>,
}

impl Kernel {
    fn load() -> Kernel {
        xdhcp_lab::require_lab();
        let mut fp = Fastpath::load_sized(false, 1024)
            .expect("loading the XDP program (needs root and BPF)");
        let events = RingBuf::try_from(fp.take_map(dhcp_common::MAP_EVENTS).unwrap()).unwrap();
        let maps = FastMaps::new(
            &mut fp,
            &[FastIface {
                name: "lo".into(),
                ifindex: IFINDEX,
                mac: SERVER_MAC,
            }],
            SERVER_ID,
        )
        .unwrap();
        Kernel {
            fp,
            events,
            maps: Some(maps),
        }
    }
}

struct World<'k> {
    dir: PathBuf,
    db: PathBuf,
    fp: &'k Fastpath,
    events: &'k mut RingBuf<MapData>,
    maps_home: &'k mut Option<FastMaps>,
    committer: Committer,
    engine: Engine,
    fail: Arc<AtomicU32>,
    /// Commits handed over and not yet written (the committer's queue).
    queue: Vec<Commit<Wire>>,
    /// A batch the store refused: retried first, with what queues behind
    /// it taken in (`Committer::prepare_more`), as the committer does.
    failing: Option<Refused>,
    /// When each queued commit was decided.
    decided: HashMap<u64, u64>,
    /// Operator revocations (address or client), with the last commit
    /// before them: an ACK decided before it does not make a holder.
    revoked: Vec<(Option<Ipv4Addr>, Option<usize>, u64)>,
    last_seq: u64,
    /// Renewal events read off the ring but not yet given to the engine
    /// (converted when read, as the kernel's clock is moved by rewriting).
    unread: Vec<KernelGrant>,
    /// A RELEASE on its way to the control plane (`LateRelease`), with
    /// its arrival: handled before anything else the kernel passes.
    held: Option<(Vec<u8>, u64)>,
    beliefs: [Belief; CLIENTS as usize],
    /// Each client's last DISCOVER: the last commit made before it.
    discovered: [u64; CLIENTS as usize],
    egress: Egress,
    xid: u32,
    log: Vec<String>,
}

fn mac(c: u8) -> [u8; 6] {
    [0x02, 0x33, 0, 0, 0, c + 1]
}

fn client_of_mac(m: &[u8]) -> Option<usize> {
    (0..CLIENTS).position(|c| mac(c) == m[..6])
}

fn tags(c: u8) -> Vec<(u16, u16)> {
    // Clients 4 and 5 sit on VLAN 7 (subnet 2).
    if c >= 4 {
        vec![(xdhcp_lab::frame::TPID_8021Q, 7)]
    } else {
        Vec::new()
    }
}

impl<'k> World<'k> {
    fn new(kernel: &'k mut Kernel, case: u64) -> World<'k> {
        // tmpfs where there is one: fsync is then cheap, and thousands of
        // sequences fit the test's time.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("xdhcp-model-{}-{case}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("leases.db");
        let mut maps = kernel
            .maps
            .take()
            .expect("the maps are home between sequences");
        maps.clear().unwrap();
        let _ = read_ring(&mut kernel.events);
        let fail = Arc::new(AtomicU32::new(0));
        let mut store = FlakyStore {
            inner: SqliteStore::open(&db, xdhcp::config::DbSync::Full).unwrap(),
            fail: fail.clone(),
        };
        let cfg = dir.join("xdhcp.toml");
        std::fs::write(&cfg, config_text(0, &db.display().to_string())).unwrap();
        let config = Config::from_file(&cfg).unwrap();
        let mut engine = Engine::start(
            &mut store,
            config,
            Some(cfg),
            Overrides::default(),
            unix_now(),
        )
        .unwrap();
        engine.load_map(&mut maps);
        World {
            dir,
            db,
            fp: &kernel.fp,
            events: &mut kernel.events,
            maps_home: &mut kernel.maps,
            committer: Committer::new(Box::new(store), Some(maps)),
            engine,
            fail,
            queue: Vec::new(),
            failing: None,
            unread: Vec::new(),
            held: None,
            revoked: Vec::new(),
            decided: HashMap::new(),
            last_seq: 0,
            beliefs: Default::default(),
            discovered: Default::default(),
            egress: Egress::with_locality(SERVER_ID, |_| false),
            xid: 1,
            log: Vec::new(),
        }
    }

    fn maps(&mut self) -> &mut FastMaps {
        self.committer.maps.as_mut().unwrap()
    }

    fn submit(&mut self, ops: Vec<StoreOp>, replies: Vec<Wire>) {
        self.submit_at(ops, replies, u64::MAX);
    }

    fn submit_at(&mut self, ops: Vec<StoreOp>, replies: Vec<Wire>, at_ns: u64) {
        if ops.is_empty() {
            for r in &replies {
                self.deliver(r, u64::MAX, unix_now());
            }
            return;
        }
        let c = self.engine.commit_at(ops, replies, None, at_ns);
        self.last_seq = c.seq;
        self.decided.insert(c.seq, unix_now());
        self.queue.push(c);
    }

    /// One group commit of everything queued. After a refused batch, the
    /// queue joins it, as the committer takes commits into the batch it
    /// retries (the daemon's own changes folded to one per address).
    fn flush(&mut self) {
        if let Some(mut b) = self.failing.take() {
            let from = b.ops.len();
            for c in std::mem::take(&mut self.queue) {
                b.seq = b.seq.max(c.seq);
                b.deleted.extend(c.deleted);
                let own = c.replies.is_empty() && c.done.is_none();
                b.internal.extend(std::iter::repeat_n(own, c.ops.len()));
                b.op_ns.extend(std::iter::repeat_n(c.at_ns, c.ops.len()));
                b.ops.extend(c.ops);
                let at = self.decided.remove(&c.seq).unwrap_or(0);
                b.replies
                    .extend(c.replies.into_iter().map(|r| (c.seq, at, r)));
            }
            if b.ops.len() > from {
                b.report.seq = b.seq;
                let folded_before = b.ops.len();
                self.committer.prepare_more(
                    &mut b.ops,
                    &mut b.op_ns,
                    &mut b.internal,
                    &b.deleted,
                    from,
                    &mut b.report,
                );
                FOLDED.fetch_add((folded_before - b.ops.len()) as u64, Ordering::Relaxed);
            }
            if self.committer.write(&b.ops).is_err() {
                self.failing = Some(b);
                return;
            }
            self.committer.finish(&b.ops, &mut b.report);
            self.map_report(b.report);
            self.send(&b.replies);
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        if queue.is_empty() {
            return;
        }
        let seq = queue.iter().map(|c| c.seq).max().unwrap();
        let (mut ops, mut op_ns, mut replies) = (Vec::new(), Vec::new(), Vec::new());
        let (mut internal, mut deleted) = (Vec::new(), Vec::new());
        for c in queue {
            deleted.extend(c.deleted);
            let own = c.replies.is_empty() && c.done.is_none();
            internal.extend(std::iter::repeat_n(own, c.ops.len()));
            op_ns.extend(std::iter::repeat_n(c.at_ns, c.ops.len()));
            ops.extend(c.ops);
            let at = self.decided.remove(&c.seq).unwrap_or(0);
            replies.extend(c.replies.into_iter().map(|r| (c.seq, at, r)));
        }
        let mut report = MapReport::new(seq);
        self.committer
            .prepare(&mut ops, &mut op_ns, &deleted, &mut report);
        if self.committer.write(&ops).is_err() {
            self.failing = Some(Refused {
                seq,
                ops,
                op_ns,
                internal,
                deleted,
                replies,
                report,
            });
            return;
        }
        self.committer.finish(&ops, &mut report);
        self.map_report(report);
        self.send(&replies);
    }

    /// A written batch's report to the engine, as serve hands it over
    /// (committing what it calls for).
    fn map_report(&mut self, report: MapReport) {
        if !report.kept.is_empty() {
            KEPT_GRANTS.fetch_add(report.kept.len() as u64, Ordering::Relaxed);
            self.log.push(format!(
                "  kernel grants written with the batch that ended them: {:?}",
                report.kept.iter().map(|(g, _)| g.ip).collect::<Vec<_>>()
            ));
        }
        let ops = self.engine.map_report(report);
        self.submit(ops, Vec::new());
    }

    /// What the committer does with replies once their batch is written:
    /// sends them, unless they waited too long (4 s, as `Committer::run`).
    fn send(&mut self, replies: &[Reply]) {
        let now = unix_now();
        for (seq, at, r) in replies {
            if now.saturating_sub(*at) < 4 {
                self.deliver(r, *seq, *at);
            } else {
                self.log
                    .push("  a reply withheld too long is dropped".into());
            }
        }
    }

    /// A reply reaches its client.
    /// `at`: when the reply was decided. A client counts its lease from
    /// its request, before that; from the delivery it would count past
    /// the server's end by however long the reply waited for its batch.
    fn deliver(&mut self, w: &Wire, seq: u64, at: u64) {
        let payload = match w {
            Wire::Frame { bytes, .. } => proto::parse_frame(bytes, None, true)
                .unwrap()
                .payload
                .to_vec(),
        };
        self.deliver_payload(&payload, "control plane", seq, at);
    }

    fn deliver_payload(&mut self, p: &[u8], from: &str, seq: u64, at: u64) {
        let Some(c) = client_of_mac(&p[28..34]) else {
            return;
        };
        let ip = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        if self
            .revoked
            .iter()
            .any(|(rip, rc, rseq)| seq <= *rseq && (*rip == Some(ip) || *rc == Some(c)))
        {
            self.log.push(format!(
                "  client {c}: an ACK decided before an operator took {ip} away"
            ));
            return;
        }
        let opts = options(p);
        let Some(t) = opts.get(&53).map(|v| v[0]) else {
            return;
        };
        let yiaddr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let now = at;
        match t {
            5 if !yiaddr.is_unspecified() => {
                let lease = opts
                    .get(&51)
                    .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                self.beliefs[c] = Belief {
                    ip: Some(yiaddr),
                    until: now + u64::from(lease),
                    stale: seq <= self.discovered[c],
                };
                self.log.push(format!(
                    "  client {c} ACKed {yiaddr} for {lease} s by the {from}"
                ));
            }
            6 => {
                self.beliefs[c] = Belief::default();
                self.log.push(format!("  client {c} NAKed by the {from}"));
            }
            _ => {}
        }
    }

    fn frame(&mut self, c: u8, m: Msg, unicast: bool) -> Vec<u8> {
        let ciaddr = m.ciaddr;
        FrameSpec {
            dst_mac: if unicast { SERVER_MAC } else { [0xff; 6] },
            src_mac: mac(c),
            tags: tags(c),
            src_ip: if unicast { ciaddr.octets() } else { [0; 4] },
            dst_ip: if unicast {
                SERVER_ID.octets()
            } else {
                [255; 4]
            },
            payload: m.encode(),
            ..Default::default()
        }
        .build()
    }

    fn msg(&mut self, c: u8, t: u8) -> Msg {
        self.xid += 1;
        Msg::new(t, mac(c), self.xid).opt(55, &[1, 3, 6, 51, 54])
    }

    /// The control plane's answer to `frame`, as serve gives it.
    fn control(&mut self, frame: &[u8]) {
        self.control_at(frame, u64::MAX);
    }

    /// `control` of a frame that arrived at `at_ns` (Unix nanoseconds).
    fn control_at(&mut self, frame: &[u8], at_ns: u64) {
        let f = proto::parse_frame(frame, None, true).unwrap();
        let req = proto::parse_dhcp(f.payload).unwrap();
        let arrival = Arrival {
            iface: "lo",
            tags: &f.tags,
            src_mac: f.src_mac,
            src_ip: f.src_ip,
        };
        let out = self.engine.server.handle(&req, &arrival, unix_now());
        let reply = out
            .reply
            .map(|r| self.egress.frame_for(&r.dest, &f, SERVER_MAC, r.payload, 0));
        self.submit_at(out.store, reply.into_iter().collect(), at_ns);
    }

    /// The frame goes to the XDP program; what it passes, to the control
    /// plane.
    /// Returns the kernel's reply payload, if it answered.
    fn kernel_first(&mut self, frame: Vec<u8>) -> Option<Vec<u8>> {
        let out = self.fp.test_run_on(&frame, IFINDEX, 1).unwrap();
        match out.verdict {
            XDP_TX => {
                let f = proto::parse_frame(&out.frame, None, true).unwrap();
                let p = f.payload.to_vec();
                self.deliver_payload(&p, "kernel", u64::MAX, unix_now());
                Some(p)
            }
            XDP_PASS => {
                // The control plane reads its socket in order.
                if let Some((f, at)) = self.held.take() {
                    self.control_at(&f, at);
                }
                self.control(&frame);
                None
            }
            v => panic!("verdict {v}"),
        }
    }

    fn read_ring(&mut self) {
        let g = read_ring(self.events);
        self.unread.extend(g);
    }

    fn tick(&mut self) {
        self.read_ring();
        let grants = std::mem::take(&mut self.unread);
        let ops = self.engine.kernel_tick(grants, unix_now());
        self.submit(ops, Vec::new());
    }

    fn admin(&mut self, command: &str, arguments: serde_json::Value) {
        let req = Request {
            command: command.into(),
            arguments,
        };
        let now = unix_now();
        let (ops, ok) = if command.starts_with("reservation-") {
            match self.engine.reservation_command(&req, now) {
                Ok((_, ops)) => (ops, true),
                Err(_) => (Vec::new(), false),
            }
        } else {
            let mut cx = commands::Context {
                store_health: &self.committer.health,
                server: &mut self.engine.server,
                fastpath: self.fp,
                sync: &self.committer.sync,
                started: std::time::Instant::now(),
                lease_db: String::new(),
                lease_map_capacity: 1024,
                now,
                kernel: None,
                audit: None,
            };
            let (r, ops) = commands::execute(&req, &mut cx);
            (ops, r.result == 0)
        };
        self.log.push(format!(
            "  {command} -> {}",
            if ok { "done" } else { "refused" }
        ));
        self.submit(ops, Vec::new());
    }

    /// An operator took `ip` away (or moved `client` elsewhere): whoever
    /// believed they held it no longer counts as holding it.
    fn revoke(&mut self, ip: Option<Ipv4Addr>, client: Option<usize>) {
        self.revoked.push((ip, client, self.last_seq));
        for (i, b) in self.beliefs.iter_mut().enumerate() {
            if b.ip.is_some() && (b.ip == ip || Some(i) == client) {
                *b = Belief::default();
            }
        }
    }

    /// The daemon stops: cleanly (everything written, the kernel's last
    /// grants stored) or by kill -9 (queued commits and unread events
    /// lost; the map dies with the process).
    fn stop(&mut self, clean: bool) {
        if clean {
            self.fail.store(0, Ordering::SeqCst);
            self.flush();
            self.tick();
            self.flush();
            let grants = self.maps().unreported();
            let ops = self.engine.kernel_tick(grants, unix_now());
            self.committer.store.apply(&ops).unwrap();
            self.committer.store.set_clean(true).unwrap();
        } else {
            self.queue.clear();
            self.failing = None;
            self.unread.clear();
            let _ = read_ring(self.events);
        }
        self.maps().clear().unwrap();
    }

    fn start(&mut self, variant: u8) {
        self.fail.store(0, Ordering::SeqCst);
        let cfg = self.dir.join("xdhcp.toml");
        std::fs::write(&cfg, config_text(variant, &self.db.display().to_string())).unwrap();
        let config = Config::from_file(&cfg).unwrap();
        self.engine = Engine::start(
            &mut *self.committer.store,
            config,
            Some(cfg),
            Overrides::default(),
            unix_now(),
        )
        .unwrap();
        let mut maps = self.committer.maps.take().unwrap();
        self.engine.load_map(&mut maps);
        self.committer.maps = Some(maps);
    }

    fn step(&mut self, op: &Op) {
        self.log.push(format!("{op:?}"));
        match *op {
            Op::Dora(c) => {
                self.discovered[c as usize] = self.last_seq;
                self.beliefs[c as usize].stale = true;
                // A known client's DISCOVER and SELECTING REQUEST go to
                // the kernel first, as on the wire: it offers and ACKs
                // bindings it holds.
                let d = self.msg(c, 1);
                let f = self.frame(c, d, false);
                let from_kernel = self.kernel_first(f);
                if from_kernel.is_some() {
                    KERNEL_OFFERS.fetch_add(1, Ordering::Relaxed);
                }
                // The OFFER (once written, when it came with store changes).
                self.flush();
                let Some(offered) = from_kernel
                    .filter(|p| options(p).get(&53).map(|v| v[0]) == Some(2))
                    .map(|p| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
                    .or_else(|| self.last_offer(c))
                    .or_else(|| self.bound_to(c))
                else {
                    return;
                };
                let r = self
                    .msg(c, 3)
                    .opt(50, &offered.octets())
                    .opt(54, &SERVER_ID.octets());
                let f = self.frame(c, r, false);
                if self.kernel_first(f).is_some() {
                    KERNEL_SELECTING_ACKS.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::RapidDora(c) => {
                self.discovered[c as usize] = self.last_seq;
                self.beliefs[c as usize].stale = true;
                let d = self.msg(c, 1).opt(80, &[]);
                let f = self.frame(c, d, false);
                if let Some(p) = self.kernel_first(f) {
                    if options(&p).get(&53).map(|v| v[0]) == Some(5) {
                        KERNEL_RAPID_ACKS.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Op::Renew(c) | Op::RenewTwice(c, _) | Op::Rebind(c) => {
                let Some(ip) = self.beliefs[c as usize].ip else {
                    return;
                };
                let mut m = self.msg(c, 3);
                m.ciaddr = ip;
                let unicast = !matches!(op, Op::Rebind(_));
                let f = self.frame(c, m.clone(), unicast);
                self.kernel_first(f);
                if let Op::RenewTwice(_, secs) = *op {
                    self.step(&Op::Advance(u16::from(secs)));
                    m.xid += 1;
                    let f = self.frame(c, m, unicast);
                    self.kernel_first(f);
                }
            }
            Op::InitReboot(c) => {
                let Some(ip) = self.beliefs[c as usize].ip else {
                    return;
                };
                let m = self.msg(c, 3).opt(50, &ip.octets());
                let f = self.frame(c, m, false);
                self.kernel_first(f);
            }
            Op::LateRelease(c, secs) => {
                let Some(ip) = self.beliefs[c as usize].ip else {
                    return;
                };
                self.revoke(None, Some(c as usize));
                let mut m = self.msg(c, 7);
                m.ciaddr = ip;
                m = m.opt(54, &SERVER_ID.octets());
                let f = self.frame(c, m, false);
                self.held = Some((f, clock::unix_ns_now()));
                self.step(&Op::Dora(c));
                self.step(&Op::Tick);
                self.step(&Op::Advance(u16::from(secs)));
                if let Some((f, at)) = self.held.take() {
                    self.control_at(&f, at);
                }
            }
            Op::Release(c) | Op::Decline(c) => {
                let Some(ip) = self.beliefs[c as usize].ip else {
                    return;
                };
                // The client is done with the address: an answer still on
                // its way to an earlier request of its own is ignored.
                self.revoke(None, Some(c as usize));
                let mut m = if matches!(op, Op::Release(_)) {
                    let mut m = self.msg(c, 7);
                    m.ciaddr = ip;
                    m
                } else {
                    self.msg(c, 4).opt(50, &ip.octets())
                };
                m = m.opt(54, &SERVER_ID.octets());
                let f = self.frame(c, m, false);
                self.control(&f);
            }
            Op::AdminAdd(c, a) => {
                let ip = ADDRS[a as usize];
                let hw = hex_mac(c);
                self.admin(
                    "lease4-add",
                    json!({"ip-address": ip.to_string(), "hw-address": hw, "valid-lft": 600}),
                );
                if self.engine.server.leases.get(ip).is_some_and(|l| {
                    l.state == LeaseState::Bound
                        && l.client.as_deref().is_some_and(|k| k[2..] == mac(c))
                }) {
                    self.revoke(None, Some(c as usize));
                }
            }
            Op::AdminDel(a) | Op::AdminRelease(a) => {
                let ip = ADDRS[a as usize];
                let cmd = if matches!(op, Op::AdminDel(_)) {
                    "lease4-del"
                } else {
                    "lease4-release"
                };
                self.admin(cmd, json!({"ip-address": ip.to_string()}));
                self.revoke(Some(ip), None);
            }
            Op::ResAdd(c, a) => {
                let ip = ADDRS[a as usize];
                self.admin(
                    "reservation-add",
                    json!({"ip-address": ip.to_string(), "hw-address": hex_mac(c)}),
                );
            }
            Op::ResDel(a) => {
                let ip = ADDRS[a as usize];
                self.admin("reservation-del", json!({"ip-address": ip.to_string()}));
            }
            Op::Reload(v) => {
                let cfg = self.dir.join("xdhcp.toml");
                std::fs::write(&cfg, config_text(v, &self.db.display().to_string())).unwrap();
                if let Ok((_, ops)) = self.engine.reload() {
                    self.submit(ops, Vec::new());
                }
            }
            Op::Advance(secs) => {
                // Events read now are converted with the clocks as they are.
                self.read_ring();
                clock::advance_for_tests(u64::from(secs));
                self.maps().shift_clock_for_tests(u64::from(secs));
            }
            Op::Tick => self.tick(),
            Op::Reclaim => {
                self.read_ring();
                let grants = std::mem::take(&mut self.unread);
                let ops = self.engine.reclaim(grants, unix_now());
                self.submit(ops, Vec::new());
            }
            Op::ReclaimStalled => {
                let ops = self.engine.reclaim(Vec::new(), unix_now());
                self.submit(ops, Vec::new());
            }
            Op::Flush => self.flush(),
            Op::FailWrites(n) => self.fail.store(u32::from(n), Ordering::SeqCst),
            Op::Restart => {
                self.stop(true);
                self.start(0);
            }
            Op::Crash(v) => {
                self.stop(false);
                self.start(v);
            }
        }
    }

    /// The address the control plane holds bound to client `c`, which
    /// it offers that client again (no offer hold is made for it).
    fn bound_to(&self, c: u8) -> Option<Ipv4Addr> {
        let key = xdhcp::lease::hw_key(1, &mac(c));
        let now = unix_now();
        self.engine
            .server
            .leases
            .iter()
            .find(|l| l.state == LeaseState::Bound && l.is_client(&key) && l.expires > now)
            .map(|l| l.ip)
    }

    fn last_offer(&self, c: u8) -> Option<Ipv4Addr> {
        let key = xdhcp::lease::hw_key(1, &mac(c));
        self.engine
            .server
            .leases
            .iter()
            .find(|l| l.state == LeaseState::Offered && l.is_client(&key))
            .map(|l| l.ip)
    }

    /// Both halves of the invariant, at this instant.
    fn check(&mut self) -> Result<(), String> {
        let now = unix_now();
        let mut disk =
            SqliteStore::open(&self.db, xdhcp::config::DbSync::Full).map_err(|e| e.to_string())?;
        let stored: HashMap<Ipv4Addr, Lease> = disk
            .load()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| (l.ip, l))
            .collect();
        let entries = self.maps().entries();
        let found = audit::check(
            &entries,
            |ip| stored.get(&ip),
            std::iter::empty(),
            None,
            now,
        );
        if !found.is_empty() {
            return Err(format!("map and store disagree: {found:?}"));
        }
        // A kill -9 now loses no ACK a client holds: the store on disk,
        // as a start recovers it (a Bound binding with fast-path data is
        // held until now + its lease time), keeps each address for its
        // holder until that ACK runs out. A control-plane ACK counts from
        // its delivery, up to 4 s after its end was decided (`send`).
        // What a client gave up with a DISCOVER is not counted here.
        for (c, b) in self.beliefs.iter().enumerate() {
            let Some(ip) = b.ip.filter(|_| b.until > now && !b.stale) else {
                continue;
            };
            let key = xdhcp::lease::hw_key(1, &mac(c as u8));
            let recovered = stored.get(&ip).is_some_and(|l| {
                l.state == LeaseState::Bound
                    && l.is_client(&key)
                    && (l.expires + 4 >= b.until
                        || (l.fast.is_some() && now + u64::from(l.lease_secs) >= b.until))
            });
            if !recovered {
                return Err(format!(
                    "client {c} holds {ip} until {}, but a crash now would leave the store with {:?}",
                    b.until,
                    stored.get(&ip)
                ));
            }
        }
        // With nothing waiting to be written, the store holds what the
        // control plane decided: the same holder for every address.
        if self.queue.is_empty() && self.failing.is_none() {
            let view = |l: &Lease| {
                (l.state != LeaseState::Offered && l.holds_address(now))
                    .then(|| (l.client.clone(), l.state, l.expires, l.subnet_id))
            };
            let mut ips: Vec<Ipv4Addr> = stored.keys().copied().collect();
            ips.extend(self.engine.server.leases.iter().map(|l| l.ip));
            for ip in ips {
                let m = self.engine.server.leases.get(ip).and_then(view);
                let d = stored.get(&ip).and_then(view);
                if m != d {
                    return Err(format!(
                        "{ip}: memory {m:?} but store {d:?}\n  memory: {:?}\n  store: {:?}\n  hold: {:?}",
                        self.engine.server.leases.get(ip),
                        stored.get(&ip),
                        self.engine.server.leases.hold(ip)
                    ));
                }
            }
        }
        for i in 0..CLIENTS as usize {
            for j in i + 1..CLIENTS as usize {
                let (a, b) = (self.beliefs[i], self.beliefs[j]);
                let holds = |x: Belief| x.until > now && !x.stale;
                if a.ip.is_some() && a.ip == b.ip && holds(a) && holds(b) {
                    return Err(format!(
                        "{:?} held by clients {i} (until {}) and {j} (until {}) at {now}",
                        a.ip, a.until, b.until
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        *self.maps_home = self.committer.maps.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hex_mac(c: u8) -> String {
    mac(c)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn options(p: &[u8]) -> HashMap<u8, Vec<u8>> {
    let mut out = HashMap::new();
    let mut i = 240;
    while i + 1 < p.len() && p[i] != 255 {
        if p[i] == 0 {
            i += 1;
            continue;
        }
        let n = usize::from(p[i + 1]);
        out.insert(p[i], p[i + 2..(i + 2 + n).min(p.len())].to_vec());
        i += 2 + n;
    }
    out
}

/// The clock offset is the process's: sequences run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(kernel: &mut Kernel, ops: &[Op], case: u64) -> Result<(), String> {
    let mut w = World::new(kernel, case);
    for op in ops {
        w.step(op);
        if let Err(e) = w.check() {
            return Err(format!("{e}\nsteps:\n{}", w.log.join("\n")));
        }
    }
    if std::env::var_os("XDHCP_MODEL_TRACE").is_some() {
        println!("{}", w.log.join("\n"));
    }
    Ok(())
}

/// A sequence as proptest prints it (`[Dora(0), Advance(30), Flush]`).
fn parse_ops(text: &str) -> Vec<Op> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let body = clean.trim_start_matches('[').trim_end_matches(']');
    let mut ops = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let name_end = rest.find(['(', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let mut args: Vec<u16> = Vec::new();
        rest = &rest[name_end..];
        if rest.starts_with('(') {
            let close = rest.find(')').unwrap();
            args = rest[1..close]
                .split(',')
                .filter(|a| !a.is_empty())
                .map(|a| a.parse().unwrap())
                .collect();
            rest = &rest[close + 1..];
        }
        rest = rest.trim_start_matches(',');
        let a = |i: usize| args[i] as u8;
        ops.push(match name {
            "Dora" => Op::Dora(a(0)),
            "RapidDora" => Op::RapidDora(a(0)),
            "Renew" => Op::Renew(a(0)),
            "RenewTwice" => Op::RenewTwice(a(0), a(1)),
            "Rebind" => Op::Rebind(a(0)),
            "InitReboot" => Op::InitReboot(a(0)),
            "Release" => Op::Release(a(0)),
            "LateRelease" => Op::LateRelease(a(0), a(1)),
            "Decline" => Op::Decline(a(0)),
            "AdminAdd" => Op::AdminAdd(a(0), a(1)),
            "AdminDel" => Op::AdminDel(a(0)),
            "AdminRelease" => Op::AdminRelease(a(0)),
            "ResAdd" => Op::ResAdd(a(0), a(1)),
            "ResDel" => Op::ResDel(a(0)),
            "Reload" => Op::Reload(a(0)),
            "Advance" => Op::Advance(args[0]),
            "Tick" => Op::Tick,
            "Reclaim" => Op::Reclaim,
            "ReclaimStalled" => Op::ReclaimStalled,
            "Flush" => Op::Flush,
            "FailWrites" => Op::FailWrites(a(0)),
            "Restart" => Op::Restart,
            "Crash" => Op::Crash(a(0)),
            other => panic!("unknown op {other}"),
        });
    }
    ops
}

/// Replays the sequence in the file `XDHCP_MODEL_REPLAY` (a failing case as
/// proptest printed it), with its trace; without the variable, nothing.
#[test]
fn replay_a_printed_sequence() {
    let Some(path) = std::env::var_os("XDHCP_MODEL_REPLAY") else {
        return;
    };
    let ops = parse_ops(&std::fs::read_to_string(path).unwrap());
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut kernel = Kernel::load();
    std::env::set_var("XDHCP_MODEL_TRACE", "1");
    if let Err(e) = run(&mut kernel, &ops, 2_000_000) {
        panic!("{e}");
    }
}

fn cases() -> u32 {
    std::env::var("XDHCP_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Known clients' DISCOVERs and SELECTING REQUESTs the kernel answered:
/// the sequences must exercise them.
static KERNEL_OFFERS: AtomicU64 = AtomicU64::new(0);
static KERNEL_SELECTING_ACKS: AtomicU64 = AtomicU64::new(0);
static KERNEL_RAPID_ACKS: AtomicU64 = AtomicU64::new(0);
/// Grants the committer wrote with the batch that ended their binding
/// (`keep_kernel_grants`): the sequences must exercise the fold.
static KEPT_GRANTS: AtomicU64 = AtomicU64::new(0);
/// The daemon's own changes folded into a refused batch by a later change
/// of their address (`fold_superseded`): the sequences must exercise it.
static FOLDED: AtomicU64 = AtomicU64::new(0);

#[test]
fn the_kernel_and_the_store_never_disagree() {
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let counter = AtomicU64::new(0);
    let t0 = std::time::Instant::now();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = std::cell::RefCell::new(Kernel::load());
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..60))| {
        let case = counter.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = run(&mut kernel.borrow_mut(), &ops, case) {
            prop_assert!(false, "{}", e);
        }
    });
    let (offers, acks, rapid, kept, folded) = (
        KERNEL_OFFERS.load(Ordering::Relaxed),
        KERNEL_SELECTING_ACKS.load(Ordering::Relaxed),
        KERNEL_RAPID_ACKS.load(Ordering::Relaxed),
        KEPT_GRANTS.load(Ordering::Relaxed),
        FOLDED.load(Ordering::Relaxed),
    );
    println!(
        "model: {} sequences checked in {:.1} s; the kernel offered {offers} times and ACKed {acks} SELECTING requests and {rapid} rapid DISCOVERs; {kept} kernel grants written with the batch that ended them; {folded} changes folded into refused batches",
        counter.load(Ordering::SeqCst),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        offers > 0 && acks > 0 && rapid > 0,
        "no DISCOVER, SELECTING or rapid DISCOVER answered in the kernel"
    );
    assert!(kept > 0, "no batch ended a binding the kernel had renewed");
    assert!(
        folded > 0,
        "no change of the daemon's own folded into a refused batch"
    );
}

/// The known holes of issue 12, each as the sequence that showed it. Each
/// failed on the code before its fix.
mod holes {
    use super::*;

    fn replay(ops: &[Op]) {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut kernel = Kernel::load();
        if let Err(e) = run(&mut kernel, ops, 1_000_000 + ops.len() as u64) {
            panic!("{e}");
        }
    }

    /// 1: `lease4-add` for a client bound elsewhere in the subnet freed the
    /// old lease in memory only; the kernel kept answering the old address.
    #[test]
    fn lease4_add_elsewhere_ends_the_old_binding_in_store_and_map() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Renew(0),
            Op::AdminAdd(0, 2),
            Op::Flush,
            Op::Tick,
            Op::Tick,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// Found once rapid commit was among the operations: a rapid ACK's
    /// binding was written before what the DISCOVER reclaimed on the way,
    /// so an expired lease of the same address overwrote it in the store
    /// and a crash lost the ACKed binding.
    #[test]
    fn a_rapid_commit_ack_is_stored_after_what_its_discover_reclaimed() {
        replay(&[
            Op::Dora(0),
            Op::Reload(1),
            Op::ResAdd(0, 0),
            Op::Advance(600),
            Op::Restart,
            Op::AdminAdd(2, 1),
            Op::RapidDora(1),
            Op::Flush,
        ]);
    }

    /// A client that DISCOVERs with rapid commit right after its DECLINE
    /// is ACKed by the kernel from the entry the DECLINE's batch has not
    /// yet removed. The declined lease names no client, so the grant read
    /// from the entry was not weighed against the binding it came from:
    /// the store took the DECLINE, and a crash lost the client's ACK.
    /// Found by the model once the kernel answered rapid commit; fails
    /// without the held binding in `Commit::deleted` for a DECLINE.
    #[test]
    fn a_rapid_ack_after_a_decline_is_kept_in_the_declines_batch() {
        replay(&[
            Op::Dora(2),
            Op::Flush,
            Op::Decline(2),
            Op::RapidDora(2),
            Op::Dora(0),
        ]);
    }

    /// A RELEASE the control plane read only after the client had DORAed
    /// again through the kernel ended the new binding: the end was taken
    /// as of the handling, after the kernel's grant, so the grant was not
    /// kept and the address went free while the client held the kernel's
    /// ACK. Found by the kill -9 loop on a loaded machine (two clients
    /// ACKed one address 200 ms apart); fails with the arrival time
    /// ignored in `Engine::commit_at`.
    #[test]
    fn a_release_read_late_keeps_what_the_kernel_granted_after_it() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Tick,
            Op::LateRelease(0, 2),
            Op::Flush,
            Op::Tick,
            Op::Tick,
            Op::Dora(1),
            Op::Flush,
        ]);
    }

    /// The grant kept across a late RELEASE was weighed against the last
    /// op of its address in the group commit (a reload's rewrite of the
    /// released lease, a second later), not against the RELEASE that
    /// ended the binding. Found by the random search with `LateRelease`;
    /// fails with `commit::ended_at` taking the last op's time.
    #[test]
    fn a_rewrite_of_an_ended_lease_does_not_move_its_end() {
        replay(&[
            Op::Dora(4),
            Op::Dora(0),
            Op::LateRelease(4, 1),
            Op::Reload(1),
            Op::Dora(0),
        ]);
    }

    /// With the store refusing writes, a kept grant's write (and the
    /// RELEASE it replaced) was folded away under a reload's rewrite of
    /// the released lease, whose later time then decided against the
    /// grant. Found by the random search with `LateRelease`; fails
    /// without `commit::ends::carry_ends`.
    #[test]
    fn a_folded_end_keeps_its_time() {
        replay(&[
            Op::Dora(3),
            Op::ResAdd(0, 3),
            Op::Flush,
            Op::FailWrites(2),
            Op::ResAdd(1, 1),
            Op::LateRelease(3, 1),
            Op::Dora(0),
            Op::Reload(1),
            Op::Flush,
        ]);
    }

    /// The control plane's write of a binding the kernel renewed after
    /// the decision (here a rapid-commit ACK, flushed after two kernel
    /// renewals) lowered the map entry's end: the unreported grant was
    /// lost, and after a reload stripped the template a crash left the
    /// store 5 s short of what the client held. Found by the random
    /// search in a full run; it fails without the fix in `upsert`.
    #[test]
    fn a_control_plane_rewrite_keeps_the_kernels_later_grant() {
        replay(&[
            Op::Dora(0),
            Op::Dora(0),
            Op::RapidDora(0),
            Op::RenewTwice(0, 6),
            Op::Flush,
            Op::Reload(1),
            Op::Flush,
        ]);
    }

    /// 2: an ACK and a RELEASE in one group commit left the map answering
    /// the released lease.
    #[test]
    fn ack_then_release_in_one_batch_leaves_no_entry() {
        // An operator's release right behind the ACK (a client's own
        // RELEASE can only follow the ACK's batch).
        replay(&[
            Op::Dora(0),
            Op::AdminRelease(0),
            Op::Flush,
            Op::Tick,
            Op::Tick,
        ]);
    }

    /// 3: the kernel extends a binding by up to lease/8 without reporting
    /// it; reclaim expired it at the stored end and gave the address away.
    #[test]
    fn an_unreported_kernel_extension_survives_reclaim() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(300),
            Op::Renew(0),
            Op::Tick,
            Op::Flush,
            Op::RenewTwice(0, 60),
            Op::Advance(545),
            Op::Reclaim,
            Op::Flush,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
            Op::Tick,
            Op::Tick,
            Op::Flush,
            Op::Dora(3),
            Op::Flush,
        ]);
    }

    /// 4: reclaim did not read the renewal ring first: a renewal the
    /// kernel had answered (its event still unread) was expired. (The
    /// kernel hold would still keep the address and bring the binding
    /// back; this checks it is never expired in the first place.)
    #[test]
    fn reclaim_reads_the_ring_first() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut kernel = Kernel::load();
        let mut w = World::new(&mut kernel, 3_000_000);
        for op in [
            Op::Dora(0),
            Op::Flush,
            Op::Advance(520),
            Op::Renew(0),
            Op::Advance(100),
            Op::Reclaim,
            Op::Flush,
        ] {
            w.step(&op);
            w.check().unwrap();
        }
        let l = w.engine.server.leases.get(ADDRS[0]).unwrap();
        assert_eq!(l.state, LeaseState::Bound, "{:?}", w.log);
        assert!(
            !w.engine
                .server
                .counters
                .dropped
                .contains_key("kernel_grant_restored"),
            "expired, then brought back: {:?}",
            w.log
        );
    }

    #[test]
    fn reclaim_reads_the_ring_first_and_the_address_stays() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(520),
            Op::Renew(0),
            Op::Advance(100),
            Op::Reclaim,
            Op::Flush,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// 4, the stalled form: reclaim (inline, when the pool is exhausted)
    /// before the ring is read; the kernel hold keeps the address.
    #[test]
    fn a_stalled_reclaim_never_frees_a_kernel_renewed_address() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(520),
            Op::Rebind(0),
            Op::Advance(280),
            Op::ReclaimStalled,
            Op::Flush,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// Found by the kill -9 loop: reclaim (before the ring was read)
    /// ended a binding the kernel had just renewed, and the daemon was
    /// killed right after that batch, before it read the renewal and
    /// wrote the binding back. The restarted daemon found it expired and
    /// gave the address to another client while the first held the
    /// kernel's ACK. The grant read from the entry as it left must be in
    /// that batch's own write (`keep_kernel_grants`).
    #[test]
    fn a_kernel_grant_survives_a_kill_right_after_the_batch_that_ended_its_binding() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(520),
            Op::Renew(0),
            Op::Advance(100),
            Op::ReclaimStalled,
            Op::Flush,
            Op::Crash(0),
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
            Op::Dora(3),
            Op::Flush,
        ]);
    }

    /// A full test run found it: with the store refusing writes, the
    /// operator deleted a lease whose client then renewed in the kernel,
    /// from the entry the delete, queued behind the refused batch, had
    /// not removed yet. The store then dropped the binding the client
    /// held an ACK for, so a crash would have freed the address. Queued
    /// commits now join the refused batch (the entry leaves at once), and
    /// a grant the kernel made after a delete is written in its place
    /// (`a_grant_made_after_a_delete_is_written_in_its_place`).
    #[test]
    fn a_delete_queued_behind_a_refused_batch_stops_the_kernel_at_once() {
        replay(&[
            Op::Dora(0),
            Op::Dora(2),
            Op::Dora(0),
            Op::FailWrites(1),
            Op::Dora(4),
            Op::Dora(0),
            Op::FailWrites(3),
            Op::AdminDel(1),
            Op::Flush,
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// 5: after a kill -9 with the configuration changed, templates were
    /// stripped before recovery, which then skipped the kernel's renewals.
    #[test]
    fn recovery_runs_before_a_changed_configuration_strips_templates() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(300),
            Op::Renew(0),
            Op::Crash(1),
            Op::Advance(310),
            Op::Reclaim,
            Op::Flush,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// 6: a refused batch was dropped: the kernel's renewals in it were
    /// lost, and a later clean stop marked the store clean.
    #[test]
    fn a_refused_batch_is_retried_and_nothing_in_it_is_lost() {
        replay(&[
            Op::Dora(0),
            Op::Flush,
            Op::Advance(300),
            Op::Renew(0),
            Op::FailWrites(2),
            Op::Tick,
            Op::Flush,
            Op::Flush,
            Op::Crash(0),
            Op::Advance(310),
            Op::Reclaim,
            Op::Flush,
            Op::Dora(1),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
        ]);
    }

    /// 8: a reload that removed a subnet dropped its leases from memory;
    /// adding it back handed live bindings out again.
    #[test]
    fn a_subnet_removed_and_added_back_keeps_its_bindings() {
        replay(&[
            Op::Dora(4),
            Op::Flush,
            Op::Reload(2),
            Op::Flush,
            Op::Reload(0),
            Op::Flush,
            Op::Tick,
            Op::Tick,
            Op::Flush,
            Op::Dora(5),
            Op::Flush,
            Op::Dora(5),
            Op::Flush,
        ]);
    }

    /// Found by the model: at start (and reload) stored leases were put
    /// back one by one, so a client's old released lease loaded after its
    /// bound one released the bound one in memory.
    #[test]
    fn a_restart_keeps_a_client_bound_that_left_an_older_lease() {
        replay(&[
            Op::Dora(3),
            Op::ResAdd(3, 3),
            Op::AdminAdd(0, 3),
            Op::Dora(0),
            Op::Flush,
            Op::Restart,
            Op::Dora(1),
            Op::Flush,
        ]);
    }

    /// Found by the model: rewriting a lease the client had left (a
    /// reload stripping its template) took the client's index and released
    /// its current binding in memory only.
    #[test]
    fn rewriting_a_left_lease_keeps_the_clients_current_binding() {
        replay(&[
            Op::Dora(1),
            Op::Flush,
            Op::ResAdd(1, 1),
            Op::Dora(1),
            Op::Flush,
            Op::Reload(1),
            Op::Flush,
            Op::Tick,
            Op::Tick,
            Op::ResDel(1),
            Op::Dora(0),
            Op::Flush,
            Op::Dora(2),
            Op::Flush,
            Op::Dora(3),
            Op::Flush,
        ]);
    }
}
