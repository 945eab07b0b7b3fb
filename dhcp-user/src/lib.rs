//! xdhcp: a DHCPv4 server whose XDP program answers renewals in the driver.
//! This library is what the `xdhcp` binary, the integration tests and the
//! benchmarks share.

pub mod audit;
pub mod auditor;
pub mod backlog;
pub mod classes;
pub mod clock;
pub mod commands;
pub mod commit;
pub mod config;
pub mod control;
pub mod egress;
pub mod engine;
pub mod fastmap;
pub mod fastpath;
pub mod fixture;
pub mod leases;
pub mod logging;
pub mod metrics;
pub mod packet;
pub mod pins;
pub mod ratelimit;
pub mod serve;
pub mod server;
pub mod store;
pub mod subscriber;
pub mod upgrade;
pub mod wire;
