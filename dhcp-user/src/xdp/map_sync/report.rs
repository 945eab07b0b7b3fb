//! What a batch did to the lease map, for the control plane: addresses
//! gone and renewals the kernel granted unreported.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
};

use dhcp_common::{LeaseKey, LeaseValue};

use super::{client_key, FastMaps};
use crate::lease::Lease;

/// A renewal the kernel answered that the control plane had not been
/// told of, found in an entry as it was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelGrant {
    pub client: Box<[u8]>,
    pub ip: Ipv4Addr,
    /// Unix seconds, rounded up.
    pub expires: u64,
    /// The same end in Unix nanoseconds, unrounded: whether the kernel
    /// granted it before or after the control plane ended the binding is
    /// decided on this (seconds cannot order a renewal and a RELEASE sent
    /// a moment later).
    pub expires_ns: u64,
    pub lease_secs: u32,
}

/// What a batch did to the lease map, for the control plane.
#[derive(Debug, Default, Clone)]
pub struct MapReport {
    /// The last commit (`Commit::seq`) of the batch.
    pub seq: u64,
    /// Addresses the batch touched that the map holds no entry for now.
    pub gone: Vec<Ipv4Addr>,
    pub grants: Vec<KernelGrant>,
    /// What every entry this batch removed had granted, reported or not:
    /// the committer writes a grant that outlives the batch's end of the
    /// binding in the same write (`commit::keep_kernel_grants`), since a
    /// reported renewal may still wait unread in the ring.
    pub removed: Vec<KernelGrant>,
    /// The grants of `removed` the committer wrote so, each with the lease
    /// as written: the engine takes them into its table as it reads the
    /// report (`Engine::map_report`), so the two agree from this batch on.
    pub kept: Vec<(KernelGrant, Lease)>,
    /// Claims the shared store refused (another node's client holds the
    /// address): the holder's lease, as the store has it.
    pub lost: Vec<Lease>,
    /// The node holding each address of `lost` (by address).
    pub lost_nodes: Vec<(Ipv4Addr, String)>,
    pub(super) touched: HashSet<Ipv4Addr>,
}

impl MapReport {
    pub fn new(seq: u64) -> MapReport {
        MapReport {
            seq,
            ..Default::default()
        }
    }

    pub(super) fn finish(&mut self, in_map: &HashMap<Ipv4Addr, (LeaseKey, Arc<[u8]>)>) {
        self.gone = self
            .touched
            .drain()
            .filter(|ip| !in_map.contains_key(ip))
            .collect();
        self.gone.sort_unstable();
    }

    /// For a batch whose write failed: only what was removed.
    pub fn finish_failed(&mut self, maps: &FastMaps) {
        self.finish(&maps.by_ip);
    }
}

pub(super) fn grant_of(k: &LeaseKey, v: &LeaseValue) -> Option<KernelGrant> {
    Some(KernelGrant {
        client: client_key(k)?,
        ip: Ipv4Addr::from(v.ip.to_ne_bytes()),
        expires: crate::xdp::clock::mono_ns_to_unix_ceil(v.expires_mono_ns),
        expires_ns: crate::xdp::clock::mono_ns_to_unix_ns(v.expires_mono_ns),
        lease_secs: v.lease_secs,
    })
}

/// What `v` granted beyond what the kernel reported, if anything.
pub(super) fn unreported_grant(k: &LeaseKey, v: &LeaseValue) -> Option<KernelGrant> {
    (v.expires_mono_ns > v.reported_mono_ns)
        .then(|| grant_of(k, v))
        .flatten()
}
