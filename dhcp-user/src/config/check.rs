//! What a parsed configuration must satisfy beyond its types, one named
//! check per concern, each refusal located at the table or key it is
//! about. The leaves written as text are parsed already (`checked`): a
//! value that does not parse never gets here.

use std::net::Ipv4Addr;

use super::{
    error::{key_line, nested_line, table_line},
    options::{check_class_options, check_log_level, check_options, check_timers},
    rate_limits::check_rate_limits,
    Config, ConfigError, OptionSet, Pool, ReservationId, Subnet,
};

/// Where refusals are placed: the source text and its name.
struct At<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl At<'_> {
    fn err(&self, line: usize, reason: String) -> ConfigError {
        ConfigError {
            source_name: self.source_name.to_string(),
            line,
            column: if line == 0 { 0 } else { 1 },
            reason,
        }
    }

    fn key(&self, key: &str) -> usize {
        key_line(self.text, key)
    }

    fn table(&self, table: &str, index: usize) -> usize {
        table_line(self.text, table, index)
    }
}

type Checked = Result<(), ConfigError>;

/// A subnet's options with those it inherits, most specific first.
type Levels<'a> = [(&'a str, &'a OptionSet); 2];

impl Config {
    pub(super) fn validate(&self, text: &str, source_name: &str) -> Checked {
        let at = At { text, source_name };
        self.check_interfaces(&at)?;
        self.check_server(&at)?;
        self.check_rate_limits(&at)?;
        self.check_logging(&at)?;
        self.check_relays_and_queues(&at)?;
        self.check_global_options(&at)?;
        self.check_classes(&at)?;
        self.check_subnets(&at)
    }

    /// At least one, each a Linux interface name, none twice.
    fn check_interfaces(&self, at: &At) -> Checked {
        if self.interfaces.is_empty() {
            return Err(at.err(0, "no [[interface]]: nothing to serve".into()));
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            let line = at.table("interface", i);
            if iface.name.is_empty() || iface.name.len() > 15 || iface.name.contains('/') {
                return Err(at.err(
                    line,
                    format!(
                        "interface name {:?} is not a valid Linux interface name (1-15 characters, no '/')",
                        iface.name
                    ),
                ));
            }
            if self.interfaces[..i].iter().any(|o| o.name == iface.name) {
                return Err(at.err(line, format!("interface {:?} listed twice", iface.name)));
            }
        }
        Ok(())
    }

    /// `[server]`: the auditor's pace, the server identifier, offer holds.
    fn check_server(&self, at: &At) -> Checked {
        let s = &self.server;
        if s.audit_entries_per_sec == 0 {
            return Err(at.err(
                at.key("audit_entries_per_sec"),
                "audit_entries_per_sec 0: a background pass would never finish (turn background passes off with audit_interval_secs = 0)".into(),
            ));
        }
        if s.audit_interval_secs > 86_400 {
            return Err(at.err(
                at.key("audit_interval_secs"),
                format!(
                    "audit_interval_secs {} is more than a day (0 turns background passes off)",
                    s.audit_interval_secs
                ),
            ));
        }
        let sid = s.server_id;
        if sid.is_unspecified() || sid.is_broadcast() || sid.is_multicast() {
            return Err(at.err(
                at.key("server_id"),
                format!("server_id {sid} is not a unicast address"),
            ));
        }
        if s.offer_protected_percent > 100 {
            return Err(at.err(
                at.key("offer_protected_percent"),
                format!(
                    "offer_protected_percent {} must be 0-100",
                    s.offer_protected_percent
                ),
            ));
        }
        if s.offer_hold_secs == 0 {
            return Err(at.err(
                at.key("offer_hold_secs"),
                "offer_hold_secs must be positive".into(),
            ));
        }
        Ok(())
    }

    /// `[rate_limits]` and the subnets' overrides of it.
    fn check_rate_limits(&self, at: &At) -> Checked {
        check_rate_limits(self).map_err(|(subnet, reason)| {
            let line = match subnet {
                None => at.key("[rate_limits]"),
                Some(i) => at.table("subnet", i),
            };
            at.err(line, reason)
        })
    }

