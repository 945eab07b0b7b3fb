//! The `lease4-*` commands, and how they name a lease or a client.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use dhcp_common::{LeaseKey, LeaseValue};

use super::{
    json::{lease_json, lease_json_both, map_key, with_kernel_view},
    reply, Context, Outcome,
};
use crate::{
    api::control::Response,
    config::Ipv4Net,
    dhcp::server::Server,
    lease::{Lease, LeaseState, KIND_CLIENT_ID},
    store::StoreOp,
    xdp::map_sync::LeaseReader,
};

pub(super) fn get(cx: &Context<'_>, a: &Value) -> Outcome {
    reply(match find(cx.server, a) {
        Ok(Some(l)) => Response::ok("lease found", lease_json_both(l, cx.kernel)),
        Ok(None) => Response::empty("no such lease"),
        Err(e) => Response::error(e),
    })
}

pub(super) fn delete(cx: &mut Context<'_>, a: &Value) -> Outcome {
    let op = match find(cx.server, a) {
        Ok(Some(l)) => StoreOp::delete_of(l),
        Ok(None) => return reply(Response::empty("no such lease")),
        Err(e) => return reply(Response::error(e)),
    };
    let StoreOp::Delete { ip, .. } = op else {
        unreachable!()
    };
    cx.server.leases.remove(ip);
    tracing::info!(%ip, "lease deleted by the control API");
    (
        Response::ok(format!("lease {ip} deleted"), Value::Null),
        vec![op],
    )
}

pub(super) fn release(cx: &mut Context<'_>, a: &Value) -> Outcome {
    let l = match find(cx.server, a) {
        Ok(Some(l)) => l.clone(),
        Ok(None) => return reply(Response::empty("no such lease")),
        Err(e) => return reply(Response::error(e)),
    };
    if l.state != LeaseState::Bound {
        let why = format!("lease {} is {}, not bound", l.ip, l.state.as_str());
        return reply(Response::error(why));
    }
    let now = cx.now;
    let released = cx
        .server
        .leases
        .set_state(l.ip, LeaseState::Released, now, now)
        .cloned();
    tracing::info!(ip = %l.ip, "lease released by the control API");
    (
        Response::ok(format!("lease {} released", l.ip), Value::Null),
        released.into_iter().map(StoreOp::Put).collect(),
    )
}

pub(super) fn add(cx: &mut Context<'_>, a: &Value) -> Outcome {
    match add_lease(cx, a) {
        Ok((l, displaced)) => {
            let text = format!("lease {} added", l.ip);
            let json = lease_json(&l);
            // The client's previous binding in the subnet ends in the store
            // (and the map) in the same batch.
            let mut ops = vec![StoreOp::Put(l)];
            ops.extend(displaced.map(StoreOp::Put));
            (Response::ok(text, json), ops)
        }
        Err(e) => reply(Response::error(e)),
    }
}

/// `lease4-get-all`'s leases, in address order, as `lease_json` and each
/// one's map key (for the kernel's view, added off the main task).
pub type LeaseRows = Vec<(Value, Ipv4Addr, Option<LeaseKey>)>;

pub fn lease_rows(server: &Server, a: &Value) -> Result<LeaseRows, Response> {
    let subnet = match a.get("subnet").and_then(Value::as_str) {
        Some(s) => match s.parse::<Ipv4Net>() {
            Ok(n) => Some(n),
            Err(e) => return Err(Response::error(format!("subnet {s:?}: {e}"))),
        },
        None => None,
    };
    let state = a.get("state").and_then(Value::as_str);
    let mut leases: Vec<&Lease> = server
        .leases
        .iter()
        .filter(|l| subnet.is_none_or(|n| n.contains(l.ip)))
        .filter(|l| state.is_none_or(|s| l.state.as_str() == s))
        .collect();
    leases.sort_by_key(|l| l.ip);
    Ok(leases
        .into_iter()
        .map(|l| {
            let mut v = lease_json(l);
            if let Some(n) = server.leases.granted_by(l.ip) {
                v["node"] = n.into();
            }
            (v, l.ip, map_key(l))
        })
        .collect())
}

