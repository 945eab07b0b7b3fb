//! The lease table the CLI prints (`leases list`, `leases get`): the
//! store's view and the kernel's side by side.

use serde_json::{json, Value};

use super::text::{s, when};
use crate::api::control::Response;

/// A shared store's leases name the node that granted each.
fn shared(rows: &[&Value]) -> bool {
    rows.iter().any(|l| l["node"].is_string())
}

fn lease_row(l: &Value, shared: bool) -> String {
    let k = &l["xdp-map"];
    let in_map = match (&l["in-xdp-map"], k.is_object()) {
        (Value::Bool(true), _) => "yes".to_string(),
        // The key's entry answers for another address.
        (_, true) => format!("->{}", s(&k["ip-address"])),
        (Value::Bool(false), _) => "no".to_string(),
        _ => "?".to_string(),
    };
    let node = if shared {
        format!("{:<12} ", s(&l["node"]))
    } else {
        String::new()
    };
    format!(
        "{:<16} {:<18} {:<20} {:<9} {:>6} {:<22} {:<4} {:<16} {:<22} {:>5}  {node}{}",
        s(&l["ip-address"]),
        s(&l["hw-address"]),
        s(&l["client-id"]),
        s(&l["state"]),
        s(&l["subnet-id"]),
        when(&l["expires"]),
        if l["fast-path"] == json!(true) {
            "yes"
        } else {
            "no"
        },
        in_map,
        if k["unreported-renewal"] == json!(true) {
            format!("{}*", when(&k["expires"]))
        } else {
            when(&k["expires"])
        },
        s(&k["template-id"]),
        s(&l["map-key"]),
    )
}

fn lease_header(shared: bool) {
    println!(
        "{:<16} {:<18} {:<20} {:<9} {:>6} {:<22} {:<4} {:<16} {:<22} {:>5}  {}map key",
        "address",
        "hw-address",
        "client-id",
        "state",
        "subnet",
        "store expires",
        "tmpl",
        "in XDP map",
        "kernel expires",
        "slot",
        if shared {
            format!("{:<12} ", "node")
        } else {
            String::new()
        }
    );
}

fn lease_footer(rows: &[&Value]) {
    if rows
        .iter()
        .any(|l| l["xdp-map"]["unreported-renewal"] == json!(true))
    {
        println!("(* renewed in the kernel, not yet reported to the store)");
    }
}

pub fn print_leases(r: &Response) {
    let rows: Vec<&Value> = r.arguments["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let shared = shared(&rows);
    lease_header(shared);
    for l in &rows {
        println!("{}", lease_row(l, shared));
    }
    lease_footer(&rows);
    println!("({})", r.text);
}

pub fn print_lease(r: &Response) {
    if r.arguments.is_null() {
        println!("{}", r.text);
        return;
    }
    let shared = shared(&[&r.arguments]);
    lease_header(shared);
    println!("{}", lease_row(&r.arguments, shared));
    lease_footer(&[&r.arguments]);
}
