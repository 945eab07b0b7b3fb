//! Prometheus metrics over HTTP (`GET /metrics`, served by hyper with a
//! connection cap, read timeouts and a request-size limit), loopback by
//! default. A scrape asks the daemon's main task for the same statistics the control
//! API gives (`statistic-get-all`) and renders them with prometheus-client.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::Value;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::api::control::{Pending, Request};

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

fn counter(reg: &mut Registry, name: &str, help: &str, n: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(n);
    reg.register(name, help, c);
}

/// Renders `statistic-get-all`'s answer in the text exposition format.
pub fn render(stats: &Value) -> String {
    let mut reg = Registry::with_prefix("xdhcp");
    message_counters(&mut reg, stats);
    fast_path_metrics(&mut reg, stats);
    lease_store_metrics(&mut reg, &stats["lease-store"]);
    plane_audit_metrics(&mut reg, &stats["plane-audit"]);
    subnet_metrics(&mut reg, &stats["subnets"]);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// The control plane's messages, by type or reason.
fn message_counters(reg: &mut Registry, stats: &Value) {
    for (name, help, label, key) in [
        (
            "received_messages",
            "DHCP messages received by the control plane",
            "type",
            "received",
        ),
        (
            "sent_messages",
            "DHCP messages sent by the control plane",
            "type",
            "sent",
        ),
        (
            "dropped_messages",
            "Messages the control plane dropped, by reason",
            "reason",
            "dropped",
        ),
        (
            "limited_requests",
            "Requests a lease or DECLINE cap refused, by reason",
            "reason",
            "limited",
        ),
        (
            "malformed_messages",
            "Malformed frames counted and dropped, by reason",
            "reason",
            "malformed",
        ),
    ] {
        counters(reg, name, help, label, &stats[key]);
    }
}

/// The XDP program's counters and the lease map it answers from.
fn fast_path_metrics(reg: &mut Registry, stats: &Value) {
    // XDP per-CPU counters, summed: fast-path ACKs by client state, passes
    // to the control plane by reason, frame classes.
    counters(
        reg,
        "xdp",
        "XDP program counters (summed over CPUs)",
        "counter",
        &stats["xdp"],
    );
    counter(
        reg,
        "fast_path_renewals_stored",
        "Renewals answered in the kernel and stored",
        stats["fast-path-renewals-stored"].as_u64().unwrap_or(0),
    );
    gauge(
        reg,
        "lease_map_bindings",
        "Bindings the XDP program can renew",
        &stats["lease-map"]["bindings"],
    );
    gauge(
        reg,
        "lease_map_templates",
        "Reply templates in the XDP map",
        &stats["lease-map"]["templates"],
    );
}

/// The lease store's health, its batches and, for a shared database, its
/// share of the work.
fn lease_store_metrics(reg: &mut Registry, st: &Value) {
    gauge(
        reg,
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
        (
            "lease_store_lost_claims",
            "lost-claims",
            "Bindings a shared store refused because another node's client held the address (no ACK sent)",
        ),
    ] {
        counter(reg, name, help, st[key].as_u64().unwrap_or(0));
    }
    database_counters(reg, &st["database"]);
    follow_metrics(reg, &st["follow"]);
    gauge(
        reg,
        "lease_store_withheld_replies",
        "Replies held back until the batch being retried is written",
        &st["withheld-replies"],
    );
    gauge(
        reg,
        "lease_store_pending_changes",
        "Lease changes in the batch being retried (what queues behind it joins it, the daemon's own changes one per address at most)",
        &st["pending-changes"],
    );
    gauge(
        reg,
        "lease_store_failing_since_seconds",
        "Unix time of the first failed attempt of the batch being retried (0 while healthy)",
        &st["failing-since"],
    );
    gauge(
        reg,
        "lease_store_last_write_seconds",
        "Unix time of the last successful lease store write",
        &st["last-write"],
    );
}

/// Only a shared database reports these; SQLite leaves them out.
fn database_counters(reg: &mut Registry, db: &Value) {
    for (name, key, help) in [
        (
            "database_round_trips",
            "round-trips",
            "Round trips to the shared database for lease batches",
        ),
        (
            "database_rows",
            "rows",
            "Lease rows written or deleted in the shared database",
        ),
        (
            "database_reconnects",
            "reconnects",
            "Connections made to the shared database",
        ),
    ] {
        if let Some(v) = db[key].as_u64() {
            counter(reg, name, help, v);
        }
    }
}

/// A shared store's follower of the other nodes, and each peer's silence.
fn follow_metrics(reg: &mut Registry, f: &Value) {
    if !f.is_object() {
        return;
    }
    counter(
        reg,
        "database_followed_changes",
        "Other nodes' lease changes taken from the shared database's feed",
        f["changes"].as_u64().unwrap_or(0),
    );
    counter(
        reg,
        "database_follow_resyncs",
        "Full re-reads of the other nodes' leases after changes were pruned unread",
        f["resyncs"].as_u64().unwrap_or(0),
    );
    gauge(
        reg,
        "database_follow_connected",
        "1 while the follower of the other nodes' changes is connected",
        &Value::from(i64::from(f["connected"] == Value::Bool(true))),
    );
    gauge(
        reg,
        "database_follow_lag_milliseconds",
        "From another node's write to its read here, for the last change read (database clock)",
        &f["lag-ms"],
    );
    let silent = Family::<Labels, Gauge>::default();
    for (name, p) in f["peers"].as_object().into_iter().flatten() {
        silent
            .get_or_create(&vec![("node".to_string(), name.clone())])
            .set(p["silent-secs"].as_i64().unwrap_or(0));
    }
    reg.register(
        "database_peer_silent_seconds",
        "Seconds since each other node's last heartbeat in the shared database",
        silent,
    );
}

/// Both planes (the auditor's passes, `crate::daemon::auditor`); absent
/// while no auditor runs.
fn plane_audit_metrics(reg: &mut Registry, audit: &Value) {
    if !audit.is_object() {
        return;
    }
    counters(
        reg,
        "plane_disagreements",
        "Disagreements between the XDP lease map and the lease store the auditor confirmed, by kind (each counted once while it lasts)",
        "kind",
        &audit["disagreements"],
    );
    counter(
        reg,
        "plane_audit_passes",
        "Audit passes finished",
        audit["passes"].as_u64().unwrap_or(0),
    );
    counter(
        reg,
        "plane_repairs",
        "Stray entries the auditor removed from the XDP lease map",
        audit["repairs"].as_u64().unwrap_or(0),
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
            gauge(reg, name, help, &audit[key]);
        }
    }
}

