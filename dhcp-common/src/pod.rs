//! Pod markers, so userspace can read and write these types in maps.

use super::*;
// SAFETY: all types are repr(C), made of integers and byte arrays, with
// every padding byte spelled out as a field (checked by the layout tests).
unsafe impl<const N: usize> bytemuck::Zeroable for IdKey<N> {}
unsafe impl<const N: usize> bytemuck::Pod for IdKey<N> {}
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
unsafe impl<const N: usize> aya::Pod for IdKey<N> {}
unsafe impl aya::Pod for LeaseValue {}
unsafe impl aya::Pod for ReplyTemplate {}
unsafe impl aya::Pod for RenewEvent {}
unsafe impl aya::Pod for Layout {}
#[cfg(not(feature = "layout-prev"))]
mod prev_pod {
    use crate::prev::LeaseValue;
    unsafe impl bytemuck::Zeroable for LeaseValue {}
    unsafe impl bytemuck::Pod for LeaseValue {}
    unsafe impl aya::Pod for LeaseValue {}
}
unsafe impl aya::Pod for rate::RateConf {}
unsafe impl aya::Pod for rate::ScopeKey {}
unsafe impl aya::Pod for rate::MacKey {}
unsafe impl aya::Pod for rate::LineKey {}
unsafe impl aya::Pod for rate::Bucket {}
unsafe impl bytemuck::Zeroable for gen::GenConfig {}
unsafe impl bytemuck::Pod for gen::GenConfig {}
unsafe impl aya::Pod for gen::GenConfig {}
unsafe impl bytemuck::Zeroable for bench::BenchFrame {}
unsafe impl bytemuck::Pod for bench::BenchFrame {}
unsafe impl aya::Pod for bench::BenchFrame {}
