//! Configuration: TOML, validated up front, rejected with file, line and
//! reason. Every table denies unknown keys so a typo never silently falls
//! back to a default.

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod limits;
pub use limits::{
    Caps, Limits, Relay, RelayTrust, DEFAULT_DECLINES_PER_CLIENT, DEFAULT_DECLINES_PER_LINE,
};

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
    pub rate_limits: crate::xdp::rate_limits::RateLimits,
    /// Client classes, in order of precedence (the first one a client
    /// matches wins an option several set).
    #[serde(default, rename = "class")]
    pub classes: Vec<crate::dhcp::classes::ClientClass>,
    /// Leases in a shared PostgreSQL database instead of `server.lease_db`.
    #[serde(default)]
    pub database: Option<crate::store::postgres::DatabaseConfig>,
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
    pub metrics_address: String,
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
    #[serde(default = "limits::default_request_queue")]
    pub request_queue: u32,
    /// Commits waiting for the lease store; while it is full no new
    /// request is handled (they wait in `request_queue`).
    #[serde(default = "limits::default_commit_queue")]
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

fn default_metrics() -> String {
    "127.0.0.1:9167".into()
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
    pub domain_search: Option<Vec<String>>,
    /// siaddr: the server a network boot loads from (TFTP).
    pub next_server: Option<Ipv4Addr>,
    /// sname, and option 66 (the TFTP server's name or address).
    pub server_hostname: Option<String>,
    /// The file field and option 67.
    pub boot_file_name: Option<String>,
    /// Option 66 alone, when it differs from server_hostname.
    pub tftp_server: Option<String>,
    /// Any other option by code.
    #[serde(default, rename = "option")]
    pub custom: Vec<CustomOption>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// An option by code with a typed value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomOption {
    pub code: u8,
    #[serde(flatten)]
    pub value: OptionValue,
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
    #[serde(default, rename = "reservation")]
    pub reservations: Vec<Reservation>,
    #[serde(default)]
    pub options: OptionSet,
    /// Overrides `[rate_limits]` key by key where this subnet's requests
    /// arrive.
    pub rate_limits: Option<crate::xdp::rate_limits::RateLimits>,
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
pub struct Reservation {
    /// Client hardware address "aa:bb:cc:dd:ee:ff"...
    pub hw_address: Option<String>,
    /// ...or client identifier (option 61) as hex "01:aa:bb:..."...
    pub client_id: Option<String>,
    /// ...or the relay's circuit-id (82.1), with `giaddr` the one relay's
    /// only...
    pub circuit_id: Option<String>,
    /// ...or remote-id (82.2)...
    pub remote_id: Option<String>,
    /// ...or subscriber-id (82.6). Relay identifiers are text, or hex
    /// after "0x".
    pub subscriber_id: Option<String>,
    pub giaddr: Option<Ipv4Addr>,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub options: OptionSet,
}

/// An IPv4 prefix "198.18.0.0/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    pub fn network(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }
    pub fn broadcast(&self) -> u32 {
        self.network() | !self.mask()
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length 0-32"))?;
        Ok(Ipv4Net { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses "aa:bb:cc", "aa-bb-cc" or "aabbcc" into bytes
/// ([`dhcp_common::hex`]).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    use dhcp_common::hex::{decode, HexError, SEPARATORS};
    decode(s, SEPARATORS).map_err(|e| match e {
        HexError::NotHex => format!("{s:?} is not hex"),
        HexError::OddOrEmpty => format!("{s:?} is not an even number of hex digits"),
    })
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
/// Line of the `index`-th `[[child]]` inside the `parent_index`-th
/// `[[parent]]`.
fn nested_line(
    text: &str,
    parent: &str,
    parent_index: usize,
    child: &str,
    index: usize,
) -> Option<usize> {
    let p_header = format!("[[{parent}]]");
    let c_header = format!("[[{child}]]");
    let mut parent_seen = None;
    let mut n = 0;
    for (ln, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.starts_with(&p_header) {
            parent_seen = Some(parent_seen.map_or(0, |p| p + 1));
        } else if l.starts_with(&c_header) && parent_seen == Some(parent_index) {
            if n == index {
                return Some(ln + 1);
            }
            n += 1;
        }
    }
    None
}

/// Options with their own key. A custom one with the same code would win
/// over the key at every level, even a more specific one.
const NAMED: &[(u8, &str)] = &[
    (3, "routers"),
    (6, "dns_servers"),
    (12, "hostname"),
    (15, "domain_name"),
    (66, "tftp_server or server_hostname"),
    (67, "boot_file_name"),
    (119, "domain_search"),
    (121, "classless_routes"),
];

/// Options the server computes itself; configuring them is a mistake.
const SERVER_MANAGED: &[(u8, &str)] = &[
    (1, "subnet mask, from the subnet's prefix"),
    (50, "requested address"),
    (51, "lease time (use lease_time)"),
    (52, "option overload"),
    (53, "message type"),
    (54, "server identifier (use server_id)"),
    (55, "parameter request list"),
    (57, "maximum message size"),
    (58, "renewal time (use renewal_time)"),
    (59, "rebinding time (use rebinding_time)"),
    (61, "client identifier"),
    (80, "rapid commit"),
    (82, "relay agent information"),
];

fn check_options(o: &OptionSet) -> Result<(), String> {
    if o.lease_time == Some(0) {
        return Err("lease_time must be positive".into());
    }
    if let (Some(t1), Some(t2)) = (o.renewal_time, o.rebinding_time) {
        if t1 >= t2 {
            return Err(format!(
                "renewal_time {t1} must be below rebinding_time {t2}"
            ));
        }
    }
    if let Some(lt) = o.lease_time {
        for (name, t) in [
            ("renewal_time", o.renewal_time),
            ("rebinding_time", o.rebinding_time),
        ] {
            if let Some(t) = t {
                if t >= lt {
                    return Err(format!("{name} {t} must be below lease_time {lt}"));
                }
            }
        }
    }
    if let Some(d) = &o.domain_name {
        if d.is_empty() || d.len() > 255 {
            return Err("domain_name must be 1-255 bytes".into());
        }
    }
    crate::dhcp::subscriber::check_options(o)?;
    for r in o.classless_routes.iter().flatten() {
        if u32::from(r.destination.addr) != r.destination.network() {
            return Err(format!(
                "route destination {} has host bits set",
                r.destination
            ));
        }
    }
    // One option carries 255 bytes at most. A longer value is refused here
    // rather than split into RFC 3396 fragments: a client that does not
    // concatenate them (many embedded stacks) would use a truncated DNS or
    // route list without a word; such an option barely fits, if at all, in
    // the 576-byte reply every client must accept (about 300 bytes of
    // options), never in an XDP reply template (TEMPLATE_OPTIONS_MAX); and
    // the server used to drop it from every reply silently.
    let lists = [
        ("routers", o.routers.as_ref().map(|v| 4 * v.len())),
        ("dns_servers", o.dns_servers.as_ref().map(|v| 4 * v.len())),
        (
            "classless_routes",
            o.classless_routes.as_ref().map(|v| {
                v.iter()
                    .map(|r| 1 + usize::from(r.destination.prefix).div_ceil(8) + 4)
                    .sum()
            }),
        ),
    ];
    for (name, len) in lists {
        if let Some(len) = len.filter(|l| *l > 255) {
            return Err(format!(
                "{name} is {len} bytes encoded; one option holds 255 at most"
            ));
        }
    }
    for (i, c) in o.custom.iter().enumerate() {
        if c.code == 0 || c.code == 255 {
            return Err(format!("option code {} is reserved", c.code));
        }
        if let Some((_, what)) = SERVER_MANAGED.iter().find(|(code, _)| *code == c.code) {
            return Err(format!("option {} ({what}) is set by the server", c.code));
        }
        if let Some((_, key)) = NAMED.iter().find(|(code, _)| *code == c.code) {
            return Err(format!("option {} has its own key: use {key}", c.code));
        }
        if o.custom[..i].iter().any(|p| p.code == c.code) {
            return Err(format!(
                "option {} set twice at this level (only one would be sent)",
                c.code
            ));
        }
        let len = crate::proto::message::encode_option_value(&c.value)
            .map_err(|e| format!("option {}: {e}", c.code))?
            .len();
        if len > 255 {
            return Err(format!(
                "option {} value is {len} bytes; 255 at most",
                c.code
            ));
        }
    }
    Ok(())
}

/// A class's options: its timers stand on their own (a class that sets
/// T1 or T2 sets the lease time too), as it applies across subnets.
pub(crate) fn check_class_options(o: &OptionSet) -> Result<(), String> {
    check_options(o)?;
    if (o.renewal_time.is_some() || o.rebinding_time.is_some()) && o.lease_time.is_none() {
        return Err("renewal_time and rebinding_time need lease_time in a class".into());
    }
    check_timers(&[("the class", o)])
}

/// The lease time, T1 and T2 a level resolves to, each with the level it
/// comes from (`levels` most specific first), must be ordered
/// T1 < T2 < lease. `check_options` refuses a conflict within one level at
/// that level's line; this refuses one between levels, at the line of the
/// level where they meet, naming where each value comes from.
///
/// Kea accepts such a configuration with a warning and then leaves T1 or
/// T2 out of its replies (the client falls back to 1/2 and 7/8 of the
/// lease); here it is refused like every other inconsistency, so `config
/// check` catches it and a reload keeps the running configuration. The fix
/// is one line: the level's own renewal_time/rebinding_time.
fn check_timers(levels: &[(&str, &OptionSet)]) -> Result<(), String> {
    let pick = |f: fn(&OptionSet) -> Option<u32>| {
        levels
            .iter()
            .find_map(|(name, o)| f(o).map(|v| (v, format!("{v} (from {name})"))))
    };
    let (lease, lease_desc) = pick(|o| o.lease_time).map_or_else(
        || {
            let d = crate::dhcp::server::DEFAULT_LEASE_SECS;
            (d, format!("the default lease_time {d}"))
        },
        |(v, d)| (v, format!("lease_time {d}")),
    );
    let t1 = pick(|o| o.renewal_time);
    let t2 = pick(|o| o.rebinding_time);
    for (name, t) in [("renewal_time", &t1), ("rebinding_time", &t2)] {
        if let Some((v, d)) = t {
            if *v >= lease {
                return Err(format!("{name} {d} must be below {lease_desc}"));
            }
        }
    }
    if let (Some((v1, d1)), Some((v2, d2))) = (&t1, &t2) {
        if v1 >= v2 {
            return Err(format!(
                "renewal_time {d1} must be below rebinding_time {d2}"
            ));
        }
    }
    Ok(())
}

/// A `tracing` filter: comma-separated levels and `target=level`
/// directives. `EnvFilter` skips a directive it cannot parse and takes a
/// bare word for a target to trace, so a typo ("inof", "xdhcp=loud") would
/// leave next to nothing logged without a word.
fn check_log_level(level: &str) -> Result<(), String> {
    use tracing_subscriber::filter::{Directive, LevelFilter};
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_level = d.parse::<LevelFilter>().is_ok();
        if !bare_level && !d.contains(['=', '[']) {
            return Err(format!(
                "{d:?} is not a level (error, warn, info, debug, trace, off)"
            ));
        }
        if d.starts_with('=') || d.ends_with('=') {
            return Err(format!("{d:?} is not TARGET=LEVEL"));
        }
        d.parse::<Directive>()
            .map_err(|e| format!("{d:?} is not a filter directive: {e}"))?;
    }
    Ok(())
}

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

    /// The validation a file gets, for a configuration changed in memory
    /// (reservations added through the control API).
    pub fn validate_reservations(&self) -> Result<(), String> {
        self.validate("", "control API").map_err(|e| e.reason)
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
        let m = &self.server.metrics_address;
        if m != "off" && m.parse::<std::net::SocketAddr>().is_err() {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("metrics_address"))
                .map_or(0, |i| i + 1);
            return Err(err(
                line,
                format!("metrics_address {m:?} is not an address:port (or \"off\")"),
            ));
        }
        let key_line = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(0, |i| i + 1)
        };
        if self.server.audit_entries_per_sec == 0 {
            return Err(err(
                key_line("audit_entries_per_sec"),
                "audit_entries_per_sec 0: a background pass would never finish (turn background passes off with audit_interval_secs = 0)".into(),
            ));
        }
        if self.server.audit_interval_secs > 86_400 {
            return Err(err(
                key_line("audit_interval_secs"),
                format!(
                    "audit_interval_secs {} is more than a day (0 turns background passes off)",
                    self.server.audit_interval_secs
                ),
            ));
        }
        if let Err((subnet, reason)) = crate::xdp::rate_limits::validate(self) {
            let line = match subnet {
                None => key_line("[rate_limits]"),
                Some(i) => table_line(text, "subnet", i),
            };
            return Err(err(line, reason));
        }
        if let Some(level) = &self.logging.level {
            check_log_level(level).map_err(|r| {
                let line = text
                    .lines()
                    .position(|l| l.trim_start().starts_with("level"))
                    .map_or(0, |i| i + 1);
                err(line, format!("logging.level {level:?}: {r}"))
            })?;
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
        let global_line = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(0, |n| n + 1)
        };
        if self.server.offer_protected_percent > 100 {
            return Err(err(
                global_line("offer_protected_percent"),
                format!(
                    "offer_protected_percent {} must be 0-100",
                    self.server.offer_protected_percent
                ),
            ));
        }
        if self.server.offer_hold_secs == 0 {
            return Err(err(
                global_line("offer_hold_secs"),
                "offer_hold_secs must be positive".into(),
            ));
        }
        limits::check(
            &self.relays,
            self.server.request_queue,
            self.server.commit_queue,
            |i| table_line(text, "relay", i),
            global_line,
        )
        .map_err(|(line, r)| err(line, r))?;
        check_options(&self.options)
            .and_then(|()| check_timers(&[("[options]", &self.options)]))
            .map_err(|r| err(global_line("[options]"), r))?;
        crate::dhcp::subscriber::check_classes(self, text).map_err(|(l, r)| err(l, r))?;
        let mut pools: Vec<(u32, u32, usize)> = Vec::new();
        let mut reserved_ips: Vec<Ipv4Addr> = Vec::new();
        for (i, sn) in self.subnets.iter().enumerate() {
            let line = table_line(text, "subnet", i);
            let e = |r: String| err(line, format!("subnet {}: {r}", sn.subnet));
            if sn.id == 0 || self.subnets[..i].iter().any(|o| o.id == sn.id) {
                return Err(e(format!("id {} must be non-zero and unique", sn.id)));
            }
            if sn.subnet.prefix > 30 || sn.subnet.prefix < 8 {
                return Err(e("prefix must be between /8 and /30".into()));
            }
            if u32::from(sn.subnet.addr) != sn.subnet.network() {
                return Err(e(format!(
                    "address has host bits set (did you mean {}/{}?)",
                    Ipv4Addr::from(sn.subnet.network()),
                    sn.subnet.prefix
                )));
            }
            if let Some(ifname) = &sn.interface {
                if !self.interfaces.iter().any(|i| &i.name == ifname) {
                    return Err(e(format!("interface {ifname:?} is not an [[interface]]")));
                }
            }
            for v in [sn.vlan, sn.inner_vlan].into_iter().flatten() {
                if !(1..=4094).contains(&v) {
                    return Err(e(format!("VLAN ID {v} outside 1-4094")));
                }
            }
            if sn.inner_vlan.is_some() && sn.vlan.is_none() {
                return Err(e("inner_vlan needs vlan (the outer tag)".into()));
            }
            if (sn.vlan.is_some()) && sn.interface.is_none() {
                return Err(e("vlan needs interface".into()));
            }
            if sn.interface.is_some()
                && self.subnets[..i].iter().any(|o| {
                    o.interface == sn.interface
                        && o.vlan == sn.vlan
                        && o.inner_vlan == sn.inner_vlan
                        && (o.shared_network.is_none() || o.shared_network != sn.shared_network)
                })
            {
                return Err(e(
                    "another subnet already serves this interface and VLAN".into()
                ));
            }
            if self.subnets[..i]
                .iter()
                .any(|o| o.subnet.contains(sn.subnet.addr) || sn.subnet.contains(o.subnet.addr))
            {
                return Err(e("overlaps another subnet".into()));
            }
            let subnet_levels = [("the subnet", &sn.options), ("[options]", &self.options)];
            check_options(&sn.options)
                .and_then(|()| check_timers(&subnet_levels))
                .map_err(e)?;
            for (j, p) in sn.pools.iter().enumerate() {
                let pline = nested_line(text, "subnet", i, "subnet.pool", j).unwrap_or(line);
                let pe = |r: String| err(pline, format!("pool {}-{}: {r}", p.start, p.end));
                let (a, b) = (u32::from(p.start), u32::from(p.end));
                if a > b {
                    return Err(pe("start is after end".into()));
                }
                if !sn.subnet.contains(p.start) || !sn.subnet.contains(p.end) {
                    return Err(pe(format!("not inside {}", sn.subnet)));
                }
                if a == sn.subnet.network() || b == sn.subnet.broadcast() {
                    return Err(pe("includes the network or broadcast address".into()));
                }
                if u32::from(self.server.server_id) >= a && u32::from(self.server.server_id) <= b {
                    return Err(pe("includes the server's own address".into()));
                }
                if let Some((_, _, l)) = pools.iter().find(|(s, t, _)| a <= *t && *s <= b) {
                    return Err(pe(format!("overlaps the pool at line {l}")));
                }
                if let Some(c) = p
                    .client_classes
                    .iter()
                    .find(|c| !self.classes.iter().any(|k| &k.name == *c))
                {
                    return Err(pe(format!("client class {c:?} is not a [[class]]")));
                }
                check_options(&p.options)
                    .and_then(|()| {
                        check_timers(&[
                            ("the pool", &p.options),
                            subnet_levels[0],
                            subnet_levels[1],
                        ])
                    })
                    .map_err(pe)?;
                pools.push((a, b, pline));
            }
            let mut ids: Vec<crate::dhcp::subscriber::ReservationId> = Vec::new();
            for (j, r) in sn.reservations.iter().enumerate() {
                let rline = nested_line(text, "subnet", i, "subnet.reservation", j).unwrap_or(line);
                let re = |m: String| err(rline, format!("reservation {}: {m}", r.ip));
                let id = crate::dhcp::subscriber::reservation_identity(r).map_err(re)?;
                if !sn.subnet.contains(r.ip)
                    || u32::from(r.ip) == sn.subnet.network()
                    || u32::from(r.ip) == sn.subnet.broadcast()
                {
                    return Err(re(format!("address is not a host of {}", sn.subnet)));
                }
                if r.ip == sid {
                    return Err(re("address is the server's own (server_id)".into()));
                }
                if reserved_ips.contains(&r.ip) {
                    return Err(re("address reserved twice".into()));
                }
                if ids.contains(&id) {
                    return Err(re("client has two reservations in this subnet".into()));
                }
                check_options(&r.options)
                    .and_then(|()| {
                        let own = ("the reservation", &r.options);
                        check_timers(&[own, subnet_levels[0], subnet_levels[1]])
                    })
                    .map_err(re)?;
                reserved_ips.push(r.ip);
                ids.push(id);
            }
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
    fn embedded_default_has_a_relay_reservation_and_valid_commented_classes() {
        let c = Config::default_config();
        assert!(c.subnets.iter().any(|s| s
            .reservations
            .iter()
            .any(|r| r.circuit_id.as_deref() == Some("olt1/1/3"))));
        let (head, rest) = DEFAULT_CONFIG.split_once("# BEGIN CLASSES\n").unwrap();
        let (block, _) = rest.split_once("# END CLASSES").unwrap();
        let uncommented: String = block
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&format!("{head}{uncommented}"), "default").unwrap();
        assert_eq!(c.classes.len(), 4);
        assert_eq!(
            c.classes[1].options.boot_file_name.as_deref(),
            Some("uefi/grubx64.efi")
        );
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

    const HEAD: &str = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\n";

    fn refused(body: &str) -> ConfigError {
        let text = format!("{HEAD}{body}");
        Config::parse(&text, "x.toml").expect_err("accepted")
    }

    #[test]
    fn audit_keys_default_and_are_validated_with_their_line() {
        let c = Config::parse(HEAD, "x.toml").unwrap();
        assert_eq!(
            (
                c.server.audit_interval_secs,
                c.server.audit_entries_per_sec,
                c.server.audit_repair
            ),
            (60, 200_000, true)
        );
        let with = |kv: &str| {
            format!("[server]\nserver_id = \"198.18.0.1\"\n{kv}\n[[interface]]\nname = \"srv0\"\n")
        };
        let c = Config::parse(
            &with("audit_interval_secs = 0\naudit_repair = false"),
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            (c.server.audit_interval_secs, c.server.audit_repair),
            (0, false)
        );
        let e = Config::parse(&with("audit_entries_per_sec = 0"), "x.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("audit_entries_per_sec"), "{e}");
        let e = Config::parse(&with("audit_interval_secs = 86401"), "x.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("more than a day"), "{e}");
        let e = Config::parse(&with("audit_repair = 1"), "x.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn parse_hex_refuses_what_is_not_hex_without_panicking() {
        assert_eq!(parse_hex("0a:0B-0c"), Ok(vec![0x0a, 0x0b, 0x0c]));
        assert_eq!(parse_hex("aabb"), Ok(vec![0xaa, 0xbb]));
        // Multi-byte characters used to be sliced mid-character (a panic),
        // and from_str_radix took a sign.
        for bad in [
            "0é0", "+f", "0a:+b", "é0", "0€", "éé", "", ":", "abc", "0x0a",
        ] {
            assert!(parse_hex(bad).is_err(), "{bad:?} accepted");
        }
        let e = refused(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
             [[subnet.reservation]]\nhw_address = \"02:00:00:00:0é0\"\nip = \"198.18.1.5\"\n",
        );
        assert_eq!(e.line, 8, "{e}");
        assert!(e.reason.contains("not hex"), "{e}");
        let e =
            refused("[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"0€\"\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("not hex"), "{e}");
    }

    #[test]
    fn reservation_of_the_server_id_is_refused() {
        let e = refused(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\n\
             [[subnet.reservation]]\nhw_address = \"02:00:00:00:00:01\"\nip = \"198.18.0.1\"\n",
        );
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.reason.contains("reservation 198.18.0.1") && e.reason.contains("server_id"),
            "{e}"
        );
        // The same check for one added through the control API.
        let text = format!("{HEAD}[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\n");
        let mut c = Config::parse(&text, "x.toml").unwrap();
        c.subnets[0].reservations.push(Reservation {
            hw_address: Some("02:00:00:00:00:01".into()),
            client_id: None,
            circuit_id: None,
            remote_id: None,
            subscriber_id: None,
            giaddr: None,
            ip: Ipv4Addr::new(198, 18, 0, 1),
            options: OptionSet::default(),
        });
        let e = c.validate_reservations().unwrap_err();
        assert!(e.contains("server_id"), "{e}");
    }

    #[test]
    fn options_longer_than_255_bytes_are_refused() {
        let ips = |n: u32| {
            (0..n)
                .map(|i| format!("\"10.0.{}.{}\"", i / 250, i % 250 + 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // 63 addresses are 252 bytes: fine.
        let text = format!("{HEAD}[options]\ndns_servers = [{}]\n", ips(63));
        Config::parse(&text, "x.toml").unwrap();
        let e = refused(&format!("[options]\ndns_servers = [{}]\n", ips(64)));
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.reason.contains("dns_servers") && e.reason.contains("256 bytes"),
            "{e}"
        );
        let e = refused(&format!(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = {{ routers = [{}] }}\n",
            ips(70)
        ));
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.reason.contains("routers") && e.reason.contains("280 bytes"),
            "{e}"
        );
        // 29 host routes of 9 bytes each: 261 bytes.
        let routes = (0..29)
            .map(|i| format!("{{ destination = \"10.1.0.{i}/32\", gateway = \"198.18.1.1\" }}"))
            .collect::<Vec<_>>()
            .join(", ");
        let e = refused(&format!(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n[[subnet.pool]]\n\
             start = \"198.18.1.10\"\nend = \"198.18.1.20\"\noptions = {{ classless_routes = [{routes}] }}\n"
        ));
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.reason.contains("classless_routes") && e.reason.contains("261 bytes"),
            "{e}"
        );
    }

    #[test]
    fn inherited_timers_beyond_the_lease_are_refused_where_they_meet() {
        // A subnet's shorter lease under global T1/T2 (line 9: [[subnet]]).
        let e = refused(
            "[options]\nlease_time = 3600\nrenewal_time = 1800\nrebinding_time = 3000\n\
             [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { lease_time = 600 }\n",
        );
        assert_eq!((e.line, e.column), (9, 1), "{e}");
        assert!(e.reason.contains("subnet 198.18.1.0/24"), "{e}");
        assert!(
            e.reason.contains("renewal_time 1800 (from [options])")
                && e.reason.contains("lease_time 600 (from the subnet)"),
            "{e}"
        );
        // A pool's T2 under the subnet's T1.
        let e = refused(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { renewal_time = 900 }\n\
             [[subnet.pool]]\nstart = \"198.18.1.10\"\nend = \"198.18.1.20\"\n\
             options = { rebinding_time = 600 }\n",
        );
        assert_eq!(e.line, 9, "{e}");
        assert!(
            e.reason.contains("pool 198.18.1.10-198.18.1.20")
                && e.reason.contains("renewal_time 900 (from the subnet)")
                && e.reason.contains("rebinding_time 600 (from the pool)"),
            "{e}"
        );
        // A reservation's short lease under a pool-less subnet's T2.
        let e = refused(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { rebinding_time = 900 }\n\
             [[subnet.reservation]]\nhw_address = \"02:00:00:00:00:01\"\nip = \"198.18.1.5\"\n\
             options = { lease_time = 900 }\n",
        );
        assert_eq!(e.line, 9, "{e}");
        assert!(
            e.reason.contains("reservation 198.18.1.5")
                && e.reason.contains("rebinding_time 900 (from the subnet)")
                && e.reason.contains("lease_time 900 (from the reservation)"),
            "{e}"
        );
        // T1 beyond the default lease (3600 s), at the global level.
        let e = refused("[options]\nrenewal_time = 4000\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("default lease_time 3600"), "{e}");
        // Explicit conflicts at one level are still reported at that level.
        let e = refused(
            "[options]\nlease_time = 600\n[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
             options = { renewal_time = 700, lease_time = 3600, rebinding_time = 600 }\n",
        );
        assert_eq!(e.line, 7, "{e}");
        assert!(
            e.reason
                .contains("renewal_time 700 must be below rebinding_time 600"),
            "{e}"
        );
        // Inherited values that fit are fine.
        let text = format!(
            "{HEAD}[options]\nlease_time = 30\nrenewal_time = 6\nrebinding_time = 8\n\
             [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = {{ lease_time = 3600 }}\n"
        );
        Config::parse(&text, "x.toml").unwrap();
    }

    #[test]
    fn custom_options_cannot_shadow_named_ones_or_repeat() {
        // A global custom option 3 used to replace a subnet's routers.
        let e = refused(
            "[options]\n[[options.option]]\ncode = 3\ntype = \"ips\"\nvalue = [\"10.0.0.1\"]\n\
             [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { routers = [\"198.18.1.1\"] }\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.reason.contains("option 3") && e.reason.contains("routers"),
            "{e}"
        );
        // And a custom option 1 the mask computed from the prefix.
        let e = refused(
            "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
             options = { option = [{ code = 1, type = \"ip\", value = \"255.0.0.0\" }] }\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("option 1"), "{e}");
        // The same code twice at one level: one of them was dropped.
        let e = refused(
            "[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"01\"\n\
             [[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"02\"\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.reason.contains("option 43") && e.reason.contains("twice"),
            "{e}"
        );
        // Overriding a custom option at a more specific level is fine.
        let text = format!(
            "{HEAD}[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"01\"\n\
             [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
             options = {{ option = [{{ code = 43, type = \"hex\", value = \"02\" }}] }}\n"
        );
        Config::parse(&text, "x.toml").unwrap();
    }

    #[test]
    fn logging_level_typos_are_refused() {
        for good in ["info", "debug", "xdhcp=debug", "warn,xdhcp=trace", "OFF"] {
            let text = format!("{HEAD}[logging]\nlevel = \"{good}\"\n");
            Config::parse(&text, "x.toml").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // tracing ignores a directive it cannot parse, and takes a bare
        // word for a target: either way next to nothing is logged.
        for bad in ["xdhcp=loud", "inof", "info,debgu", "xdhcp=", "=debug"] {
            let e = refused(&format!("[logging]\nlevel = \"{bad}\"\n"));
            assert_eq!(e.line, 6, "{bad}: {e}");
            assert!(e.reason.contains("logging.level"), "{e}");
        }
    }
}
