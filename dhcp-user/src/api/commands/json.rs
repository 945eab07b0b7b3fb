//! Leases, map entries and the store's health as the API shows them.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use dhcp_common::{LeaseKey, LeaseValue};

use crate::{
    lease::{Lease, KIND_CLIENT_ID, KIND_HW},
    store::StoreHealth,
    xdp::clock::mono_ns_to_unix_ceil,
    xdp::map_sync::{key_text, lease_key, LeaseReader},
};

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
        "pending-changes": h.pending_ops,
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
    if let Some(f) = &h.follow {
        v["follow"] = f.json();
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
