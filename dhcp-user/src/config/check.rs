//! What a parsed configuration must satisfy beyond its types, each
//! refusal located at the table or key it is about.

use std::net::Ipv4Addr;

use super::{
    error::{key_line, nested_line, table_line},
    options::{check_class_options, check_log_level, check_options, check_timers},
    rate_limits::check_rate_limits,
    Config, ConfigError, ReservationId,
};

impl Config {
    pub(super) fn validate(&self, text: &str, source_name: &str) -> Result<(), ConfigError> {
        let err = |line: usize, reason: String| ConfigError {
            source_name: source_name.to_string(),
            line,
            column: if line == 0 { 0 } else { 1 },
            reason,
        };
        if self.interfaces.is_empty() {
            return Err(err(0, "no [[interface]]: nothing to serve".into()));
        }
        let line_of = |key: &str| key_line(text, key);
        if self.server.audit_entries_per_sec == 0 {
            return Err(err(
                line_of("audit_entries_per_sec"),
                "audit_entries_per_sec 0: a background pass would never finish (turn background passes off with audit_interval_secs = 0)".into(),
            ));
        }
        if self.server.audit_interval_secs > 86_400 {
            return Err(err(
                line_of("audit_interval_secs"),
                format!(
                    "audit_interval_secs {} is more than a day (0 turns background passes off)",
                    self.server.audit_interval_secs
                ),
            ));
        }
        if let Err((subnet, reason)) = check_rate_limits(self) {
            let line = match subnet {
                None => line_of("[rate_limits]"),
                Some(i) => table_line(text, "subnet", i),
            };
            return Err(err(line, reason));
        }
        if let Some(level) = &self.logging.level {
            check_log_level(level).map_err(|r| {
                let line = key_line(text, "level");
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
            let line = key_line(text, "server_id");
            return Err(err(
                line,
                format!("server_id {sid} is not a unicast address"),
            ));
        }
        if self.server.offer_protected_percent > 100 {
            return Err(err(
                line_of("offer_protected_percent"),
                format!(
                    "offer_protected_percent {} must be 0-100",
                    self.server.offer_protected_percent
                ),
            ));
        }
        if self.server.offer_hold_secs == 0 {
            return Err(err(
                line_of("offer_hold_secs"),
                "offer_hold_secs must be positive".into(),
            ));
        }
        super::limits::check(
            &self.relays,
            self.server.request_queue,
            self.server.commit_queue,
            |i| table_line(text, "relay", i),
            line_of,
        )
        .map_err(|(line, r)| err(line, r))?;
        check_options(&self.options)
            .and_then(|()| check_timers(&[("[options]", &self.options)]))
            .map_err(|r| err(line_of("[options]"), r))?;
        check_classes(self, text).map_err(|(l, r)| err(l, r))?;
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
            let mut ids: Vec<ReservationId> = Vec::new();
            for (j, r) in sn.reservations.iter().enumerate() {
                let rline = nested_line(text, "subnet", i, "subnet.reservation", j).unwrap_or(line);
                let re = |m: String| err(rline, format!("reservation {}: {m}", r.ip));
                let id = r.id().clone();
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
}

/// Names unique, each refused at its table's line (the expressions are
/// parsed as they are read).
fn check_classes(c: &Config, text: &str) -> Result<(), (usize, String)> {
    let header_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[class]]"))
        .map(|(n, _)| n + 1)
        .collect();
    for (i, k) in c.classes.iter().enumerate() {
        let header = header_lines.get(i).copied().unwrap_or(0);
        let e = |line: usize, r: String| (line, format!("class {:?}: {r}", k.name));
        if k.name.is_empty()
            || !k
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(e(header, "name must be letters, digits, '-' or '_'".into()));
        }
        if i >= 64 {
            return Err(e(header, "more than 64 classes".into()));
        }
        if c.classes[..i].iter().any(|o| o.name == k.name) {
            return Err(e(header, "defined twice".into()));
        }
        check_class_options(&k.options).map_err(|r| e(header, r))?;
    }
    Ok(())
}
