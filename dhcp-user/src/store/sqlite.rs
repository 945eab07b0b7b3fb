//! The embedded backend: one SQLite file in WAL mode, `server.lease_db`.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection};

use super::{ApiReservation, LeaseStore, StoreOp};
use crate::{
    config::DbSync,
    lease::{FastReply, Lease, LeaseState},
};

mod file;
#[cfg(test)]
mod tests;

use file::{add_missing_columns, check_existing, create, refuse, sidecar, SCHEMA};

pub struct SqliteStore {
    conn: Connection,
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
        add_missing_columns(&conn)?;
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
                    StoreOp::Delete { ip, .. } => {
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
