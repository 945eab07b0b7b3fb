//! The PostgreSQL store's schema, by version, and the `xdhcp db`
//! commands that make and upgrade it.
//!
//! A daemon never changes the schema itself: several nodes share one
//! database, and an upgrade made by whichever node restarted first would
//! change it under the others. `db init` makes it, `db upgrade` applies
//! the missing steps, each run in one transaction under an advisory lock
//! (two operators, or two nodes' deploy scripts, at once are serialised);
//! a daemon refuses a schema older or newer than its own.

use anyhow::{anyhow, bail, Context, Result};
use postgres::Client;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: i32 = 3;

/// Any value: all that matters is that every xdhcp agrees on it.
const MIGRATION_LOCK: i64 = 0x7864_6863_7000_0001;

/// Step `n` takes a schema at version `n - 1` to version `n`.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE xdhcp_schema (version integer NOT NULL);
         INSERT INTO xdhcp_schema VALUES (0);
         CREATE TABLE xdhcp_leases (
             ip bigint PRIMARY KEY,
             client bytea,
             hw bytea NOT NULL,
             subnet_id bigint NOT NULL,
             state smallint NOT NULL,
             expires bigint NOT NULL,
             lease_secs bigint NOT NULL,
             fast bytea,
             node text NOT NULL,
             updated timestamptz NOT NULL DEFAULT now()
         );
         -- Daemon facts (the clean-stop flag, the reply fingerprint) are
         -- each node's own.
         CREATE TABLE xdhcp_meta (
             node text NOT NULL,
             k text NOT NULL,
             v bigint NOT NULL,
             PRIMARY KEY (node, k)
         );
         CREATE TABLE xdhcp_reservations (
             subnet_id bigint NOT NULL,
             ip bigint NOT NULL,
             hw text,
             cid text,
             PRIMARY KEY (subnet_id, ip)
         );",
    ),
    (
        // The change feed the nodes follow each other by: every write of
        // a lease, deletions included, gets a number from one sequence, and
        // each statement announces the highest on the channel
        // `xdhcp_changes` (delivered at commit, so a listener never sees a
        // number before its row). A follower that sees a number more than
        // one past the last it read has missed something and re-reads.
        2,
        "CREATE SEQUENCE xdhcp_change_seq;
         CREATE TABLE xdhcp_changes (
             seq bigint PRIMARY KEY,
             ip bigint NOT NULL,
             node text NOT NULL,
             deleted boolean NOT NULL
         );
         CREATE FUNCTION xdhcp_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF TG_OP = 'DELETE' THEN
                 INSERT INTO xdhcp_changes VALUES (nextval('xdhcp_change_seq'), OLD.ip, OLD.node, true);
                 RETURN OLD;
             END IF;
             INSERT INTO xdhcp_changes VALUES (nextval('xdhcp_change_seq'), NEW.ip, NEW.node, false);
             RETURN NEW;
         END $$;
         CREATE TRIGGER xdhcp_leases_log AFTER INSERT OR UPDATE OR DELETE ON xdhcp_leases
             FOR EACH ROW EXECUTE FUNCTION xdhcp_log_change();
         CREATE FUNCTION xdhcp_announce() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_notify('xdhcp_changes', currval('xdhcp_change_seq')::text);
             RETURN NULL;
         EXCEPTION WHEN object_not_in_prerequisite_state THEN
             -- A session's first statement changed no row: no number
             -- drawn yet (a later such statement repeats the last
             -- number, which a follower has and ignores).
             RETURN NULL;
         END $$;
         CREATE TRIGGER xdhcp_leases_announce AFTER INSERT OR UPDATE OR DELETE ON xdhcp_leases
             FOR EACH STATEMENT EXECUTE FUNCTION xdhcp_announce();",
    ),
    (
        // Stashed relay information (giaddr and option 82 of the last
        // relayed exchange, `crate::dhcp::subscriber`) with the lease, and
        // reservations by relay identity (JSON, as in SQLite).
        3,
        "ALTER TABLE xdhcp_leases ADD COLUMN relay bytea;
         ALTER TABLE xdhcp_reservations ADD COLUMN relay text;",
    ),
];

