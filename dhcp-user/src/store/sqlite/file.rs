//! The store's file: its tables, how a new one is made, and the checks
//! an existing one must pass before it is served from.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rusqlite::{Connection, OpenFlags};

/// The tables of a lease store (a database made before a table existed
/// gets it at open; `leases` is what makes a file an xdhcp store).
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS leases (
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

/// Adds the columns a store made by an older xdhcp lacks.
pub(super) fn add_missing_columns(conn: &Connection) -> Result<()> {
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
    Ok(())
}

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

pub(super) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Why an existing file is refused as a lease store, in words.
pub(super) fn refuse(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "lease database {}: {why}; refusing to start rather than serve from an empty or partial store (restore the file from a backup, or move it away to start with no leases)",
        path.display()
    )
}

/// Makes an empty store at `path`: written beside it, closed (so the
/// write-ahead log is folded in and removed), synced and renamed into
/// place.
pub(super) fn create(path: &Path) -> Result<()> {
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
pub(super) fn check_existing(path: &Path) -> Result<Connection> {
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
