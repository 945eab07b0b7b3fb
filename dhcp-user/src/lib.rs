//! xdhcp: a DHCPv4 server whose XDP program answers renewals in the driver.
//! This library is what the `xdhcp` binary, the integration tests and the
//! benchmarks share.

pub mod config;
pub mod fastpath;
pub mod fixture;
pub mod logging;
pub mod serve;
