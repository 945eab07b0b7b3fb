//! Durable lease storage behind one narrow interface, so a shared
//! PostgreSQL backend can follow without touching the protocol code.
//!
//! `apply` is the only write: a batch of changes that is atomic and durable
//! when it returns. The caller (serve's committer thread) batches every
//! change that arrived while the previous batch was being written: group
//! commit, one fsync for many ACKs.

use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection};

use crate::{
    config::DbSync,
    leases::{Lease, LeaseState},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace the lease at its address.
    Put(Lease),
    Delete(Ipv4Addr),
}

pub trait LeaseStore: Send {
    /// Every stored lease (all states).
    fn load(&mut self) -> Result<Vec<Lease>>;
    /// Applies the batch atomically; durable when this returns Ok.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()>;
}

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path, sync: DbSync) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening lease database {}", path.display()))?;
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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS leases (
                ip INTEGER PRIMARY KEY,
                client BLOB,
                hw BLOB NOT NULL,
                subnet_id INTEGER NOT NULL,
                state INTEGER NOT NULL,
                expires INTEGER NOT NULL,
                lease_secs INTEGER NOT NULL
            );",
        )?;
        Ok(SqliteStore { conn })
    }
}

impl LeaseStore for SqliteStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        let mut st = self
            .conn
            .prepare("SELECT ip, client, hw, subnet_id, state, expires, lease_secs FROM leases")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ip, client, hw, subnet_id, state, expires, lease_secs) = row?;
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
            });
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO leases (ip, client, hw, subnet_id, state, expires, lease_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM leases WHERE ip = ?1")?;
            for op in ops {
                match op {
                    StoreOp::Put(l) => {
                        put.execute(params![
                            i64::from(u32::from(l.ip)),
                            l.client.as_deref(),
                            &*l.hw,
                            i64::from(l.subnet_id),
                            l.state.code(),
                            l.expires as i64,
                            i64::from(l.lease_secs),
                        ])?;
                    }
                    StoreOp::Delete(ip) => {
                        del.execute(params![i64::from(u32::from(*ip))])?;
                    }
                }
            }
        }
        tx.commit().context("committing leases")?;
        Ok(())
    }
}

/// For tests: remembers everything, durable for as long as it lives.
#[derive(Default)]
pub struct MemoryStore {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub batches: usize,
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        Ok(self.leases.values().cloned().collect())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        self.batches += 1;
        for op in ops {
            match op {
                StoreOp::Put(l) => {
                    self.leases.insert(l.ip, l.clone());
                }
                StoreOp::Delete(ip) => {
                    self.leases.remove(ip);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::client_id_key;

    fn lease(n: u8, state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::new(198, 18, 0, n),
            client: Some(client_id_key(&[1, n])),
            hw: Box::new([1, 2, 0, 0, 0, 0, n]),
            subnet_id: 7,
            state,
            expires: 1_000 + u64::from(n),
            lease_secs: 3600,
        }
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
        let mut got = s.load().unwrap();
        got.sort_by_key(|l| l.ip);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], lease(1, LeaseState::Bound));
        assert_eq!(got[1].state, LeaseState::Declined);
        assert_eq!(got[1].client, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
