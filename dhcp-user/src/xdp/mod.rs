//! The XDP side seen from userspace: loading and attaching the program,
//! keeping its maps in step with the store, the clocks the two planes
//! share, pins that outlive a daemon, and layout upgrades.

pub mod clock;
pub mod loader;
pub mod map_sync;
pub mod pins;
pub mod rate_limits;
pub mod upgrade;
