//! The configuration as the TOML is written: serde types, each table
//! denying unknown keys so a typo never silently falls back to a default.
//! The leaves written as text the server needs parsed (reservation
//! identities, custom option values, class expressions, `domain_search`)
//! are `checked` types, each parsed through `TryFrom` as it is read. What
//! the values must satisfy beyond their types is `check`'s.

use std::{net::Ipv4Addr, path::PathBuf};

use serde::Deserialize;

use super::{
    ClientClass, CustomOption, DatabaseConfig, DomainList, Ipv4Net, Limits, MetricsAddress,
    RateLimits, Relay, RelayTrust, Reservation,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub logging: Logging,
    /// Options every subnet inherits.
    #[serde(default)]
    pub options: OptionSet,
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<Subnet>,
    /// Caps every subnet inherits (`limits`).
    #[serde(default)]
    pub limits: Limits,
    /// Trusted relay agents.
    #[serde(default, rename = "relay")]
    pub relays: Vec<Relay>,
    /// The XDP program's rate limits (`ratelimit.rs`).
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Client classes, in order of precedence (the first one a client
    /// matches wins an option several set).
    #[serde(default, rename = "class", deserialize_with = "super::checked::tables")]
    pub classes: Vec<ClientClass>,
    /// Leases in a shared PostgreSQL database instead of `server.lease_db`.
    #[serde(default)]
    pub database: Option<DatabaseConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Server identifier (option 54) and source address of replies.
    pub server_id: Ipv4Addr,
    /// SQLite lease database (WAL). Created when missing.
    #[serde(default = "default_lease_db")]
    pub lease_db: PathBuf,
    /// `full`: an ACK leaves only once its lease survives power loss;
    /// `normal`: survives a crash of xdhcp (kill -9) but not of the machine.
    #[serde(default)]
    pub lease_db_sync: DbSync,
    /// A DECLINEd address is not handed out for this long.
    #[serde(default = "default_probation")]
    pub decline_probation_secs: u32,
    /// An OFFERed address is kept for its client this long (less on a
    /// line whose offers go unrequested: halved per unanswered offer, down
    /// to 1 s, whole again at its next REQUEST).
    #[serde(default = "default_offer_hold")]
    pub offer_hold_secs: u32,
    /// Share of a pool (percent) whose held offers keep their addresses
    /// when the pool runs out; beyond it, a new DISCOVER takes the address
    /// of the oldest held offer (its client is NAKed if it asks for it).
    #[serde(default = "default_offer_protected_percent")]
    pub offer_protected_percent: u32,
    /// How often expired leases are reclaimed.
    #[serde(default = "default_reclaim")]
    pub reclaim_interval_secs: u32,
    /// Prometheus metrics (`GET /metrics`) on this address; "off" to
    /// disable. Default: loopback only.
    #[serde(default = "default_metrics")]
    pub metrics_address: MetricsAddress,
    /// bpffs directory where the XDP program's link and maps are pinned,
    /// so a daemon can stop with the fast path still answering and the
    /// next one adopt it (hitless restart). Unset: nothing outlives the
    /// daemon. The systemd unit uses /sys/fs/bpf/xdhcp.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// Control API socket (root-only); default /run/xdhcp/control.sock.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Capacity of the XDP lease map (bindings the kernel can renew).
    /// Preallocated: about 150 bytes of kernel memory per entry, so the
    /// default 1,048,576 costs ~150 MiB. Bindings beyond it are renewed by
    /// the control plane.
    #[serde(default = "default_lease_map_entries")]
    pub lease_map_entries: u32,
    /// Seconds between background passes of the auditor over the XDP
    /// lease map and the lease store (`xdhcp leases audit` runs one on
    /// demand); 0: no background passes. At most a day.
    #[serde(default = "default_audit_interval")]
    pub audit_interval_secs: u32,
    /// Map entries a background pass reads per second (1,000,000 bindings
    /// take 5 s at the default).
    #[serde(default = "default_audit_rate")]
    pub audit_entries_per_sec: u32,
    /// Remove a stray map entry an audit confirms (its client's next
    /// request then goes to the control plane, which decides).
    #[serde(default = "default_true")]
    pub audit_repair: bool,
    /// Which relayed requests are served (`RelayTrust`).
    #[serde(default)]
    pub relay_trust: RelayTrust,
    /// Requests waiting for the state machine; beyond it the oldest
    /// DISCOVER is dropped first.
    #[serde(default = "super::limits::default_request_queue")]
    pub request_queue: u32,
    /// Commits waiting for the lease store; while it is full no new
    /// request is handled (they wait in `request_queue`).
    #[serde(default = "super::limits::default_commit_queue")]
    pub commit_queue: u32,
}

fn default_audit_interval() -> u32 {
    60
}

fn default_audit_rate() -> u32 {
    200_000
}

fn default_true() -> bool {
    true
}

fn default_metrics() -> MetricsAddress {
    MetricsAddress::At(([127, 0, 0, 1], 9167).into())
}

fn default_lease_map_entries() -> u32 {
    1 << 20
}

fn default_lease_db() -> PathBuf {
    PathBuf::from("/var/lib/xdhcp/leases.db")
}
fn default_probation() -> u32 {
    86_400
}
fn default_offer_protected_percent() -> u32 {
    10
}

fn default_offer_hold() -> u32 {
    30
}
fn default_reclaim() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DbSync {
    #[default]
    Full,
    Normal,
}

/// Options at one level (global, subnet, pool, reservation); a more
/// specific level overrides a less specific one option by option.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptionSet {
    /// Lease time in seconds (option 51).
    pub lease_time: Option<u32>,
    /// T1 (option 58); default half the lease time, at most T2.
    pub renewal_time: Option<u32>,
    /// T2 (option 59); default 7/8 of the lease time, at least T1. The
    /// values a subnet, pool or reservation ends up with, inherited or
    /// not, must be ordered T1 < T2 < lease time.
    pub rebinding_time: Option<u32>,
    /// Option 3.
    pub routers: Option<Vec<Ipv4Addr>>,
    /// Option 6.
    pub dns_servers: Option<Vec<Ipv4Addr>>,
    /// Option 15.
    pub domain_name: Option<String>,
    /// Option 121 (RFC 3442).
    pub classless_routes: Option<Vec<Route>>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 119 (RFC 3397), e.g. ["lab.example", "example"].
    pub domain_search: Option<DomainList>,
    /// siaddr: the server a network boot loads from (TFTP).
    pub next_server: Option<Ipv4Addr>,
    /// sname, and option 66 (the TFTP server's name or address).
    pub server_hostname: Option<String>,
    /// The file field and option 67.
    pub boot_file_name: Option<String>,
    /// Option 66 alone, when it differs from server_hostname.
    pub tftp_server: Option<String>,
    /// Any other option by code.
    #[serde(
        default,
        rename = "option",
        deserialize_with = "super::checked::tables"
    )]
    pub custom: Vec<CustomOption>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum OptionValue {
    String(String),
    Ip(Ipv4Addr),
    Ips(Vec<Ipv4Addr>),
    U8(u8),
    U16(u16),
    U32(u32),
    Bool(bool),
    /// Raw bytes as hex, e.g. "0a0b0c" or "0a:0b:0c".
    Hex(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// Stable identifier (stored with each lease).
    pub id: u32,
    pub subnet: Ipv4Net,
    /// Directly connected clients arrive on this interface...
    pub interface: Option<String>,
    /// ...with this outer VLAN ID (none: untagged)...
    pub vlan: Option<u16>,
    /// ...and this inner VLAN ID (QinQ).
    pub inner_vlan: Option<u16>,
    /// Relay addresses (giaddr) that select this subnet besides those
    /// inside it.
    #[serde(default)]
    pub relays: Vec<Ipv4Addr>,
    /// Subnets with the same name share their link (interface and VLAN,
    /// or relay): a new client gets an address from the first one with a
    /// free address, in the order written; a known one keeps its subnet.
    pub shared_network: Option<String>,
    /// Answer DISCOVER with option 80 straight with an ACK (RFC 4039).
    #[serde(default)]
    pub rapid_commit: bool,
    /// Caps over the global `[limits]`, key by key.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, rename = "pool")]
    pub pools: Vec<Pool>,
    #[serde(
        default,
        rename = "reservation",
        deserialize_with = "super::checked::tables"
    )]
    pub reservations: Vec<Reservation>,
    #[serde(default)]
    pub options: OptionSet,
    /// Overrides `[rate_limits]` key by key where this subnet's requests
    /// arrive.
    pub rate_limits: Option<RateLimits>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    /// Open only to clients of one of these classes (empty: to all).
    #[serde(default)]
    pub client_classes: Vec<String>,
    #[serde(default)]
    pub options: OptionSet,
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
