//! Structured logs through `tracing`; `log` records (aya-log's XDP messages
//! among them) are bridged in so they share the format and the filter.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// `level` is a tracing filter directive; `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    let _ = tracing_log::LogTracer::init();
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether debug events would be recorded: decides if the XDP program's
/// debug messages are switched on at load.
pub fn debug_enabled() -> bool {
    tracing::enabled!(target: "dhcp_ebpf", tracing::Level::DEBUG)
}
