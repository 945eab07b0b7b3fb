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
pub(super) const SELECT: &str =
    "SELECT ip, client, hw, subnet_id, state, expires, lease_secs, fast, relay FROM xdhcp_leases";

/// Every reservation column, in the order `row_reservation` reads them.
pub(super) const SELECT_RESERVATIONS: &str =
    "SELECT subnet_id, ip, hw, cid, relay FROM xdhcp_reservations ORDER BY subnet_id, ip";

pub(super) fn row_lease(r: &Row) -> Result<Lease> {
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
