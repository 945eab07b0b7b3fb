//! Durable lease storage behind one narrow interface, so a shared
//! PostgreSQL backend can follow without touching the protocol code.
//!
//! `apply` is the only write: a batch of changes that is atomic and durable
//! when it returns. The caller (serve's committer thread) batches every
//! change that arrived while the previous batch was being written: group
//! commit, one fsync for many ACKs.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OpenFlags};

use crate::{
    config::{Config, DbSync},
    dhcp::leases::{FastReply, Lease, LeaseState},
};

pub mod pg_schema;
pub mod postgres;

/// The store the configuration names: PostgreSQL with a `[database]`
/// table, else the SQLite file `server.lease_db`.
pub fn open(config: &Config) -> Result<Box<dyn LeaseStore>> {
    Ok(match &config.database {
        Some(db) => Box::new(postgres::PgStore::open(db)?),
        None => Box::new(SqliteStore::open(
            &config.server.lease_db,
            config.server.lease_db_sync,
        )?),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace the lease at its address.
    Put(Lease),
    /// Same as `Put`, for a renewal the XDP program already answered: the
    /// lease map is ahead of the store and must not be rewritten from it.
    Renewed(Lease),
    Delete(Ipv4Addr),
    /// A daemon fact kept beside the leases, written in the same batch.
    Meta(&'static str, i64),
    /// A reservation made through the control API (config-file ones live
    /// in the file).
    PutReservation(ApiReservation),
    DeleteReservation {
        subnet_id: u32,
        ip: Ipv4Addr,
    },
}

/// A reservation added at run time, kept in the store and merged into the
/// configuration's subnet at every start and reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReservation {
    pub subnet_id: u32,
    pub ip: Ipv4Addr,
    pub hw_address: Option<String>,
    pub client_id: Option<String>,
    /// A relay identity instead (`crate::dhcp::subscriber`).
    pub relay: Option<ApiRelayId>,
}

/// A relay identity of an API reservation, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiRelayId {
    #[serde(
        rename = "circuit-id",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub circuit_id: Option<String>,
    #[serde(rename = "remote-id", skip_serializing_if = "Option::is_none", default)]
    pub remote_id: Option<String>,
    #[serde(
        rename = "subscriber-id",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub subscriber_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub giaddr: Option<Ipv4Addr>,
}

impl StoreOp {
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            StoreOp::Put(l) | StoreOp::Renewed(l) => Some(l),
            _ => None,
        }
    }
}

pub trait LeaseStore: Send {
    /// Every stored lease (all states).
    fn load(&mut self) -> Result<Vec<Lease>>;
    /// Applies the batch atomically; durable when this returns Ok.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()>;
    /// Reservations added through the control API.
    fn reservations(&mut self) -> Result<Vec<ApiReservation>>;

    /// The claims the last `apply` lost: a store shared by several nodes
    /// writes a lease only where the address is free, expired past the
    /// MCLT, or already the same client's; elsewhere it keeps the other
    /// node's lease, returned here. Nothing of that lease was written.
    fn take_lost(&mut self) -> Vec<Lease> {
        Vec::new()
    }

    /// What `status` and the metrics show of a shared store (None: an
    /// embedded one, described by its path).
    fn describe(&self) -> Option<serde_json::Value> {
        None
    }

    /// A small integer the daemon keeps beside the leases.
    fn meta(&mut self, key: &str) -> Result<Option<i64>>;
    fn set_meta(&mut self, key: &str, value: i64) -> Result<()>;

    /// Whether the last run ended with `set_clean(true)` (a store that
    /// never ran counts as clean); marks this run as not (yet) clean.
    fn take_clean(&mut self) -> Result<bool> {
        let clean = self.meta("clean")?.is_none_or(|v| v == 1);
        self.set_clean(false)?;
        Ok(clean)
    }

    fn set_clean(&mut self, clean: bool) -> Result<()> {
        self.set_meta("clean", i64::from(clean))
    }
}

pub struct SqliteStore {
    conn: Connection,
}

/// The tables of a lease store (a database made before a table existed
/// gets it at open; `leases` is what makes a file an xdhcp store).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS leases (
        ip INTEGER PRIMARY KEY,
        client BLOB,
        hw BLOB NOT NULL,
        subnet_id INTEGER NOT NULL,
        state INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        lease_secs INTEGER NOT NULL,
        fast BLOB,
        relay BLOB
    );
    CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS reservations (
        subnet_id INTEGER NOT NULL,
        ip INTEGER NOT NULL,
        hw TEXT,
        cid TEXT,
        relay TEXT,
        PRIMARY KEY (subnet_id, ip)
    );";

