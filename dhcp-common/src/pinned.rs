//! What the pinned maps hold, so a daemon never adopts maps it would
//! misread, and the one earlier layout it converts from.

use crate::{IfaceInfo, LeaseKey, LeaseValue, RenewEvent, ReplyTemplate, Stats};

/// The pinned map (one [`Layout`]) that says what the other pins hold, so
/// a daemon never adopts maps it would misread.
pub const MAP_LAYOUT: &str = "XDHCP_LAYOUT";

/// Version of what the pinned maps hold beyond their sizes: bump it with
/// any change of meaning (a field reused, units changed, a flag's sense)
/// that a previous daemon's maps or program would get wrong. Size changes
/// are caught by [`Layout`] itself.
pub const LAYOUT_VERSION: u32 = 1;

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

/// The layout this build converts pinned maps from: the one releases
/// before layout records pinned (no `MAP_LAYOUT`; a 36-byte key, so a
/// 56-byte renewal event). Values, templates and interface entries were
/// as now. Only this one: older layouts are refused. dhcp-ebpf's
/// `layout-prev` feature builds the program with these types (the
/// upgrade test's old fast path).
pub mod prev {
    use super::{IfaceInfo, Layout, LeaseValue, ReplyTemplate};

    pub const MAX_ID_LEN: usize = 32;

    pub type LeaseKey = crate::IdKey<MAX_ID_LEN>;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RenewEvent {
        pub key: LeaseKey,
        pub ip: u32,
        pub expires_mono_ns: u64,
        pub ifindex: u32,
        pub outer_vlan: u16,
        pub inner_vlan: u16,
    }

    /// What a record of it would say (none was ever written: version 0).
    /// Its counters are not compared: they are not carried over.
    pub const LAYOUT: Layout = Layout {
        version: 0,
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
        use prev::{LeaseKey as K, RenewEvent as E};
        assert_eq!(size_of::<K>(), 36);
        assert_eq!(size_of::<E>(), 56);
        assert_eq!(offset_of!(E, ip), 36);
        assert_eq!(offset_of!(E, expires_mono_ns), 40);
        assert_eq!(offset_of!(E, ifindex), 48);
        no_hidden_padding!(K, kind: u8, len: u8, _pad: [u8; 2], id: [u8; prev::MAX_ID_LEN]);
        no_hidden_padding!(E, key: K, ip: u32, expires_mono_ns: u64, ifindex: u32,
            outer_vlan: u16, inner_vlan: u16);
        assert_ne!(prev::LAYOUT.lease_key, Layout::CURRENT.lease_key);
    }
}
