//! The benchmark harnesses' input (`dhcp-ebpf/src/bench.rs`, loaded by
//! `fastpath_cost`): the request every run restores, and which clients
//! to cycle through.

use crate::layout::MIN_FRAME_LEN;

/// The restored request: an untagged renewal of the BOOTP minimum size.
pub const FRAME_LEN: usize = MIN_FRAME_LEN;

/// The harnesses' base map.
pub const MAP_BASE: &str = "XDHCP_BENCH_BASE";

/// The programs the harnesses tail-call after the restore, and their
/// slots in that map.
pub const MAP_NEXT: &str = "XDHCP_BENCH_NEXT";
pub const NEXT_FAST: u32 = 0;
pub const NEXT_BARE: u32 = 1;
pub const NEXT_NOOP: u32 = 2;
/// The restore-only baseline's program in slot [`NEXT_NOOP`].
pub const NOOP_PROGRAM: &str = "xdhcp_bench_noop";

/// Client `i`'s hardware address, which the harnesses write into the
/// restored request.
#[inline(always)]
pub const fn client_mac(i: u32) -> [u8; 6] {
    crate::layout::eth::numbered_mac(0x20, i)
}

/// Value of [`MAP_BASE`] (its only entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    pub clients: u32,
    pub first: u32,
    /// The frame, in its first [`FRAME_LEN`] bytes; the rest keeps the
    /// value a whole number of words.
    pub data: [u8; FRAME_LEN + 2],
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn bench_frame() {
        assert_eq!(size_of::<BenchFrame>(), 352);
        assert_eq!(align_of::<BenchFrame>(), 4);
        assert_eq!(offset_of!(BenchFrame, first), 4);
        assert_eq!(offset_of!(BenchFrame, data), 8);
        no_hidden_padding!(BenchFrame, clients: u32, first: u32, data: [u8; FRAME_LEN + 2]);
    }
}