/// Columns every xdhcp lease table has had.
const LEASE_COLUMNS: [&str; 7] = [
    "ip",
    "client",
    "hw",
    "subnet_id",
    "state",
    "expires",
    "lease_secs",
];

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The names of the result codes a failing disk gives.
fn sqlite_code_name(code: i32) -> Option<&'static str> {
    use rusqlite::ffi;
    Some(match code {
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_IOERR_WRITE => "SQLITE_IOERR_WRITE",
        ffi::SQLITE_IOERR_FSYNC => "SQLITE_IOERR_FSYNC",
        ffi::SQLITE_IOERR_READ => "SQLITE_IOERR_READ",
        ffi::SQLITE_IOERR_SHORT_READ => "SQLITE_IOERR_SHORT_READ",
        ffi::SQLITE_IOERR_TRUNCATE => "SQLITE_IOERR_TRUNCATE",
        ffi::SQLITE_IOERR_SHMSIZE => "SQLITE_IOERR_SHMSIZE",
        ffi::SQLITE_IOERR_SHMMAP => "SQLITE_IOERR_SHMMAP",
        ffi::SQLITE_IOERR_DELETE => "SQLITE_IOERR_DELETE",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_READONLY_DBMOVED => "SQLITE_READONLY_DBMOVED",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_NOTADB => "SQLITE_NOTADB",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        _ => return None,
    })
}

/// Why an existing file is refused as a lease store, in words.
fn refuse(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "lease database {}: {why}; refusing to start rather than serve from an empty or partial store (restore the file from a backup, or move it away to start with no leases)",
        path.display()
    )
}

impl SqliteStore {
    /// Opens the store at `path`. A path where nothing exists gets a new,
    /// empty store (made aside and renamed into place, so a file found
    /// there later is always a whole one). An existing file must be an
    /// xdhcp store that passes SQLite's quick check: anything else (not a
    /// database, damaged, truncated, empty, without a lease table) is
    /// refused, and nothing is written to it.
    pub fn open(path: &Path, sync: DbSync) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let exists = path
            .try_exists()
            .with_context(|| format!("lease database {}", path.display()))?;
        if !exists {
            let wal = sidecar(path, "-wal");
            if wal.exists() {
                return Err(refuse(
                    path,
                    format_args!(
                        "the file is missing but its write-ahead log {} is there",
                        wal.display()
                    ),
                ));
            }
            create(path)?;
            tracing::info!(db = %path.display(), "new lease database created");
        }
        let conn = check_existing(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(anyhow!(
                "{}: cannot switch to WAL (got {mode})",
                path.display()
            ));
        }
        conn.execute_batch(match sync {
            DbSync::Full => "PRAGMA synchronous=FULL;",
            DbSync::Normal => "PRAGMA synchronous=NORMAL;",
        })?;
        conn.execute_batch(SCHEMA)?;
        // Databases from before the fast path lack the column.
        let has_fast: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('leases') WHERE name = 'fast'")?
            .exists([])?;
        if !has_fast {
            conn.execute_batch("ALTER TABLE leases ADD COLUMN fast BLOB;")?;
        }
        // And those from before stashed relay information this one.
        let has_relay: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('leases') WHERE name = 'relay'")?
            .exists([])?;
        if !has_relay {
            conn.execute_batch("ALTER TABLE leases ADD COLUMN relay BLOB;")?;
        }
        let has_relay_id: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('reservations') WHERE name = 'relay'")?
            .exists([])?;
        if !has_relay_id {
            conn.execute_batch("ALTER TABLE reservations ADD COLUMN relay TEXT;")?;
        }
        Ok(SqliteStore { conn })
    }

    /// An error from SQLite with what it reported underneath: the extended
    /// result code and the operating system's error (ENOSPC, EIO, EROFS).
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let code = e
            .downcast_ref::<rusqlite::Error>()
            .and_then(|e| e.sqlite_error())
            .map(|f| f.extended_code);
        // SAFETY: the handle is live for as long as the connection.
        let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(self.conn.handle()) };
        let Some(code) = code else { return e };
        let name = sqlite_code_name(code).map_or(format!("SQLite code {code}"), str::to_string);
        let detail = match errno {
            0 => name,
            n => format!("{name}; {}", std::io::Error::from_raw_os_error(n)),
        };
        anyhow!("{e:#} ({detail})")
    }

    fn apply_inner(&mut self, ops: &[StoreOp]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO leases (ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM leases WHERE ip = ?1")?;
            for op in ops {
                match op {
                    StoreOp::Put(l) | StoreOp::Renewed(l) => {
                        put.execute(params![
                            i64::from(u32::from(l.ip)),
                            l.client.as_deref(),
                            &*l.hw,
                            i64::from(l.subnet_id),
                            l.state.code(),
                            l.expires as i64,
                            i64::from(l.lease_secs),
                            l.fast.as_ref().map(|f| f.encode()),
                            l.relay.as_deref(),
                        ])?;
                    }
                    StoreOp::Delete(ip) => {
                        del.execute(params![i64::from(u32::from(*ip))])?;
                    }
                    StoreOp::Meta(k, v) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                            params![k, v],
                        )?;
                    }
                    StoreOp::PutReservation(r) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO reservations (subnet_id, ip, hw, cid, relay) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![
                                i64::from(r.subnet_id),
                                i64::from(u32::from(r.ip)),
                                r.hw_address,
                                r.client_id,
                                r.relay.as_ref().and_then(|x| serde_json::to_string(x).ok())
                            ],
                        )?;
                    }
                    StoreOp::DeleteReservation { subnet_id, ip } => {
                        tx.execute(
                            "DELETE FROM reservations WHERE subnet_id = ?1 AND ip = ?2",
                            params![i64::from(*subnet_id), i64::from(u32::from(*ip))],
                        )?;
                    }
                }
            }
        }
        tx.commit().context("committing leases")?;
        Ok(())
    }
}

