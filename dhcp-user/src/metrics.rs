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
    let st = &stats["lease-store"];
    gauge(
        &mut reg,
        "lease_store_healthy",
        "1 while the lease store takes writes, 0 while a batch is refused and retried (its replies withheld)",
        &Value::from(i64::from(st["healthy"].as_bool().unwrap_or(false))),
    );
    for (name, key, help) in [
        (
            "lease_store_batches",
            "batches",
            "Batches written to the lease store",
        ),
        (
            "lease_store_failed_writes",
            "failed-writes",
            "Lease store write attempts that failed (each is retried)",
        ),
        (
            "lease_store_failed_batches",
            "failed-batches",
            "Batches the lease store refused at least once",
        ),
        (
            "lease_store_recovered_batches",
            "recovered-batches",
            "Batches written after one or more retries",
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(st[key].as_u64().unwrap_or(0));
        reg.register(name, help, c);
    }
    gauge(
        &mut reg,
        "lease_store_withheld_replies",
        "Replies held back until the batch being retried is written",
        &st["withheld-replies"],
    );
    gauge(
        &mut reg,
        "lease_store_failing_since_seconds",
        "Unix time of the first failed attempt of the batch being retried (0 while healthy)",
        &st["failing-since"],
    );
    gauge(
        &mut reg,
        "lease_store_last_write_seconds",
        "Unix time of the last successful lease store write",
        &st["last-write"],
    );
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
            "lease-store": {"healthy": false, "batches": 9, "failed-writes": 4, "failed-batches": 1, "recovered-batches": 0, "withheld-replies": 3, "failing-since": 1_700_000_000u64, "last-write": 1_699_999_990u64},
            "subnets": [{"subnet-id": 1, "subnet": "198.18.0.0/24", "total-addresses": 100, "assigned-addresses": 2}],
        }));
        for line in [
            "xdhcp_received_messages_total{type=\"DISCOVER\"} 3",
            "xdhcp_xdp_total{counter=\"fp_ack_renewing\"} 7",
            "xdhcp_lease_map_bindings 2",
            "xdhcp_pool_assigned_addresses{subnet_id=\"1\",subnet=\"198.18.0.0/24\"} 2",
            "xdhcp_fast_path_renewals_stored_total 7",
            "xdhcp_lease_store_healthy 0",
            "xdhcp_lease_store_failed_writes_total 4",
            "xdhcp_lease_store_failed_batches_total 1",
            "xdhcp_lease_store_withheld_replies 3",
            "xdhcp_lease_store_failing_since_seconds 1700000000",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
