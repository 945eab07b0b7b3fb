//! The maps the XDP program and the control plane share: their names,
//! and the keys and values they hold.

/// Names of the maps in the object file; userspace looks them up by name.
pub const MAP_STATS: &str = "XDHCP_STATS";
pub const MAP_LEASES: &str = "XDHCP_LEASES";
pub const MAP_TEMPLATES: &str = "XDHCP_TEMPLATES";
pub const MAP_EVENTS: &str = "XDHCP_EVENTS";
pub const MAP_IFACES: &str = "XDHCP_IFACES";
pub const MAP_SCRATCH: &str = "XDHCP_SCRATCH";
/// Template slots; a template is shared by every binding with the same
/// option bytes, so this bounds distinct (subnet, PRL) combinations.
pub const TEMPLATE_SLOTS: u32 = 4096;
/// Interfaces the fast path can answer on: ifindex below this.
pub const IFACE_SLOTS: u32 = 4096;
pub const PROGRAM_NAME: &str = "xdhcp";
/// The object's XDP_PASS program, for the client end of a lab veth.
pub const PEER_PROGRAM_NAME: &str = "xdhcp_peer";
/// The benchmark's yardstick program and its map.
pub const BARE_PROGRAM_NAME: &str = "xdhcp_bare";
pub const MAP_BARE_LEASES: &str = "XDHCP_BARE_LEASES";

/// Longest client identity kept in a map key. Longer client identifiers
/// (DUID-based ones can reach 130 bytes) are served by the control plane
/// only. 20 bytes hold htype + any chaddr, and the RFC 4361 identifiers of
/// DUID-LLT, DUID-EN (systemd) and DUID-LL (19 bytes or less); only
/// DUID-UUID ones (23) are left out. It makes the key 24 bytes, so a map
/// element (48-byte kernel header, key, 64-byte value) is 136 bytes.
pub const MAX_ID_LEN: usize = 20;

/// A client's identity of up to `N` bytes, zero-padded so that equal
/// identities hash equally whatever was in the packet past `len`. One
/// definition for this layout's key and the previous one's
/// ([`crate::prev::LeaseKey`]), which differ only in `N`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdKey<const N: usize> {
    pub kind: u8,
    pub len: u8,
    pub _pad: [u8; 2],
    pub id: [u8; N],
}

impl<const N: usize> IdKey<N> {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            len: 0,
            _pad: [0; 2],
            id: [0; N],
        }
    }
}

/// Key of the lease map.
pub type LeaseKey = IdKey<MAX_ID_LEN>;

/// The previous layout's value (`prev`), for the test object built with it.
#[cfg(feature = "layout-prev")]
pub use crate::prev::LeaseValue;

/// Value of the lease map: one active binding, and the request it was
/// last answered for. The XDP program answers only requests of the same
/// shape from the same place; anything else goes to the control plane.
///
/// Times are kept in the kernel's `CLOCK_MONOTONIC` domain (what
/// `bpf_ktime_get_coarse_ns` returns, at jiffy resolution; the cheapest
/// clock the program can read) because the kernel has no wall clock;
/// userspace converts wall-clock expiries when it writes the entry:
/// `mono_ns = now_mono_ns + (expiry_unix - now_unix) * 1e9`.
#[cfg(not(feature = "layout-prev"))]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseValue {
    /// Binding ends at this `CLOCK_MONOTONIC` instant, in nanoseconds.
    pub expires_mono_ns: u64,
    /// The end the lease store holds (or will, from an event already in
    /// the ring). The kernel reports a renewal only when it moves the end
    /// at least `lease_secs / REPORT_FRACTION` past this, so a client
    /// renewing in a loop costs one event per that interval, not one per
    /// request, and a client that renews on RFC 2131 timers (T1 = 1/2,
    /// T2 = 7/8 of the lease) always does so before the stored end.
    pub reported_mono_ns: u64,
    /// Leased address, network byte order (as it sits in the packet).
    pub ip: u32,
    pub subnet_id: u32,
    /// Index into the reply template map.
    pub template_id: u32,
    pub lease_secs: u32,
    /// Where the binding was made: interface, VLAN IDs (0 = none)...
    pub ifindex: u32,
    pub outer_vlan: u16,
    pub inner_vlan: u16,
    /// ...and through which relay (0 = directly connected), network order.
    pub giaddr: u32,
    /// [`shape_hash`] of the request the template was built for.
    pub shape_hash: u32,
    /// PRL length + 1, 0 when the client sent none.
    pub prl_len: u16,
    /// Option 57 as sent (0 = absent).
    pub max_message_size: u16,
    /// Lengths of option 61 and 82 payloads (0 = absent).
    pub client_id_len: u8,
    pub relay_info_len: u8,
    /// `lease_flags::*`.
    pub flags: u16,
    /// The latest end the kernel may grant: the end the store has durably
    /// acknowledged plus the maximum client lead time (MCLT,
    /// [`mclt_cap_ns`]). A renewal whose new end would pass it goes to the
    /// control plane (`stat::PASS_MCLT_CAP`), so a node that dies with
    /// renewals its kernel answered but never stored has granted no client
    /// past what another node waits out before reusing the address.
    /// [`NO_CAP`] when no other node can take the address over (one node,
    /// SQLite): its own crash recovery covers what its kernel granted.
    pub cap_mono_ns: u64,
}

