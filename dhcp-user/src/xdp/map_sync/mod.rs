//! Keeps the XDP program's maps in step with the lease store.
//!
//! The lease map follows the store's own changes (`StoreOp`s), in the
//! committer thread, around each commit: entries that must go are removed
//! *before* the batch is written, entries that may answer are written only
//! *after* it is durable. So the kernel never answers for a binding the
//! store does not hold, and never answers from one it is about to lose.
//!
//! An entry leaves the map only through `before_commit`, which reads it
//! first: what the kernel granted there that the control plane has not
//! heard of (renewals it did not report, `expires > reported`) comes back
//! in the batch's [`MapReport`], with every address the map no longer
//! answers for, so the control plane can honour the one and release the
//! other. Clocks: see `crate::xdp::clock`.

mod cap;
mod eligibility;
mod keys;
mod reader;
mod repair;
mod report;
mod templates;
#[cfg(test)]
mod tests;
mod view;
mod write;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use dhcp_common::{
    IfaceInfo, LeaseKey, LeaseValue, ReplyTemplate, IFACE_SLOTS, MAP_IFACES, MAP_LEASES,
    MAP_TEMPLATES, TEMPLATE_SLOTS,
};

use crate::xdp::loader::Fastpath;

pub use eligibility::Eligibility;
pub use keys::{client_key, is_client_key, key_text, lease_key};
pub use reader::{LeaseReader, ReadCursor, READ_CHUNK};
pub use report::{KernelGrant, MapReport};
use templates::Slot;

pub use crate::xdp::clock::{mono_ns_now, mono_ns_to_unix, unix_to_mono_ns};

/// An interface the fast path answers on.
#[derive(Debug, Clone)]
pub struct FastIface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub entries: u64,
    pub templates: u64,
    pub upserts: u64,
    pub removals: u64,
    /// Bindings left to the control plane: map full, or no template slot.
    pub map_full: u64,
    pub no_template_slot: u64,
    /// Stray entries removed by the auditor's repairs.
    pub repairs: u64,
    /// Entries whose MCLT cap moved after a batch stored their kernel
    /// renewals.
    pub caps_raised: u64,
}

/// The lease, template and interface maps, and what we wrote into them.
pub struct FastMaps {
    leases: BpfHashMap<MapData, LeaseKey, LeaseValue>,
    templates: Array<MapData, ReplyTemplate>,
    slots: HashMap<Arc<[u8]>, Slot>,
    /// Freed template slots, oldest first: a slot is reused as late as
    /// possible, so an XDP program that looked a binding up just before
    /// its removal still reads the template it was written with.
    free: VecDeque<u32>,
    /// address -> (key, template) of every entry we wrote.
    by_ip: HashMap<Ipv4Addr, (LeaseKey, Arc<[u8]>)>,
    by_key: HashMap<LeaseKey, Ipv4Addr>,
    ifindex: Arc<HashMap<String, u32>>,
    /// Addresses whose binding the map refused (full, or no template
    /// slot) and that no later change has written or ended since.
    refused: Arc<Mutex<HashSet<Ipv4Addr>>>,
    pub stats: SyncStats,
    warned_full: bool,
    /// `database.mclt_secs` with a shared store; `None`: no cap.
    mclt_secs: Option<u32>,
}

impl FastMaps {
    /// Takes the maps out of the loaded program and registers the
    /// interfaces the fast path answers on.
    pub fn new(
        fastpath: &mut Fastpath,
        ifaces: &[FastIface],
        server_ip: Ipv4Addr,
    ) -> Result<FastMaps> {
        let leases = BpfHashMap::try_from(fastpath.take_map(MAP_LEASES)?)?;
        let templates = Array::try_from(fastpath.take_map(MAP_TEMPLATES)?)?;
        let mut iface_map: Array<MapData, IfaceInfo> =
            Array::try_from(fastpath.take_map(MAP_IFACES)?)?;
        for i in ifaces {
            if i.ifindex >= IFACE_SLOTS {
                tracing::warn!(
                    interface = %i.name,
                    ifindex = i.ifindex,
                    "interface index too high for the fast path (limit {IFACE_SLOTS}); the control plane answers there"
                );
                continue;
            }
            let info = IfaceInfo {
                mac: i.mac,
                _pad: [0; 2],
                server_ip: u32::from_ne_bytes(server_ip.octets()),
            };
            iface_map
                .set(i.ifindex, info, 0)
                .with_context(|| format!("registering {} with the fast path", i.name))?;
        }
        Ok(FastMaps {
            leases,
            templates,
            slots: HashMap::new(),
            free: (0..TEMPLATE_SLOTS).collect(),
            by_ip: HashMap::new(),
            by_key: HashMap::new(),
            ifindex: Arc::new(ifaces.iter().map(|i| (i.name.clone(), i.ifindex)).collect()),
            refused: Arc::default(),
            stats: SyncStats::default(),
            warned_full: false,
            mclt_secs: None,
        })
    }
}
