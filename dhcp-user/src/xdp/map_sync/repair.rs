//! The auditor's repair of a stray entry.

use dhcp_common::{LeaseKey, LeaseValue};

use super::{mono_ns_now, report::unreported_grant, FastMaps, MapReport};

/// Whether two values of one key are the same binding: everything but
/// the times the kernel moves when it renews and the cap the committer
/// moves when it stores those renewals.
fn same_binding(a: &LeaseValue, b: &LeaseValue) -> bool {
    let strip = |v: &LeaseValue| LeaseValue {
        expires_mono_ns: 0,
        reported_mono_ns: 0,
        cap_mono_ns: 0,
        ..*v
    };
    strip(a) == strip(b)
}

impl FastMaps {
    /// The auditor's repair: removes the kernel's entry under `key` if it
    /// still holds the binding the auditor confirmed (`seen`, compared
    /// without its times, which the kernel moves on each renewal).
    /// Returns whether it removed one.
    ///
    /// Why here, on the committer thread, and not from the auditor's own
    /// handle: a removal is always safe for the invariant (without an
    /// entry the program passes the client to the control plane, which
    /// answers from the store), but this thread's bookkeeping must stay
    /// true. Removed behind its back, an entry it wrote would still be in
    /// `by_ip`/`by_key`: `holds_ip`, the fill it reports and the map
    /// reports' `gone` would claim a binding the kernel no longer has, so
    /// the control plane would keep a hold that never ends and never read
    /// what the entry had granted. And a removal racing an upsert of the
    /// same key could delete the fresh, legitimate entry. Done here, in
    /// commit order:
    /// - an entry this sync wrote (its key is in `by_key`) leaves the way
    ///   every removal does (`remove`): grants read first, template
    ///   released, the address reported gone so its hold ends after the
    ///   next ring read;
    /// - an entry it never wrote (planted, or left by someone else) has no
    ///   bookkeeping: the kernel's entry alone goes, its unreported grant
    ///   still read and reported;
    /// - nothing re-adds either: entries are written only after a commit
    ///   of a Bound lease the sync would map, i.e. from the store's truth.
    ///
    /// A grant read from a stray entry is capped at the kernel's now + the
    /// entry's lease time, the most any renewal from it told a client (a
    /// corrupted end is no grant); the control plane honours it only as
    /// `Server::kernel_granted` does any other.
    pub fn unmap(&mut self, key: &LeaseKey, seen: &LeaseValue, report: &mut MapReport) -> bool {
        let Ok(now_v) = self.leases.get(key, 0) else {
            return false;
        };
        if !same_binding(&now_v, seen) {
            return false;
        }
        let cap = crate::xdp::clock::mono_ns_to_unix_ceil(
            mono_ns_now() + u64::from(now_v.lease_secs) * 1_000_000_000,
        );
        if let Some(&ip) = self.by_key.get(key) {
            report.touched.insert(ip);
            self.remove_reading(ip, report, Some(cap));
            self.refused.lock().unwrap().remove(&ip);
        } else {
            if let Some(mut g) = unreported_grant(key, &now_v) {
                g.expires = g.expires.min(cap);
                report.grants.push(g);
            }
            if let Err(e) = self.leases.remove(key) {
                tracing::warn!("removing a stray entry from the XDP lease map: {e}");
                return false;
            }
        }
        self.stats.repairs += 1;
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        true
    }
}