/// No cap: 2^63 - 1 ns (292 years of uptime), not `u64::MAX`, because the
/// program compares by the sign of a difference (no branch of its own).
pub const NO_CAP: u64 = i64::MAX as u64;

/// [`LeaseValue::cap_mono_ns`] for a binding whose durably stored end is
/// `stored_end_mono_ns`: that end plus `mclt_secs`, or [`NO_CAP`] without
/// an MCLT (a store no other node shares). A cap past `NO_CAP` is none.
pub const fn mclt_cap_ns(stored_end_mono_ns: u64, mclt_secs: Option<u32>) -> u64 {
    match mclt_secs {
        Some(m) => {
            let cap = stored_end_mono_ns.saturating_add(m as u64 * 1_000_000_000);
            if cap < NO_CAP {
                cap
            } else {
                NO_CAP
            }
        }
        None => NO_CAP,
    }
}

/// The XDP program leaves bindings this close to their end to the control
/// plane, so renewal events always reach it before it could reclaim.
pub const EXPIRY_MARGIN_SECS: u64 = 5;

/// See [`LeaseValue::reported_mono_ns`]: with 1/8, the stored end is never
/// earlier than T2 of the end the client was given.
pub const REPORT_FRACTION: u64 = 8;

pub mod lease_flags {
    /// The binding may be renewed in the kernel (otherwise always XDP_PASS).
    pub const FASTPATH: u16 = 1;
    /// A DISCOVER from the client may be OFFERed this binding, and its
    /// SELECTING REQUEST ACKed, in the kernel.
    pub const OFFERABLE: u16 = 2;
    /// The binding's subnet enables rapid commit (RFC 4039): the client's
    /// DISCOVER with option 80 is ACKed in the kernel (80 echoed), where
    /// without the flag it is OFFERed, as the control plane does.
    pub const RAPID_COMMIT: u16 = 4;
}

/// Per-interface facts the XDP program needs to send a reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Source address of replies (the server identifier), network order.
    pub server_ip: u32,
}

/// Bytes of pre-encoded DHCP options a reply template can hold.
pub const TEMPLATE_OPTIONS_MAX: usize = 256;

/// Reply template written by the control plane: the option bytes of the
/// DHCPACK it sent for a binding (53, 54, 51, 58, 59 and the configured
/// options the client's PRL selected), in its order. The fast path copies
/// them, then echoes 61 and 82 from the request, as the control plane does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTemplate {
    /// Ones'-complement sum of `options[..options_len]` read as 16-bit
    /// words in memory order ([`options_sum`]), so the fast path checksums
    /// a reply without reading the template twice.
    pub sum: u32,
    pub options_len: u16,
    pub _pad: [u8; 2],
    pub options: [u8; TEMPLATE_OPTIONS_MAX],
}

