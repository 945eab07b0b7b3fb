//! The in-memory lease table: authoritative for every decision, indexed by
//! address and by (subnet, client), with a free list per pool.
//!
//! Memory: a bound lease costs one `by_ip` entry (key 4 B + `Lease` 64 B,
//! plus its boxed client and hardware keys, ~2×24 B with allocator
//! overhead) and one `by_client` entry (~40 B), about 200 B with hash-table
//! slack: ~200 MB for 1,000,000 leases. A never-used pool address costs 4 B
//! in its pool's free list.

mod foreign;
mod holds;
mod pool;
mod table;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, net::Ipv4Addr, sync::Arc};

use crate::lease::{ClientKey, Lease, LeaseState};
pub use holds::{EndKind, KernelHold};
use pool::Pool;

/// The table: the leases by address, the index by (subnet, client), the
/// pools' free lists and the kernel's holds (methods by concern in
/// `table`, `pool` and `holds`).
#[derive(Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<(u32, ClientKey), Ipv4Addr>,
    pools: HashMap<u32, Vec<Pool>>,
    holds: HashMap<Ipv4Addr, KernelHold>,
    /// Leases another node of a shared store wrote, by address, with
    /// that node's name (`foreign`).
    foreign: HashMap<Ipv4Addr, Arc<str>>,
    /// This node's name in a shared store, and the store's MCLT: another
    /// node's binding is held that long past its end.
    own_node: Option<Arc<str>>,
    mclt_secs: u64,
    /// The other nodes alive now (fresh heartbeat): a binding of theirs
    /// is theirs to answer.
    alive_peers: std::collections::HashSet<Arc<str>>,
}
