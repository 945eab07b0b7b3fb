//! Types shared by the XDP program (`dhcp-ebpf`) and the control plane
//! (`dhcp-user`).
//!
//! Every type that crosses the kernel/user boundary is defined once, here, as
//! `#[repr(C)]` with explicit padding so that both compilers (bpfel and the
//! host) lay it out identically. The layout tests at the bottom pin sizes and
//! offsets: a change that moves a field breaks them before it breaks a map.
#![no_std]

pub mod rate;

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
/// element (48-byte kernel header, key, 56-byte value) is exactly two
/// cache lines.
#[cfg(not(feature = "layout-prev"))]
pub const MAX_ID_LEN: usize = 20;
/// The previous layout's (`prev`), for the test object built with it.
#[cfg(feature = "layout-prev")]
pub const MAX_ID_LEN: usize = prev::MAX_ID_LEN;

/// What [`LeaseKey::id`] holds.
pub mod id_kind {
    /// `id[0]` = htype, `id[1..len]` = chaddr (RFC 2131 default identity).
    pub const HWADDR: u8 = 1;
    /// `id[..len]` = option 61 payload (type byte included), RFC 2132 §9.14.
    pub const CLIENT_ID: u8 = 2;
}

/// Key of the lease map: the client's identity, zero-padded so that equal
/// identities hash equally whatever was in the packet past `len`.
#[cfg(not(feature = "layout-prev"))]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    pub kind: u8,
    pub len: u8,
    pub _pad: [u8; 2],
    pub id: [u8; MAX_ID_LEN],
}

#[cfg(not(feature = "layout-prev"))]
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

#[cfg(feature = "layout-prev")]
pub use prev::{LeaseKey, RenewEvent};

/// Value of the lease map: one active binding, and the request it was
/// last answered for. The XDP program answers only requests of the same
/// shape from the same place; anything else goes to the control plane.
///
/// Times are kept in the kernel's `CLOCK_MONOTONIC` domain (what
/// `bpf_ktime_get_coarse_ns` returns, at jiffy resolution; the cheapest
/// clock the program can read) because the kernel has no wall clock;
/// userspace converts wall-clock expiries when it writes the entry:
/// `mono_ns = now_mono_ns + (expiry_unix - now_unix) * 1e9`.
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
}

/// FNV-1a, 32 bits (the configuration fingerprint).
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
pub const FNV_PRIME: u32 = 0x0100_0193;

pub fn fnv1a(bytes: &[u8]) -> u32 {
    fnv1a_more(FNV_OFFSET, bytes)
}

pub fn fnv1a_more(mut h: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The shape hash: FNV-1a's 64-bit constants over little-endian 64-bit
/// words (the last one zero-padded), so the XDP program hashes a word per
/// step instead of a byte.
pub const SHAPE_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const SHAPE_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn shape_hash_more(mut h: u64, bytes: &[u8]) -> u64 {
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(SHAPE_PRIME);
    }
    h
}

