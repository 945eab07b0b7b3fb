//! xdhcp: a DHCPv4 server whose XDP program answers renewals in the driver.
//! This library is what the `xdhcp` binary, the integration tests and the
//! benchmarks share. ARCHITECTURE.md maps its folders and a request's path.

pub mod api;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod lease;
pub mod proto;
pub mod store;
pub mod xdp;
