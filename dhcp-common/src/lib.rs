//! Types shared by the XDP program (`dhcp-ebpf`) and the control plane
//! (`dhcp-user`).
//!
//! Every type that crosses the kernel/user boundary is defined once, here, as
//! `#[repr(C)]` with explicit padding so that both compilers (bpfel and the
//! host) lay it out identically. The layout tests at the bottom pin sizes and
//! offsets: a change that moves a field breaks them before it breaks a map.
#![no_std]

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still emitted by some access gear.
pub const ETH_P_QINQ_9100: u16 = 0x9100;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;

/// Names of the maps in the object file; userspace looks them up by name.
pub const MAP_STATS: &str = "XDHCP_STATS";
pub const MAP_LEASES: &str = "XDHCP_LEASES";
pub const MAP_TEMPLATES: &str = "XDHCP_TEMPLATES";
pub const MAP_EVENTS: &str = "XDHCP_EVENTS";
pub const PROGRAM_NAME: &str = "xdhcp";

/// Longest client identity kept in a map key. Longer client identifiers
/// (DUID-based ones can reach 130 bytes) are served by the control plane only.
pub const MAX_ID_LEN: usize = 32;

/// What [`LeaseKey::id`] holds.
pub mod id_kind {
    /// `id[0]` = htype, `id[1..len]` = chaddr (RFC 2131 default identity).
    pub const HWADDR: u8 = 1;
    /// `id[..len]` = option 61 payload (type byte included), RFC 2132 §9.14.
    pub const CLIENT_ID: u8 = 2;
}

/// Key of the lease map: the client's identity, zero-padded so that equal
/// identities hash equally whatever was in the packet past `len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    pub kind: u8,
    pub len: u8,
    pub _pad: [u8; 2],
    pub id: [u8; MAX_ID_LEN],
}

impl LeaseKey {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            len: 0,
            _pad: [0; 2],
            id: [0; MAX_ID_LEN],
        }
    }
}

/// Value of the lease map: one active binding.
///
/// Times are kept in the kernel's `CLOCK_BOOTTIME` domain (what
/// `bpf_ktime_get_boot_ns` returns) because the kernel has no wall clock;
/// userspace converts wall-clock expiries once, when it writes the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseValue {
    /// Binding ends at this `CLOCK_BOOTTIME` instant, in nanoseconds.
    pub expires_boot_ns: u64,
    /// Leased address, network byte order (as it sits in the packet).
    pub ip: u32,
    /// Subnet the binding belongs to; replies are only sent where it is served.
    pub subnet_id: u32,
    /// Index into the reply template map.
    pub template_id: u32,
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
    /// `lease_flags::*`.
    pub flags: u32,
    pub _pad: u32,
}

pub mod lease_flags {
    /// The binding may be renewed in the kernel (otherwise always XDP_PASS).
    pub const FASTPATH: u32 = 1;
}

/// Bytes of pre-encoded DHCP options a reply template can hold.
pub const TEMPLATE_OPTIONS_MAX: usize = 256;

/// Per-subnet (or per-reservation) reply template written by the control
/// plane: the options it would put in a DHCPACK, already encoded, in the
/// order it would put them. The fast path copies them into its reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTemplate {
    /// Server identifier (option 54) and IPv4 source, network byte order.
    pub server_ip: u32,
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
    pub expires_boot_ns: u64,
    pub ifindex: u32,
    /// 0 when absent.
    pub outer_vlan: u16,
    pub inner_vlan: u16,
}

/// RFC 1071 Internet checksum over the concatenation of `chunks` (an odd
/// chunk length carries over into the next chunk), folded and inverted.
pub fn internet_checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in chunk.iter() {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Indices into the per-CPU stats array (`MAP_STATS`).
pub mod stat {
    /// Every frame the program saw.
    pub const RX_FRAMES: u32 = 0;
    /// IPv4/UDP to port 67: a DHCP (or BOOTP) request.
    pub const DHCP_REQUESTS: u32 = 1;
    /// Frames carrying one 802.1Q tag.
    pub const VLAN_SINGLE: u32 = 2;
    /// Frames carrying two tags (802.1ad / QinQ).
    pub const VLAN_DOUBLE: u32 = 3;
    /// Not IPv4 (after tags), e.g. ARP, IPv6, or more than two tags.
    pub const NOT_IPV4: u32 = 4;
    /// IPv4 but not UDP.
    pub const NOT_UDP: u32 = 5;
    /// UDP to a port other than 67.
    pub const OTHER_UDP: u32 = 6;
    /// Frame ended before the headers it announced.
    pub const TRUNCATED: u32 = 7;
    /// IPv4 fragment (MF set or non-zero offset): never parsed further.
    pub const FRAGMENT: u32 = 8;
    /// IPv4 header with options (IHL > 5); still parsed.
    pub const IP_OPTIONS: u32 = 9;
    /// Malformed IPv4 header (bad version, IHL < 5, total length too short).
    pub const BAD_IPV4: u32 = 10;
    pub const COUNT: u32 = 11;
}

/// Human names of the stats, indexed like [`stat`].
pub const STAT_NAMES: [&str; stat::COUNT as usize] = [
    "rx_frames",
    "dhcp_requests",
    "vlan_single",
    "vlan_double",
    "not_ipv4",
    "not_udp",
    "other_udp",
    "truncated",
    "fragment",
    "ip_options",
    "bad_ipv4",
];

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), made of integers and byte arrays, with
    // every padding byte spelled out as a field (checked by the layout tests).
    unsafe impl bytemuck::Zeroable for LeaseKey {}
    unsafe impl bytemuck::Pod for LeaseKey {}
    unsafe impl bytemuck::Zeroable for LeaseValue {}
    unsafe impl bytemuck::Pod for LeaseValue {}
    unsafe impl bytemuck::Zeroable for ReplyTemplate {}
    unsafe impl bytemuck::Pod for ReplyTemplate {}
    unsafe impl bytemuck::Zeroable for RenewEvent {}
    unsafe impl bytemuck::Pod for RenewEvent {}
    // aya has its own marker for map keys and values.
    unsafe impl aya::Pod for LeaseKey {}
    unsafe impl aya::Pod for LeaseValue {}
    unsafe impl aya::Pod for ReplyTemplate {}
    unsafe impl aya::Pod for RenewEvent {}
}

