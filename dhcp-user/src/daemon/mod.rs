//! `xdhcp serve` as a process: the run loop and the state it drives, the
//! committer that orders store and map writes, request queues, sockets and
//! the transmit path, and logging.

pub mod auditor;
pub mod backlog;
pub mod commit;
pub mod engine;
pub mod logging;
pub mod serve;
pub mod sockets;
pub mod transmit;