/// The version of the schema in the database (None: no xdhcp schema).
pub fn version(client: &mut Client) -> Result<Option<i32>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('xdhcp_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM xdhcp_schema", &[])?
        .ok_or_else(|| anyhow!("xdhcp_schema has no row: not an xdhcp database"))?;
    Ok(Some(row.get(0)))
}

/// Why a daemon cannot use the schema it found, with what to run.
pub fn check(found: Option<i32>) -> Result<()> {
    match found {
        None => bail!("the database has no xdhcp schema: run `xdhcp db init` first"),
        Some(v) if v < SCHEMA_VERSION => bail!(
            "the database's xdhcp schema is version {v}, this xdhcp needs {SCHEMA_VERSION}: run `xdhcp db upgrade` (after every node runs an xdhcp that reads version {SCHEMA_VERSION})"
        ),
        Some(v) if v > SCHEMA_VERSION => bail!(
            "the database's xdhcp schema is version {v}, newer than this xdhcp's {SCHEMA_VERSION}: run a newer xdhcp"
        ),
        Some(_) => Ok(()),
    }
}

/// What `migrate` did: the version found and the version left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: Option<i32>,
    pub to: i32,
}

/// `db init` (`fresh`: refuses a database that has a schema) or
/// `db upgrade` (refuses one that has none), up to `target`.
pub fn migrate(client: &mut Client, fresh: bool, target: i32) -> Result<Migrated> {
    if !(1..=SCHEMA_VERSION).contains(&target) {
        bail!("no schema version {target} (this xdhcp knows 1 to {SCHEMA_VERSION})");
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('xdhcp_schema') IS NOT NULL", &[])?
        .get(0);
    let from = if exists {
        Some(
            tx.query_one("SELECT version FROM xdhcp_schema", &[])?
                .get::<_, i32>(0),
        )
    } else {
        None
    };
    match (fresh, from) {
        (true, Some(v)) => bail!(
            "the database already has an xdhcp schema (version {v}): nothing initialised (`xdhcp db upgrade` brings it to {SCHEMA_VERSION})"
        ),
        (false, None) => bail!("the database has no xdhcp schema: run `xdhcp db init`"),
        (false, Some(v)) if v > target => {
            bail!("the database's schema is version {v}, newer than {target}: not downgraded")
        }
        _ => {}
    }
    let start = from.unwrap_or(0);
    for (n, sql) in MIGRATIONS
        .iter()
        .filter(|(n, _)| *n > start && *n <= target)
    {
        tx.batch_execute(sql)
            .with_context(|| format!("schema step {n}"))?;
        tx.execute("UPDATE xdhcp_schema SET version = $1", &[n])?;
    }
    tx.commit().context("committing the schema")?;
    Ok(Migrated { from, to: target })
}

/// `xdhcp db init|upgrade|status`: the database named by `[database]` of
/// the configuration file (or, without one, by `$XDHCP_DATABASE_URL`).
pub fn command(cmd: &str, config: Option<&std::path::Path>) -> Result<String> {
    let db = match config {
        Some(path) => crate::config::Config::from_file(path)
            .map_err(|e| anyhow!("{e}"))?
            .database
            .ok_or_else(|| anyhow!("{}: no [database] table", path.display()))?,
        None => super::DatabaseConfig::default(),
    };
    let mut client = db.connect()?;
    let said = |m: Migrated| match m.from {
        None => format!("xdhcp schema made, version {}", m.to),
        Some(v) if v == m.to => format!("xdhcp schema already at version {v}: nothing to do"),
        Some(v) => format!("xdhcp schema upgraded from version {v} to {}", m.to),
    };
    Ok(match cmd {
        "init" => said(migrate(&mut client, true, SCHEMA_VERSION)?),
        "upgrade" => said(migrate(&mut client, false, SCHEMA_VERSION)?),
        _ => match version(&mut client)? {
            None => "no xdhcp schema (run `xdhcp db init`)".into(),
            Some(v) => {
                let leases: i64 = client
                    .query_one("SELECT count(*) FROM xdhcp_leases", &[])?
                    .get(0);
                format!("xdhcp schema version {v} (this xdhcp: {SCHEMA_VERSION}); {leases} leases")
            }
        },
    })
}
