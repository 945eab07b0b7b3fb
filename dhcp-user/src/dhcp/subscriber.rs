//! Subscriber-aware serving: reservations by relay information, client
//! classes, network boot fields and per-client names. The configuration
//! checks for them live here, and so does what the state machine needs at
//! run time (`Subscribers`).
//!
//! # Precedence
//!
//! An option set at several levels is taken from the most specific one:
//! reservation > class > pool > subnet > global (`[options]`). Among the
//! classes a client is in, the one listed first in the file wins. A
//! reservation is found by client identifier, then hardware address, then
//! (giaddr, circuit-id), circuit-id, remote-id and subscriber-id.

use std::net::Ipv4Addr;

use crate::{
    config::{parse_hex, Config, OptionSet, Reservation},
    dhcp::classes::{agent_sub, Expr, Facts},
};

/// What a reservation is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservationId {
    Hw(Vec<u8>),
    ClientId(Vec<u8>),
    /// (giaddr, circuit-id): the circuit of one relay.
    RelayCircuit(Ipv4Addr, Vec<u8>),
    Circuit(Vec<u8>),
    Remote(Vec<u8>),
    Subscriber(Vec<u8>),
}

impl ReservationId {
    pub fn is_relay(&self) -> bool {
        !matches!(self, ReservationId::Hw(_) | ReservationId::ClientId(_))
    }
}

/// A relay identifier from the file: text, or hex after "0x".
pub fn relay_bytes(s: &str) -> Result<Vec<u8>, String> {
    let b = match s.strip_prefix("0x") {
        Some(h) => parse_hex(h)?,
        None => s.as_bytes().to_vec(),
    };
    if b.is_empty() || b.len() > 255 {
        return Err(format!("{s:?} must be 1-255 bytes"));
    }
    Ok(b)
}

/// The one identity a reservation names.
pub fn reservation_identity(r: &Reservation) -> Result<ReservationId, String> {
    let set = [
        r.hw_address.is_some(),
        r.client_id.is_some(),
        r.circuit_id.is_some(),
        r.remote_id.is_some(),
        r.subscriber_id.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(
            "set exactly one of hw_address, client_id, circuit_id, remote_id and subscriber_id"
                .into(),
        );
    }
    if r.giaddr.is_some() && r.circuit_id.is_none() {
        return Err("giaddr goes with circuit_id only".into());
    }
    if let Some(hw) = &r.hw_address {
        let b = parse_hex(hw)?;
        if b.is_empty() || b.len() > 16 {
            return Err(format!("hw_address {hw:?} must be 1-16 bytes"));
        }
        return Ok(ReservationId::Hw(b));
    }
    if let Some(cid) = &r.client_id {
        let b = parse_hex(cid)?;
        if b.len() < 2 {
            return Err("client_id must be at least 2 bytes".into());
        }
        return Ok(ReservationId::ClientId(b));
    }
    let named = |n: &str, v: &str| relay_bytes(v).map_err(|e| format!("{n}: {e}"));
    if let Some(c) = &r.circuit_id {
        let b = named("circuit_id", c)?;
        return Ok(match r.giaddr {
            Some(g) => ReservationId::RelayCircuit(g, b),
            None => ReservationId::Circuit(b),
        });
    }
    if let Some(v) = &r.remote_id {
        return Ok(ReservationId::Remote(named("remote_id", v)?));
    }
    let v = r.subscriber_id.as_deref().unwrap_or_default();
    Ok(ReservationId::Subscriber(named("subscriber_id", v)?))
}

/// The relay identities a request's option 82 carries, most specific
/// first (the order reservations are looked up in).
pub fn relay_identities(giaddr: Ipv4Addr, rai: &[u8]) -> Vec<ReservationId> {
    let mut out = Vec::new();
    if let Some(c) = agent_sub(rai, 1) {
        if !giaddr.is_unspecified() {
            out.push(ReservationId::RelayCircuit(giaddr, c.to_vec()));
        }
        out.push(ReservationId::Circuit(c.to_vec()));
    }
    if let Some(r) = agent_sub(rai, 2) {
        out.push(ReservationId::Remote(r.to_vec()));
    }
    if let Some(s) = agent_sub(rai, 6) {
        out.push(ReservationId::Subscriber(s.to_vec()));
    }
    out
}

/// The relay identity of a reservation-add (`circuit-id`, `remote-id`,
/// `subscriber-id`, with `giaddr` for a circuit-id), if it names one.
pub fn api_relay_id(a: &serde_json::Value) -> Result<Option<crate::store::ApiRelayId>, String> {
    let text = |k: &str| {
        a.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let id = crate::store::ApiRelayId {
        circuit_id: text("circuit-id"),
        remote_id: text("remote-id"),
        subscriber_id: text("subscriber-id"),
        giaddr: text("giaddr")
            .map(|g| g.parse().map_err(|e| format!("giaddr {g:?}: {e}")))
            .transpose()?,
    };
    if id == crate::store::ApiRelayId::default() {
        return Ok(None);
    }
    if text("hw-address").is_some() || text("client-id").is_some() {
        return Err("name either a client or a relay identity".into());
    }
    Ok(Some(id))
}

/// RFC 1035 labels of a domain list (option 119, uncompressed).
pub fn encode_domain_list(names: &[String]) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    for n in names {
        let n = n.strip_suffix('.').unwrap_or(n);
        if n.is_empty() {
            return Err("domain_search has an empty name".into());
        }
        for label in n.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("domain_search {n:?}: labels must be 1-63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("domain_search {n:?}: not a domain name"));
            }
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
    }
    Ok(v)
}

