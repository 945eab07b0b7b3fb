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

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Context, Result};
use postgres::{Client, Statement};
use postgres_openssl::MakeTlsConnector;

use super::{pg_schema, ApiReservation, LeaseStore, StoreOp};
pub use crate::config::DatabaseConfig;
use crate::lease::{FastReply, Lease, LeaseState};

/// The environment variable read when `database.url` is not set (keeps a
/// password out of the configuration file).
pub const URL_ENV: &str = "XDHCP_DATABASE_URL";

impl DatabaseConfig {
    /// The connection settings: the URL from the file or the environment,
    /// with the timeouts that keep a lost database from hanging a batch.
    pub fn pg_config(&self) -> Result<postgres::Config> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => std::env::var(URL_ENV).map_err(|_| {
                anyhow!("database.url is not set and neither is ${URL_ENV}: no PostgreSQL to connect to")
            })?,
        };
        // The parse error never echoes the URL (it may hold a password).
        let mut c = postgres::Config::from_str(&url).map_err(|e| anyhow!("database URL: {e}"))?;
        let t = Duration::from_secs(u64::from(self.timeout_secs.max(1)));
        c.connect_timeout(t)
            .keepalives(true)
            .keepalives_idle(t)
            .tcp_user_timeout(t)
            .options(&format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                t.as_millis(),
                t.as_millis()
            ));
        if c.get_application_name().is_none() {
            c.application_name("xdhcp");
        }
        Ok(c)
    }

    pub fn tls(&self) -> Result<MakeTlsConnector> {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
        if let Some(ca) = &self.tls_ca_file {
            b.set_ca_file(ca)
                .with_context(|| format!("database.tls_ca_file {}", ca.display()))?;
        }
        Ok(MakeTlsConnector::new(b.build()))
    }

    /// A connection, for the `xdhcp db` commands.
    pub fn connect(&self) -> Result<Client> {
        let c = self.pg_config()?;
        c.connect(self.tls()?).map_err(|e| {
            anyhow!(
                "connecting to PostgreSQL ({}): {}",
                describe(&c),
                explain(&e)
            )
        })
    }
}

/// A client error with what the server or the TLS layer said (the
/// error's own text is often only "db error" or "error performing TLS
/// handshake").
pub fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Where a connection goes, without its password.
fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(n) => n.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "host {} dbname {}",
        hosts.join(","),
        c.get_dbname().unwrap_or("(default)")
    )
}

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

struct Conn {
    config: postgres::Config,
    tls: MakeTlsConnector,
    node: String,
    mclt: i64,
    client: Option<(Client, Statement)>,
    stats: Arc<PgStats>,
}

/// Every lease change of a batch as one statement: deletions first, then
/// upserts (the batch is reduced to each address's last change, so no
/// address is in both). The upsert is the claim, and the primary key on
/// the address the arbiter between nodes: a row is overwritten only when
/// it is the same client's, holds nothing (offered, released, expired),
/// or ended longer than the MCLT ago by the database's clock. The
/// addresses written come back; the others are claims lost.
const APPLY: &str = "WITH gone AS (DELETE FROM xdhcp_leases WHERE ip = ANY($9::bigint[]))
    INSERT INTO xdhcp_leases (ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay, node)
    SELECT u.*, $10::text FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[],
        $5::smallint[], $6::bigint[], $7::bigint[], $8::bytea[], $12::bytea[]) AS u
    ON CONFLICT (ip) DO UPDATE SET client = EXCLUDED.client, hw = EXCLUDED.hw,
        subnet_id = EXCLUDED.subnet_id, state = EXCLUDED.state, expires = EXCLUDED.expires,
        lease_secs = EXCLUDED.lease_secs, fast = EXCLUDED.fast, relay = EXCLUDED.relay,
        node = EXCLUDED.node, updated = now()
    WHERE xdhcp_leases.client IS NOT DISTINCT FROM EXCLUDED.client
        OR xdhcp_leases.state IN (0, 2, 3)
        OR xdhcp_leases.expires + $11::bigint <= extract(epoch FROM now())::bigint
    RETURNING ip";

const SELECT: &str =
    "SELECT ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay FROM xdhcp_leases";

