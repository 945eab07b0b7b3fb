//! What the pinned maps hold, so a daemon never adopts maps it would
//! misread, and the one earlier layout it converts from.

use crate::{IfaceInfo, LeaseKey, LeaseValue, RenewEvent, ReplyTemplate, Stats};

/// The pinned map (one [`Layout`]) that says what the other pins hold, so
/// a daemon never adopts maps it would misread.
pub const MAP_LAYOUT: &str = "XDHCP_LAYOUT";

/// Version of what the pinned maps hold beyond their sizes: bump it with
/// any change of meaning (a field reused, units changed, a flag's sense)
/// that a previous daemon's maps or program would get wrong. Size changes
/// are caught by [`Layout`] itself. 2: the lease value's MCLT cap
/// (`LeaseValue::cap_mono_ns`); 1: the first recorded layout.
pub const LAYOUT_VERSION: u32 = 2;

/// The record pinned as [`MAP_LAYOUT`]. Its own shape never changes
/// (eight `u32`s; new facts take `_reserved`), so any daemon can read any
/// other's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    pub lease_key: u32,
    pub lease_value: u32,
    pub template: u32,
    pub iface: u32,
    pub renew_event: u32,
    pub stats: u32,
    pub _reserved: u32,
}

impl Layout {
    /// This build's.
    pub const CURRENT: Layout = Layout {
        version: LAYOUT_VERSION,
        lease_key: core::mem::size_of::<LeaseKey>() as u32,
        lease_value: core::mem::size_of::<LeaseValue>() as u32,
        template: core::mem::size_of::<ReplyTemplate>() as u32,
        iface: core::mem::size_of::<IfaceInfo>() as u32,
        renew_event: core::mem::size_of::<RenewEvent>() as u32,
        stats: core::mem::size_of::<Stats>() as u32,
        _reserved: 0,
    };
}

impl core::fmt::Display for Layout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "layout version {} (lease key {} B, lease value {} B, template {} B, interface {} B, renewal event {} B, counters {} B)",
            self.version, self.lease_key, self.lease_value, self.template, self.iface, self.renew_event, self.stats
        )
    }
}

/// The layout this build converts pinned maps from: the release before
/// the MCLT cap (layout version 1, recorded; a 56-byte lease value, the
/// cap not there). Keys, renewal events, templates and interface entries
/// were as now. Only this one: older layouts (no record, 36-byte keys)
/// are refused. dhcp-ebpf's `layout-prev` feature builds the program with
/// these types (the upgrade test's old fast path).
pub mod prev {
    use super::{IfaceInfo, Layout, ReplyTemplate};

    pub use crate::{LeaseKey, RenewEvent, MAX_ID_LEN};

    /// [`crate::LeaseValue`] without `cap_mono_ns`: the kernel extended a
    /// binding by a lease time at every renewal, uncapped.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LeaseValue {
        pub expires_mono_ns: u64,
        pub reported_mono_ns: u64,
        pub ip: u32,
        pub subnet_id: u32,
        pub template_id: u32,
        pub lease_secs: u32,
        pub ifindex: u32,
        pub outer_vlan: u16,
        pub inner_vlan: u16,
        pub giaddr: u32,
        pub shape_hash: u32,
        pub prl_len: u16,
        pub max_message_size: u16,
        pub client_id_len: u8,
        pub relay_info_len: u8,
        pub flags: u16,
    }

    /// Its record. Its counters are not compared (`stats` 0): they are
    /// not carried over.
    pub const LAYOUT: Layout = Layout {
        version: 1,
        lease_key: core::mem::size_of::<LeaseKey>() as u32,
        lease_value: core::mem::size_of::<LeaseValue>() as u32,
        template: core::mem::size_of::<ReplyTemplate>() as u32,
        iface: core::mem::size_of::<IfaceInfo>() as u32,
        renew_event: core::mem::size_of::<RenewEvent>() as u32,
        stats: 0,
        _reserved: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_record_keeps_its_shape() {
        // Every daemon must read every other's record.
        assert_eq!(size_of::<Layout>(), 32);
        no_hidden_padding!(Layout, version: u32, lease_key: u32, lease_value: u32, template: u32,
            iface: u32, renew_event: u32, stats: u32, _reserved: u32);
    }

    #[test]
    fn previous_layout() {
        use prev::LeaseValue as V;
        assert_eq!(size_of::<V>(), 56);
        assert_eq!(offset_of!(V, ip), 16);
        assert_eq!(offset_of!(V, flags), 54);
        no_hidden_padding!(V, expires_mono_ns: u64, reported_mono_ns: u64, ip: u32, subnet_id: u32,
            template_id: u32, lease_secs: u32, ifindex: u32, outer_vlan: u16, inner_vlan: u16,
            giaddr: u32, shape_hash: u32, prl_len: u16, max_message_size: u16,
            client_id_len: u8, relay_info_len: u8, flags: u16);
        assert_eq!(prev::LAYOUT.lease_key, 24);
        assert_eq!(prev::LAYOUT.renew_event, 48);
        assert_eq!(prev::LAYOUT.version + 1, LAYOUT_VERSION);
        #[cfg(not(feature = "layout-prev"))]
        assert_ne!(prev::LAYOUT.lease_value, Layout::CURRENT.lease_value);
    }
}
