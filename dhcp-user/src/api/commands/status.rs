//! `status` and `statistic-get-all`: what the daemon is and how it fares.

use serde_json::{json, Value};

use super::AuditView;
use super::{json::store_json, Context};
use crate::{api::control::Response, proto::msg};

pub(super) fn status(cx: &Context<'_>) -> Response {
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
            "plane-audit": cx.audit.map(AuditView::status_json),
            "lease-store": store_json(&health, Some(&cx.lease_db)),
        }),
    )
}

pub(super) fn statistics(cx: &Context<'_>) -> Response {
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
                "mclt-caps-raised": sync.caps_raised,
            },
            "plane-audit": cx.audit.map(|a| {
                let mut v = a.stats_json();
                v["repairs"] = json!(sync.repairs);
                v
            }),
        }),
    )
}