/// The checks of the options this module adds (part of every level's).
pub fn check_options(o: &OptionSet) -> Result<(), String> {
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
        let n = encode_domain_list(d)?.len();
        if d.is_empty() || n > 255 {
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

/// Names unique, expressions that parse, each refused at its table's line.
pub fn check_classes(c: &Config, text: &str) -> Result<(), (usize, String)> {
    let header_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[class]]"))
        .map(|(n, _)| n + 1)
        .collect();
    for (i, k) in c.classes.iter().enumerate() {
        let header = header_lines.get(i).copied().unwrap_or(0);
        // The line of this table's `match` key, when it can be found.
        let match_line = text
            .lines()
            .enumerate()
            .skip(header)
            .take_while(|(_, l)| !l.trim_start().starts_with('['))
            .find(|(_, l)| l.trim_start().starts_with("match"))
            .map_or(header, |(n, _)| n + 1);
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
        Expr::parse(&k.test).map_err(|x| e(match_line, format!("match: {x}")))?;
        crate::config::check_class_options(&k.options).map_err(|r| e(header, r))?;
    }
    Ok(())
}

/// A class at run time.
pub struct ClassRt {
    pub name: String,
    pub expr: Expr,
    pub options: OptionSet,
}

/// The classes of a configuration, in precedence order.
#[derive(Default)]
pub struct Subscribers {
    pub classes: Vec<ClassRt>,
    /// Some class reads the chaddr (see `classes`).
    pub reads_chaddr: bool,
    /// Some class reads options the XDP program does not compare.
    pub reads_unhashed: bool,
}

impl Subscribers {
    pub fn new(c: &Config) -> Subscribers {
        let classes: Vec<ClassRt> = c
            .classes
            .iter()
            .filter_map(|k| {
                // Validated at load.
                Some(ClassRt {
                    name: k.name.clone(),
                    expr: Expr::parse(&k.test).ok()?,
                    options: k.options.clone(),
                })
            })
            .collect();
        let reads_chaddr = classes.iter().any(|k| k.expr.reads_chaddr());
        let reads_unhashed = classes.iter().any(|k| k.expr.reads_client_options());
        Subscribers {
            classes,
            reads_chaddr,
            reads_unhashed,
        }
    }

    /// Indexes of the classes `f` is in, in precedence order (a bit set:
    /// at most 64 classes take part in matching).
    pub fn classify(&self, f: &Facts<'_>) -> u64 {
        let mut set = 0u64;
        for (i, k) in self.classes.iter().enumerate().take(64) {
            if k.expr.eval(f) {
                set |= 1 << i;
            }
        }
        set
    }

    /// The bit set of the classes named (unknown names are refused at load).
    pub fn mask(&self, names: &[String]) -> u64 {
        names
            .iter()
            .filter_map(|n| self.index(n))
            .filter(|i| *i < 64)
            .fold(0, |m, i| m | 1 << i)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|k| k.name == name)
    }

    /// The classes of `set`, most important first.
    pub fn members(&self, set: u64) -> impl Iterator<Item = &ClassRt> {
        self.classes
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i < 64 && set & (1 << i) != 0)
            .map(|(_, k)| k)
    }
}

/// The fixed-header boot fields of a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    pub siaddr: Option<Ipv4Addr>,
    pub sname: Option<Vec<u8>>,
    pub file: Option<Vec<u8>>,
}

impl Boot {
    pub fn of(o: &OptionSet) -> Boot {
        Boot {
            siaddr: o.next_server,
            sname: o.server_hostname.as_ref().map(|s| s.as_bytes().to_vec()),
            file: o.boot_file_name.as_ref().map(|s| s.as_bytes().to_vec()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.siaddr.is_none() && self.sname.is_none() && self.file.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_lists_encode_as_labels() {
        let v = encode_domain_list(&["lab.example".into(), "example.".into()]).unwrap();
        assert_eq!(v, b"\x03lab\x07example\x00\x07example\x00");
        assert!(encode_domain_list(&["a..b".into()]).is_err());
        assert!(encode_domain_list(&["a b".into()]).is_err());
    }

    #[test]
    fn relay_identities_most_specific_first() {
        let rai = b"\x01\x03c/1\x02\x02r1\x06\x02s1";
        let g = Ipv4Addr::new(198, 18, 1, 1);
        assert_eq!(
            relay_identities(g, rai),
            vec![
                ReservationId::RelayCircuit(g, b"c/1".to_vec()),
                ReservationId::Circuit(b"c/1".to_vec()),
                ReservationId::Remote(b"r1".to_vec()),
                ReservationId::Subscriber(b"s1".to_vec()),
            ]
        );
        assert_eq!(relay_bytes("0x0a0b"), Ok(vec![10, 11]));
        assert_eq!(relay_bytes("port 1"), Ok(b"port 1".to_vec()));
        assert!(relay_bytes("").is_err());
    }
}