/// The answer to `lease4-get-all` from `rows`, each with the kernel's
/// view when `kernel` is given (a few keys read one by one, many by
/// reading the whole map once).
pub fn lease_list(rows: LeaseRows, kernel: Option<&LeaseReader>) -> Response {
    let n = rows.len();
    if n == 0 {
        return Response::empty("0 leases");
    }
    let list: Vec<Value> = match kernel {
        None => rows.into_iter().map(|(v, _, _)| v).collect(),
        Some(r) if n <= 256 => rows
            .into_iter()
            .map(|(v, ip, k)| {
                let e = k.and_then(|k| r.get(&k));
                with_kernel_view(v, ip, e.as_ref())
            })
            .collect(),
        Some(r) => {
            let all: std::collections::HashMap<LeaseKey, LeaseValue> = match r.entries() {
                Ok(e) => e.into_iter().collect(),
                Err(e) => return Response::error(format!("reading the XDP lease map: {e:#}")),
            };
            rows.into_iter()
                .map(|(v, ip, k)| with_kernel_view(v, ip, k.and_then(|k| all.get(&k))))
                .collect()
        }
    };
    Response::ok(format!("{n} leases"), json!({ "leases": list }))
}

/// Parses "aa:bb:cc:dd:ee:ff" (also with '-', '.' or no separators).
fn parse_hex_id(s: &str) -> Option<Vec<u8>> {
    dhcp_common::hex::decode(s, b":-.").ok()
}

/// A bound lease made by the operator: `ip-address` and `hw-address` or
/// `client-id`, optional `valid-lft` (seconds, default 3600). Refused for
/// an address outside every subnet or held by another client.
fn add_lease(cx: &mut Context<'_>, a: &Value) -> Result<(Lease, Option<Lease>), String> {
    let ip: Ipv4Addr = a
        .get("ip-address")
        .and_then(Value::as_str)
        .ok_or("ip-address is required")?
        .parse()
        .map_err(|e| format!("ip-address: {e}"))?;
    let subnet_id = cx
        .server
        .subnet_of(ip)
        .ok_or_else(|| format!("{ip} is in no configured subnet"))?;
    let (client, hw) = client_of(a)?;
    if !cx.server.leases.available_to(ip, &client, cx.now) {
        let state = cx
            .server
            .leases
            .get(ip)
            .filter(|l| l.holds_address(cx.now))
            .map_or("renewable in the XDP fast path", |l| l.state.as_str());
        return Err(format!("{ip} is held by another client ({state})"));
    }
    let secs = valid_lft(a)?;
    let lease = Lease {
        ip,
        client: Some(client),
        hw,
        subnet_id,
        state: LeaseState::Bound,
        expires: cx.now + u64::from(secs),
        lease_secs: secs,
        fast: None,
        relay: None,
    };
    let displaced = cx.server.leases.put(lease.clone());
    if let Some(d) = &displaced {
        tracing::info!(ip = %d.ip, "the client's previous lease was released for the added one");
    }
    tracing::info!(%ip, "lease added by the control API");
    Ok((lease, displaced))
}

/// `valid-lft`: whole seconds, 1 to 2^32 - 1 (what option 51 carries),
/// default 3600. Anything else is refused: 2^32 used to wrap to a 0 s
/// lease, and a negative, fractional or quoted number to fall back to the
/// default.
fn valid_lft(a: &Value) -> Result<u32, String> {
    match a.get("valid-lft") {
        None | Some(Value::Null) => Ok(crate::dhcp::server::DEFAULT_LEASE_SECS),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "valid-lft {v}: not a lease time in seconds (1-{})",
                    u32::MAX
                )
            }),
    }
}

/// A client key and its hardware bytes (htype + chaddr, for operators).
pub type ClientAndHw = (crate::lease::ClientKey, Box<[u8]>);

