//! Reads and writes of the frame and of map values in the forms the
//! verifier follows (see the parent module), and the ones'-complement
//! folds the checksums are built from.

use aya_ebpf::programs::XdpContext;
use dhcp_common::{layout::bootp, stat};

use super::{Scratch, M};

/// A fresh read of a scratch field: LLVM must not reuse a register copy,
/// whose range the verifier would have narrowed on some path and so tell
/// paths apart that are the same.
#[inline(always)]
pub(crate) fn vol(v: &u32) -> usize {
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
pub(crate) fn set(v: &mut u32, x: usize) {
    unsafe { core::ptr::write_volatile(v, x as u32) }
}

/// `p + size <= end`, in a form the verifier learns the range from: LLVM
/// would otherwise merge or rewrite the comparison (e.g. into pointer
/// differences) and the verifier would see no bound. The volatile read
/// hides the constant from LLVM; the verifier still knows it exactly.
#[inline(always)]
pub(crate) fn fits(p: usize, size: usize, end: usize) -> bool {
    opaque(p) + opaque(size) <= end
}

/// `v`, which LLVM can no longer see through (one register move; an
/// empty template would leave two line-info records on one instruction,
/// which the kernel refuses).
#[inline(always)]
pub(crate) fn opaque(mut v: usize) -> usize {
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack)) };
    v
}

// Word accesses to the frame and to map values at any byte offset. The
// pointers are typed as aligned on purpose: LLVM splits a load it believes
// misaligned into single bytes, while BPF on x86-64 and arm64 (efficient
// unaligned access) lets the verifier accept, and the JIT emit, one
// unaligned access; only the stack must be aligned, and these never point
// into it.
#[inline(always)]
pub(crate) fn ld8(p: usize) -> u8 {
    unsafe { core::ptr::read_volatile(p as *const u8) }
}

#[inline(always)]
pub(crate) fn ld16(p: usize) -> u16 {
    unsafe { core::ptr::read_volatile(p as *const u16) }
}

#[inline(always)]
pub(crate) fn ld32(p: usize) -> u32 {
    unsafe { core::ptr::read_volatile(p as *const u32) }
}

#[inline(always)]
pub(crate) fn ld64(p: usize) -> u64 {
    unsafe { core::ptr::read_volatile(p as *const u64) }
}

#[inline(always)]
pub(crate) fn st8(p: usize, v: u8) {
    unsafe { core::ptr::write_volatile(p as *mut u8, v) }
}

#[inline(always)]
pub(crate) fn st16(p: usize, v: u16) {
    unsafe { core::ptr::write_volatile(p as *mut u16, v) }
}

#[inline(always)]
pub(crate) fn st32(p: usize, v: u32) {
    unsafe { core::ptr::write_volatile(p as *mut u32, v) }
}

#[inline(always)]
pub(crate) fn st64(p: usize, v: u64) {
    unsafe { core::ptr::write_volatile(p as *mut u64, v) }
}

/// Where `off` is in the frame. Read back from the stack so LLVM cannot
/// fold the offset differently into the bounds check and the access (the
/// verifier would then see two unrelated pointers).
#[inline(always)]
pub(crate) fn at(ctx: &XdpContext, off: usize) -> usize {
    opaque(ctx.data() + (off & M))
}

/// The frame's byte at `off`.
#[inline(always)]
pub(crate) fn pk8(ctx: &XdpContext, off: usize) -> Result<u8, u32> {
    let p = at(ctx, off);
    if !fits(p, 1, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(unsafe { *(p as *const u8) })
}

/// The BOOTP payload, its fixed part and magic cookie in the frame.
#[inline(always)]
pub(crate) fn payload(ctx: &XdpContext, s: &Scratch) -> Result<usize, u32> {
    let p = ctx.data() + (vol(&s.b) & 0x3f);
    if !fits(p, bootp::OPTIONS, ctx.data_end()) {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(p)
}

#[inline(always)]
pub(crate) fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The halves of a memory-order word, for a ones'-complement sum.
#[inline(always)]
pub(crate) fn halves(w: u64) -> u64 {
    (w & 0xffff_ffff) + (w >> 32)
}

/// The low `n` bytes (memory order) of a word, the rest zero.
#[inline(always)]
pub(crate) fn low_bytes(w: u64, n: usize) -> u64 {
    if n >= 8 {
        w
    } else {
        w & ((1u64 << (8 * n)) - 1)
    }
}
