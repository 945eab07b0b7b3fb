//! The management subcommands: a control-API call and a human rendering.

use std::{path::Path, process::ExitCode};

use serde_json::{json, Value};
use xdhcp::control::{self, Response, ERROR};

/// Calls `command`; prints the JSON answer or `render`s it. Exit 0 when
/// done, 1 on an error, 3 when nothing was found (Kea's result codes).
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

/// `hw-address` for 6 hex bytes, else `client-id`.
pub fn client_arg(s: &str) -> Value {
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
            s(&x["client-id"]),
            s(&x["source"])
        );
    }
    println!("({})", r.text);
}

pub fn print_text(r: &Response) {
    println!("{}", r.text);
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print_status(r: &Response) {
    let a = &r.arguments;
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
    let m = &a["lease-map"];
    println!(
        "lease map     {} of {} bindings, {} templates, {} refused (map full)",
        s(&m["bindings"]),
        s(&m["capacity"]),
        s(&m["templates"]),
        s(&m["refused-map-full"])
    );
    let st = &a["lease-store"];
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
    if let Some(since) = st["failing-since"].as_u64() {
        println!(
            "              failing since {since} (unix): {} replies withheld, {} write attempts failed in all",
            s(&st["withheld-replies"]),
            s(&st["failed-writes"])
        );
    }
    for w in a["warnings"].as_array().into_iter().flatten() {
        println!("WARNING       {}", s(w));
    }
}

pub fn print_stats(r: &Response) {
    let a = &r.arguments;
    let line = |title: &str, v: &Value| {
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
    };
    line("received", &a["received"]);
    line("sent", &a["sent"]);
    line("dropped", &a["dropped"]);
    line("malformed", &a["malformed"]);
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
    line("xdp", x);
    line("lease map", &a["lease-map"]);
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
    for sn in a["subnets"].as_array().into_iter().flatten() {
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
    let lines = a["offer-lines"].as_array().cloned().unwrap_or_default();
    if !lines.is_empty() {
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
}

fn lease_row(l: &Value) -> String {
    format!(
        "{:<16} {:<18} {:<20} {:<9} {:>10} {:>6} {}",
        s(&l["ip-address"]),
        s(&l["hw-address"]),
        s(&l["client-id"]),
        s(&l["state"]),
        s(&l["expires"]),
        s(&l["subnet-id"]),
        if l["fast-path"] == json!(true) {
            "yes"
        } else {
            "no"
        }
    )
}

fn lease_header() {
    println!(
        "{:<16} {:<18} {:<20} {:<9} {:>10} {:>6} in XDP map",
        "address", "hw-address", "client-id", "state", "expires", "subnet"
    );
}

pub fn print_leases(r: &Response) {
    lease_header();
    for l in r.arguments["leases"].as_array().into_iter().flatten() {
        println!("{}", lease_row(l));
    }
    println!("({})", r.text);
}

pub fn print_lease(r: &Response) {
    if r.arguments.is_null() {
        println!("{}", r.text);
        return;
    }
    lease_header();
    println!("{}", lease_row(&r.arguments));
}
