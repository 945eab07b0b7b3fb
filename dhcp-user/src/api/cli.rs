//! The management subcommands: a control-API call and a human rendering.

use std::{path::Path, process::ExitCode};

use crate::api::control::{self, Response, ERROR};
use serde_json::{json, Value};

use crate::api::text::{s, when};

/// Calls `command`; prints the JSON answer or `render`s it. Exit 0 when
/// done, 1 on an error, 3 when nothing was found, 4 when `leases audit`
/// found the XDP map and the store disagreeing (Kea's result codes; 4 is
/// its "conflict").
pub fn run(
    socket: &Path,
    json_out: bool,
    command: &str,
    arguments: Value,
    render: fn(&Response),
) -> ExitCode {
    match control::call(socket, command, arguments) {
        Ok(r) => {
            if json_out {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else if r.result == ERROR {
                eprintln!("xdhcp: {}", r.text);
            } else {
                render(&r);
            }
            ExitCode::from(r.result)
        }
        Err(e) => {
            eprintln!("xdhcp: {e:#}");
            ExitCode::from(ERROR)
        }
    }
}

/// An address, else a hardware address (6 bytes), else a client id.
pub fn who(s: &str) -> Value {
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return json!({ "ip-address": s });
    }
    let bytes = s.chars().filter(char::is_ascii_hexdigit).count() / 2;
    if bytes == 6 {
        json!({ "hw-address": s })
    } else {
        json!({ "client-id": s })
    }
}

/// `hw-address` for 6 hex bytes, else `client-id`; or a relay identity
/// written `circuit-id=olt1/1/3`, `remote-id=...`, `subscriber-id=...`.
pub fn client_arg(s: &str) -> Value {
    for k in ["circuit-id", "remote-id", "subscriber-id"] {
        if let Some(v) = s.strip_prefix(k).and_then(|r| r.strip_prefix('=')) {
            return json!({ k: v });
        }
    }
    let bytes = s.chars().filter(char::is_ascii_hexdigit).count() / 2;
    if bytes == 6 {
        json!({ "hw-address": s })
    } else {
        json!({ "client-id": s })
    }
}

pub fn print_reservations(r: &Response) {
    println!(
        "{:<10} {:<16} {:<18} {:<24} source",
        "subnet-id", "address", "hw-address", "client-id"
    );
    for x in r.arguments["reservations"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<16} {:<18} {:<24} {}",
            s(&x["subnet-id"]),
            s(&x["ip-address"]),
            s(&x["hw-address"]),
            relay_or_client_id(x),
            s(&x["source"])
        );
    }
    println!("({})", r.text);
}

/// A reservation's client identifier, or its relay identity.
fn relay_or_client_id(x: &Value) -> String {
    for k in ["circuit-id", "remote-id", "subscriber-id"] {
        if let Some(v) = x[k].as_str() {
            return match x["giaddr"].as_str() {
                Some(g) => format!("{k}={v}@{g}"),
                None => format!("{k}={v}"),
            };
        }
    }
    s(&x["client-id"])
}

pub fn print_text(r: &Response) {
    println!("{}", r.text);
}

pub fn print_status(r: &Response) {
    let a = &r.arguments;
    print_daemon(a);
    let m = &a["lease-map"];
    println!(
        "lease map     {} of {} bindings, {} templates, {} refused (map full)",
        s(&m["bindings"]),
        s(&m["capacity"]),
        s(&m["templates"]),
        s(&m["refused-map-full"])
    );
    let au = &a["plane-audit"];
    if au.is_object() {
        print_plane_audit(au, m);
    }
    print_lease_store(&a["lease-store"]);
    for w in a["warnings"].as_array().into_iter().flatten() {
        println!("WARNING       {}", s(w));
    }
}

/// The daemon itself: version, its interfaces, whether it can stop
/// without a gap, its lease count.
fn print_daemon(a: &Value) {
    println!(
        "xdhcp {} (pid {}), up {} s",
        s(&a["version"]),
        s(&a["pid"]),
        s(&a["uptime"])
    );
    println!("server id     {}", s(&a["server-id"]));
    for i in a["interfaces"].as_array().into_iter().flatten() {
        println!(
            "interface     {} (ifindex {}): XDP {}",
            s(&i["name"]),
            s(&i["ifindex"]),
            s(&i["xdp"])
        );
    }
    let h = &a["hitless-stop"];
    println!(
        "hitless stop  {} ({})",
        if h["possible"] == json!(true) {
            "possible"
        } else {
            "NOT possible"
        },
        s(&h["why"])
    );
    println!("leases        {}", s(&a["leases"]));
}

