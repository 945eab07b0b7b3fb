//! Writing a batch: the lease changes as one statement of arrays, the
//! daemon facts and reservations beside them in one transaction, and the
//! claims another node won read back.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::atomic::Ordering,
};

use anyhow::{Context, Result};
use postgres::{types::ToSql, Client, Row, Statement, Transaction};

use super::{connect::Ctx, read::row_lease, read::SELECT, PgStats};
use crate::{lease::Lease, store::StoreOp};

/// Every lease change of a batch as one statement: deletions and upserts
/// (the batch is reduced to each address's last change, so no address is
/// in both). The upsert is the claim, and the primary key on the address
/// the arbiter between nodes: a row is overwritten only when it is the
/// same client's, holds nothing (offered, released, expired), or ended
/// longer than the MCLT ago by the database's clock. A deletion takes the
/// same rule with the client the deleting node believed held the
/// address, so a node with stale memory cannot free an address another
/// node has granted since. The addresses written or deleted come back;
/// the others are claims lost.
pub(super) const APPLY: &str = "WITH d AS (SELECT * FROM unnest($9::bigint[], $13::bytea[]) AS d(ip, client)),
    gone AS (DELETE FROM xdhcp_leases USING d WHERE xdhcp_leases.ip = d.ip
        AND (xdhcp_leases.client IS NOT DISTINCT FROM d.client
            OR xdhcp_leases.state IN (0, 2, 3)
            OR xdhcp_leases.expires + $11::bigint <= extract(epoch FROM now())::bigint)
        RETURNING xdhcp_leases.ip),
    put AS (INSERT INTO xdhcp_leases (ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay, node)
    SELECT u.*, $10::text FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[],
        $5::smallint[], $6::bigint[], $7::bigint[], $8::bytea[], $12::bytea[]) AS u
    ON CONFLICT (ip) DO UPDATE SET client = EXCLUDED.client, hw = EXCLUDED.hw,
        subnet_id = EXCLUDED.subnet_id, state = EXCLUDED.state, expires = EXCLUDED.expires,
        lease_secs = EXCLUDED.lease_secs, fast = EXCLUDED.fast, relay = EXCLUDED.relay,
        node = EXCLUDED.node, updated = now()
    WHERE xdhcp_leases.client IS NOT DISTINCT FROM EXCLUDED.client
        OR xdhcp_leases.state IN (0, 2, 3)
        OR xdhcp_leases.expires + $11::bigint <= extract(epoch FROM now())::bigint
    RETURNING ip)
    SELECT ip FROM gone UNION ALL SELECT ip FROM put";

pub(super) const PUT_META: &str = "INSERT INTO xdhcp_meta (node, k, v) VALUES ($1, $2, $3)
                         ON CONFLICT (node, k) DO UPDATE SET v = EXCLUDED.v";

/// The thirteen parameters of `APPLY`, in its numbering.
type ApplyParams<'a> = [&'a (dyn ToSql + Sync); 13];

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
    /// Whose each deleted address was, as the deleting node believed.
    deleted_client: Vec<Option<Vec<u8>>>,
}

impl Columns {
    /// Lease rows the batch writes or deletes.
    fn rows(&self) -> u64 {
        (self.ip.len() + self.deleted.len()) as u64
    }

    fn params<'a>(&'a self, ctx: &'a Ctx) -> ApplyParams<'a> {
        [
            &self.ip,
            &self.client,
            &self.hw,
            &self.subnet,
            &self.state,
            &self.expires,
            &self.secs,
            &self.fast,
            &self.deleted,
            &ctx.node,
            &ctx.mclt,
            &self.relay,
            &self.deleted_client,
        ]
    }

    fn push(&mut self, l: &Lease) {
        self.ip.push(i64::from(u32::from(l.ip)));
        self.client.push(l.client.as_deref().map(<[u8]>::to_vec));
        self.hw.push(l.hw.to_vec());
        self.subnet.push(i64::from(l.subnet_id));
        self.state.push(l.state.code() as i16);
        self.expires.push(l.expires as i64);
        self.secs.push(i64::from(l.lease_secs));
        self.fast.push(l.fast.as_ref().map(|f| f.encode()));
        self.relay.push(l.relay.as_deref().map(<[u8]>::to_vec));
    }
}

