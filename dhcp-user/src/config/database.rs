//! `[database]`: the shared PostgreSQL lease store's settings (`store::postgres`
//! connects with them).

use std::path::PathBuf;

use serde::Deserialize;

/// `[database]`: present, the leases are kept in PostgreSQL.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgresql://user:password@host:port/dbname?sslmode=require` or
    /// `host=... dbname=...`; unset: `$XDHCP_DATABASE_URL`. `sslmode`
    /// (disable, prefer, require) chooses TLS; the server's certificate
    /// and name are verified against the system's CAs or `tls_ca_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// This node's name, stored with each lease it grants and with its
    /// own daemon facts. Default: the host name. Unique per node.
    #[serde(default)]
    pub node: Option<String>,
    /// Bound on connecting and on each statement, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    /// Maximum client lead time: another node's binding is taken over only
    /// once its stored end plus this has passed (the kernel of a node that
    /// died may have renewed it that far without storing it: no kernel
    /// grants past its stored end plus this, `xdp::map_sync::cap`).
    #[serde(default = "default_mclt")]
    pub mclt_secs: u32,
    /// Follow the other nodes' changes (`store::postgres::follow`). Off,
    /// a node learns another's lease only when a claim of its own on that
    /// address is refused, or at its next start: a diagnostic setting,
    /// which leaves every conflict to the database to refuse.
    #[serde(default = "default_follow")]
    pub follow: bool,
    /// A peer silent this long (no heartbeat in the database) is taken
    /// over: its bindings go into this node's XDP map, so its clients'
    /// REBINDING and INIT-REBOOT broadcasts are answered in the kernel.
    /// Before that they are ACKed by this node's control plane.
    #[serde(default = "default_takeover")]
    pub takeover_secs: u32,
}

fn default_takeover() -> u32 {
    10
}

fn default_follow() -> bool {
    true
}

fn default_timeout() -> u32 {
    5
}

fn default_mclt() -> u32 {
    3600
}

impl Default for DatabaseConfig {
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            url: None,
            tls_ca_file: None,
            node: None,
            timeout_secs: default_timeout(),
            mclt_secs: default_mclt(),
            follow: default_follow(),
            takeover_secs: default_takeover(),
        }
    }
}

impl DatabaseConfig {
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "xdhcp".into())
        })
    }
}
