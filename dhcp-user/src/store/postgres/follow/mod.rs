//! Following the other nodes: every lease change another node writes
//! reaches this node's table within a bounded lag, so a client whose node
//! died is known here before it asks (its REBINDING or INIT-REBOOT is
//! ACKed from the table, not NAKed or re-offered), and an address another
//! node granted is not offered here.
//!
//! The feed is `xdhcp_changes` (schema step 2): one number per row
//! written, announced on the channel `xdhcp_changes` at commit. The
//! follower has a connection of its own (LISTEN holds it), wakes on a
//! notification or every `POLL` at the latest, and reads every change
//! past the last one it is sure of, each address with its row as the
//! database holds it now. Numbers come from a sequence, so they are
//! drawn in one order and committed in another: a number missing below
//! the highest one read may be a transaction still open. The follower
//! re-reads from below such a hole until it is filled or older than any
//! transaction can stay open (then it was rolled back); re-reading a
//! change is harmless, the row read is the current one.
//!
//! A follower that finds the history pruned past it (it was cut off
//! longer than the history is kept) re-reads the whole table instead.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use postgres::{fallible_iterator::FallibleIterator, Client, Row};
use serde_json::{json, Value};

use super::read::{row_lease_at, LEASE_COLUMNS};

mod peers;
use crate::{config::DatabaseConfig, lease::Lease};

/// The longest a change can wait for its notification to be read.
pub const POLL: Duration = Duration::from_millis(500);
/// How often each node says it is alive (`xdhcp_meta`, key `heartbeat`).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Changes kept in the feed: a node cut off for longer than they last
/// re-reads the whole table.
const KEEP_CHANGES: i64 = 1_000_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Changes read per statement (the next read follows at once).
const READ_LIMIT: i64 = 20_000;
/// A numbering gap this wide is not a transaction in flight (a whole
/// batch rolled back, or the sequence set by hand): skipped at once.
const WIDE_GAP: i64 = 100_000;

/// What the follower hands the engine.
#[derive(Debug)]
pub enum Followed {
    /// Other nodes' changes since the last: each address once, with its
    /// row as the database holds it now.
    Changes(Vec<Remote>),
    /// Every other node's lease, after the follower missed changes.
    Resync(Vec<Remote>),
    /// A node silent for `database.takeover_secs`: its bound leases, with
    /// their reply templates, for this node's kernel to answer; and
    /// whether its replies are this node's but for the server identifier
    /// (the same `reply_portable` fingerprint).
    Takeover {
        node: String,
        leases: Vec<Remote>,
        same_replies: bool,
    },
    /// The other nodes whose heartbeat is fresh (sent when it changes):
    /// their clients are theirs to answer.
    Alive(Vec<String>),
}

/// One address as another node left it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub ip: Ipv4Addr,
    /// The node that wrote the row (or deleted it).
    pub node: String,
    /// None: the row was deleted.
    pub lease: Option<Lease>,
}

/// What `status` and the metrics show of the follower.
#[derive(Debug, Default)]
pub struct FollowStats {
    pub connected: AtomicBool,
    /// Every change up to this one has been read.
    pub last_seq: AtomicI64,
    /// Other nodes' changes handed to the engine.
    pub changes: AtomicU64,
    pub resyncs: AtomicU64,
    pub connections: AtomicU64,
    /// From a row's write (its transaction's start, by the database's
    /// clock) to its read here, in milliseconds: the last and the
    /// highest since start.
    pub lag_ms: AtomicU64,
    pub max_lag_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub peers: Mutex<BTreeMap<String, Peer>>,
}

/// Another node, as the feed and its heartbeat show it.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// Its newest change read here, and when it wrote it (Unix ms).
    pub last_seq: i64,
    pub last_change_ms: i64,
    pub changes: u64,
    /// Its last heartbeat (Unix s, by the database's clock), and how long
    /// ago that was when last read.
    pub heartbeat: i64,
    pub silent_secs: i64,
}

impl FollowStats {
    pub fn json(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let peers: serde_json::Map<String, Value> = self
            .peers
            .lock()
            .unwrap()
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    json!({
                        "last-change": p.last_seq,
                        "last-change-at-ms": p.last_change_ms,
                        "changes": p.changes,
                        "heartbeat": p.heartbeat,
                        "silent-secs": p.silent_secs,
                    }),
                )
            })
            .collect();
        json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "last-change": self.last_seq.load(Ordering::Relaxed),
            "changes": n(&self.changes),
            "resyncs": n(&self.resyncs),
            "connections": n(&self.connections),
            "lag-ms": n(&self.lag_ms),
            "max-lag-ms": n(&self.max_lag_ms),
            "last-error": *self.last_error.lock().unwrap(),
            "peers": peers,
        })
    }
}