#[cfg(test)]
mod layout {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    /// Sum of field sizes equals the struct size: no hidden padding, which
    /// is what makes the Pod impls sound and both sides agree.
    macro_rules! no_hidden_padding {
        ($t:ty, $($f:ident : $ft:ty),+) => {{
            let sum = 0 $(+ size_of::<$ft>())+;
            assert_eq!(sum, size_of::<$t>(), concat!(stringify!($t), " has hidden padding"));
            let _ = |v: $t| { $(let _: $ft = v.$f;)+ };
        }};
    }

    #[test]
    fn lease_key() {
        assert_eq!(size_of::<LeaseKey>(), 36);
        assert_eq!(align_of::<LeaseKey>(), 1);
        assert_eq!(offset_of!(LeaseKey, kind), 0);
        assert_eq!(offset_of!(LeaseKey, len), 1);
        assert_eq!(offset_of!(LeaseKey, id), 4);
        no_hidden_padding!(LeaseKey, kind: u8, len: u8, _pad: [u8; 2], id: [u8; MAX_ID_LEN]);
    }

    #[test]
    fn lease_value() {
        assert_eq!(size_of::<LeaseValue>(), 40);
        assert_eq!(align_of::<LeaseValue>(), 8);
        assert_eq!(offset_of!(LeaseValue, expires_boot_ns), 0);
        assert_eq!(offset_of!(LeaseValue, ip), 8);
        assert_eq!(offset_of!(LeaseValue, subnet_id), 12);
        assert_eq!(offset_of!(LeaseValue, template_id), 16);
        assert_eq!(offset_of!(LeaseValue, lease_secs), 20);
        assert_eq!(offset_of!(LeaseValue, t1_secs), 24);
        assert_eq!(offset_of!(LeaseValue, t2_secs), 28);
        assert_eq!(offset_of!(LeaseValue, flags), 32);
        no_hidden_padding!(LeaseValue, expires_boot_ns: u64, ip: u32, subnet_id: u32,
            template_id: u32, lease_secs: u32, t1_secs: u32, t2_secs: u32, flags: u32, _pad: u32);
    }

    #[test]
    fn reply_template() {
        assert_eq!(size_of::<ReplyTemplate>(), 8 + TEMPLATE_OPTIONS_MAX);
        assert_eq!(align_of::<ReplyTemplate>(), 4);
        assert_eq!(offset_of!(ReplyTemplate, server_ip), 0);
        assert_eq!(offset_of!(ReplyTemplate, options_len), 4);
        assert_eq!(offset_of!(ReplyTemplate, options), 8);
        no_hidden_padding!(ReplyTemplate, server_ip: u32, options_len: u16, _pad: [u8; 2],
            options: [u8; TEMPLATE_OPTIONS_MAX]);
    }

    #[test]
    fn renew_event() {
        assert_eq!(size_of::<RenewEvent>(), 56);
        assert_eq!(align_of::<RenewEvent>(), 8);
        assert_eq!(offset_of!(RenewEvent, key), 0);
        assert_eq!(offset_of!(RenewEvent, ip), 36);
        assert_eq!(offset_of!(RenewEvent, expires_boot_ns), 40);
        assert_eq!(offset_of!(RenewEvent, ifindex), 48);
        assert_eq!(offset_of!(RenewEvent, outer_vlan), 52);
        assert_eq!(offset_of!(RenewEvent, inner_vlan), 54);
        no_hidden_padding!(RenewEvent, key: LeaseKey, ip: u32, expires_boot_ns: u64,
            ifindex: u32, outer_vlan: u16, inner_vlan: u16);
    }

    #[test]
    fn stat_names_cover_every_index() {
        assert_eq!(STAT_NAMES.len(), stat::COUNT as usize);
        for (i, a) in STAT_NAMES.iter().enumerate() {
            for b in &STAT_NAMES[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
