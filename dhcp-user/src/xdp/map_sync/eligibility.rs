//! Which leases the map answers for.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use dhcp_common::{LeaseKey, TEMPLATE_OPTIONS_MAX};

use super::lease_key;
use crate::lease::{FastReply, Lease, LeaseState};

/// The sync's eligibility rule: the key, fast-path data and interface
/// index of the entry it writes for `l`, if it writes one.
pub(super) fn eligible<'l>(
    l: &'l Lease,
    ifindex: &HashMap<String, u32>,
) -> Option<(LeaseKey, &'l FastReply, Option<u32>)> {
    if l.state != LeaseState::Bound {
        return None;
    }
    let f = l.fast.as_deref()?;
    let key = lease_key(l.client.as_deref()?)?;
    if f.template.len() > TEMPLATE_OPTIONS_MAX || f.template.is_empty() {
        return None;
    }
    let ifindex = ifindex.get(&*f.iface).copied();
    // Directly connected clients only on fast-path interfaces.
    if f.giaddr.is_unspecified() && ifindex.is_none() {
        return None;
    }
    Some((key, f, ifindex))
}

/// `FastMaps::would_map` for other threads, and which bindings the map
/// refused (full, no template slot): those are the control plane's by
/// design, not missing.
#[derive(Clone, Default)]
pub struct Eligibility {
    pub(super) ifindex: Arc<HashMap<String, u32>>,
    pub(super) refused: Arc<Mutex<HashSet<Ipv4Addr>>>,
}

impl Eligibility {
    /// The rule for a sync whose fast-path interfaces are `ifaces`
    /// (name, ifindex); tests.
    pub fn new(ifaces: impl IntoIterator<Item = (String, u32)>) -> Eligibility {
        Eligibility {
            ifindex: Arc::new(ifaces.into_iter().collect()),
            refused: Arc::default(),
        }
    }

    pub fn would_map(&self, l: &Lease) -> bool {
        eligible(l, &self.ifindex).is_some()
    }

    pub fn refused(&self, ip: Ipv4Addr) -> bool {
        self.refused.lock().unwrap().contains(&ip)
    }
}
