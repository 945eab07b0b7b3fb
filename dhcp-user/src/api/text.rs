//! Values of a reply as the CLI prints them.

use serde_json::Value;

pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds, and how far from now.
pub fn when(v: &Value) -> String {
    let Some(t) = v.as_u64() else {
        return "-".into();
    };
    let now = crate::xdp::clock::unix_now();
    if t >= now {
        format!("{t} (+{}s)", t - now)
    } else {
        format!("{t} (-{}s)", now - t)
    }
}
