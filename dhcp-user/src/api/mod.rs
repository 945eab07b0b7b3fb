//! How operators and tools reach the daemon: the control socket, what each
//! command does, the Prometheus endpoint, and the CLI's rendering of replies.

pub mod cli;
pub mod commands;
pub mod control;
pub mod lease_table;
pub mod metrics;
pub mod text;
