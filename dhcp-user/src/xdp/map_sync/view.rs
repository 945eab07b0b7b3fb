//! The map as a whole: its rule for other threads, reading, emptying,
//! and what tests and status look at.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Context, Result};
use aya::maps::MapData;
use dhcp_common::{LeaseKey, LeaseValue, TEMPLATE_SLOTS};

use super::{report::grant_of, Eligibility, FastMaps, KernelGrant, LeaseReader};
use crate::lease::Lease;

impl FastMaps {
    /// Whether the sync writes an entry for `l` (the auditor's rule for a
    /// missing one).
    pub fn would_map(&self, l: &Lease) -> bool {
        self.entry_for(l).is_some()
    }

    /// The sync's rule, for readers on other threads (the auditor).
    pub fn eligibility(&self) -> Eligibility {
        Eligibility {
            ifindex: self.ifindex.clone(),
            refused: self.refused.clone(),
        }
    }

    /// A second handle on the lease map, for reading it from another
    /// thread (the auditor, the control API's kernel view): a dup of the
    /// map's fd. It never writes; the map is written only here.
    pub fn reader(&self) -> Result<LeaseReader> {
        use aya::maps::IterableMap;
        let fd = self
            .leases
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the lease map's fd")?;
        LeaseReader::from_map_data(MapData::from_fd(fd)?)
    }

    /// Empties the lease map (an adopted one, before it is rebuilt);
    /// returns what every entry granted, for the store.
    pub fn clear(&mut self) -> Result<Vec<KernelGrant>> {
        let entries = self.entries();
        for (k, _) in &entries {
            let _ = self.leases.remove(k);
        }
        self.by_ip.clear();
        self.by_key.clear();
        self.refused.lock().unwrap().clear();
        self.slots.clear();
        self.free = (0..TEMPLATE_SLOTS).collect();
        Ok(entries.iter().filter_map(|(k, v)| grant_of(k, v)).collect())
    }

    /// What the kernel granted beyond what it reported, over the whole map
    /// (a clean stop stores it, so the store is exact without recovery).
    pub fn unreported(&self) -> Vec<KernelGrant> {
        self.entries()
            .iter()
            .filter(|(_, v)| v.expires_mono_ns > v.reported_mono_ns)
            .filter_map(|(k, v)| grant_of(k, v))
            .collect()
    }

    /// Every entry the kernel holds, read from the map itself.
    pub fn entries(&self) -> Vec<(LeaseKey, LeaseValue)> {
        self.leases.iter().filter_map(|r| r.ok()).collect()
    }

    /// Tests: the kernel's clock moves `secs` forward, as the model test's
    /// wall clock does (`crate::xdp::clock::advance_for_tests`).
    pub fn shift_clock_for_tests(&mut self, secs: u64) {
        let d = secs * 1_000_000_000;
        for (k, mut v) in self.entries() {
            v.expires_mono_ns = v.expires_mono_ns.saturating_sub(d);
            v.reported_mono_ns = v.reported_mono_ns.saturating_sub(d);
            if v.cap_mono_ns != dhcp_common::NO_CAP {
                v.cap_mono_ns = v.cap_mono_ns.saturating_sub(d);
            }
            let _ = self.leases.insert(k, v, 0);
        }
    }

    /// Tests and the auditor's repair: writes or removes an entry behind
    /// the sync's back.
    pub fn raw_insert(&mut self, key: LeaseKey, value: LeaseValue) -> Result<()> {
        self.leases.insert(key, value, 0)?;
        Ok(())
    }

    pub fn raw_remove(&mut self, key: &LeaseKey) -> Result<()> {
        self.leases.remove(key)?;
        Ok(())
    }

    /// The kernel's current entry for `key` (tests, status).
    pub fn get(&self, key: &LeaseKey) -> Option<LeaseValue> {
        self.leases.get(key, 0).ok()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether we wrote an entry for `ip` (and have not removed it).
    pub fn holds_ip(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    /// Kernel memory charged for the lease map (`memlock` in its fdinfo).
    pub fn lease_map_bytes(&self) -> Option<u64> {
        use aya::maps::IterableMap;
        let fd = self.leases.map().fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}
