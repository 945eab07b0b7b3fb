//! What the control API's commands do, on the daemon's main task.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::{json, Value};

use dhcp_common::{LeaseKey, LeaseValue};

use crate::{
    auditor::Auditor,
    clock::mono_ns_to_unix_ceil,
    config::Ipv4Net,
    control::{Request, Response},
    fastmap::{key_text, lease_key, LeaseReader, SyncStats},
    fastpath::Fastpath,
    leases::{Lease, LeaseState, KIND_CLIENT_ID, KIND_HW},
    server::Server,
    store::StoreOp,
    wire::msg,
};

pub use crate::commit::StoreHealth;

/// What the commands may look at besides the state machine.
pub struct Context<'a> {
    pub store_health: &'a Arc<Mutex<StoreHealth>>,
    pub server: &'a mut Server,
    pub fastpath: &'a Fastpath,
    pub sync: &'a Arc<Mutex<SyncStats>>,
    pub started: Instant,
    pub lease_db: String,
    pub lease_map_capacity: u32,
    pub now: u64,
    /// A read handle on the lease map, for the kernel's view of a lease.
    pub kernel: Option<&'a LeaseReader>,
    pub audit: Option<&'a Auditor>,
}

fn hex(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

pub fn lease_json(l: &Lease) -> Value {
    let (hw, cid) = match l.client.as_deref() {
        Some([KIND_CLIENT_ID, id @ ..]) => (None, Some(hex(id, ":"))),
        Some([KIND_HW, _htype, mac @ ..]) => (Some(hex(mac, ":")), None),
        _ => (None, None),
    };
    let hw = hw.or_else(|| (l.hw.len() > 1).then(|| hex(&l.hw[1..], ":")));
    json!({
        "ip-address": l.ip.to_string(),
        "hw-address": hw,
        "client-id": cid,
        "subnet-id": l.subnet_id,
        "state": l.state.as_str(),
        "expires": l.expires,
        "valid-lft": l.lease_secs,
        "fast-path": l.fast.is_some(),
        "map-key": map_key(l).as_ref().map(key_text),
    })
}

/// The lease store's health, for `status` and the statistics (metrics).
pub fn store_json(h: &StoreHealth, path: Option<&str>) -> Value {
    let mut v = json!({
        "healthy": h.last_error.is_none(),
        "batches": h.batches,
        "failed-batches": h.failed_batches,
        "failed-writes": h.failed_writes,
        "recovered-batches": h.recovered_batches,
        "last-error": h.last_error,
        "last-write": h.last_write,
        "failing-since": h.failing_since,
        "withheld-replies": h.withheld_replies,
        "lost-claims": h.lost_claims,
    });
    if let Some(p) = path {
        v["path"] = json!(p);
    }
    if let Some(d) = &h.database {
        v["path"] = json!(format!(
            "{} ({})",
            d["backend"].as_str().unwrap_or("?"),
            d["where"].as_str().unwrap_or("?")
        ));
        v["database"] = d.clone();
    }
    v
}

/// A map entry as the kernel holds it, times in Unix seconds.
pub fn kernel_json(v: &LeaseValue) -> Value {
    json!({
        "ip-address": Ipv4Addr::from(v.ip.to_ne_bytes()).to_string(),
        "subnet-id": v.subnet_id,
        "expires": mono_ns_to_unix_ceil(v.expires_mono_ns),
        "reported": mono_ns_to_unix_ceil(v.reported_mono_ns),
        "unreported-renewal": v.expires_mono_ns > v.reported_mono_ns,
        "lease-secs": v.lease_secs,
        "template-id": v.template_id,
        "ifindex": v.ifindex,
    })
}

/// The lease-map key `l`'s client has, if it fits one.
pub fn map_key(l: &Lease) -> Option<LeaseKey> {
    l.client.as_deref().and_then(lease_key)
}

/// Adds the kernel's view to `lease_json`'s: the map entry under the
/// lease's key as the kernel holds it (`entry`), whether it answers for
/// this lease's address, and the kernel's end (Unix time) beside the
/// store's.
pub fn with_kernel_view(mut v: Value, ip: Ipv4Addr, entry: Option<&LeaseValue>) -> Value {
    let in_map = entry.is_some_and(|e| Ipv4Addr::from(e.ip.to_ne_bytes()) == ip);
    v["in-xdp-map"] = json!(in_map);
    v["xdp-map"] = entry.map_or(Value::Null, kernel_json);
    v
}

/// One lease, both planes.
pub fn lease_json_both(l: &Lease, kernel: Option<&LeaseReader>) -> Value {
    let v = lease_json(l);
    match kernel {
        Some(r) => {
            let entry = map_key(l).and_then(|k| r.get(&k));
            with_kernel_view(v, l.ip, entry.as_ref())
        }
        None => v,
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
        .map(|l| (lease_json(l), l.ip, map_key(l)))
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

/// Runs one command; returns the answer and the lease changes to commit.
pub fn execute(req: &Request, cx: &mut Context<'_>) -> (Response, Vec<StoreOp>) {
    let a = &req.arguments;
    let none = Vec::new();
    match req.command.as_str() {
        // Kea's name too.
        "status" | "status-get" => {
            let sync = *cx.sync.lock().unwrap();
            let warnings: Vec<String> = cx
                .server
                .utilisation(cx.now)
                .into_iter()
                .filter(|(id, ..)| cx.server.offer_stats(*id).1)
                .map(|(id, net, total, _)| {
                    let (o, _) = cx.server.offer_stats(id);
                    format!(
                        "subnet {net} (id {id}): {} offers held in a pool of {total}, beyond its protected share: new DISCOVERs take held offers' addresses (a DISCOVER flood?)",
                        o.held
                    )
                })
                .collect();
            let health = cx.store_health.lock().unwrap().clone();
            let interfaces: Vec<Value> = cx
                .fastpath
                .attachments()
                .iter()
                .map(|at| json!({"name": at.ifname, "ifindex": at.ifindex, "xdp": at.mode.to_string()}))
                .collect();
            let hitless = match cx.fastpath.hitless_stop() {
                Ok(why) => json!({"possible": true, "why": why}),
                Err(why) => json!({"possible": false, "why": why}),
            };
            (
                Response::ok(
                    "xdhcp serving",
                    json!({
                        "version": env!("CARGO_PKG_VERSION"),
                        "pid": std::process::id(),
                        "uptime": cx.started.elapsed().as_secs(),
                        "server-id": cx.server.server_id().to_string(),
                        "interfaces": interfaces,
                        "hitless-stop": hitless,
                        "leases": cx.server.leases.len(),
                        "warnings": warnings,
                        "lease-map": {
                            "bindings": sync.entries,
                            "capacity": cx.lease_map_capacity,
                            "templates": sync.templates,
                            "refused-map-full": sync.map_full,
                            "repairs": sync.repairs,
                        },
                        "plane-audit": cx.audit.map(Auditor::status_json),
                        "lease-store": store_json(&health, Some(&cx.lease_db)),
                    }),
                ),
                none,
            )
        }
        "statistic-get-all" => {
            let c = &cx.server.counters;
            let by_type = |a: &[u64; 9]| -> Value {
                (1..=8u8)
                    .map(|t| (msg::name(t).to_string(), json!(a[usize::from(t)])))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            let xdp: Value = match cx.fastpath.stats() {
                Ok(s) => s
                    .named()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                Err(e) => json!({"error": e.to_string()}),
            };
            let subnets: Vec<Value> = cx
                .server
                .utilisation(cx.now)
                .into_iter()
                .map(|(id, net, total, held)| {
                    let (o, over) = cx.server.offer_stats(id);
                    json!({
                        "subnet-id": id, "subnet": net.to_string(), "total-addresses": total, "assigned-addresses": held,
                        "offers-held": o.held, "offers-taken-back": o.taken_back,
                        "offers-expired-unrequested": o.expired_unrequested, "declines": o.declines,
                        "offers-over-share": over,
                    })
                })
                .collect();
            let sync = *cx.sync.lock().unwrap();
            let health = cx.store_health.lock().unwrap().clone();
            (
                Response::ok(
                    "statistics",
                    json!({
                        "lease-store": store_json(&health, None),
                        "received": by_type(&c.received),
                        "sent": by_type(&c.sent),
                        "dropped": c.dropped,
                        "limited": c.limited,
                        "cap-index": {
                            "leases": cx.server.cap_index_sizes().0,
                            "declines": cx.server.cap_index_sizes().1,
                        },
                        "malformed": c.malformed.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "fast-path-renewals-stored": c.fast_renewals,
                        "subnets": subnets,
                        "offer-lines": cx.server.offer_lines_json(20),
                        "xdp": xdp,
                        "lease-map": {
                            "bindings": sync.entries,
                            "templates": sync.templates,
                            "upserts": sync.upserts,
                            "removals": sync.removals,
                            "refused-map-full": sync.map_full,
                            "refused-no-template-slot": sync.no_template_slot,
                        },
                        "plane-audit": cx.audit.map(|a| {
                            let mut v = a.stats_json();
                            v["repairs"] = json!(sync.repairs);
                            v
                        }),
                    }),
                ),
                none,
            )
        }
        "lease4-get-all" => match lease_rows(cx.server, a) {
            Ok(rows) => (lease_list(rows, cx.kernel), none),
            Err(r) => (r, none),
        },
        "lease4-get" => match find(cx.server, a) {
            Ok(Some(l)) => (
                Response::ok("lease found", lease_json_both(l, cx.kernel)),
                none,
            ),
            Ok(None) => (Response::empty("no such lease"), none),
            Err(e) => (Response::error(e), none),
        },
        "lease4-del" => {
            let ip = match find(cx.server, a) {
                Ok(Some(l)) => l.ip,
                Ok(None) => return (Response::empty("no such lease"), none),
                Err(e) => return (Response::error(e), none),
            };
            cx.server.leases.remove(ip);
            tracing::info!(%ip, "lease deleted by the control API");
            (
                Response::ok(format!("lease {ip} deleted"), Value::Null),
                vec![StoreOp::Delete(ip)],
            )
        }
        "lease4-release" => {
            let l = match find(cx.server, a) {
                Ok(Some(l)) => l.clone(),
                Ok(None) => return (Response::empty("no such lease"), none),
                Err(e) => return (Response::error(e), none),
            };
            if l.state != LeaseState::Bound {
                return (
                    Response::error(format!("lease {} is {}, not bound", l.ip, l.state.as_str())),
                    none,
                );
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
        "lease4-add" => match add_lease(cx, a) {
            Ok((l, displaced)) => {
                let text = format!("lease {} added", l.ip);
                let json = lease_json(&l);
                // The client's previous binding in the subnet ends in the
                // store (and the map) in the same batch.
                let mut ops = vec![StoreOp::Put(l)];
                ops.extend(displaced.map(StoreOp::Put));
                (Response::ok(text, json), ops)
            }
            Err(e) => (Response::error(e), none),
        },
        other => (
            Response::error(format!(
                "unknown command {other:?} (known: status, statistic-get-all, lease4-get-all, lease4-get, lease4-add, lease4-del, lease4-release, lease4-audit, reservation-get-all, reservation-add, reservation-del, config-reload, shutdown)"
            )),
            none,
        ),
    }
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
        None | Some(Value::Null) => Ok(crate::server::DEFAULT_LEASE_SECS),
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
pub type ClientAndHw = (crate::leases::ClientKey, Box<[u8]>);

/// The client key and hardware bytes named by `hw-address` or `client-id`.
pub fn client_of(a: &Value) -> Result<ClientAndHw, String> {
    if let Some(hw) = a.get("hw-address").and_then(Value::as_str) {
        let mac = parse_hex_id(hw).ok_or_else(|| format!("hw-address {hw:?}: not hex bytes"))?;
        if mac.len() > 16 {
            return Err(format!("hw-address {hw:?}: longer than 16 bytes"));
        }
        let mut h = vec![1u8];
        h.extend_from_slice(&mac);
        return Ok((crate::leases::hw_key(1, &mac), h.into_boxed_slice()));
    }
    if let Some(cid) = a.get("client-id").and_then(Value::as_str) {
        let id = parse_hex_id(cid).ok_or_else(|| format!("client-id {cid:?}: not hex bytes"))?;
        if id.len() < 2 {
            return Err(format!("client-id {cid:?}: at least 2 bytes"));
        }
        return Ok((
            crate::leases::client_id_key(&id),
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
        assert_eq!(valid_lft(&json!({})), Ok(crate::server::DEFAULT_LEASE_SECS));
        assert_eq!(
            valid_lft(&json!({"valid-lft": null})),
            Ok(crate::server::DEFAULT_LEASE_SECS)
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
