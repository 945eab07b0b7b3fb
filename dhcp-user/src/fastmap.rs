//! Keeps the XDP program's maps in step with the lease store.
//!
//! The lease map follows the store's own changes (`StoreOp`s), in the
//! committer thread, around each commit: entries that must go are removed
//! *before* the batch is written, entries that may answer are written only
//! *after* it is durable. So the kernel never answers for a binding the
//! store does not hold, and never answers from one it is about to lose.
//!
//! Clock: the kernel has no wall clock, so expiries in the map are
//! `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_coarse_ns` reads, at
//! jiffy resolution: a boot-time clock read costs the program ~50 ns in a
//! VM). Monotonic time stops while a host is suspended; the map's expiries
//! then run late by the suspension, which is harmless: the map follows
//! the store, and the control plane reclaims by wall clock.
//! Userspace converts a Unix expiry when it writes an entry, from a fresh
//! reading of both clocks: `mono = mono_now + (unix - unix_now)`, and
//! back the same way for renewal events. A wall-clock step between two
//! conversions moves expiries by the step, exactly as it would move the
//! control plane's own Unix-time expiries.

use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
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

pub fn mono_ns_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Unix seconds to `CLOCK_MONOTONIC` nanoseconds.
pub fn unix_to_mono_ns(unix_secs: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (mono + unix_secs.saturating_mul(1_000_000_000)).saturating_sub(unix)
}

/// `CLOCK_MONOTONIC` nanoseconds to Unix seconds (rounded down).
pub fn mono_ns_to_unix(mono_ns: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (unix + mono_ns).saturating_sub(mono) / 1_000_000_000
}

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

    /// Before a batch is written: drop every entry the batch ends.
    pub fn before_commit(&mut self, ops: &[StoreOp]) {
        for op in ops {
            let ip = match op {
                StoreOp::Meta(..)
                | StoreOp::PutReservation(_)
                | StoreOp::DeleteReservation { .. } => continue,
                StoreOp::Delete(ip) => *ip,
                StoreOp::Put(l) | StoreOp::Renewed(l) => {
                    let keep = self.entry_for(l).is_some_and(|(k, _)| {
                        self.by_ip.get(&l.ip).is_some_and(|(ek, _)| *ek == k)
                    });
                    if keep {
                        continue;
                    }
                    l.ip
                }
            };
            self.remove(ip);
        }
    }

    /// After a batch is durable: write the bindings it made.
    pub fn after_commit(&mut self, ops: &[StoreOp]) {
        for op in ops {
            // A renewal the kernel answered is already in the map, with an
            // expiry at least as late as the stored one.
            if let StoreOp::Put(l) = op {
                self.upsert(l);
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
    }

    /// Writes every renewable binding of `leases` (start-up); returns how
    /// many went in.
    pub fn load<'a>(&mut self, leases: impl Iterator<Item = &'a Lease>) -> usize {
        let mut n = 0;
        for l in leases {
            if self.upsert(l) {
                n += 1;
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        n
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

    fn upsert(&mut self, l: &Lease) -> bool {
        let Some((key, mut value)) = self.entry_for(l) else {
            return false;
        };
        let template = l.fast.as_ref().expect("entry_for checked").template.clone();
        let Some(slot) = self.acquire(&template) else {
            self.stats.no_template_slot += 1;
            return false;
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
            return false;
        }
        self.stats.upserts += 1;
        // The key moved to another address: forget the old record (the map
        // entry itself was just overwritten).
        if let Some(old_ip) = self.by_key.insert(key, l.ip) {
            if old_ip != l.ip {
                if let Some((_, t)) = self.by_ip.remove(&old_ip) {
                    self.release(&t);
                }
            }
        }
        if let Some((_, t)) = self.by_ip.insert(l.ip, (key, template)) {
            self.release(&t);
        }
        true
    }

    fn remove(&mut self, ip: Ipv4Addr) {
        let Some((key, template)) = self.by_ip.remove(&ip) else {
            return;
        };
        if self.by_key.get(&key) == Some(&ip) {
            self.by_key.remove(&key);
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
    /// returns how many entries it held.
    pub fn clear(&mut self) -> Result<usize> {
        let keys: Vec<LeaseKey> = self.leases.keys().filter_map(|k| k.ok()).collect();
        for k in &keys {
            let _ = self.leases.remove(k);
        }
        self.by_ip.clear();
        self.by_key.clear();
        Ok(keys.len())
    }

    /// The kernel's current entry for `key` (tests, status).
    pub fn get(&self, key: &LeaseKey) -> Option<LeaseValue> {
        self.leases.get(key, 0).ok()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
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

    #[test]
    fn clock_conversion_round_trips_to_the_second() {
        let unix = unix_ns_now() / 1_000_000_000 + 3600;
        let mono = unix_to_mono_ns(unix);
        assert!(mono > mono_ns_now() + 3590 * 1_000_000_000);
        let back = mono_ns_to_unix(mono);
        assert!(back.abs_diff(unix) <= 1, "{back} vs {unix}");
    }
}
