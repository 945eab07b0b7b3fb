//! Writing the lease map around each commit.

use std::{collections::HashMap, net::Ipv4Addr};

use dhcp_common::{lease_flags, LeaseKey, LeaseValue};

use super::{
    cap::cap_for, eligibility::eligible, report::grant_of, unix_to_mono_ns, FastMaps, MapReport,
};
use crate::{lease::Lease, store::StoreOp};

/// Index of the last `Put` or `Delete` of each address in `ops`.
fn last_lease_op(ops: &[StoreOp]) -> HashMap<Ipv4Addr, usize> {
    let mut last = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Put(l) => {
                last.insert(l.ip, i);
            }
            StoreOp::Delete { ip, .. } => {
                last.insert(*ip, i);
            }
            _ => {}
        }
    }
    last
}

impl FastMaps {
    /// Before a batch is written: drop every entry the batch ends,
    /// reading what the kernel granted there first. Only each address's
    /// last op counts: an ACK followed by a RELEASE in one group commit
    /// must leave no entry. (`Renewed` ops come from the map and never
    /// change it.)
    pub fn before_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        let refused = self.refused.clone();
        let mut refused = refused.lock().unwrap();
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
            // Its next write decides again.
            refused.remove(&ip);
        }
    }

    /// After a batch is durable: write the bindings it made, and move the
    /// caps of those whose kernel renewals it stored.
    pub fn after_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        for (_, i) in last_lease_op(ops) {
            if let StoreOp::Put(l) = &ops[i] {
                if let Some(moved_from) = self.upsert(l) {
                    report.touched.insert(moved_from);
                }
            }
        }
        self.raise_caps(ops);
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

    /// What the map should hold for `l`, if the kernel may renew it. Its
    /// cap is `l`'s end plus the MCLT: every caller writes what the store
    /// holds durably (after a commit, or loaded from the store).
    pub(super) fn entry_for(&self, l: &Lease) -> Option<(LeaseKey, LeaseValue)> {
        let (key, f, ifindex) = eligible(l, &self.ifindex)?;
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
            flags: lease_flags::FASTPATH
                | if f.offerable {
                    lease_flags::OFFERABLE
                } else {
                    0
                }
                | if f.rapid {
                    lease_flags::RAPID_COMMIT
                } else {
                    0
                },
            cap_mono_ns: cap_for(l.expires, self.mclt_secs),
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
            self.refused.lock().unwrap().insert(l.ip);
            return None;
        };
        value.template_id = slot;
        // Rewriting this client's entry for the same address: a renewal
        // the kernel answered after the control plane decided this write,
        // and did not report, is the client's. Lowering the entry's end
        // would lose it from the grant read when the entry is removed.
        // Only an unreported kernel grant is kept: an end the control
        // plane wrote itself is the store's to move.
        if self.by_ip.get(&l.ip).is_some_and(|(k, _)| *k == key) {
            if let Ok(old) = self.leases.get(&key, 0) {
                if old.ip == value.ip
                    && old.expires_mono_ns > old.reported_mono_ns
                    && old.expires_mono_ns > value.expires_mono_ns
                {
                    value.expires_mono_ns = old.expires_mono_ns;
                }
            }
        }
        if let Err(e) = self.leases.insert(key, value, 0) {
            self.release(&template);
            self.stats.map_full += 1;
            self.refused.lock().unwrap().insert(l.ip);
            if !std::mem::replace(&mut self.warned_full, true) {
                tracing::warn!(
                    "XDP lease map refused an entry ({e}); further bindings are renewed by the control plane (raise server.lease_map_entries)"
                );
            }
            return None;
        }
        self.stats.upserts += 1;
        self.refused.lock().unwrap().remove(&l.ip);
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
        self.remove_reading(ip, report, None);
    }

    /// `remove`, with what the entry granted capped at `max_end` (Unix
    /// seconds) when given.
    pub(super) fn remove_reading(
        &mut self,
        ip: Ipv4Addr,
        report: &mut MapReport,
        max_end: Option<u64>,
    ) {
        let Some((key, template)) = self.by_ip.remove(&ip) else {
            return;
        };
        if self.by_key.get(&key) == Some(&ip) {
            self.by_key.remove(&key);
            if let Ok(v) = self.leases.get(&key, 0) {
                if let Some(mut g) = grant_of(&key, &v) {
                    g.ip = ip;
                    if let Some(m) = max_end {
                        g.expires = g.expires.min(m);
                    }
                    if v.expires_mono_ns > v.reported_mono_ns {
                        report.grants.push(g.clone());
                    }
                    report.removed.push(g);
                }
            }
            if let Err(e) = self.leases.remove(&key) {
                tracing::warn!(%ip, "removing a binding from the XDP lease map: {e}");
            }
        }
        self.release(&template);
        self.stats.removals += 1;
    }
}