/// The client key and hardware bytes named by `hw-address` or `client-id`.
pub fn client_of(a: &Value) -> Result<ClientAndHw, String> {
    if let Some(hw) = a.get("hw-address").and_then(Value::as_str) {
        let mac = parse_hex_id(hw).ok_or_else(|| format!("hw-address {hw:?}: not hex bytes"))?;
        if mac.len() > 16 {
            return Err(format!("hw-address {hw:?}: longer than 16 bytes"));
        }
        let mut h = vec![1u8];
        h.extend_from_slice(&mac);
        return Ok((crate::lease::hw_key(1, &mac), h.into_boxed_slice()));
    }
    if let Some(cid) = a.get("client-id").and_then(Value::as_str) {
        let id = parse_hex_id(cid).ok_or_else(|| format!("client-id {cid:?}: not hex bytes"))?;
        if id.len() < 2 {
            return Err(format!("client-id {cid:?}: at least 2 bytes"));
        }
        return Ok((
            crate::lease::client_id_key(&id),
            vec![1u8].into_boxed_slice(),
        ));
    }
    Err("give hw-address or client-id".into())
}

/// The lease named by `ip-address`, `hw-address` or `client-id`.
fn find<'s>(server: &'s Server, a: &Value) -> Result<Option<&'s Lease>, String> {
    if let Some(ip) = a.get("ip-address").and_then(Value::as_str) {
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("ip-address {ip:?}: {e}"))?;
        return Ok(server.leases.get(ip));
    }
    if let Some(hw) = a.get("hw-address").and_then(Value::as_str) {
        let mac = parse_hex_id(hw).ok_or_else(|| format!("hw-address {hw:?}: not hex bytes"))?;
        return Ok(server
            .leases
            .iter()
            .filter(|l| l.hw.get(1..) == Some(&mac[..]))
            .max_by_key(|l| l.expires));
    }
    if let Some(cid) = a.get("client-id").and_then(Value::as_str) {
        let id = parse_hex_id(cid).ok_or_else(|| format!("client-id {cid:?}: not hex bytes"))?;
        let mut key = vec![KIND_CLIENT_ID];
        key.extend_from_slice(&id);
        return Ok(server
            .leases
            .iter()
            .filter(|l| l.client.as_deref() == Some(&key[..]))
            .max_by_key(|l| l.expires));
    }
    Err("give ip-address, hw-address or client-id".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_parse_with_any_separator_and_refuse_junk() {
        assert_eq!(
            parse_hex_id("02:00:5e:10:00:07"),
            Some(vec![2, 0, 0x5e, 0x10, 0, 7])
        );
        assert_eq!(
            parse_hex_id("02-00-5e-10-00-07"),
            Some(vec![2, 0, 0x5e, 0x10, 0, 7])
        );
        assert_eq!(parse_hex_id("ff01"), Some(vec![0xff, 1]));
        assert_eq!(parse_hex_id("zz:01"), None);
        assert_eq!(parse_hex_id(""), None);
    }

    #[test]
    fn valid_lft_is_a_lease_time_or_refused() {
        assert_eq!(
            valid_lft(&json!({})),
            Ok(crate::dhcp::server::DEFAULT_LEASE_SECS)
        );
        assert_eq!(
            valid_lft(&json!({"valid-lft": null})),
            Ok(crate::dhcp::server::DEFAULT_LEASE_SECS)
        );
        assert_eq!(valid_lft(&json!({"valid-lft": 600})), Ok(600));
        assert_eq!(valid_lft(&json!({"valid-lft": u32::MAX})), Ok(u32::MAX));
        // 2^32 used to wrap to a 0 s lease; the others fell back to 3600.
        for bad in [
            json!(1u64 << 32),
            json!(u64::MAX),
            json!(0),
            json!(-5),
            json!(1.5),
            json!("600"),
        ] {
            let e = valid_lft(&json!({ "valid-lft": bad })).expect_err(&bad.to_string());
            assert!(e.starts_with("valid-lft"), "{e}");
        }
    }
}
