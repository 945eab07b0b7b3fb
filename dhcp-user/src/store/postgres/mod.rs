//! The lease store in a PostgreSQL database that several nodes share
//! (`[database]` in the configuration; SQLite stays the default).
//!
//! Group commit stays: a batch of lease changes is one statement (the
//! deletions and upserts of the batch's last change per address, sent as
//! arrays), one round trip, atomic and durable when PostgreSQL answers
//! (`synchronous_commit` as the server sets it). Daemon facts and
//! reservations in a batch make it a transaction of a few more.
//!
//! The blocking client runs on a thread of its own: the daemon opens and
//! loads the store from inside its async runtime, where a blocking client's
//! private runtime would refuse to run. A lost connection is made again at
//! the next call; every call is bounded (connect and statement timeouts,
//! TCP keepalive and user timeout), so a partitioned database fails the
//! batch, which the committer retries with its replies withheld.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    mpsc, Arc,
};

use anyhow::{anyhow, Context, Result};
use postgres::{Client, Statement};

use super::{ApiReservation, LeaseStore, StoreOp};
pub use crate::config::DatabaseConfig;
use crate::lease::Lease;

mod apply;
mod connect;
pub mod follow;
mod read;
pub mod schema;

pub use connect::explain;
use connect::{describe, Conn, Ctx};
use read::{row_lease, row_node, row_reservation, SELECT, SELECT_RESERVATIONS};

/// The environment variable read when `database.url` is not set (keeps a
/// password out of the configuration file).
pub const URL_ENV: &str = "XDHCP_DATABASE_URL";

/// Counters of the database's share of the work.
#[derive(Debug, Default)]
pub struct PgStats {
    pub batches: AtomicU64,
    /// Lease rows written or deleted.
    pub rows: AtomicU64,
    pub round_trips: AtomicU64,
    pub reconnects: AtomicU64,
    /// Bindings refused because another node's client held the address.
    pub lost_claims: AtomicU64,
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub struct PgStore {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<PgStats>,
    pub node: String,
    /// Where it connects, without the password.
    target: String,
    lost: Vec<Lease>,
    /// Other nodes' leases of the last load or lost claims, by address.
    granted_by: Vec<(std::net::Ipv4Addr, String)>,
}

impl PgStore {
    /// Connects (failing now, not at the first write, on a wrong URL or
    /// schema).
    pub fn open(cfg: &DatabaseConfig) -> Result<PgStore> {
        let stats = Arc::new(PgStats::default());
        let mut conn = Conn::new(cfg, stats.clone())?;
        let node = conn.node.clone();
        let target = describe(&conn.config);
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("xdhcp-pg".into())
            .spawn(move || {
                let _ = ready_tx.send(conn.client().map(|_| ()));
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the PostgreSQL thread ended"))??;
        tracing::info!(node = %node, "lease store: PostgreSQL");
        Ok(PgStore {
            jobs: Some(tx),
            thread: Some(thread),
            stats,
            node,
            target,
            lost: Vec::new(),
            granted_by: Vec::new(),
        })
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &Statement, &Ctx) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .expect("live until drop")
            .send(Box::new(move |c: &mut Conn| {
                let _ = tx.send(c.with(f));
            }))
            .map_err(|_| anyhow!("the PostgreSQL thread ended"))?;
        rx.recv()
            .map_err(|_| anyhow!("the PostgreSQL thread ended"))?
    }
}

impl PgStore {
    /// The leases of `rows` (read with `SELECT`) another node wrote.
    fn others(
        &self,
        leases: &[Lease],
        rows: &[postgres::Row],
    ) -> Vec<(std::net::Ipv4Addr, String)> {
        leases
            .iter()
            .zip(rows)
            .map(|(l, r)| (l.ip, row_node(r)))
            .filter(|(_, n)| *n != self.node)
            .collect()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl LeaseStore for PgStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        let rows = self.call(|c, _, _| Ok(c.query(SELECT, &[])?))?;
        let leases = rows.iter().map(row_lease).collect::<Result<Vec<_>>>()?;
        self.granted_by = self.others(&leases, &rows);
        Ok(leases)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        let ops = ops.to_vec();
        let stats = self.stats.clone();
        let (lost, rows) = self
            .call(move |c, st, ctx| apply::apply(c, st, ctx, &ops, &stats))
            .context("PostgreSQL lease store")?;
        self.granted_by = self.others(&lost, &rows);
        self.lost = lost;
        Ok(())
    }

    fn take_lost(&mut self) -> Vec<Lease> {
        std::mem::take(&mut self.lost)
    }

    fn take_granted_by(&mut self) -> Vec<(std::net::Ipv4Addr, String)> {
        std::mem::take(&mut self.granted_by)
    }

    fn node(&self) -> Option<String> {
        Some(self.node.clone())
    }

    fn change_seq(&mut self) -> Result<Option<i64>> {
        self.call(|c, _, _| {
            Ok(Some(
                c.query_one("SELECT coalesce(max(seq), 0) FROM xdhcp_changes", &[])?
                    .get(0),
            ))
        })
    }

    fn describe(&self) -> Option<serde_json::Value> {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(serde_json::json!({
            "backend": "postgres",
            "node": self.node,
            "where": self.target,
            "batches": n(&s.batches),
            "rows": n(&s.rows),
            "round-trips": n(&s.round_trips),
            "reconnects": n(&s.reconnects),
            "lost-claims": n(&s.lost_claims),
        }))
    }

    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        let rows = self.call(|c, _, _| Ok(c.query(SELECT_RESERVATIONS, &[])?))?;
        Ok(rows.iter().map(row_reservation).collect())
    }

    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        let key = key.to_string();
        self.call(move |c, _, ctx| {
            Ok(c.query_opt(
                "SELECT v FROM xdhcp_meta WHERE node = $1 AND k = $2",
                &[&ctx.node, &key],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        let key = key.to_string();
        self.call(move |c, _, ctx| {
            c.execute(apply::PUT_META, &[&ctx.node, &key, &value])?;
            Ok(())
        })
    }
}