/// Makes an empty store at `path`: written beside it, closed (so the
/// write-ahead log is folded in and removed), synced and renamed into
/// place.
fn create(path: &Path) -> Result<()> {
    let tmp = sidecar(path, ".creating");
    for p in [tmp.clone(), sidecar(&tmp, "-wal"), sidecar(&tmp, "-shm")] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    let make = || -> Result<()> {
        let conn = Connection::open(&tmp)?;
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(SCHEMA)?;
        conn.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    make().with_context(|| format!("creating the lease database {}", path.display()))
}

/// Opens an existing file without creating or writing anything, and
/// checks that it is a whole xdhcp lease store.
fn check_existing(path: &Path) -> Result<Connection> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("opening lease database {}", path.display()))?;
    let len = f.metadata()?.len();
    let wal_len = std::fs::metadata(sidecar(path, "-wal")).map_or(0, |m| m.len());
    if len == 0 && wal_len == 0 {
        return Err(refuse(path, "the file is empty (0 bytes)"));
    }
    if len > 0 {
        let n = f.read(&mut head)?;
        if n < head.len() || &head != b"SQLite format 3\0" {
            return Err(refuse(
                path,
                format_args!("not an SQLite database ({len} bytes, no SQLite header)"),
            ));
        }
    }
    drop(f);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refuse(path, format_args!("cannot be opened: {e}")))?;
    // Reads every page once (no index cross-check): damage and truncation
    // show here, not halfway through loading.
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| refuse(path, format_args!("damaged: {e}")))?;
    if problems != ["ok"] {
        return Err(refuse(
            path,
            format_args!("damaged (SQLite quick_check: {})", problems.join("; ")),
        ));
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('leases')")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| refuse(path, format_args!("cannot be read: {e}")))?;
    if columns.is_empty() {
        return Err(refuse(
            path,
            "an SQLite database without a leases table, not an xdhcp lease store",
        ));
    }
    if let Some(c) = LEASE_COLUMNS
        .iter()
        .find(|c| !columns.iter().any(|n| n == *c))
    {
        return Err(refuse(
            path,
            format_args!("its leases table has no {c} column, not an xdhcp lease store"),
        ));
    }
    Ok(conn)
}