/// The auditor's schedule, its last pass and what it found; `m` is the
/// lease map's part of the status.
fn print_plane_audit(au: &Value, m: &Value) {
    let every = au["interval-secs"].as_u64().unwrap_or(0);
    let found: Vec<String> = au["disagreements"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let last = &au["last-pass"];
    println!(
        "plane audit   {}; {}; found since start: {}; {} stray entries removed",
        if every == 0 {
            "background off".to_string()
        } else {
            format!("every {every} s")
        },
        last_pass_text(last),
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        },
        s(&m["repairs"]),
    );
    for f in last["current"].as_array().into_iter().flatten() {
        println!("  {}", finding_row(f));
    }
}

fn last_pass_text(last: &Value) -> String {
    if !last.is_object() {
        return "no pass yet".to_string();
    }
    if let Some(why) = last["inconclusive"].as_str() {
        return format!("last pass inconclusive: {why}");
    }
    let n = last["disagreements"].as_u64().unwrap_or(0);
    format!(
        "last pass at {}: {} map entries, {} bound fast-path leases, {}",
        s(&last["at"]),
        s(&last["map-entries"]),
        s(&last["store-fast-path-bindings"]),
        if n == 0 {
            "clean".to_string()
        } else {
            format!("{n} DISAGREEMENTS")
        }
    )
}

/// The lease store's health, a shared database's share, a failing store's backlog.
fn print_lease_store(st: &Value) {
    println!(
        "lease store   {} ({}; {} batches written, {} failed{})",
        s(&st["path"]),
        if st["healthy"] == json!(true) {
            "healthy"
        } else {
            "FAILING"
        },
        s(&st["batches"]),
        s(&st["failed-batches"]),
        st["last-error"]
            .as_str()
            .map_or(String::new(), |e| format!("; last error: {e}"))
    );
    let db = &st["database"];
    if db.is_object() {
        println!(
            "database      {} at {} as node {}: {} rows in {} round trips, {} connections, {} claims lost to other nodes",
            s(&db["backend"]),
            s(&db["where"]),
            s(&db["node"]),
            s(&db["rows"]),
            s(&db["round-trips"]),
            s(&db["reconnects"]),
            s(&db["lost-claims"])
        );
    }
    print_follower(&st["follow"]);
    if let Some(since) = st["failing-since"].as_u64() {
        println!(
            "              failing since {since} (unix): {} replies withheld, {} changes pending, {} write attempts failed in all",
            s(&st["withheld-replies"]),
            s(&st["pending-changes"]),
            s(&st["failed-writes"])
        );
    }
}

pub fn print_stats(r: &Response) {
    let a = &r.arguments;
    print_counters("received", &a["received"]);
    print_counters("sent", &a["sent"]);
    print_counters("dropped", &a["dropped"]);
    print_counters("malformed", &a["malformed"]);
    print_planes(a);
    print_counters("xdp", &a["xdp"]);
    print_counters("lease map", &a["lease-map"]);
    print_subnets(&a["subnets"]);
    print_offer_lines(&a["offer-lines"]);
}

/// One titled line of the counters that are not zero.
fn print_counters(title: &str, v: &Value) {
    let items: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!(
        "{title:<22}{}",
        if items.is_empty() {
            "-".into()
        } else {
            items.join(" ")
        }
    );
}

/// ACKs by plane, and what the XDP program passed to the control plane.
fn print_planes(a: &Value) {
    let x = &a["xdp"];
    let sum = |prefix: &str| -> u64 {
        x.as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    };
    println!(
        "{:<22}fast path (XDP) {}, control plane {}",
        "ACKs",
        sum("fp_ack_"),
        a["sent"]["ACK"].as_u64().unwrap_or(0)
    );
    println!("{:<22}{}", "passed to control", sum("pass_"));
}

