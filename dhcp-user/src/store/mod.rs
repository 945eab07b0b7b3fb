//! Durable lease storage behind one narrow interface, so a shared
//! PostgreSQL backend can follow without touching the protocol code.
//!
//! `apply` is the only write: a batch of changes that is atomic and durable
//! when it returns. The caller (serve's committer thread) batches every
//! change that arrived while the previous batch was being written: group
//! commit, one fsync for many ACKs.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{
    config::Config,
    lease::{ClientKey, Lease},
};

pub mod postgres;
mod sqlite;
mod test_stores;

pub use sqlite::SqliteStore;
pub use test_stores::{FlakyStore, MemoryStore};

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
    /// Remove the lease at `ip`; `client` is whose the deleting node
    /// believes it is. A store shared by several nodes removes it only if
    /// it is still that client's, holds nothing, or ended longer than the
    /// MCLT ago (the claim's rule): a node acting on stale memory must not
    /// free an address another node has granted since.
    Delete {
        ip: Ipv4Addr,
        client: Option<ClientKey>,
    },
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
    /// The removal of `l`, as the client it names.
    pub fn delete_of(l: &Lease) -> StoreOp {
        StoreOp::Delete {
            ip: l.ip,
            client: l.client.clone(),
        }
    }

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

    /// A shared store: the other nodes' leases of the last `load`, or of
    /// the claims the last `apply` lost, with the node that wrote each.
    fn take_granted_by(&mut self) -> Vec<(Ipv4Addr, String)> {
        Vec::new()
    }

    /// This node's name in a shared store.
    fn node(&self) -> Option<String> {
        None
    }

    /// A shared store's position in its change feed (read before `load`,
    /// so a follower started from it misses nothing written after).
    fn change_seq(&mut self) -> Result<Option<i64>> {
        Ok(None)
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

/// What the committer reports about the lease store.
#[derive(Debug, Default, Clone)]
pub struct StoreHealth {
    pub batches: u64,
    pub failed_batches: u64,
    /// Write attempts that failed (a failed batch is retried).
    pub failed_writes: u64,
    /// Batches written only after one or more retries.
    pub recovered_batches: u64,
    pub last_error: Option<String>,
    /// Unix seconds of the last successful write.
    pub last_write: u64,
    /// Unix seconds of the first failed attempt of the batch being
    /// retried now (None while writes succeed).
    pub failing_since: Option<u64>,
    /// Replies (ACKs) held back by the batch being retried.
    pub withheld_replies: u64,
    /// Lease changes in the batch being retried (what is queued behind it
    /// joins it, the daemon's own changes one per address at most).
    pub pending_ops: u64,
    /// Bindings a shared store refused: another node's client held the
    /// address (their ACKs were not sent).
    pub lost_claims: u64,
    /// A shared store's own account (`LeaseStore::describe`).
    pub database: Option<serde_json::Value>,
    /// A shared store's follower of the other nodes, read live.
    pub follow: Option<std::sync::Arc<postgres::follow::FollowStats>>,
}
