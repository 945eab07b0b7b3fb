//! The checks of an option set (`[options]`, a subnet's, a pool's, a
//! reservation's, a class's) and of the timers the levels resolve to.

use super::OptionSet;

/// The lease time when no level sets one.
pub const DEFAULT_LEASE_SECS: u32 = 3600;

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

pub(super) fn check_options(o: &OptionSet) -> Result<(), String> {
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
    check_subscriber_options(o)?;
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
        let len = c.encoded().len();
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
pub(super) fn check_timers(levels: &[(&str, &OptionSet)]) -> Result<(), String> {
    let pick = |f: fn(&OptionSet) -> Option<u32>| {
        levels
            .iter()
            .find_map(|(name, o)| f(o).map(|v| (v, format!("{v} (from {name})"))))
    };
    let (lease, lease_desc) = pick(|o| o.lease_time).map_or_else(
        || {
            let d = DEFAULT_LEASE_SECS;
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

/// The checks of the subscriber options: names, boot fields, search list.
fn check_subscriber_options(o: &OptionSet) -> Result<(), String> {
    let text = |name: &str, v: &Option<String>, max: usize| match v {
        Some(s) if s.is_empty() || s.len() > max || s.contains('\0') => {
            Err(format!("{name} must be 1-{max} bytes without NUL"))
        }
        _ => Ok(()),
    };
    text("hostname", &o.hostname, 255)?;
    // sname holds 64 bytes and file 128, each NUL-terminated.
    text("server_hostname", &o.server_hostname, 63)?;
    text("boot_file_name", &o.boot_file_name, 127)?;
    text("tftp_server", &o.tftp_server, 255)?;
    if let Some(d) = &o.domain_search {
        let n = d.encoded().len();
        if d.names().is_empty() || n > 255 {
            return Err(format!(
                "domain_search is {n} bytes encoded; 1-255 bytes in one option"
            ));
        }
    }
    if let Some(n) = o.next_server {
        if n.is_unspecified() || n.is_broadcast() || n.is_multicast() {
            return Err(format!("next_server {n} is not a unicast address"));
        }
    }
    Ok(())
}

/// A `tracing` filter: comma-separated levels and `target=level`
/// directives. `EnvFilter` skips a directive it cannot parse and takes a
/// bare word for a target to trace, so a typo ("inof", "xdhcp=loud") would
/// leave next to nothing logged without a word.
pub(super) fn check_log_level(level: &str) -> Result<(), String> {
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