impl LeaseStore for SqliteStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        let mut st = self.conn.prepare(
            "SELECT ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay FROM leases",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
                r.get::<_, Option<Vec<u8>>>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay) = row?;
            let state = LeaseState::from_code(state)
                .ok_or_else(|| anyhow!("lease {ip}: unknown state {state}"))?;
            out.push(Lease {
                ip: Ipv4Addr::from(ip as u32),
                client: client.map(Vec::into_boxed_slice),
                hw: hw.into_boxed_slice(),
                subnet_id: subnet_id as u32,
                state,
                expires: expires as u64,
                lease_secs: lease_secs as u32,
                // An undecodable blob only costs the fast path for this
                // lease until its next ACK.
                fast: fast
                    .and_then(|b| FastReply::decode(&b))
                    .map(std::sync::Arc::new),
                relay: relay.map(Vec::into_boxed_slice),
            });
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        self.apply_inner(ops).map_err(|e| self.explain(e))
    }

    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        let mut st = self.conn.prepare(
            "SELECT subnet_id, ip, hw, cid, relay FROM reservations ORDER BY subnet_id, ip",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ApiReservation {
                subnet_id: r.get::<_, i64>(0)? as u32,
                ip: Ipv4Addr::from(r.get::<_, i64>(1)? as u32),
                hw_address: r.get(2)?,
                client_id: r.get(3)?,
                relay: r
                    .get::<_, Option<String>>(4)?
                    .and_then(|j| serde_json::from_str(&j).ok()),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        match self
            .conn
            .query_row("SELECT v FROM meta WHERE k = ?1", params![key], |r| {
                r.get(0)
            }) {
            Ok(v) => Ok(Some(v)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| self.explain(e.into()))?;
        Ok(())
    }
}

/// For tests: `inner` behind a switch that refuses the next `fail`
/// writes, as a full or failing disk would.
pub struct FlakyStore<S> {
    pub inner: S,
    pub fail: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl<S: LeaseStore> LeaseStore for FlakyStore<S> {
    fn load(&mut self) -> Result<Vec<Lease>> {
        self.inner.load()
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(anyhow!("injected write failure (disk full)"));
        }
        self.inner.apply(ops)
    }
    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        self.inner.reservations()
    }
    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        self.inner.meta(key)
    }
    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        self.inner.set_meta(key, value)
    }
}

