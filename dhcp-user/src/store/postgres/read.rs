//! Reading rows back: leases at start-up and after a lost claim, and
//! reservations.

use std::{net::Ipv4Addr, sync::Arc};

use anyhow::{anyhow, Result};
use postgres::Row;

use crate::{
    lease::{FastReply, Lease, LeaseState},
    store::ApiReservation,
};

/// Every lease column, in the order `row_lease` reads them.
pub(super) const LEASE_COLUMNS: &str =
    "ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay";
pub(super) const SELECT: &str =
    "SELECT ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay, node FROM xdhcp_leases";

/// Every reservation column, in the order `row_reservation` reads them.
pub(super) const SELECT_RESERVATIONS: &str =
    "SELECT subnet_id, ip, hw, cid, relay FROM xdhcp_reservations ORDER BY subnet_id, ip";

pub(super) fn row_lease(r: &Row) -> Result<Lease> {
    row_lease_at(r, 0)
}

/// The lease in `LEASE_COLUMNS` order from column `at` on.
pub(super) fn row_lease_at(r: &Row, at: usize) -> Result<Lease> {
    let ip: i64 = r.get(at);
    let state: i16 = r.get(at + 4);
    Ok(Lease {
        ip: Ipv4Addr::from(ip as u32),
        client: r
            .get::<_, Option<Vec<u8>>>(at + 1)
            .map(Vec::into_boxed_slice),
        hw: r.get::<_, Vec<u8>>(at + 2).into_boxed_slice(),
        subnet_id: r.get::<_, i64>(at + 3) as u32,
        state: LeaseState::from_code(i64::from(state))
            .ok_or_else(|| anyhow!("lease {ip}: unknown state {state}"))?,
        expires: r.get::<_, i64>(at + 5) as u64,
        lease_secs: r.get::<_, i64>(at + 6) as u32,
        // As in SQLite: an undecodable blob costs only the fast path for
        // this lease until its next ACK.
        fast: r
            .get::<_, Option<Vec<u8>>>(at + 7)
            .and_then(|b| FastReply::decode(&b))
            .map(Arc::new),
        relay: r
            .get::<_, Option<Vec<u8>>>(at + 8)
            .map(Vec::into_boxed_slice),
    })
}

/// The node that wrote a row read with `SELECT`.
pub(super) fn row_node(r: &Row) -> String {
    r.get(9)
}

pub(super) fn row_reservation(r: &Row) -> ApiReservation {
    ApiReservation {
        subnet_id: r.get::<_, i64>(0) as u32,
        ip: Ipv4Addr::from(r.get::<_, i64>(1) as u32),
        hw_address: r.get(2),
        client_id: r.get(3),
        relay: r
            .get::<_, Option<String>>(4)
            .and_then(|j| serde_json::from_str(&j).ok()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn select_reads_the_lease_columns_then_the_node() {
        assert_eq!(
            super::SELECT,
            format!("SELECT {}, node FROM xdhcp_leases", super::LEASE_COLUMNS)
        );
    }
}
