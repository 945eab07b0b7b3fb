//! DHCP logic with no I/O: the RFC 2131 state machine, the lease table and
//! its allocation, option resolution, client classes and subscriber identity.

pub mod classes;
pub mod leases;
pub mod server;
pub mod subscriber;
