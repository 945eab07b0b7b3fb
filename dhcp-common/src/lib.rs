//! Types shared by the XDP program (`dhcp-ebpf`) and the control plane
//! (`dhcp-user`).
//!
//! Every type that crosses the kernel/user boundary is defined once, here, as
//! `#[repr(C)]` with explicit padding so that both compilers (bpfel and the
//! host) lay it out identically. The layout tests beside each pin sizes and
//! offsets: a change that moves a field breaks them before it breaks a map.
//! Every item is also re-exported at the crate root, where users name it.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;
#[cfg(feature = "packet-socket")]
extern crate std;

/// Sum of field sizes equals the struct size: no hidden padding, which
/// is what makes the Pod impls sound and both sides agree.
#[cfg(test)]
macro_rules! no_hidden_padding {
    ($t:ty, $($f:ident : $ft:ty),+) => {{
        let sum = 0 $(+ core::mem::size_of::<$ft>())+;
        assert_eq!(sum, core::mem::size_of::<$t>(), concat!(stringify!($t), " has hidden padding"));
        let _ = |v: $t| { $(let _: $ft = v.$f;)+ };
    }};
}

pub mod bench;
mod checksum;
pub mod gen;
mod hash;
pub mod hex;
pub mod layout;
mod maps;
#[cfg(feature = "packet-socket")]
pub mod packet_socket;
mod pinned;
#[cfg(feature = "user")]
mod pod;
pub mod rate;
pub mod reply_ip;
mod stats;

pub use checksum::{internet_checksum, options_sum};
pub use hash::{
    fnv1a, fnv1a_more, shape_hash, shape_hash_finish, shape_hash_more, FNV_OFFSET, FNV_PRIME,
    SHAPE_OFFSET, SHAPE_PRIME,
};
pub use layout::{
    id_kind, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP,
    ETH_P_QINQ_9100,
};
pub use maps::*;
pub use pinned::{prev, Layout, LAYOUT_VERSION, MAP_LAYOUT};
pub use stats::{stat, Stats, STAT_NAMES};
