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
//! other. Clocks: see `crate::clock`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::Ipv4Addr,
    sync::Arc,
};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use dhcp_common::{
    id_kind, lease_flags, IfaceInfo, LeaseKey, LeaseValue, ReplyTemplate, IFACE_SLOTS, MAP_IFACES,
    MAP_LEASES, MAP_TEMPLATES, MAX_ID_LEN, TEMPLATE_OPTIONS_MAX, TEMPLATE_SLOTS,
};

use crate::{
    fastpath::Fastpath,
    leases::{Lease, LeaseState, KIND_CLIENT_ID, KIND_HW},
    store::StoreOp,
};

pub use crate::clock::{mono_ns_now, mono_ns_to_unix, unix_to_mono_ns};

/// The lease-map key of a control-plane client key, if it fits.
pub fn lease_key(client: &[u8]) -> Option<LeaseKey> {
    let (&kind, id) = client.split_first()?;
    if id.len() > MAX_ID_LEN {
        return None;
    }
    let mut k = LeaseKey::zeroed();
    k.kind = match kind {
        KIND_HW => id_kind::HWADDR,
        KIND_CLIENT_ID => id_kind::CLIENT_ID,
        _ => return None,
    };
    k.len = id.len() as u8;
    k.id[..id.len()].copy_from_slice(id);
    Some(k)
}

/// A control-plane client key from a lease-map key.
pub fn client_key(k: &LeaseKey) -> Option<Box<[u8]>> {
    let kind = match k.kind {
        id_kind::HWADDR => KIND_HW,
        id_kind::CLIENT_ID => KIND_CLIENT_ID,
        _ => return None,
    };
    let id = k.id.get(..usize::from(k.len))?;
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(kind);
    v.extend_from_slice(id);
    Some(v.into_boxed_slice())
}

/// A renewal the kernel answered that the control plane had not been
/// told of, found in an entry as it was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelGrant {
    pub client: Box<[u8]>,
    pub ip: Ipv4Addr,
    /// Unix seconds, rounded up.
    pub expires: u64,
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
    touched: HashSet<Ipv4Addr>,
}

impl MapReport {
    pub fn new(seq: u64) -> MapReport {
        MapReport {
            seq,
            ..Default::default()
        }
    }

    fn finish(&mut self, in_map: &HashMap<Ipv4Addr, (LeaseKey, Arc<[u8]>)>) {
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

fn grant_of(k: &LeaseKey, v: &LeaseValue) -> Option<KernelGrant> {
    Some(KernelGrant {
        client: client_key(k)?,
        ip: Ipv4Addr::from(v.ip.to_ne_bytes()),
        expires: crate::clock::mono_ns_to_unix_ceil(v.expires_mono_ns),
        lease_secs: v.lease_secs,
    })
}

/// Index of the last `Put` or `Delete` of each address in `ops`.
fn last_lease_op(ops: &[StoreOp]) -> HashMap<Ipv4Addr, usize> {
    let mut last = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Put(l) => {
                last.insert(l.ip, i);
            }
            StoreOp::Delete(ip) => {
                last.insert(*ip, i);
            }
            _ => {}
        }
    }
    last
}

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
}