impl Conn {
    fn client(&mut self) -> Result<&mut (Client, Statement)> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut c = self.config.connect(self.tls.clone()).map_err(|e| {
                anyhow!(
                    "connecting to PostgreSQL ({}): {}",
                    describe(&self.config),
                    explain(&e)
                )
            })?;
            pg_schema::check(pg_schema::version(&mut c)?)?;
            let st = c.prepare(APPLY)?;
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            self.client = Some((c, st));
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `f` on a live connection; a connection an error left broken
    /// is dropped, so the next call makes a new one.
    fn with<R>(&mut self, f: impl FnOnce(&mut Client, &Statement, &Ctx) -> Result<R>) -> Result<R> {
        let ctx = Ctx {
            node: self.node.clone(),
            mclt: self.mclt,
        };
        let (c, st) = self.client()?;
        let r = f(c, st, &ctx);
        if r.is_err() && self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        r
    }
}

/// What every statement may need besides its own arguments.
struct Ctx {
    node: String,
    mclt: i64,
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
}

impl PgStore {
    /// Connects (failing now, not at the first write, on a wrong URL or
    /// schema).
    pub fn open(cfg: &DatabaseConfig) -> Result<PgStore> {
        let stats = Arc::new(PgStats::default());
        let mut conn = Conn {
            config: cfg.pg_config()?,
            tls: cfg.tls()?,
            node: cfg.node_name(),
            mclt: i64::from(cfg.mclt_secs),
            client: None,
            stats: stats.clone(),
        };
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

impl Drop for PgStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A batch's lease changes as the arrays `APPLY` takes.
#[derive(Default)]
struct Columns {
    ip: Vec<i64>,
    client: Vec<Option<Vec<u8>>>,
    hw: Vec<Vec<u8>>,
    subnet: Vec<i64>,
    state: Vec<i16>,
    expires: Vec<i64>,
    secs: Vec<i64>,
    fast: Vec<Option<Vec<u8>>>,
    relay: Vec<Option<Vec<u8>>>,
    deleted: Vec<i64>,
}

fn columns(ops: &[StoreOp]) -> Columns {
    // Each address's last change is what the batch leaves, in order.
    let mut last: HashMap<Ipv4Addr, Option<&Lease>> = HashMap::new();
    let mut order = Vec::new();
    for op in ops {
        let (ip, l) = match op {
            StoreOp::Put(l) | StoreOp::Renewed(l) => (l.ip, Some(l)),
            StoreOp::Delete(ip) => (*ip, None),
            _ => continue,
        };
        if last.insert(ip, l).is_none() {
            order.push(ip);
        }
    }
    let mut c = Columns::default();
    for ip in order {
        match last[&ip] {
            None => c.deleted.push(i64::from(u32::from(ip))),
            Some(l) => {
                c.ip.push(i64::from(u32::from(l.ip)));
                c.client.push(l.client.as_deref().map(<[u8]>::to_vec));
                c.hw.push(l.hw.to_vec());
                c.subnet.push(i64::from(l.subnet_id));
                c.state.push(l.state.code() as i16);
                c.expires.push(l.expires as i64);
                c.secs.push(i64::from(l.lease_secs));
                c.fast.push(l.fast.as_ref().map(|f| f.encode()));
                c.relay.push(l.relay.as_deref().map(<[u8]>::to_vec));
            }
        }
    }
    c
}

/// Writes the batch; returns the leases of the claims it lost.
fn apply(
    client: &mut Client,
    st: &Statement,
    ctx: &Ctx,
    ops: &[StoreOp],
    stats: &PgStats,
) -> Result<Vec<Lease>> {
    let node = &ctx.node;
    let c = columns(ops);
    let rows = (c.ip.len() + c.deleted.len()) as u64;
    let params: [&(dyn postgres::types::ToSql + Sync); 12] = [
        &c.ip, &c.client, &c.hw, &c.subnet, &c.state, &c.expires, &c.secs, &c.fast, &c.deleted,
        node, &ctx.mclt, &c.relay,
    ];
    let rest: Vec<&StoreOp> = ops
        .iter()
        .filter(|o| o.lease().is_none() && !matches!(o, StoreOp::Delete(_)))
        .collect();
    let mut written = Vec::new();
    if rest.is_empty() {
        if rows > 0 {
            written = client.query(st, &params)?;
            stats.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        let mut tx = client.transaction()?;
        if rows > 0 {
            written = tx.query(st, &params)?;
        }
        let mut trips = 2 + u64::from(rows > 0);
        for op in rest {
            trips += 1;
            match op {
                StoreOp::Meta(k, v) => {
                    tx.execute(
                        "INSERT INTO xdhcp_meta (node, k, v) VALUES ($1, $2, $3)
                         ON CONFLICT (node, k) DO UPDATE SET v = EXCLUDED.v",
                        &[&node, k, v],
                    )?;
                }
                StoreOp::PutReservation(r) => {
                    let relay = r.relay.as_ref().and_then(|x| serde_json::to_string(x).ok());
                    tx.execute(
                        "INSERT INTO xdhcp_reservations (subnet_id, ip, hw, cid, relay) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (subnet_id, ip) DO UPDATE SET hw = EXCLUDED.hw, cid = EXCLUDED.cid,
                             relay = EXCLUDED.relay",
                        &[
                            &i64::from(r.subnet_id),
                            &i64::from(u32::from(r.ip)),
                            &r.hw_address,
                            &r.client_id,
                            &relay,
                        ],
                    )?;
                }
                StoreOp::DeleteReservation { subnet_id, ip } => {
                    tx.execute(
                        "DELETE FROM xdhcp_reservations WHERE subnet_id = $1 AND ip = $2",
                        &[&i64::from(*subnet_id), &i64::from(u32::from(*ip))],
                    )?;
                }
                StoreOp::Put(_) | StoreOp::Renewed(_) | StoreOp::Delete(_) => {}
            }
        }
        tx.commit().context("committing leases")?;
        stats.round_trips.fetch_add(trips, Ordering::Relaxed);
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.rows.fetch_add(rows, Ordering::Relaxed);
    if written.len() == c.ip.len() {
        return Ok(Vec::new());
    }
    let won: std::collections::HashSet<i64> = written.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> =
        c.ip.iter()
            .copied()
            .filter(|ip| !won.contains(ip))
            .collect();
    stats
        .lost_claims
        .fetch_add(lost.len() as u64, Ordering::Relaxed);
    stats.round_trips.fetch_add(1, Ordering::Relaxed);
    client
        .query(&format!("{SELECT} WHERE ip = ANY($1)"), &[&lost])?
        .iter()
        .map(row_lease)
        .collect()
}

fn row_lease(r: &postgres::Row) -> Result<Lease> {
    let ip: i64 = r.get(0);
    let state: i16 = r.get(4);
    Ok(Lease {
        ip: Ipv4Addr::from(ip as u32),
        client: r.get::<_, Option<Vec<u8>>>(1).map(Vec::into_boxed_slice),
        hw: r.get::<_, Vec<u8>>(2).into_boxed_slice(),
        subnet_id: r.get::<_, i64>(3) as u32,
        state: LeaseState::from_code(i64::from(state))
            .ok_or_else(|| anyhow!("lease {ip}: unknown state {state}"))?,
        expires: r.get::<_, i64>(5) as u64,
        lease_secs: r.get::<_, i64>(6) as u32,
        // As in SQLite: an undecodable blob costs only the fast path for
        // this lease until its next ACK.
        fast: r
            .get::<_, Option<Vec<u8>>>(7)
            .and_then(|b| FastReply::decode(&b))
            .map(Arc::new),
        relay: r.get::<_, Option<Vec<u8>>>(8).map(Vec::into_boxed_slice),
    })
}

impl LeaseStore for PgStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        let rows = self.call(|c, _, _| Ok(c.query(SELECT, &[])?))?;
        rows.iter().map(row_lease).collect()
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        let ops = ops.to_vec();
        let stats = self.stats.clone();
        self.lost = self
            .call(move |c, st, ctx| apply(c, st, ctx, &ops, &stats))
            .context("PostgreSQL lease store")?;
        Ok(())
    }

    fn take_lost(&mut self) -> Vec<Lease> {
        std::mem::take(&mut self.lost)
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
        let rows = self.call(|c, _, _| {
            Ok(c.query(
                "SELECT subnet_id, ip, hw, cid, relay FROM xdhcp_reservations ORDER BY subnet_id, ip",
                &[],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| ApiReservation {
                subnet_id: r.get::<_, i64>(0) as u32,
                ip: Ipv4Addr::from(r.get::<_, i64>(1) as u32),
                hw_address: r.get(2),
                client_id: r.get(3),
                relay: r
                    .get::<_, Option<String>>(4)
                    .and_then(|j| serde_json::from_str(&j).ok()),
            })
            .collect())
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
            c.execute(
                "INSERT INTO xdhcp_meta (node, k, v) VALUES ($1, $2, $3)
                 ON CONFLICT (node, k) DO UPDATE SET v = EXCLUDED.v",
                &[&ctx.node, &key, &value],
            )?;
            Ok(())
        })
    }
}