/// Starts following from change `since` (read before the leases were
/// loaded, so nothing written between is missed). `send` hands each read
/// to the engine; it returns false once the daemon no longer listens.
pub fn spawn(
    cfg: &DatabaseConfig,
    since: i64,
    portable: i64,
    stats: Arc<FollowStats>,
    stop: Arc<AtomicBool>,
    send: impl FnMut(Followed) -> bool + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let f = Follower {
        pg: cfg.pg_config()?,
        tls: cfg.tls()?,
        node: cfg.node_name(),
        hole_timeout: Duration::from_secs(2 * u64::from(cfg.timeout_secs.max(1)) + 1),
        takeover: i64::from(cfg.takeover_secs.max(1)),
        portable,
        taken: HashSet::new(),
        share: (0, 1),
        alive: Vec::new(),
        alive_sent: None,
        watermark: since,
        read_above: BTreeSet::new(),
        holes: HashMap::new(),
        stats,
        stop,
    };
    f.stats.last_seq.store(since, Ordering::Relaxed);
    Ok(std::thread::Builder::new()
        .name("xdhcp-follow".into())
        .spawn(move || f.run(send))?)
}

struct Follower {
    pg: postgres::Config,
    tls: postgres_openssl::MakeTlsConnector,
    node: String,
    hole_timeout: Duration,
    /// Seconds of silence after which a peer's bindings are taken over.
    takeover: i64,
    /// This node's `reply_portable` fingerprint.
    portable: i64,
    /// Peers taken over and silent since.
    taken: HashSet<String>,
    /// This node's rank among the live nodes, and their number.
    share: (i64, i64),
    /// The live nodes (this one too), and the set last sent.
    alive: Vec<String>,
    alive_sent: Option<Vec<String>>,
    /// Every change up to this one has been read.
    watermark: i64,
    /// Changes above the watermark already handed over (re-read while a
    /// hole below them is open).
    read_above: BTreeSet<i64>,
    /// Numbers missing above the watermark, since when.
    holes: HashMap<i64, Instant>,
    stats: Arc<FollowStats>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self, mut send: impl FnMut(Followed) -> bool) {
        while !self.stop.load(Ordering::Relaxed) {
            let r = self.session(&mut send);
            self.stats.connected.store(false, Ordering::Relaxed);
            match r {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!("following the other nodes' changes: {e:#}; connecting again");
                    *self.stats.last_error.lock().unwrap() = Some(format!("{e:#}"));
                    self.sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One connection's life: Ok(true) to connect again, Ok(false) when
    /// the engine is gone.
    fn session(&mut self, send: &mut impl FnMut(Followed) -> bool) -> Result<bool> {
        let mut c = self
            .pg
            .connect(self.tls.clone())
            .context("connecting to PostgreSQL")?;
        c.batch_execute("LISTEN xdhcp_changes")?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.connected.store(true, Ordering::Relaxed);
        *self.stats.last_error.lock().unwrap() = None;
        if self.missed_history(&mut c)? && !self.resync(&mut c, send)? {
            return Ok(false);
        }
        let connected = Instant::now();
        let (mut beat, mut pruned) = (Instant::now() - HEARTBEAT, Instant::now());
        while !self.stop.load(Ordering::Relaxed) {
            loop {
                let (changes, full) = self.read(&mut c)?;
                if !changes.is_empty() && !send(Followed::Changes(changes)) {
                    return Ok(false);
                }
                if !full {
                    break;
                }
            }
            if beat.elapsed() >= HEARTBEAT {
                // Only after this node has been connected longer than a
                // peer may stay silent: a database that stalled leaves
                // every heartbeat old, and each node beats again within
                // a second of its return.
                let may_take = connected.elapsed().as_secs() as i64 >= self.takeover;
                let due = self.heartbeat(&mut c, may_take)?;
                if let Some(alive) = self.alive_changed() {
                    if !send(Followed::Alive(alive)) {
                        return Ok(false);
                    }
                }
                for silent in due {
                    let t = self.take_over(&mut c, silent)?;
                    if !send(t) {
                        return Ok(false);
                    }
                }
                beat = Instant::now();
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                c.execute(
                    "DELETE FROM xdhcp_changes WHERE seq <= (SELECT max(seq) FROM xdhcp_changes) - $1",
                    &[&KEEP_CHANGES],
                )?;
                pruned = Instant::now();
            }
            // Woken by the first notification; the others it brought are
            // covered by the read that follows.
            let mut n = c.notifications();
            let first = n.timeout_iter(POLL).next()?;
            if first.is_some() {
                while n.iter().next()?.is_some() {}
            }
        }
        Ok(false)
    }

    /// The other live nodes, when they differ from those last sent.
    fn alive_changed(&mut self) -> Option<Vec<String>> {
        let others: Vec<String> = self
            .alive
            .iter()
            .filter(|n| **n != self.node)
            .cloned()
            .collect();
        if self.alive_sent.as_ref() == Some(&others) {
            return None;
        }
        self.alive_sent = Some(others.clone());
        Some(others)
    }

    /// Whether changes past the watermark were pruned unread.
    fn missed_history(&mut self, c: &mut Client) -> Result<bool> {
        let r = c.query_one(
            "SELECT min(seq), (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM xdhcp_change_seq)
             FROM xdhcp_changes",
            &[],
        )?;
        let (oldest, drawn): (Option<i64>, i64) = (r.get(0), r.get(1));
        Ok(match oldest {
            Some(o) => o > self.watermark + 1,
            // Every change pruned: missed if any was made since.
            None => drawn > self.watermark,
        })
    }

    /// The whole table, as one snapshot with the feed's position in it.
    fn resync(&mut self, c: &mut Client, send: &mut impl FnMut(Followed) -> bool) -> Result<bool> {
        let mut tx = c
            .build_transaction()
            .read_only(true)
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()?;
        let at: i64 = tx
            .query_one("SELECT coalesce(max(seq), 0) FROM xdhcp_changes", &[])?
            .get(0);
        let rows = tx.query(
            &format!("SELECT {LEASE_COLUMNS}, node FROM xdhcp_leases WHERE node <> $1"),
            &[&self.node],
        )?;
        tx.commit()?;
        let all = rows
            .iter()
            .map(|r| {
                let lease = row_lease_at(r, 0)?;
                Ok(Remote {
                    ip: lease.ip,
                    node: r.get(9),
                    lease: Some(lease),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tracing::warn!(
            leases = all.len(),
            "changes were pruned before this node read them: the other nodes' leases read again in full"
        );
        self.watermark = at;
        self.read_above.clear();
        self.holes.clear();
        self.stats.last_seq.store(at, Ordering::Relaxed);
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        Ok(send(Followed::Resync(all)))
    }

    /// The changes past the watermark not handed over yet (and whether the
    /// read was cut at `READ_LIMIT`).
    fn read(&mut self, c: &mut Client) -> Result<(Vec<Remote>, bool)> {
        let rows = c.query(
            &format!(
                "SELECT {}, c.seq, c.ip, c.node, l.node,
                        (extract(epoch FROM clock_timestamp() - l.updated) * 1000)::bigint,
                        (extract(epoch FROM l.updated) * 1000)::bigint
                 FROM xdhcp_changes c LEFT JOIN xdhcp_leases l ON l.ip = c.ip
                 WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
                LEASE_COLUMNS
                    .split(", ")
                    .map(|col| format!("l.{col}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&self.watermark, &READ_LIMIT],
        )?;
        let full = rows.len() as i64 == READ_LIMIT;
        let mut latest: HashMap<Ipv4Addr, Remote> = HashMap::new();
        let mut seqs = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.get(9);
            seqs.push(seq);
            if !self.read_above.insert(seq) {
                continue;
            }
            self.note_peer(r, seq);
            if let Some(remote) = self.remote(r)? {
                latest.insert(remote.ip, remote);
            } else {
                let ip = Ipv4Addr::from(r.get::<_, i64>(10) as u32);
                // This node's own row is now the current one: nothing of
                // an earlier change of another node's is left to apply.
                latest.remove(&ip);
            }
        }
        self.advance(&seqs);
        let changes: Vec<Remote> = latest.into_values().collect();
        self.stats
            .changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        Ok((changes, full))
    }

    /// The address of change row `r` as another node left it; None when
    /// the row is now this node's own.
    fn remote(&self, r: &Row) -> Result<Option<Remote>> {
        let ip = Ipv4Addr::from(r.get::<_, i64>(10) as u32);
        let row_node: Option<String> = r.get(12);
        let change_node: String = r.get(11);
        Ok(match row_node {
            Some(n) if n == self.node => None,
            Some(n) => Some(Remote {
                ip,
                node: n,
                lease: Some(row_lease_at(r, 0)?),
            }),
            None if change_node == self.node => None,
            None => Some(Remote {
                ip,
                node: change_node,
                lease: None,
            }),
        })
    }

    fn note_peer(&self, r: &Row, seq: i64) {
        let node: String = r.get(11);
        if node == self.node {
            return;
        }
        if let Some(lag) = r.get::<_, Option<i64>>(13) {
            let lag = lag.max(0) as u64;
            self.stats.lag_ms.store(lag, Ordering::Relaxed);
            self.stats.max_lag_ms.fetch_max(lag, Ordering::Relaxed);
        }
        let mut peers = self.stats.peers.lock().unwrap();
        let p = peers.entry(node).or_default();
        p.last_seq = p.last_seq.max(seq);
        if let Some(at) = r.get::<_, Option<i64>>(14) {
            p.last_change_ms = p.last_change_ms.max(at);
        }
        p.changes += 1;
    }

    /// Moves the watermark over the numbers read and the holes given up on.
    fn advance(&mut self, seqs: &[i64]) {
        let now = Instant::now();
        let mut next = self.watermark + 1;
        'seqs: for &s in seqs {
            while next < s {
                if s - next > WIDE_GAP {
                    next = s;
                    break;
                }
                let since = *self.holes.entry(next).or_insert(now);
                if now.duration_since(since) < self.hole_timeout {
                    break 'seqs;
                }
                self.holes.remove(&next);
                next += 1;
            }
            if s == next {
                next += 1;
            }
        }
        // Holes past where the scan stopped are noted for their timeout.
        if let Some(&top) = seqs.last() {
            let mut a = next;
            while a < top && top - a <= WIDE_GAP {
                if !self.read_above.contains(&a) {
                    self.holes.entry(a).or_insert(now);
                }
                a += 1;
            }
        }
        self.watermark = next - 1;
        self.read_above = self.read_above.split_off(&next);
        self.holes.retain(|s, _| *s >= next);
        self.stats.last_seq.store(self.watermark, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> Follower {
        let cfg = DatabaseConfig {
            url: Some("postgresql://x@127.0.0.1/x".into()),
            ..Default::default()
        };
        Follower {
            pg: cfg.pg_config().unwrap(),
            tls: cfg.tls().unwrap(),
            node: "me".into(),
            hole_timeout: Duration::from_millis(200),
            takeover: 10,
            portable: 0,
            taken: HashSet::new(),
            share: (0, 1),
            alive: Vec::new(),
            alive_sent: None,
            watermark: 10,
            read_above: BTreeSet::new(),
            holes: HashMap::new(),
            stats: Arc::default(),
            stop: Arc::default(),
        }
    }

    fn read(f: &mut Follower, seqs: &[i64]) {
        for s in seqs {
            f.read_above.insert(*s);
        }
        f.advance(seqs);
    }

    #[test]
    fn the_watermark_stops_below_a_hole_until_it_is_filled() {
        let mut f = follower();
        read(&mut f, &[11, 12, 14, 15]);
        assert_eq!(f.watermark, 12, "13 may be a transaction still open");
        assert!(f.read_above.contains(&14) && f.read_above.contains(&15));
        // 13 commits: the next read (from 12) brings it and what follows.
        read(&mut f, &[13, 14, 15, 16]);
        assert_eq!(f.watermark, 16);
        assert!(f.read_above.is_empty() && f.holes.is_empty());
    }

    #[test]
    fn a_hole_older_than_any_transaction_was_a_rollback_and_is_passed() {
        let mut f = follower();
        read(&mut f, &[11, 13]);
        assert_eq!(f.watermark, 11);
        std::thread::sleep(Duration::from_millis(250));
        read(&mut f, &[13]);
        assert_eq!(f.watermark, 13);
    }

    #[test]
    fn a_wide_gap_is_not_waited_for() {
        let mut f = follower();
        read(&mut f, &[11, 11 + WIDE_GAP + 5]);
        assert_eq!(f.watermark, 11 + WIDE_GAP + 5);
    }
}