/// For tests: remembers everything, durable for as long as it lives.
#[derive(Default)]
pub struct MemoryStore {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub batches: usize,
    pub meta: HashMap<String, i64>,
    pub reservations: Vec<ApiReservation>,
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        Ok(self.leases.values().cloned().collect())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        self.batches += 1;
        for op in ops {
            match op {
                StoreOp::Put(l) | StoreOp::Renewed(l) => {
                    self.leases.insert(l.ip, l.clone());
                }
                StoreOp::Delete(ip) => {
                    self.leases.remove(ip);
                }
                StoreOp::Meta(k, v) => {
                    self.meta.insert(k.to_string(), *v);
                }
                StoreOp::PutReservation(r) => {
                    self.reservations
                        .retain(|o| (o.subnet_id, o.ip) != (r.subnet_id, r.ip));
                    self.reservations.push(r.clone());
                }
                StoreOp::DeleteReservation { subnet_id, ip } => {
                    self.reservations
                        .retain(|o| (o.subnet_id, o.ip) != (*subnet_id, *ip));
                }
            }
        }
        Ok(())
    }

    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        Ok(self.meta.get(key).copied())
    }

    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        Ok(self.reservations.clone())
    }

    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        self.meta.insert(key.to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::client_id_key;

    fn lease(n: u8, state: LeaseState) -> Lease {
        Lease {
            // Stashed relay information: giaddr and option 82.
            relay: (n == 1).then(|| Box::from(&[198, 18, 9, 1, 1, 3, b'c', b'/', b'1'][..])),
            ip: Ipv4Addr::new(198, 18, 0, n),
            client: Some(client_id_key(&[1, n])),
            hw: Box::new([1, 2, 0, 0, 0, 0, n]),
            subnet_id: 7,
            state,
            expires: 1_000 + u64::from(n),
            lease_secs: 3600,
            fast: (n == 1).then(|| {
                std::sync::Arc::new(FastReply {
                    offerable: false,
                    iface: "eth0".into(),
                    outer_vlan: 100,
                    inner_vlan: 4094,
                    giaddr: Ipv4Addr::new(198, 18, 9, 1),
                    prl_len: 4,
                    shape_hash: 0xdead_beef,
                    max_message_size: 1500,
                    client_id_len: 7,
                    relay_info_len: 12,
                    template: vec![53, 1, 5, 54, 4, 198, 18, 0, 1].into(),
                })
            }),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xdhcp-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A real store holding `n` leases, closed.
    fn real_store(path: &Path, n: u8) {
        let mut s = SqliteStore::open(path, DbSync::Full).unwrap();
        let ops: Vec<_> = (1..=n)
            .map(|i| StoreOp::Put(lease(i, LeaseState::Bound)))
            .collect();
        s.apply(&ops).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_whole_lease_store_is_refused_and_left_alone() {
        let dir = scratch("corrupt");
        let good = dir.join("good.db");
        real_store(&good, 200);
        let whole = std::fs::read(&good).unwrap();
        assert!(whole.len() > 8192, "{}", whole.len());
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "garbage",
                b"this is not a lease database\n".repeat(200),
                "not an SQLite database",
            ),
            ("empty", Vec::new(), "empty (0 bytes)"),
            ("header-only", whole[..50].to_vec(), "damaged"),
            ("truncated", whole[..whole.len() / 2].to_vec(), "damaged"),
        ];
        // Page 2 onwards overwritten: the header is fine, the tree is not.
        let mut scribbled = whole.clone();
        for b in &mut scribbled[4096..8192] {
            *b = 0xa5;
        }
        cases.push(("scribbled", scribbled, "damaged"));
        let other = dir.join("other.db");
        {
            let c = Connection::open(&other).unwrap();
            c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x');")
                .unwrap();
        }
        cases.push((
            "other",
            std::fs::read(&other).unwrap(),
            "without a leases table",
        ));
        for (name, bytes, why) in cases {
            let path = dir.join(format!("{name}.db"));
            std::fs::write(&path, &bytes).unwrap();
            let e = match SqliteStore::open(&path, DbSync::Full) {
                Ok(_) => panic!("{name}: opened"),
                Err(e) => format!("{e:#}"),
            };
            assert!(e.contains(&path.display().to_string()), "{name}: {e}");
            assert!(e.contains(why), "{name}: {e}");
            assert!(e.contains("refusing to start"), "{name}: {e}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: file changed");
        }
        // A log without its database is part of a store, not a new one.
        let lone = dir.join("lone.db");
        std::fs::write(dir.join("lone.db-wal"), b"log").unwrap();
        let e = format!(
            "{:#}",
            SqliteStore::open(&lone, DbSync::Full).err().unwrap()
        );
        assert!(e.contains("write-ahead log"), "{e}");
        assert!(!lone.exists());
        // The good one still opens, with its leases.
        assert_eq!(
            SqliteStore::open(&good, DbSync::Full)
                .unwrap()
                .load()
                .unwrap()
                .len(),
            200
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_store_is_made_whole_beside_its_path_and_renamed_in() {
        let dir = scratch("create");
        let path = dir.join("leases.db");
        // What an interrupted creation leaves is not mistaken for a store.
        std::fs::write(sidecar(&path, ".creating"), b"half").unwrap();
        {
            let s = SqliteStore::open(&path, DbSync::Full).unwrap();
            drop(s);
        }
        assert!(!sidecar(&path, ".creating").exists());
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
        assert!(s.load().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sqlite_round_trip_and_reopen() {
        let dir = std::env::temp_dir().join(format!("xdhcp-store-{}", std::process::id()));
        let path = dir.join("leases.db");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
            s.apply(&[
                StoreOp::Put(lease(1, LeaseState::Bound)),
                StoreOp::Put(lease(2, LeaseState::Bound)),
                StoreOp::PutReservation(ApiReservation {
                    subnet_id: 7,
                    ip: Ipv4Addr::new(198, 18, 0, 9),
                    hw_address: None,
                    client_id: None,
                    relay: Some(ApiRelayId {
                        circuit_id: Some("olt1/1/3".into()),
                        giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
                        ..Default::default()
                    }),
                }),
            ])
            .unwrap();
            let mut declined = lease(3, LeaseState::Declined);
            declined.client = None;
            s.apply(&[
                StoreOp::Delete(Ipv4Addr::new(198, 18, 0, 2)),
                StoreOp::Put(declined),
            ])
            .unwrap();
        }
        let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
        assert!(s.take_clean().unwrap(), "a new database counts as clean");
        assert!(!s.take_clean().unwrap(), "a run that did not say clean");
        s.set_clean(true).unwrap();
        let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
        assert!(s.take_clean().unwrap());
        let mut got = s.load().unwrap();
        got.sort_by_key(|l| l.ip);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], lease(1, LeaseState::Bound));
        assert!(got[0].relay.is_some(), "the stash survives a reopen");
        let r = s.reservations().unwrap();
        assert_eq!(
            r[0].relay.as_ref().unwrap().circuit_id.as_deref(),
            Some("olt1/1/3")
        );
        assert_eq!(
            r[0].relay.as_ref().unwrap().giaddr,
            Some(Ipv4Addr::new(198, 18, 9, 1))
        );
        assert_eq!(got[1].state, LeaseState::Declined);
        assert_eq!(got[1].client, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