    /// `logging.level`: a filter `tracing` reads as meant.
    fn check_logging(&self, at: &At) -> Checked {
        let Some(level) = &self.logging.level else {
            return Ok(());
        };
        check_log_level(level)
            .map_err(|r| at.err(at.key("level"), format!("logging.level {level:?}: {r}")))
    }

    /// `[[relay]]` tables and the queue sizes (`limits`).
    fn check_relays_and_queues(&self, at: &At) -> Checked {
        super::limits::check(
            &self.relays,
            self.server.request_queue,
            self.server.commit_queue,
            |i| at.table("relay", i),
            |key| at.key(key),
        )
        .map_err(|(line, r)| at.err(line, r))
    }

    /// `[options]`, which every subnet inherits.
    fn check_global_options(&self, at: &At) -> Checked {
        check_options(&self.options)
            .and_then(|()| check_timers(&[("[options]", &self.options)]))
            .map_err(|r| at.err(at.key("[options]"), r))
    }

    /// Names unique and well formed, at most 64, options that stand on
    /// their own; each refused at its table's line.
    fn check_classes(&self, at: &At) -> Checked {
        for (i, k) in self.classes.iter().enumerate() {
            let e = |r: String| at.err(at.table("class", i), format!("class {:?}: {r}", k.name));
            if k.name.is_empty()
                || !k
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(e("name must be letters, digits, '-' or '_'".into()));
            }
            if i >= 64 {
                return Err(e("more than 64 classes".into()));
            }
            if self.classes[..i].iter().any(|o| o.name == k.name) {
                return Err(e("defined twice".into()));
            }
            check_class_options(&k.options).map_err(e)?;
        }
        Ok(())
    }

    /// Each subnet, then its pools (no two overlapping, across subnets)
    /// and its reservations (no address reserved twice, across subnets).
    fn check_subnets(&self, at: &At) -> Checked {
        let mut pools: Vec<(u32, u32, usize)> = Vec::new();
        let mut reserved_ips: Vec<Ipv4Addr> = Vec::new();
        for (i, sn) in self.subnets.iter().enumerate() {
            let levels = [("the subnet", &sn.options), ("[options]", &self.options)];
            self.check_subnet(at, i, sn, &levels)?;
            self.check_pools(at, i, sn, &levels, &mut pools)?;
            self.check_reservations(at, i, sn, &levels, &mut reserved_ips)?;
        }
        Ok(())
    }

    /// The `i`-th subnet's own keys: id, prefix, link, overlap, options.
    fn check_subnet(&self, at: &At, i: usize, sn: &Subnet, levels: &Levels) -> Checked {
        let e = |r: String| at.err(at.table("subnet", i), format!("subnet {}: {r}", sn.subnet));
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
        self.check_subnet_link(i, sn).map_err(e)?;
        if self.subnets[..i]
            .iter()
            .any(|o| o.subnet.contains(sn.subnet.addr) || sn.subnet.contains(o.subnet.addr))
        {
            return Err(e("overlaps another subnet".into()));
        }
        check_options(&sn.options)
            .and_then(|()| check_timers(levels))
            .map_err(e)
    }

    /// Where the `i`-th subnet's clients arrive: a configured interface,
    /// valid VLAN IDs, and no earlier subnet on the same link unless they
    /// share a network.
    fn check_subnet_link(&self, i: usize, sn: &Subnet) -> Result<(), String> {
        if let Some(ifname) = &sn.interface {
            if !self.interfaces.iter().any(|i| &i.name == ifname) {
                return Err(format!("interface {ifname:?} is not an [[interface]]"));
            }
        }
        for v in [sn.vlan, sn.inner_vlan].into_iter().flatten() {
            if !(1..=4094).contains(&v) {
                return Err(format!("VLAN ID {v} outside 1-4094"));
            }
        }
        if sn.inner_vlan.is_some() && sn.vlan.is_none() {
            return Err("inner_vlan needs vlan (the outer tag)".into());
        }
        if sn.vlan.is_some() && sn.interface.is_none() {
            return Err("vlan needs interface".into());
        }
        if sn.interface.is_some()
            && self.subnets[..i].iter().any(|o| {
                o.interface == sn.interface
                    && o.vlan == sn.vlan
                    && o.inner_vlan == sn.inner_vlan
                    && (o.shared_network.is_none() || o.shared_network != sn.shared_network)
            })
        {
            return Err("another subnet already serves this interface and VLAN".into());
        }
        Ok(())
    }

    /// The `i`-th subnet's pools; `seen` holds every earlier pool (start,
    /// end, line), of this subnet and the ones before.
    fn check_pools(
        &self,
        at: &At,
        i: usize,
        sn: &Subnet,
        levels: &Levels,
        seen: &mut Vec<(u32, u32, usize)>,
    ) -> Checked {
        for (j, p) in sn.pools.iter().enumerate() {
            let line = nested_line(at.text, "subnet", i, "subnet.pool", j)
                .unwrap_or_else(|| at.table("subnet", i));
            self.check_pool(p, sn, levels, seen)
                .map_err(|r| at.err(line, format!("pool {}-{}: {r}", p.start, p.end)))?;
            seen.push((u32::from(p.start), u32::from(p.end), line));
        }
        Ok(())
    }

    fn check_pool(
        &self,
        p: &Pool,
        sn: &Subnet,
        levels: &Levels,
        seen: &[(u32, u32, usize)],
    ) -> Result<(), String> {
        let (a, b) = (u32::from(p.start), u32::from(p.end));
        if a > b {
            return Err("start is after end".into());
        }
        if !sn.subnet.contains(p.start) || !sn.subnet.contains(p.end) {
            return Err(format!("not inside {}", sn.subnet));
        }
        if a == sn.subnet.network() || b == sn.subnet.broadcast() {
            return Err("includes the network or broadcast address".into());
        }
        let sid = u32::from(self.server.server_id);
        if sid >= a && sid <= b {
            return Err("includes the server's own address".into());
        }
        if let Some((_, _, l)) = seen.iter().find(|(s, t, _)| a <= *t && *s <= b) {
            return Err(format!("overlaps the pool at line {l}"));
        }
        if let Some(c) = p
            .client_classes
            .iter()
            .find(|c| !self.classes.iter().any(|k| &k.name == *c))
        {
            return Err(format!("client class {c:?} is not a [[class]]"));
        }
        check_options(&p.options)
            .and_then(|()| check_timers(&[("the pool", &p.options), levels[0], levels[1]]))
    }

    /// The `i`-th subnet's reservations: hosts of the subnet, not the
    /// server's address, each address once (`reserved`: those of every
    /// earlier subnet too) and each client once in the subnet.
    fn check_reservations(
        &self,
        at: &At,
        i: usize,
        sn: &Subnet,
        levels: &Levels,
        reserved: &mut Vec<Ipv4Addr>,
    ) -> Checked {
        let mut ids: Vec<&ReservationId> = Vec::new();
        for (j, r) in sn.reservations.iter().enumerate() {
            let refuse = |m: &str| {
                let line = nested_line(at.text, "subnet", i, "subnet.reservation", j)
                    .unwrap_or_else(|| at.table("subnet", i));
                Err(at.err(line, format!("reservation {}: {m}", r.ip)))
            };
            if !sn.subnet.contains(r.ip)
                || u32::from(r.ip) == sn.subnet.network()
                || u32::from(r.ip) == sn.subnet.broadcast()
            {
                return refuse(&format!("address is not a host of {}", sn.subnet));
            }
            if r.ip == self.server.server_id {
                return refuse("address is the server's own (server_id)");
            }
            if reserved.contains(&r.ip) {
                return refuse("address reserved twice");
            }
            if ids.contains(&r.id()) {
                return refuse("client has two reservations in this subnet");
            }
            let own = ("the reservation", &r.options);
            if let Err(m) =
                check_options(&r.options).and_then(|()| check_timers(&[own, levels[0], levels[1]]))
            {
                return refuse(&m);
            }
            reserved.push(r.ip);
            ids.push(r.id());
        }
        Ok(())
    }
}
