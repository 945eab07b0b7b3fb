//! Configuration: TOML, validated up front, rejected with file, line and
//! reason.
//!
//! Two layers, dora-style. `raw` holds the tables as written (serde types
//! denying unknown keys); the leaves written as text that the server uses
//! parsed (reservation identities, custom option values, class
//! expressions, `domain_search`) become `checked` types through `TryFrom`
//! as they are read, so a parsed `Config` holds only parsed values and a
//! value that does not parse fails `Config::parse` at its table's (or
//! value's) line. `check` then holds what the whole must satisfy beyond
//! its types (addresses inside their subnets, nothing twice, timers
//! ordered across levels...); `values`, `ident` and `expr` are the one
//! parser of each value written as text. Nothing here imports the server,
//! the stores or the wire code: they import what they need from here.

use std::path::Path;

mod check;
mod checked;
mod database;
mod error;
mod expr;
mod ident;
mod limits;
mod options;
mod rate_limits;
mod raw;
mod values;

pub use checked::{
    ClassTable, ClientClass, CustomOption, CustomOptionTable, Identity, Reservation,
    ReservationTable,
};
pub use database::DatabaseConfig;
pub use error::ConfigError;
pub use expr::{Expr, ExprError, Field, Op};
pub use ident::{relay_bytes, reservation_identity, ReservationId};
pub use limits::{
    Caps, Limits, Relay, RelayTrust, DEFAULT_DECLINES_PER_CLIENT, DEFAULT_DECLINES_PER_LINE,
};
pub use options::DEFAULT_LEASE_SECS;
pub use rate_limits::{RateLimits, DEFAULT_BURST_LINE, DEFAULT_BURST_MAC, MAX_BURST, MAX_PER_SEC};
pub use raw::*;
pub use values::{
    encode_domain_list, encode_option_value, parse_hex, DomainList, Ipv4Net, MetricsAddress,
};

/// The embedded default: the demo lab's server side (interface `srv0`,
/// addresses from the benchmarking range 198.18.0.0/15).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            line: 0,
            column: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| error::line_col(text, s.start));
            ConfigError {
                source_name: source_name.to_string(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })?;
        config.validate(text, source_name)?;
        Ok(config)
    }

    /// The checks a file gets after it is read, for a configuration
    /// changed in memory (reservations added through the control API,
    /// whose identities `Reservation::new` has parsed).
    pub fn validate_reservations(&self) -> Result<(), String> {
        self.validate("", "control API").map_err(|e| e.reason)
    }

    pub fn default_config() -> Config {
        Self::parse(DEFAULT_CONFIG, "<embedded default>").expect("embedded default config is valid")
    }
}

#[cfg(test)]
mod tests;