/// Record the fast path pushes to userspace (ring buffer) for every renewal
/// it answered, so the lease store can persist the new expiry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewEvent {
    pub key: LeaseKey,
    /// Address renewed, network byte order.
    pub ip: u32,
    pub _pad: u32,
    pub expires_mono_ns: u64,
    pub ifindex: u32,
    /// 0 when absent.
    pub outer_vlan: u16,
    pub inner_vlan: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn lease_key() {
        assert_eq!(size_of::<LeaseKey>(), 24);
        assert_eq!(align_of::<LeaseKey>(), 1);
        assert_eq!(offset_of!(LeaseKey, kind), 0);
        assert_eq!(offset_of!(LeaseKey, len), 1);
        assert_eq!(offset_of!(LeaseKey, id), 4);
        no_hidden_padding!(LeaseKey, kind: u8, len: u8, _pad: [u8; 2], id: [u8; MAX_ID_LEN]);
    }

    #[test]
    #[cfg(not(feature = "layout-prev"))]
    fn lease_value() {
        assert_eq!(size_of::<LeaseValue>(), 64);
        assert_eq!(align_of::<LeaseValue>(), 8);
        assert_eq!(offset_of!(LeaseValue, expires_mono_ns), 0);
        assert_eq!(offset_of!(LeaseValue, reported_mono_ns), 8);
        assert_eq!(offset_of!(LeaseValue, ip), 16);
        assert_eq!(offset_of!(LeaseValue, template_id), 24);
        assert_eq!(offset_of!(LeaseValue, ifindex), 32);
        assert_eq!(offset_of!(LeaseValue, outer_vlan), 36);
        assert_eq!(offset_of!(LeaseValue, giaddr), 40);
        assert_eq!(offset_of!(LeaseValue, shape_hash), 44);
        assert_eq!(offset_of!(LeaseValue, prl_len), 48);
        assert_eq!(offset_of!(LeaseValue, client_id_len), 52);
        assert_eq!(offset_of!(LeaseValue, flags), 54);
        assert_eq!(offset_of!(LeaseValue, cap_mono_ns), 56);
        no_hidden_padding!(LeaseValue, expires_mono_ns: u64, reported_mono_ns: u64, ip: u32, subnet_id: u32,
            template_id: u32, lease_secs: u32, ifindex: u32, outer_vlan: u16, inner_vlan: u16,
            giaddr: u32, shape_hash: u32, prl_len: u16, max_message_size: u16,
            client_id_len: u8, relay_info_len: u8, flags: u16, cap_mono_ns: u64);
    }

    #[test]
    fn the_cap_is_the_stored_end_plus_the_mclt_or_none() {
        let end = 5_000_000_000_000;
        assert_eq!(mclt_cap_ns(end, Some(40)), end + 40_000_000_000);
        assert_eq!(mclt_cap_ns(end, Some(0)), end);
        assert_eq!(mclt_cap_ns(end, None), NO_CAP);
        assert_eq!(mclt_cap_ns(u64::MAX - 1, Some(1)), NO_CAP);
        assert_eq!(mclt_cap_ns(NO_CAP - 1, Some(1)), NO_CAP);
    }

    #[test]
    fn iface_info() {
        assert_eq!(size_of::<IfaceInfo>(), 12);
        assert_eq!(offset_of!(IfaceInfo, server_ip), 8);
        no_hidden_padding!(IfaceInfo, mac: [u8; 6], _pad: [u8; 2], server_ip: u32);
    }

    #[test]
    fn reply_template() {
        assert_eq!(size_of::<ReplyTemplate>(), 8 + TEMPLATE_OPTIONS_MAX);
        assert_eq!(align_of::<ReplyTemplate>(), 4);
        assert_eq!(offset_of!(ReplyTemplate, sum), 0);
        assert_eq!(offset_of!(ReplyTemplate, options_len), 4);
        assert_eq!(offset_of!(ReplyTemplate, options), 8);
        no_hidden_padding!(ReplyTemplate, sum: u32, options_len: u16, _pad: [u8; 2],
            options: [u8; TEMPLATE_OPTIONS_MAX]);
    }

    #[test]
    fn renew_event() {
        assert_eq!(size_of::<RenewEvent>(), 48);
        assert_eq!(align_of::<RenewEvent>(), 8);
        assert_eq!(offset_of!(RenewEvent, key), 0);
        assert_eq!(offset_of!(RenewEvent, ip), 24);
        assert_eq!(offset_of!(RenewEvent, expires_mono_ns), 32);
        assert_eq!(offset_of!(RenewEvent, ifindex), 40);
        assert_eq!(offset_of!(RenewEvent, outer_vlan), 44);
        assert_eq!(offset_of!(RenewEvent, inner_vlan), 46);
        no_hidden_padding!(RenewEvent, key: LeaseKey, ip: u32, _pad: u32, expires_mono_ns: u64,
            ifindex: u32, outer_vlan: u16, inner_vlan: u16);
    }
}