/// Folds the 64-bit state into what the lease map keeps.
pub const fn shape_hash_finish(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Fingerprint of what makes a reply template fit a request beyond the
/// lengths kept beside it: the parameter request list and the relay agent
/// information (its sub-options may select the subnet). Lengths are
/// compared separately, so hashing the two back to back is unambiguous.
pub fn shape_hash(prl: &[u8], relay_info: &[u8]) -> u32 {
    shape_hash_finish(shape_hash_more(
        shape_hash_more(SHAPE_OFFSET, prl),
        relay_info,
    ))
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

/// Sum of `bytes` as little-endian 16-bit words (what a little-endian
/// CPU reads from memory), zero-padded, carries folded into 32 bits.
pub fn options_sum(bytes: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(pair[0]) | u64::from(*pair.get(1).unwrap_or(&0)) << 8;
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// Record the fast path pushes to userspace (ring buffer) for every renewal
/// it answered, so the lease store can persist the new expiry.
#[cfg(not(feature = "layout-prev"))]
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

/// The IPv4 header of every reply, written by the XDP program
/// (`dhcp-ebpf/src/fast.rs`) and by the control plane
/// (`dhcp-user/src/wire.rs`, `build_frame`) alike, so both planes put the
/// same frame on the wire (README, "Reply addressing").
///
/// - Version 4, no options, TOS 0, TTL 64, protocol UDP.
/// - **DF clear.** Neither plane can learn a path MTU: the XDP program sees
///   no ICMP, and frames from a packet socket bypass the kernel's PMTU
///   cache. A reply too big for a link on the way to a relay is better
///   fragmented by that link than dropped there for good (DHCP retries the
///   same size). Replies fit the client's maximum message size (at least
///   576) anyway.
/// - **Identification: the request's xid folded to 16 bits** ([`id`]). A
///   datagram that may be fragmented needs an id that differs from other
///   datagrams between the same addresses (RFC 6864 §4.2); one derived from
///   the transaction differs per transaction, costs the kernel no shared
///   counter, and is the same on both planes. Retransmissions of one
///   transaction share it, which only matters if two different replies
///   to the same request are fragmented and in flight at once.
/// - Source: [`reply_source`].
pub mod reply_ip {
    /// Version 4, IHL 5.
    pub const VERSION_IHL: u8 = 0x45;
    pub const TOS: u8 = 0;
    pub const TTL: u8 = 64;
    pub const PROTO_UDP: u8 = 17;
    /// See the module documentation.
    pub const DONT_FRAGMENT: bool = false;
    /// Flags and fragment offset (host order): DF or nothing.
    pub const FLAGS_FRAGMENT: u16 = if DONT_FRAGMENT { 0x4000 } else { 0 };
    /// The header's first and fifth 16-bit words (host order), as written
    /// and as summed for the checksum.
    pub const VERSION_IHL_TOS: u16 = (VERSION_IHL as u16) << 8 | TOS as u16;
    pub const TTL_PROTO: u16 = (TTL as u16) << 8 | PROTO_UDP as u16;

    /// Identification of the reply to the request with `xid` (as a number,
    /// the field read big-endian).
    #[inline(always)]
    pub const fn id(xid: u32) -> u16 {
        (xid >> 16) as u16 ^ xid as u16
    }

    /// Where a reply leaves from.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Source {
        /// The server identifier: replies to directly connected clients
        /// (RFC 2131 §4.1, whatever address they sent to), and replies to
        /// relays that sent to it.
        ServerId,
        /// The address the relay sent its request to, another address of
        /// this host.
        RequestDestination,
        /// The relay sent to an address that is not this host's (a
        /// broadcast, an address since removed): the server identifier.
        ServerIdNotLocal,
    }

    /// The source of a reply: a reply to a relay leaves from the address
    /// the relay sent the request to, so relays (and firewalls in front of
    /// them) that accept replies only from the server address they are
    /// configured with accept it, whatever the route back to giaddr. The
    /// XDP program answers relayed requests only when that address is the
    /// server identifier (`stat::PASS_OTHER_ADDRESS` otherwise), so it
    /// always gets [`Source::ServerId`]; `is_local` is asked only when the
    /// request went elsewhere.
    pub fn reply_source(
        relayed: bool,
        request_dst: [u8; 4],
        server_id: [u8; 4],
        is_local: impl FnOnce([u8; 4]) -> bool,
    ) -> Source {
        if !relayed || request_dst == server_id {
            Source::ServerId
        } else if is_local(request_dst) {
            Source::RequestDestination
        } else {
            Source::ServerIdNotLocal
        }
    }

    /// The 20 bytes of a reply's header, checksum included. `udp_len` is
    /// the UDP header plus payload.
    pub fn header(src: [u8; 4], dst: [u8; 4], udp_len: u16, xid: u32) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = VERSION_IHL;
        h[1] = TOS;
        h[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        h[4..6].copy_from_slice(&id(xid).to_be_bytes());
        h[6..8].copy_from_slice(&FLAGS_FRAGMENT.to_be_bytes());
        h[8] = TTL;
        h[9] = PROTO_UDP;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = super::internet_checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }
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
    /// Fast-path ACKs by client state.
    pub const FP_ACK_RENEWING: u32 = 11;
    pub const FP_ACK_REBINDING: u32 = 12;
    pub const FP_ACK_INIT_REBOOT: u32 = 13;
    /// DHCP requests passed to the control plane, by reason.
    pub const PASS_NOT_REQUEST: u32 = 14;
    pub const PASS_MALFORMED: u32 = 15;
    pub const PASS_UNUSUAL: u32 = 16;
    pub const PASS_SELECTING: u32 = 17;
    pub const PASS_UNKNOWN_CLIENT: u32 = 18;
    pub const PASS_WRONG_ADDRESS: u32 = 19;
    pub const PASS_EXPIRED: u32 = 20;
    pub const PASS_WRONG_SCOPE: u32 = 21;
    pub const PASS_SHAPE_CHANGED: u32 = 22;
    pub const PASS_NO_TEMPLATE: u32 = 23;
    pub const PASS_TOO_BIG: u32 = 24;
    /// Renewal passed to the control plane: its event could not be queued
    /// (ring full), and the kernel answers only what the store will hear of.
    pub const EVENT_LOST: u32 = 25;
    /// Frames dropped because a helper failed halfway through a rewrite.
    pub const DROPPED: u32 = 26;
    /// A relayed request sent to an address other than the server
    /// identifier: the control plane answers it from that address
    /// ([`crate::reply_ip::reply_source`]).
    pub const PASS_OTHER_ADDRESS: u32 = 27;
    /// A reply longer than its request that the frame could not grow
    /// into, at the tail or (moving the request forward) at the head: a
    /// driver that gives XDP neither tailroom nor headroom.
    pub const PASS_NO_ROOM: u32 = 28;
    /// Renewals shorter than their reply, grown at the head because the
    /// driver left no tailroom (veth, for frames from the kernel's stack
    /// or a packet socket): answered, at the cost of a copy.
    pub const GREW_AT_HEAD: u32 = 29;
    /// A known client's DISCOVER, offered its binding.
    pub const FP_OFFER: u32 = 30;
    /// A known client's SELECTING REQUEST for its binding, ACKed.
    pub const FP_ACK_SELECTING: u32 = 31;
    /// A DISCOVER from a client whose binding the control plane would not
    /// offer it (a reservation of the client's elsewhere, or a binding
    /// stored by an older version).
    pub const PASS_NOT_OFFERABLE: u32 = 32;
    /// Dropped in the driver: the client MAC's bucket was empty
    /// ([`crate::rate`]).
    pub const RATE_LIMITED_MAC: u32 = 33;
    /// Dropped in the driver: the subscriber line's bucket was empty.
    pub const RATE_LIMITED_LINE: u32 = 34;
    pub const COUNT: u32 = 35;
}

/// The per-CPU value of `MAP_STATS` (its only entry): every counter,
/// indexed by [`stat`].
pub type Stats = [u64; stat::COUNT as usize];

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
    "fp_ack_renewing",
    "fp_ack_rebinding",
    "fp_ack_init_reboot",
    "pass_not_request",
    "pass_malformed",
    "pass_unusual",
    "pass_selecting",
    "pass_unknown_client",
    "pass_wrong_address",
    "pass_expired",
    "pass_wrong_scope",
    "pass_shape_changed",
    "pass_no_template",
    "pass_too_big",
    "event_lost",
    "dropped",
    "pass_other_address",
    "pass_no_room",
    "grew_at_head",
    "fp_offer",
    "fp_ack_selecting",
    "pass_not_offerable",
    "rate_limited_mac",
    "rate_limited_line",
];

/// The load generator's XDP side (`xdhcp-loadgen --engine xdp`): a sender
/// run by `BPF_PROG_TEST_RUN` in live-frames mode, and a receiver attached
/// to the generator's interface that matches and checks every reply.
pub mod gen {
    pub const MAP_CONFIG: &str = "XDHCP_GEN_CONFIG";
    pub const MAP_CLIENTS: &str = "XDHCP_GEN_CLIENTS";
    pub const MAP_SENT: &str = "XDHCP_GEN_SENT";
    pub const MAP_STATS: &str = "XDHCP_GEN_STATS";
    pub const MAP_LATENCY: &str = "XDHCP_GEN_LATENCY";
    pub const TX_PROGRAM: &str = "xdhcp_gen";
    pub const RX_PROGRAM: &str = "xdhcp_gen_rx";

    /// Every request the sender builds is this long (Ethernet + IPv4 + UDP +
    /// a 300-byte BOOTP payload): live-frames mode wants a fixed size.
    pub const FRAME_LEN: usize = 342;
    /// Client index in the low 24 bits of the xid, the run's epoch above.
    pub const MAX_CLIENTS: u32 = 1 << 24;

    /// What the receiver expects back.
    pub mod expect {
        /// A DHCPACK for the client's address (type, yiaddr, chaddr,
        /// server identifier and lease time checked).
        pub const ACK: u32 = 0;
        /// The request itself, bounced (the ceiling's bare program).
        pub const BOUNCE: u32 = 1;
    }

    /// Counters (per CPU).
    pub mod stat {
        pub const SENT: u32 = 0;
        /// Replies that matched an outstanding request and passed the checks.
        pub const OK: u32 = 1;
        pub const NAK: u32 = 2;
        /// Matched by xid, but wrong type, address, chaddr or options.
        pub const WRONG: u32 = 3;
        /// A second reply to one request.
        pub const DUPLICATE: u32 = 4;
        /// Another run's xid, or an index out of range.
        pub const STRAY: u32 = 5;
        /// Matched, but after the run's timeout (also counted in OK/NAK).
        pub const LATE: u32 = 6;
        /// Sender could not build a frame (helper failed).
        pub const SEND_FAILED: u32 = 7;
        pub const COUNT: u32 = 8;
    }
    pub const STAT_NAMES: [&str; stat::COUNT as usize] = [
        "sent",
        "ok",
        "nak",
        "wrong",
        "duplicate",
        "stray",
        "late",
        "send_failed",
    ];

    /// Client `i`'s hardware address (sender, receiver and userspace).
    #[inline(always)]
    pub fn client_mac(i: u32) -> [u8; 6] {
        [
            0x02,
            0x44,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]
    }

    /// Latency histogram: exact below 8 ns, then four buckets per power of
    /// two (`4 * log2(ns) + the next two bits - 4`), up to ~18 minutes.
    pub const LATENCY_BUCKETS: u32 = 4 * 40;

    /// Lower bound, in ns, of a latency bucket.
    pub const fn bucket_floor_ns(b: u32) -> u64 {
        if b < 8 {
            return b as u64;
        }
        let e = (b + 4) / 4;
        let m = ((b + 4) % 4) as u64;
        (1u64 << e) + (m << (e - 2))
    }

    #[inline(always)]
    pub fn bucket_of(ns: u64) -> u32 {
        if ns < 8 {
            return ns as u32;
        }
        let e = 63 - ns.leading_zeros();
        let m = ((ns >> (e - 2)) & 3) as u32;
        let b = e * 4 + m - 4;
        if b >= LATENCY_BUCKETS {
            LATENCY_BUCKETS - 1
        } else {
            b
        }
    }

    /// The sender's configuration (array of one).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct GenConfig {
        /// A reply later than this after its request counts as late.
        pub timeout_ns: u64,
        pub clients: u32,
        /// Clients are cycled by `cursor * stride + cpu % stride`, so each
        /// sending thread (one per CPU) walks its own share.
        pub stride: u32,
        pub epoch: u32,
        /// `kind::*`.
        pub kind: u32,
        /// `expect::*`.
        pub expect: u32,
        /// Offset of option 50's value in `frame` (INIT-REBOOT), else 0.
        pub requested_ip_off: u32,
        /// Network byte order.
        pub server_ip: u32,
        /// The request with every per-client field zero.
        pub frame: [u8; FRAME_LEN + 2],
        /// [`kind::FLOOD`]: offsets in `frame` of option 53's value and of
        /// option 54, which every other frame turns into a DISCOVER (53 =
        /// 1, 54 padded out).
        pub msg_type_off: u16,
        pub server_id_off: u16,
    }

    pub mod kind {
        /// Unicast to the server, ciaddr set (RFC 2131 RENEWING).
        pub const RENEWING: u32 = 0;
        /// Broadcast, ciaddr set.
        pub const REBINDING: u32 = 1;
        /// Broadcast, ciaddr 0, option 50.
        pub const INIT_REBOOT: u32 = 2;
        /// A flood from random MACs: SELECTING REQUESTs (50 = the client's
        /// address, 54 the server) and DISCOVERs, alternately.
        pub const FLOOD: u32 = 3;
    }
}

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
    unsafe impl bytemuck::Zeroable for IfaceInfo {}
    unsafe impl bytemuck::Pod for IfaceInfo {}
    unsafe impl aya::Pod for IfaceInfo {}
    // aya has its own marker for map keys and values.
    unsafe impl aya::Pod for LeaseKey {}
    unsafe impl aya::Pod for LeaseValue {}
    unsafe impl aya::Pod for ReplyTemplate {}
    unsafe impl aya::Pod for RenewEvent {}
    unsafe impl aya::Pod for Layout {}
    #[cfg(not(feature = "layout-prev"))]
    mod prev_pod {
        use crate::prev::{LeaseKey, RenewEvent};
        unsafe impl bytemuck::Zeroable for LeaseKey {}
        unsafe impl bytemuck::Pod for LeaseKey {}
        unsafe impl bytemuck::Zeroable for RenewEvent {}
        unsafe impl bytemuck::Pod for RenewEvent {}
        unsafe impl aya::Pod for LeaseKey {}
    }
    unsafe impl aya::Pod for rate::RateConf {}
    unsafe impl aya::Pod for rate::ScopeKey {}
    unsafe impl aya::Pod for rate::MacKey {}
    unsafe impl aya::Pod for rate::LineKey {}
    unsafe impl aya::Pod for rate::Bucket {}
    unsafe impl bytemuck::Zeroable for gen::GenConfig {}
    unsafe impl bytemuck::Pod for gen::GenConfig {}
    unsafe impl aya::Pod for gen::GenConfig {}
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
        assert_eq!(size_of::<LeaseKey>(), 24);
        assert_eq!(align_of::<LeaseKey>(), 1);
        assert_eq!(offset_of!(LeaseKey, kind), 0);
        assert_eq!(offset_of!(LeaseKey, len), 1);
        assert_eq!(offset_of!(LeaseKey, id), 4);
        no_hidden_padding!(LeaseKey, kind: u8, len: u8, _pad: [u8; 2], id: [u8; MAX_ID_LEN]);
    }

    #[test]
    fn lease_value() {
        assert_eq!(size_of::<LeaseValue>(), 56);
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
        no_hidden_padding!(LeaseValue, expires_mono_ns: u64, reported_mono_ns: u64, ip: u32, subnet_id: u32,
            template_id: u32, lease_secs: u32, ifindex: u32, outer_vlan: u16, inner_vlan: u16,
            giaddr: u32, shape_hash: u32, prl_len: u16, max_message_size: u16,
            client_id_len: u8, relay_info_len: u8, flags: u16);
    }

    #[test]
    fn gen_config() {
        use gen::{GenConfig, FRAME_LEN};
        assert_eq!(size_of::<GenConfig>(), 384);
        no_hidden_padding!(GenConfig, timeout_ns: u64, clients: u32, stride: u32, epoch: u32,
            kind: u32, expect: u32, requested_ip_off: u32, server_ip: u32,
            frame: [u8; FRAME_LEN + 2], msg_type_off: u16, server_id_off: u16);
    }

    #[test]
    fn latency_buckets() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            65_535,
            (1 << 39) + 5,
        ] {
            let b = gen::bucket_of(ns);
            assert!(b < gen::LATENCY_BUCKETS, "{ns}");
            assert!(gen::bucket_floor_ns(b) <= ns, "{ns}");
            assert!(gen::bucket_floor_ns(b + 1) > ns, "{ns}");
        }
    }

    #[test]
    fn iface_info() {
        assert_eq!(size_of::<IfaceInfo>(), 12);
        assert_eq!(offset_of!(IfaceInfo, server_ip), 8);
        no_hidden_padding!(IfaceInfo, mac: [u8; 6], _pad: [u8; 2], server_ip: u32);
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn shape_hash_words() {
        // One word per step, the last zero-padded; the two parts chain.
        let one = (SHAPE_OFFSET ^ 0x0003_0201).wrapping_mul(SHAPE_PRIME);
        assert_eq!(shape_hash(&[1, 2, 3], &[]), shape_hash_finish(one));
        assert_eq!(shape_hash(&[1, 2, 3, 0], &[]), shape_hash(&[1, 2, 3], &[]));
        assert_ne!(shape_hash(&[1, 2, 3], &[4]), shape_hash(&[1, 2, 3, 4], &[]));
        let nine = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let two =
            (SHAPE_OFFSET ^ u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])).wrapping_mul(SHAPE_PRIME);
        let two = (two ^ 9).wrapping_mul(SHAPE_PRIME);
        assert_eq!(shape_hash(&nine, &[]), shape_hash_finish(two));
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
    fn layout_record_keeps_its_shape() {
        // Every daemon must read every other's record.
        assert_eq!(size_of::<Layout>(), 32);
        no_hidden_padding!(Layout, version: u32, lease_key: u32, lease_value: u32, template: u32,
            iface: u32, renew_event: u32, stats: u32, _reserved: u32);
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

    #[test]
    fn reply_header_words_are_the_ones_the_xdp_program_sums() {
        use reply_ip::*;
        let h = header([198, 18, 0, 1], [198, 18, 2, 1], 308, 0x1234_abcd);
        assert_eq!(internet_checksum(&[&h]), 0);
        assert_eq!(u16::from_be_bytes([h[0], h[1]]), VERSION_IHL_TOS);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 328);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0x1234 ^ 0xabcd);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), FLAGS_FRAGMENT);
        assert_eq!(h[6] & 0x40 != 0, DONT_FRAGMENT);
        assert_eq!(u16::from_be_bytes([h[8], h[9]]), TTL_PROTO);
        // The fast path's checksum: the constant words plus length, id
        // and addresses, folded.
        let words: u32 = u32::from(VERSION_IHL_TOS)
            + 328
            + u32::from(id(0x1234_abcd))
            + u32::from(FLAGS_FRAGMENT)
            + u32::from(TTL_PROTO)
            + 0xc612
            + 0x0001
            + 0xc612
            + 0x0201;
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(!(folded as u16), u16::from_be_bytes([h[10], h[11]]));
    }

    #[test]
    fn reply_sources() {
        use reply_ip::{reply_source, Source};
        let sid = [198, 18, 0, 1];
        let other = [198, 18, 1, 1];
        let never = |_: [u8; 4]| -> bool { panic!("locality asked needlessly") };
        assert_eq!(reply_source(false, other, sid, never), Source::ServerId);
        assert_eq!(reply_source(true, sid, sid, never), Source::ServerId);
        assert_eq!(
            reply_source(true, other, sid, |a| a == other),
            Source::RequestDestination
        );
        assert_eq!(
            reply_source(true, [255; 4], sid, |_| false),
            Source::ServerIdNotLocal
        );
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