struct Slot {
    id: u32,
    refs: usize,
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
    ifindex: HashMap<String, u32>,
    pub stats: SyncStats,
    warned_full: bool,
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
            ifindex: ifaces.iter().map(|i| (i.name.clone(), i.ifindex)).collect(),
            stats: SyncStats::default(),
            warned_full: false,
        })
    }

    /// Before a batch is written: drop every entry the batch ends,
    /// reading what the kernel granted there first. Only each address's
    /// last op counts: an ACK followed by a RELEASE in one group commit
    /// must leave no entry. (`Renewed` ops come from the map and never
    /// change it.)
    pub fn before_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        for (ip, i) in last_lease_op(ops) {
            report.touched.insert(ip);
            let keep = match &ops[i] {
                StoreOp::Put(l) => self
                    .entry_for(l)
                    .is_some_and(|(k, _)| self.by_ip.get(&ip).is_some_and(|(ek, _)| *ek == k)),
                _ => false,
            };
            if !keep {
                self.remove(ip, report);
            }
        }
    }

    /// After a batch is durable: write the bindings it made.
    pub fn after_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        for (_, i) in last_lease_op(ops) {
            if let StoreOp::Put(l) = &ops[i] {
                if let Some(moved_from) = self.upsert(l) {
                    report.touched.insert(moved_from);
                }
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        report.finish(&self.by_ip);
    }

    /// Writes every renewable binding of `leases` (start-up); returns how
    /// many went in.
    pub fn load<'a>(&mut self, leases: impl Iterator<Item = &'a Lease>) -> usize {
        let mut n = 0;
        for l in leases {
            if self.entry_for(l).is_some() {
                self.upsert(l);
                n += usize::from(self.by_ip.contains_key(&l.ip));
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        n
    }

    /// Whether the sync writes an entry for `l` (the auditor's rule for a
    /// missing one).
    pub fn would_map(&self, l: &Lease) -> bool {
        self.entry_for(l).is_some()
    }

    /// What the map should hold for `l`, if the kernel may renew it.
    fn entry_for(&self, l: &Lease) -> Option<(LeaseKey, LeaseValue)> {
        if l.state != LeaseState::Bound {
            return None;
        }
        let f = l.fast.as_ref()?;
        let key = lease_key(l.client.as_deref()?)?;
        if f.template.len() > TEMPLATE_OPTIONS_MAX || f.template.is_empty() {
            return None;
        }
        let ifindex = self.ifindex.get(&*f.iface).copied();
        // Directly connected clients only on fast-path interfaces.
        if f.giaddr.is_unspecified() && ifindex.is_none() {
            return None;
        }
        let value = LeaseValue {
            expires_mono_ns: unix_to_mono_ns(l.expires),
            reported_mono_ns: unix_to_mono_ns(l.expires),
            ip: u32::from_ne_bytes(l.ip.octets()),
            subnet_id: l.subnet_id,
            template_id: u32::MAX,
            lease_secs: l.lease_secs,
            ifindex: ifindex.unwrap_or(0),
            outer_vlan: f.outer_vlan,
            inner_vlan: f.inner_vlan,
            giaddr: u32::from_ne_bytes(f.giaddr.octets()),
            shape_hash: f.shape_hash,
            prl_len: f.prl_len,
            max_message_size: f.max_message_size,
            client_id_len: f.client_id_len,
            relay_info_len: f.relay_info_len,
            flags: lease_flags::FASTPATH,
        };
        Some((key, value))
    }

    /// Writes `l`'s entry if the kernel may renew it; returns the address
    /// the client's key pointed at before, when it moved.
    fn upsert(&mut self, l: &Lease) -> Option<Ipv4Addr> {
        let (key, mut value) = self.entry_for(l)?;
        let template = l.fast.as_ref().expect("entry_for checked").template.clone();
        let Some(slot) = self.acquire(&template) else {
            self.stats.no_template_slot += 1;
            return None;
        };
        value.template_id = slot;
        if let Err(e) = self.leases.insert(key, value, 0) {
            self.release(&template);
            self.stats.map_full += 1;
            if !std::mem::replace(&mut self.warned_full, true) {
                tracing::warn!(
                    "XDP lease map refused an entry ({e}); further bindings are renewed by the control plane (raise server.lease_map_entries)"
                );
            }
            return None;
        }
        self.stats.upserts += 1;
        let mut moved = None;
        // The key moved to another address: forget the old record (the map
        // entry itself was just overwritten).
        if let Some(old_ip) = self.by_key.insert(key, l.ip) {
            if old_ip != l.ip {
                if let Some((_, t)) = self.by_ip.remove(&old_ip) {
                    self.release(&t);
                }
                moved = Some(old_ip);
            }
        }
        if let Some((_, t)) = self.by_ip.insert(l.ip, (key, template)) {
            self.release(&t);
        }
        moved
    }

    /// Removes the entry we wrote for `ip`, first reading what the kernel
    /// granted there beyond what it reported. (A renewal the program is
    /// answering in the very microsecond of the removal can still write
    /// its end into the element after this read: the one window left, see
    /// RELIABILITY.md.)
    fn remove(&mut self, ip: Ipv4Addr, report: &mut MapReport) {
        let Some((key, template)) = self.by_ip.remove(&ip) else {
            return;
        };
        if self.by_key.get(&key) == Some(&ip) {
            self.by_key.remove(&key);
            if let Ok(v) = self.leases.get(&key, 0) {
                if v.expires_mono_ns > v.reported_mono_ns {
                    if let Some(client) = client_key(&key) {
                        report.grants.push(KernelGrant {
                            client,
                            ip,
                            expires: crate::clock::mono_ns_to_unix_ceil(v.expires_mono_ns),
                            lease_secs: v.lease_secs,
                        });
                    }
                }
            }
            if let Err(e) = self.leases.remove(&key) {
                tracing::warn!(%ip, "removing a binding from the XDP lease map: {e}");
            }
        }
        self.release(&template);
        self.stats.removals += 1;
    }

    fn acquire(&mut self, template: &Arc<[u8]>) -> Option<u32> {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs += 1;
            return Some(s.id);
        }
        let id = self.free.pop_front()?;
        let mut t = ReplyTemplate {
            sum: dhcp_common::options_sum(template),
            options_len: template.len() as u16,
            _pad: [0; 2],
            options: [0; TEMPLATE_OPTIONS_MAX],
        };
        t.options[..template.len()].copy_from_slice(template);
        if let Err(e) = self.templates.set(id, t, 0) {
            tracing::warn!("writing XDP reply template {id}: {e}");
            self.free.push_front(id);
            return None;
        }
        self.slots.insert(template.clone(), Slot { id, refs: 1 });
        Some(id)
    }

    fn release(&mut self, template: &Arc<[u8]>) {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs -= 1;
            if s.refs == 0 {
                let id = s.id;
                self.slots.remove(template);
                self.free.push_back(id);
            }
        }
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
    /// wall clock does (`crate::clock::advance_for_tests`).
    pub fn shift_clock_for_tests(&mut self, secs: u64) {
        let d = secs * 1_000_000_000;
        for (k, mut v) in self.entries() {
            v.expires_mono_ns = v.expires_mono_ns.saturating_sub(d);
            v.reported_mono_ns = v.reported_mono_ns.saturating_sub(d);
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
        use std::os::fd::{AsFd, AsRawFd};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::{client_id_key, hw_key};

    #[test]
    fn keys_round_trip_and_match_what_the_program_builds() {
        let hw = hw_key(1, &[2, 0, 0, 0, 0, 7]);
        let k = lease_key(&hw).unwrap();
        assert_eq!((k.kind, k.len), (id_kind::HWADDR, 7));
        assert_eq!(&k.id[..7], &[1, 2, 0, 0, 0, 0, 7]);
        assert!(k.id[7..].iter().all(|b| *b == 0));
        assert_eq!(client_key(&k).unwrap(), hw);
        let cid = client_id_key(&[0xff, 1, 2, 3]);
        let k = lease_key(&cid).unwrap();
        assert_eq!((k.kind, k.len), (id_kind::CLIENT_ID, 4));
        assert_eq!(client_key(&k).unwrap(), cid);
        assert!(lease_key(&client_id_key(&[7; 33])).is_none());
    }
}