/// Pool use and offers, a row per subnet.
fn print_subnets(subnets: &Value) {
    println!(
        "{:<10} {:<20} {:>8} {:>8} {:>6} {:>7} {:>10} {:>9} {:>8}",
        "subnet-id",
        "subnet",
        "pool",
        "in use",
        "use",
        "offers",
        "taken-back",
        "unrequested",
        "declines"
    );
    for sn in subnets.as_array().into_iter().flatten() {
        let (t, h) = (
            sn["total-addresses"].as_u64().unwrap_or(0),
            sn["assigned-addresses"].as_u64().unwrap_or(0),
        );
        println!(
            "{:<10} {:<20} {:>8} {:>8} {:>5.1}% {:>7} {:>10} {:>11} {:>8}",
            s(&sn["subnet-id"]),
            s(&sn["subnet"]),
            t,
            h,
            if t == 0 {
                0.0
            } else {
                100.0 * h as f64 / t as f64
            },
            s(&sn["offers-held"]),
            s(&sn["offers-taken-back"]),
            s(&sn["offers-expired-unrequested"]),
            s(&sn["declines"]),
        );
    }
}

/// The lines whose offers went unrequested or that declined, if any.
fn print_offer_lines(lines: &Value) {
    let lines = lines.as_array().cloned().unwrap_or_default();
    if lines.is_empty() {
        return;
    }
    println!("lines whose offers went unrequested, or that declined:");
    for l in lines {
        println!(
            "  {:<40} offers {} requested {} taken-back {} unrequested {} declines {} hold {} s",
            s(&l["line"]),
            s(&l["offers"]),
            s(&l["requested"]),
            s(&l["taken-back"]),
            s(&l["expired-unrequested"]),
            s(&l["declines"]),
            s(&l["hold-secs"])
        );
    }
}

/// Both planes' view of one lease: the store's (state, end, template)
/// and the kernel's (entry under the lease's key: whether it answers for
/// this address, its end, template slot), then the key.
/// The follower of the other nodes' changes, and each peer.
fn print_follower(f: &Value) {
    if !f.is_object() {
        return;
    }
    println!(
        "following     {}: every change to {} read, {} of other nodes' taken, lag {} ms (highest {} ms), {} full re-reads{}",
        if f["connected"] == json!(true) {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        s(&f["last-change"]),
        s(&f["changes"]),
        s(&f["lag-ms"]),
        s(&f["max-lag-ms"]),
        s(&f["resyncs"]),
        f["last-error"]
            .as_str()
            .map_or(String::new(), |e| format!("; last error: {e}"))
    );
    for (name, p) in f["peers"].as_object().into_iter().flatten() {
        let silent = p["silent-secs"].as_i64().unwrap_or(0);
        println!(
            "  peer {:<12} {} (last heard {} s ago), last change {} of {} read here",
            name,
            if silent > 10 { "SILENT" } else { "alive" },
            silent,
            s(&p["last-change"]),
            s(&p["changes"]),
        );
    }
}

fn finding_row(f: &Value) -> String {
    let k = &f["kernel"];
    let st = &f["store"];
    format!(
        "{:<16} {:<16} {:<30} {:<22} {:<22} {:<9} {:>6}{}",
        s(&f["kind"]),
        s(&f["ip-address"]),
        s(&f["key"]),
        when(&k["expires"]),
        when(&st["expires"]),
        s(&st["state"]),
        match (k["subnet-id"].as_u64(), st["subnet-id"].as_u64()) {
            (Some(a), Some(b)) if a != b => format!("{a}/{b}"),
            (Some(a), _) | (None, Some(a)) => a.to_string(),
            _ => "-".into(),
        },
        if f["repair"] == json!(true) {
            "  removing"
        } else {
            ""
        }
    )
}

/// `leases audit`: one row per disagreement, both planes' views.
pub fn print_audit(r: &Response) {
    let a = &r.arguments;
    let list: Vec<&Value> = a["current"].as_array().into_iter().flatten().collect();
    if !list.is_empty() {
        println!(
            "{:<16} {:<16} {:<30} {:<22} {:<22} {:<9} {:>6}",
            "kind", "address", "map key", "kernel expires", "store expires", "store", "subnet"
        );
        for f in &list {
            println!("{}", finding_row(f));
        }
    }
    println!("({}; {} ms)", r.text, s(&a["ms"]),);
}
