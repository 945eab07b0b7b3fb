//! The identity a reservation is keyed by: a client (hardware address,
//! client identifier) or a relay's view of its line (option 82).

use std::net::Ipv4Addr;

use super::{parse_hex, Identity};

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

const ONE_OF: &str =
    "set exactly one of hw_address, client_id, circuit_id, remote_id and subscriber_id";

/// The one identity a reservation names.
pub fn reservation_identity(r: &Identity) -> Result<ReservationId, String> {
    let set = [
        r.hw_address.is_some(),
        r.client_id.is_some(),
        r.circuit_id.is_some(),
        r.remote_id.is_some(),
        r.subscriber_id.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(ONE_OF.into());
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
    match &r.subscriber_id {
        Some(v) => Ok(ReservationId::Subscriber(named("subscriber_id", v)?)),
        None => Err(ONE_OF.into()),
    }
}
