//! Adoption across a layout change: a fast path pinned by a daemon with
//! the previous layout (`dhcp_common::prev`, the only one converted) is
//! taken over without a gap in renewals and without losing one.
//!
//! `serve` does it in this order:
//! 1. the layout is checked before the store is opened (`pins::check_layout`):
//!    anything else is refused while nothing has changed;
//! 2. the store is opened and recovered as after a crash (the old daemon
//!    stopped keeping the fast path, so the store is unclean): every binding
//!    the old program could have renewed is held until now + its lease time;
//! 3. this build's program is loaded with new maps, pinned under staging
//!    names (`staging_pin`), and its lease map is written from that store
//!    (only bindings the store holds; nothing is copied from the old map,
//!    whose entries the old program may have renewed past what the store
//!    says until the swap);
//! 4. each pinned link is swapped to the new program (`bpf_link_update`):
//!    the old program answers until then, the new one from then on;
//! 5. the old ring's events and every old entry's end are read after the
//!    swap (`OldFastPath::drain`), decoded with the old types, and stored as
//!    kernel grants, as after a same-layout adoption;
//! 6. the old maps are unpinned and the new ones take their names, with a
//!    layout record (`finish`).
//!
//! A death between 4 and 6 leaves the store unclean and the old maps pinned:
//! the next start converts again (a grant made by the new program in the
//! meantime is covered by that start's recovery).

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, RingBuf};
use dhcp_common::{prev, LeaseValue, MAP_EVENTS, MAP_LEASES};

use crate::{
    xdp::clock::{mono_ns_to_unix_ceil, mono_ns_to_unix_ns},
    xdp::map_sync::{client_key, KernelGrant},
    xdp::pins::{staging_pin, PINNED_MAPS},
};

/// How long after the swap an old program may still be running on another
/// CPU (a packet it started on before the update): its event is read after.
pub const SWAP_GRACE: Duration = Duration::from_millis(50);

/// The old lease map, by the value type it was pinned with.
enum OldLeases {
    /// No MCLT cap in its values. Nothing is copied from them into the
    /// new map (step 3), so no cap has to be made up for them: the new
    /// entries get theirs from the recovered store's ends, which hold
    /// every binding until now + its lease time.
    Previous(BpfHashMap<MapData, prev::LeaseKey, prev::LeaseValue>),
    /// This build's values (only the counters differ).
    Current(BpfHashMap<MapData, dhcp_common::LeaseKey, LeaseValue>),
}

/// The old fast path's lease map and renewal ring, opened from the pins.
pub struct OldFastPath {
    leases: OldLeases,
    events: Option<RingBuf<MapData>>,
}

impl OldFastPath {
    /// `previous`: pinned with `dhcp_common::prev`'s types; otherwise with
    /// this build's (a layout that differs in its counters only).
    pub fn open(dir: &Path, previous: bool) -> Result<OldFastPath> {
        let path = dir.join(MAP_LEASES);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the old lease map {}", path.display()))?;
        let ctx = || format!("reading {} with the old layout", path.display());
        let leases = if previous {
            OldLeases::Previous(BpfHashMap::try_from(Map::HashMap(data)).with_context(ctx)?)
        } else {
            OldLeases::Current(BpfHashMap::try_from(Map::HashMap(data)).with_context(ctx)?)
        };
        let path = dir.join(MAP_EVENTS);
        let events = if path.exists() {
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening the old renewal ring {}", path.display()))?;
            Some(RingBuf::try_from(Map::RingBuf(data))?)
        } else {
            None
        };
        Ok(OldFastPath { leases, events })
    }

    /// Every renewal the old program may have answered without the store
    /// hearing of it: the events on its ring, then each entry's end (what
    /// it granted below the report threshold). Call after the swap and
    /// `SWAP_GRACE`. Keys the control plane cannot read are skipped: the
    /// store holds no binding for them.
    pub fn drain(&mut self) -> (usize, Vec<KernelGrant>) {
        let mut out = Vec::new();
        let grant = |client, ip: u32, expires_mono_ns, lease_secs| KernelGrant {
            client,
            ip: Ipv4Addr::from(ip.to_ne_bytes()),
            expires: mono_ns_to_unix_ceil(expires_mono_ns),
            expires_ns: mono_ns_to_unix_ns(expires_mono_ns),
            lease_secs,
        };
        if let Some(ring) = self.events.as_mut() {
            // Both layouts have this build's renewal event.
            let size = std::mem::size_of::<dhcp_common::RenewEvent>();
            while let Some(item) = ring.next() {
                if item.len() < size {
                    continue;
                }
                let ev: dhcp_common::RenewEvent = bytemuck::pod_read_unaligned(&item[..size]);
                if let Some(client) = client_key(&ev.key) {
                    out.push(grant(client, ev.ip, ev.expires_mono_ns, 0));
                }
            }
        }
        let events = out.len();
        // Client, address, end, lease time: what a grant needs of either value.
        type Entry = (Option<Box<[u8]>>, u32, u64, u32);
        let entries: Vec<Entry> = match &self.leases {
            OldLeases::Previous(m) => m
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| (client_key(&k), v.ip, v.expires_mono_ns, v.lease_secs))
                .collect(),
            OldLeases::Current(m) => m
                .iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| (client_key(&k), v.ip, v.expires_mono_ns, v.lease_secs))
                .collect(),
        };
        for (client, ip, expires, lease_secs) in entries {
            if let Some(client) = client {
                out.push(grant(client, ip, expires, lease_secs));
            }
        }
        (events, out)
    }

    pub fn is_previous(&self) -> bool {
        matches!(self.leases, OldLeases::Previous(_))
    }

    /// Bindings in the old lease map (for the log).
    pub fn len(&self) -> usize {
        match &self.leases {
            OldLeases::Previous(m) => m.keys().filter(|k| k.is_ok()).count(),
            OldLeases::Current(m) => m.keys().filter(|k| k.is_ok()).count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unpins the old maps and gives their names to the new ones (staged by
/// `Fastpath::load_converting`), then records this build's layout.
pub fn finish(dir: &Path) -> Result<()> {
    for m in PINNED_MAPS {
        let old = dir.join(m);
        if old.exists() {
            std::fs::remove_file(&old).with_context(|| format!("unpinning {}", old.display()))?;
        }
        let staged = staging_pin(dir, m);
        std::fs::rename(&staged, &old)
            .with_context(|| format!("renaming {} to {}", staged.display(), old.display()))?;
    }
    crate::xdp::pins::record_layout(dir, &dhcp_common::Layout::CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_read_as_the_control_plane_keys_clients() {
        let mut k = prev::LeaseKey::zeroed();
        k.kind = dhcp_common::id_kind::CLIENT_ID;
        k.len = 19;
        for (i, b) in k.id.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let c = client_key(&k).unwrap();
        assert_eq!(c[0], crate::lease::KIND_CLIENT_ID);
        assert_eq!(&c[1..], &k.id[..19]);
        k.len = prev::MAX_ID_LEN as u8 + 1;
        assert_eq!(client_key(&k), None, "a length past the key");
        k.len = 3;
        k.kind = 9;
        assert_eq!(client_key(&k), None, "an unknown kind");
    }
}