/// Per subnet, labelled by its id and prefix: pool use and offers.
fn subnet_metrics(reg: &mut Registry, subnets: &Value) {
    let total = Family::<Labels, Gauge>::default();
    let assigned = Family::<Labels, Gauge>::default();
    let offers_held = Family::<Labels, Gauge>::default();
    let taken_back = Family::<Labels, Counter>::default();
    let lapsed = Family::<Labels, Counter>::default();
    let declines = Family::<Labels, Counter>::default();
    for s in subnets.as_array().into_iter().flatten() {
        let l = subnet_labels(s);
        let n = |key: &str| s[key].as_i64().unwrap_or(0);
        let c = |key: &str| s[key].as_u64().unwrap_or(0);
        total.get_or_create(&l).set(n("total-addresses"));
        assigned.get_or_create(&l).set(n("assigned-addresses"));
        offers_held.get_or_create(&l).set(n("offers-held"));
        taken_back.get_or_create(&l).inc_by(c("offers-taken-back"));
        lapsed
            .get_or_create(&l)
            .inc_by(c("offers-expired-unrequested"));
        declines.get_or_create(&l).inc_by(c("declines"));
    }
    reg.register(
        "offers_held",
        "Addresses held for an OFFER not yet requested",
        offers_held,
    );
    reg.register(
        "offers_taken_back",
        "Held offers whose address went to a new client when the pool ran out",
        taken_back,
    );
    reg.register(
        "offers_expired_unrequested",
        "Offers whose hold ran out with no REQUEST",
        lapsed,
    );
    reg.register("declines", "DHCPDECLINEs received", declines);
    reg.register("pool_addresses", "Addresses in the subnet's pools", total);
    reg.register(
        "pool_assigned_addresses",
        "Pool addresses held now",
        assigned,
    );
}

fn subnet_labels(s: &Value) -> Labels {
    vec![
        ("subnet_id".to_string(), s["subnet-id"].to_string()),
        (
            "subnet".to_string(),
            s["subnet"].as_str().unwrap_or("").to_string(),
        ),
    ]
}

/// A request's headers must arrive within this, and a whole exchange end
/// within `EXCHANGE_TIMEOUT`: idle or slow clients cost a slot briefly.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request head read (a scrape's is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Serves `GET /metrics` on `addr` (hyper, HTTP/1.1): at most
/// `control::MAX_CONNECTIONS` at once (a newcomer closes the oldest), each
/// bounded in time and size.
pub async fn serve(
    addr: SocketAddr,
    control: mpsc::Sender<Pending>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    Ok(tokio::spawn(async move {
        let mut backoff = crate::api::control::AcceptBackoff::default();
        let mut live = crate::api::control::Connections::default();
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    backoff.failed("metrics", &e).await;
                    continue;
                }
            };
            backoff.ok();
            let control = control.clone();
            live.add(tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let control = control.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req, control).await) }
                });
                let http = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(conn), service);
                let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, http).await;
            }));
        }
    }))
}

async fn answer(
    req: hyper::Request<Incoming>,
    control: mpsc::Sender<Pending>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return reply(404, "try GET /metrics\n".into());
    }
    let (tx, rx) = oneshot::channel();
    let request = Request {
        command: "statistic-get-all".into(),
        arguments: Value::Null,
    };
    if control.send(Pending { request, reply: tx }).await.is_err() {
        return reply(503, String::new());
    }
    match rx.await {
        Ok(r) => reply(200, render(&r.arguments)),
        Err(_) => reply(503, String::new()),
    }
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
            "xdhcp_lease_store_healthy 0",
            "xdhcp_lease_store_failed_writes_total 4",
            "xdhcp_lease_store_failed_batches_total 1",
            "xdhcp_lease_store_withheld_replies 3",
            "xdhcp_lease_store_failing_since_seconds 1700000000",
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
