//! Subscriber-aware serving: reservations by relay information, client
//! classes, network boot fields and per-client names: what the state
//! machine needs at run time (`Subscribers`). Their configuration checks
//! are `config`'s.
//!
//! # Precedence
//!
//! An option set at several levels is taken from the most specific one:
//! reservation > class > pool > subnet > global (`[options]`). Among the
//! classes a client is in, the one listed first in the file wins. A
//! reservation is found by client identifier, then hardware address, then
//! (giaddr, circuit-id), circuit-id, remote-id and subscriber-id.

use std::net::Ipv4Addr;

pub use crate::config::ReservationId;
use crate::{
    config::{Config, OptionSet},
    dhcp::classes::{agent_sub, Expr, Facts},
    proto::Boot,
};

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
            .map(|k| ClassRt {
                name: k.name.clone(),
                expr: k.expr().clone(),
                options: k.options.clone(),
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

/// A reply's boot fields as the options ask for them.
pub fn boot_of(o: &OptionSet) -> Boot {
    Boot {
        siaddr: o.next_server,
        sname: o.server_hostname.as_ref().map(|s| s.as_bytes().to_vec()),
        file: o.boot_file_name.as_ref().map(|s| s.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{encode_domain_list, relay_bytes};

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