fn columns(ops: &[StoreOp]) -> Columns {
    // Each address's last change is what the batch leaves, in order.
    let mut last: HashMap<Ipv4Addr, &StoreOp> = HashMap::new();
    let mut order = Vec::new();
    for op in ops {
        let ip = match op {
            StoreOp::Put(l) | StoreOp::Renewed(l) => l.ip,
            StoreOp::Delete { ip, .. } => *ip,
            _ => continue,
        };
        if last.insert(ip, op).is_none() {
            order.push(ip);
        }
    }
    let mut c = Columns::default();
    for ip in order {
        match last[&ip] {
            StoreOp::Delete { client, .. } => {
                c.deleted.push(i64::from(u32::from(ip)));
                c.deleted_client.push(client.as_deref().map(<[u8]>::to_vec));
            }
            op => c.push(op.lease().expect("a lease change")),
        }
    }
    c
}

/// Writes the batch; returns the leases of the claims it lost (and their
/// rows, which name the node that holds each).
pub(super) fn apply(
    client: &mut Client,
    st: &Statement,
    ctx: &Ctx,
    ops: &[StoreOp],
    stats: &PgStats,
) -> Result<(Vec<Lease>, Vec<Row>)> {
    let c = columns(ops);
    let rows = c.rows();
    let params = c.params(ctx);
    let rest: Vec<&StoreOp> = ops
        .iter()
        .filter(|o| o.lease().is_none() && !matches!(o, StoreOp::Delete { .. }))
        .collect();
    let written = if rest.is_empty() {
        write_leases(client, st, &params, rows, stats)?
    } else {
        write_in_transaction(client, st, &params, rows, &rest, &ctx.node, stats)?
    };
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.rows.fetch_add(rows, Ordering::Relaxed);
    let changed: Vec<i64> = c.ip.iter().chain(&c.deleted).copied().collect();
    lost_claims(client, &changed, &written, stats)
}

/// A batch of lease changes only: one statement, atomic on its own.
fn write_leases(
    client: &mut Client,
    st: &Statement,
    params: &ApplyParams,
    rows: u64,
    stats: &PgStats,
) -> Result<Vec<Row>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let written = client.query(st, params)?;
    stats.round_trips.fetch_add(1, Ordering::Relaxed);
    Ok(written)
}

/// A batch with daemon facts or reservations: the lease statement and one
/// statement each, in a transaction (begin and commit are a round trip
/// each).
fn write_in_transaction(
    client: &mut Client,
    st: &Statement,
    params: &ApplyParams,
    rows: u64,
    rest: &[&StoreOp],
    node: &str,
    stats: &PgStats,
) -> Result<Vec<Row>> {
    let mut tx = client.transaction()?;
    let mut written = Vec::new();
    if rows > 0 {
        written = tx.query(st, params)?;
    }
    let mut trips = 2 + u64::from(rows > 0);
    for op in rest {
        trips += 1;
        write_other(&mut tx, node, op)?;
    }
    tx.commit().context("committing leases")?;
    stats.round_trips.fetch_add(trips, Ordering::Relaxed);
    Ok(written)
}

/// One change that is not a lease's.
fn write_other(tx: &mut Transaction, node: &str, op: &StoreOp) -> Result<()> {
    match op {
        StoreOp::Meta(k, v) => {
            tx.execute(PUT_META, &[&node, k, v])?;
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
        StoreOp::Put(_) | StoreOp::Renewed(_) | StoreOp::Delete { .. } => {}
    }
    Ok(())
}

/// The leases, as the database holds them, at the addresses the batch
/// upserted or deleted but `APPLY` did not return: claims another node's
/// client won. A deletion of a row that is not there any more loses
/// nothing and teaches nothing.
fn lost_claims(
    client: &mut Client,
    changed: &[i64],
    written: &[Row],
    stats: &PgStats,
) -> Result<(Vec<Lease>, Vec<Row>)> {
    if written.len() == changed.len() {
        return Ok((Vec::new(), Vec::new()));
    }
    let won: HashSet<i64> = written.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> = changed
        .iter()
        .copied()
        .filter(|ip| !won.contains(ip))
        .collect();
    stats.round_trips.fetch_add(1, Ordering::Relaxed);
    let rows = client.query(&format!("{SELECT} WHERE ip = ANY($1)"), &[&lost])?;
    let held: Vec<Lease> = rows.iter().map(row_lease).collect::<Result<_>>()?;
    stats
        .lost_claims
        .fetch_add(held.len() as u64, Ordering::Relaxed);
    Ok((held, rows))
}
