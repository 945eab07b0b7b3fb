//! Configuration: TOML, validated up front, rejected with file, line and
//! reason. Every table denies unknown keys so a typo never silently falls
//! back to a default.

use std::{fmt, net::Ipv4Addr, path::Path};

use serde::Deserialize;

/// The embedded default: the demo lab's server side (interface `srv0`,
/// addresses from the benchmarking range 198.18.0.0/15).
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub logging: Logging,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Server identifier (option 54) and source address of replies.
    pub server_id: Ipv4Addr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// Where the XDP program runs on this interface.
    #[serde(default)]
    pub xdp: XdpSetting,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpSetting {
    /// In the driver; falls back to generic (with a warning) where the
    /// driver has no XDP support.
    #[default]
    Native,
    /// Generic (skb) mode only.
    Generic,
    /// No XDP program on this interface: the control plane answers all.
    Off,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. "info" or "xdhcp=debug".
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A configuration error, located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source_name: String,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source_name, self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, self.line, self.column, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Finds the line of the `index`-th `[[table]]` header, for errors that are
/// only found after parsing (e.g. a duplicate interface).
fn table_line(text: &str, table: &str, index: usize) -> usize {
    let header = format!("[[{table}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&header))
        .nth(index)
        .map_or(0, |(n, _)| n + 1)
}

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
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
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

    fn validate(&self, text: &str, source_name: &str) -> Result<(), ConfigError> {
        let err = |line: usize, reason: String| ConfigError {
            source_name: source_name.to_string(),
            line,
            column: if line == 0 { 0 } else { 1 },
            reason,
        };
        if self.interfaces.is_empty() {
            return Err(err(0, "no [[interface]]: nothing to serve".into()));
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            let line = table_line(text, "interface", i);
            if iface.name.is_empty() || iface.name.len() > 15 || iface.name.contains('/') {
                return Err(err(
                    line,
                    format!(
                        "interface name {:?} is not a valid Linux interface name (1-15 characters, no '/')",
                        iface.name
                    ),
                ));
            }
            if self.interfaces[..i].iter().any(|o| o.name == iface.name) {
                return Err(err(
                    line,
                    format!("interface {:?} listed twice", iface.name),
                ));
            }
        }
        let sid = self.server.server_id;
        if sid.is_unspecified() || sid.is_broadcast() || sid.is_multicast() {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("server_id"))
                .map_or(0, |n| n + 1);
            return Err(err(
                line,
                format!("server_id {sid} is not a unicast address"),
            ));
        }
        Ok(())
    }

    pub fn default_config() -> Config {
        Self::parse(DEFAULT_CONFIG, "<embedded default>").expect("embedded default config is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::default_config();
        assert_eq!(c.interfaces[0].name, "srv0");
        assert_eq!(c.interfaces[0].xdp, XdpSetting::Native);
    }

    #[test]
    fn syntax_error_names_line() {
        let text = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = srv0\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().starts_with("x.toml:4:"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = "[server]\nserver_id = \"198.18.0.1\"\n\n[[interface]]\nname = \"srv0\"\nxpd = \"native\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(e.reason.contains("xpd"), "{e}");
    }

    #[test]
    fn bad_value_is_rejected_with_line() {
        let text = "[server]\nserver_id = \"198.18.0.300\"\n[[interface]]\nname = \"srv0\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let text = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\nxdp = \"turbo\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn semantic_errors_name_line() {
        let text = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"a\"\n[[interface]]\nname = \"a\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("twice"), "{e}");
        let text = "[server]\nserver_id = \"0.0.0.0\"\n[[interface]]\nname = \"a\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let text = "[server]\nserver_id = \"198.18.0.1\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert!(e.reason.contains("interface"), "{e}");
    }
}
