//! Prometheus metrics over HTTP (`GET /metrics`), loopback by default. A
//! scrape asks the daemon's main task for the same statistics the control
//! API gives (`statistic-get-all`) and renders them with prometheus-client.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::control::{Pending, Request};

type Labels = Vec<(String, String)>;

fn counters(reg: &mut Registry, name: &str, help: &str, label: &str, v: &Value) {
    let fam = Family::<Labels, Counter>::default();
    for (k, n) in v.as_object().into_iter().flatten() {
        fam.get_or_create(&vec![(label.to_string(), k.clone())])
            .inc_by(n.as_u64().unwrap_or(0));
    }
    reg.register(name, help, fam);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: &Value) {
    let g = Gauge::<i64>::default();
    g.set(v.as_i64().unwrap_or(0));
    reg.register(name, help, g);
}

/// Renders `statistic-get-all`'s answer in the text exposition format.
pub fn render(stats: &Value) -> String {
    let mut reg = Registry::with_prefix("xdhcp");
    counters(
        &mut reg,
        "received_messages",
        "DHCP messages received by the control plane",
        "type",
        &stats["received"],
    );
    counters(
        &mut reg,
        "sent_messages",
        "DHCP messages sent by the control plane",
        "type",
        &stats["sent"],
    );
    counters(
        &mut reg,
        "dropped_messages",
        "Messages the control plane dropped, by reason",
        "reason",
        &stats["dropped"],
    );
    counters(
        &mut reg,
        "malformed_messages",
        "Malformed frames counted and dropped, by reason",
        "reason",
        &stats["malformed"],
    );
    // XDP per-CPU counters, summed: fast-path ACKs by client state, passes
    // to the control plane by reason, frame classes.
    counters(
        &mut reg,
        "xdp",
        "XDP program counters (summed over CPUs)",
        "counter",
        &stats["xdp"],
    );
    let stored = Counter::<u64>::default();
    stored.inc_by(stats["fast-path-renewals-stored"].as_u64().unwrap_or(0));
    reg.register(
        "fast_path_renewals_stored",
        "Renewals answered in the kernel and stored",
        stored,
    );
    gauge(
        &mut reg,
        "lease_map_bindings",
        "Bindings the XDP program can renew",
        &stats["lease-map"]["bindings"],
    );
    gauge(
        &mut reg,
        "lease_map_templates",
        "Reply templates in the XDP map",
        &stats["lease-map"]["templates"],
    );
    // Both planes (the auditor's passes, `crate::auditor`).
    let audit = &stats["plane-audit"];
    if audit.is_object() {
        counters(
            &mut reg,
            "plane_disagreements",
            "Disagreements between the XDP lease map and the lease store the auditor confirmed, by kind (each counted once while it lasts)",
            "kind",
            &audit["disagreements"],
        );
        let passes = Counter::<u64>::default();
        passes.inc_by(audit["passes"].as_u64().unwrap_or(0));
        reg.register("plane_audit_passes", "Audit passes finished", passes);
        let repairs = Counter::<u64>::default();
        repairs.inc_by(audit["repairs"].as_u64().unwrap_or(0));
        reg.register(
            "plane_repairs",
            "Stray entries the auditor removed from the XDP lease map",
            repairs,
        );
        // From the last pass; absent before the first.
        for (name, help, key) in [
            (
                "lease_map_entries",
                "Entries in the XDP lease map, counted in the kernel by the last audit pass (tracks store_fast_path_bindings)",
                "map-entries",
            ),
            (
                "store_fast_path_bindings",
                "Bound fast-path leases the lease map should hold, counted by the last audit pass (tracks lease_map_entries)",
                "store-fast-path-bindings",
            ),
            (
                "plane_disagreements_current",
                "Disagreements the last audit pass confirmed",
                "current",
            ),
            (
                "plane_oldest_unreported_renewal_seconds",
                "Age, at the last audit pass, of the oldest renewal the kernel answered and has not reported to the store (now - (kernel end - lease time))",
                "oldest-unreported-renewal-secs",
            ),
            (
                "plane_audit_last_pass_timestamp_seconds",
                "Unix time the last audit pass began",
                "last-pass",
            ),
        ] {
            if !audit[key].is_null() {
                gauge(&mut reg, name, help, &audit[key]);
            }
        }
    }
    let total = Family::<Labels, Gauge>::default();
    let assigned = Family::<Labels, Gauge>::default();
    for s in stats["subnets"].as_array().into_iter().flatten() {
        let l = vec![
            ("subnet_id".to_string(), s["subnet-id"].to_string()),
            (
                "subnet".to_string(),
                s["subnet"].as_str().unwrap_or("").to_string(),
            ),
        ];
        total
            .get_or_create(&l)
            .set(s["total-addresses"].as_i64().unwrap_or(0));
        assigned
            .get_or_create(&l)
            .set(s["assigned-addresses"].as_i64().unwrap_or(0));
    }
    reg.register("pool_addresses", "Addresses in the subnet's pools", total);
    reg.register(
        "pool_assigned_addresses",
        "Pool addresses held now",
        assigned,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `GET /metrics` on `addr`.
pub async fn serve(
    addr: SocketAddr,
    control: mpsc::Sender<Pending>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let control = control.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(n) = conn.read(&mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics") {
                    let (reply, rx) = oneshot::channel();
                    let request = Request {
                        command: "statistic-get-all".into(),
                        arguments: Value::Null,
                    };
                    if control.send(Pending { request, reply }).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(r) => ("200 OK", render(&r.arguments)),
                        Err(_) => ("503 Service Unavailable", String::new()),
                    }
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statistics_render_as_prometheus_text() {
        let text = render(&json!({
            "received": {"DISCOVER": 3, "REQUEST": 2},
            "sent": {"OFFER": 3},
            "dropped": {"other_server": 1},
            "malformed": {},
            "xdp": {"fp_ack_renewing": 7, "pass_expired": 1},
            "fast-path-renewals-stored": 7,
            "lease-map": {"bindings": 2, "templates": 1},
            "subnets": [{"subnet-id": 1, "subnet": "198.18.0.0/24", "total-addresses": 100, "assigned-addresses": 2}],
            "plane-audit": {
                "passes": 3,
                "disagreements": {"no_lease": 1, "missing": 0},
                "repairs": 1,
                "current": 0,
                "map-entries": 2,
                "store-fast-path-bindings": 2,
                "oldest-unreported-renewal-secs": 7,
                "last-pass": 1700000000,
            },
        }));
        for line in [
            "xdhcp_received_messages_total{type=\"DISCOVER\"} 3",
            "xdhcp_xdp_total{counter=\"fp_ack_renewing\"} 7",
            "xdhcp_lease_map_bindings 2",
            "xdhcp_pool_assigned_addresses{subnet_id=\"1\",subnet=\"198.18.0.0/24\"} 2",
            "xdhcp_fast_path_renewals_stored_total 7",
            "xdhcp_plane_disagreements_total{kind=\"no_lease\"} 1",
            "xdhcp_plane_disagreements_total{kind=\"missing\"} 0",
            "xdhcp_plane_audit_passes_total 3",
            "xdhcp_plane_repairs_total 1",
            "xdhcp_lease_map_entries 2",
            "xdhcp_store_fast_path_bindings 2",
            "xdhcp_plane_oldest_unreported_renewal_seconds 7",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
