//! Frame parsing for the XDP program: Ethernet, up to two VLAN tags, IPv4
//! and UDP. Pure functions over the packet bounds so they stay small and
//! verifier-friendly: every read is preceded by a bounds check against
//! `data_end` on the same pointer.

use core::mem::size_of;

use dhcp_common::{
    layout::{eth, ipv4, udp},
    stat, DHCP_SERVER_PORT, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_QINQ_9100,
};

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: u16,
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub ether_type: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

// The typed views are the layout's headers, byte for byte.
const _: () = {
    assert!(size_of::<EthHdr>() == eth::HEADER_LEN);
    assert!(size_of::<VlanHdr>() == eth::VLAN_TAG_LEN);
    assert!(size_of::<Ipv4Hdr>() == ipv4::MIN_HEADER_LEN);
    assert!(core::mem::offset_of!(Ipv4Hdr, saddr) == ipv4::SRC.start);
    assert!(size_of::<UdpHdr>() == udp::HEADER_LEN);
    assert!(core::mem::offset_of!(UdpHdr, dest) == udp::DST_PORT.start);
};

/// A pointer to a `T` at `off` bytes into the frame, if the frame holds it.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, off: usize) -> Option<*const T> {
    let start = data + off;
    if start + size_of::<T>() > data_end {
        return None;
    }
    Some(start as *const T)
}

/// Where the headers of an IPv4/UDP frame sit, and what tags it carried.
pub struct Frame {
    pub l3_off: usize,
    pub l4_off: usize,
    /// Number of VLAN tags (0, 1 or 2).
    pub tags: u8,
    /// VLAN IDs (12 bits), 0 when absent.
    pub outer_vlan: u16,
    pub inner_vlan: u16,
    pub ip_options: bool,
}

/// Outcome of [`parse`]: the frame as far as it could be read, and the
/// stats index that classifies it.
pub struct Parsed {
    pub frame: Frame,
    pub class: u32,
}

#[inline(always)]
fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_9100
}

/// Classifies a frame. `class` is one of `stat::DHCP_REQUESTS`,
/// `NOT_IPV4`, `NOT_UDP`, `OTHER_UDP`, `TRUNCATED`, `FRAGMENT`, `BAD_IPV4`.
#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Parsed {
    let mut frame = Frame {
        l3_off: 0,
        l4_off: 0,
        tags: 0,
        outer_vlan: 0,
        inner_vlan: 0,
        ip_options: false,
    };
    let class = parse_into(data, data_end, &mut frame);
    Parsed { frame, class }
}

#[inline(always)]
fn parse_into(data: usize, data_end: usize, frame: &mut Frame) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return stat::TRUNCATED;
    };
    let mut ethertype = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = eth::HEADER_LEN;

    if is_vlan_tpid(ethertype) {
        let Some(tag) = ptr_at::<VlanHdr>(data, data_end, off) else {
            return stat::TRUNCATED;
        };
        frame.tags = 1;
        frame.outer_vlan = u16::from_be(unsafe { (*tag).tci }) & 0x0fff;
        ethertype = u16::from_be(unsafe { (*tag).ether_type });
        off += eth::VLAN_TAG_LEN;
        if is_vlan_tpid(ethertype) {
            let Some(tag) = ptr_at::<VlanHdr>(data, data_end, off) else {
                return stat::TRUNCATED;
            };
            frame.tags = 2;
            frame.inner_vlan = u16::from_be(unsafe { (*tag).tci }) & 0x0fff;
            ethertype = u16::from_be(unsafe { (*tag).ether_type });
            off += eth::VLAN_TAG_LEN;
        }
    }
    // A third tag (or anything not IPv4) is not ours to parse.
    if ethertype != ETH_P_IP {
        return stat::NOT_IPV4;
    }

    frame.l3_off = off;
    let Some(ip) = ptr_at::<Ipv4Hdr>(data, data_end, off) else {
        return stat::TRUNCATED;
    };
    let vihl = unsafe { (*ip).vihl };
    let ihl = (vihl & 0x0f) as usize * 4;
    if vihl >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN {
        return stat::BAD_IPV4;
    }
    let tot_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
    if tot_len < ihl {
        return stat::BAD_IPV4;
    }
    // MF set or a non-zero offset: a fragment, whose UDP header may be
    // elsewhere. The kernel reassembles; we never look inside.
    if u16::from_be(unsafe { (*ip).frag_off }) & 0x3fff != 0 {
        return stat::FRAGMENT;
    }
    if unsafe { (*ip).proto } != ipv4::PROTO_UDP {
        return stat::NOT_UDP;
    }
    frame.ip_options = ihl > ipv4::MIN_HEADER_LEN;
    // Compared as packet pointers: the verifier refuses `data_end - data`
    // from unprivileged-but-CAP_BPF loaders.
    if data + off + tot_len > data_end {
        return stat::TRUNCATED;
    }
    // ihl is at most 60, which keeps the offset bounded for the verifier.
    off += ihl;
    frame.l4_off = off;
    let Some(udp) = ptr_at::<UdpHdr>(data, data_end, off) else {
        return stat::TRUNCATED;
    };
    if tot_len < ihl + udp::HEADER_LEN {
        return stat::BAD_IPV4;
    }
    if u16::from_be(unsafe { (*udp).dest }) != DHCP_SERVER_PORT {
        return stat::OTHER_UDP;
    }
    stat::DHCP_REQUESTS
}
