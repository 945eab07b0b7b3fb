//! The two servers under test, xdhcp and ISC Kea: their configurations on
//! the bench lab, a fresh start with an empty lease store, Kea's Debian
//! packages, and xdhcp's own request/reply counts from its log.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Result;
use xdhcp_lab::{proc::Logged, Netns};

use super::lab::BenchLab;
use crate::setup::install_missing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum System {
    Xdhcp,
    Kea,
}

impl System {
    pub(super) fn name(self) -> &'static str {
        match self {
            System::Xdhcp => "xdhcp (control plane, SQLite fsync)",
            System::Kea => "Kea 2.2 (memfile, 2 threads)",
        }
    }
}

/// Most new clients one step may bring: the pool (198.18.1.0 -
/// 198.18.255.250) holds 65,275 addresses, and a step that outgrows it
/// loses to exhaustion, not to the server.
pub(super) const MAX_NEW_CLIENTS: u64 = 60_000;

const XDHCP_CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DIR@/xdhcp-leases.db"
lease_db_sync = "full"

[[interface]]
name = "srv0"
xdp = "@XDP@"

[logging]
level = "warn"

[options]
lease_time = 3600

[[subnet]]
id = 1
subnet = "198.18.0.0/16"
interface = "srv0"
[[subnet.pool]]
start = "198.18.1.0"
end = "198.18.255.250"

# The tags loadgen's `--shape dot1q` and `--shape qinq` send (the
# fast path's per-shape rows).
[[subnet]]
id = 100
subnet = "198.19.0.0/17"
interface = "srv0"
vlan = 100
[[subnet.pool]]
start = "198.19.0.10"
end = "198.19.127.250"

[[subnet]]
id = 200
subnet = "198.19.128.0/17"
interface = "srv0"
vlan = 100
inner_vlan = 200
[[subnet.pool]]
start = "198.19.128.10"
end = "198.19.255.250"
"#;

const KEA_CONFIG: &str = r#"{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "srv0" ], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": true, "lfc-interval": 0,
                      "name": "@DIR@/kea-leases4.csv" },
  "multi-threading": { "enable-multi-threading": true, "thread-pool-size": 2,
                       "packet-queue-size": 64 },
  "valid-lifetime": 3600,
  "subnet4": [ { "id": 1, "subnet": "198.18.0.0/16",
                 "pools": [ { "pool": "198.18.1.0 - 198.18.255.250" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                 "output_options": [ { "output": "stderr" } ] } ]
} }"#;

/// Kea for directly connected clients (loadgen): raw sockets, as Kea's
/// documentation asks for clients without an address yet.
pub(super) fn kea_raw_config() -> String {
    assert!(KEA_CONFIG.contains(r#""dhcp-socket-type": "udp""#));
    KEA_CONFIG.replace(
        r#""dhcp-socket-type": "udp""#,
        r#""dhcp-socket-type": "raw""#,
    )
}

/// `system` for perfdhcp (a relay: Kea on UDP sockets), fast path off.
pub(super) fn start(lab: &BenchLab, system: System, bin: &Path) -> Result<Logged> {
    start_with(lab, system, bin, "off", KEA_CONFIG)
}

/// `system` with an empty lease store; `xdp` is xdhcp's setting,
/// `kea_config` Kea's configuration.
pub(super) fn start_with(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    xdp: &str,
    kea_config: &str,
) -> Result<Logged> {
    remove_lease_stores(lab);
    match system {
        System::Xdhcp => start_xdhcp(lab, bin, xdp),
        System::Kea => start_kea(lab, kea_config),
    }
}

fn remove_lease_stores(lab: &BenchLab) {
    for f in [
        "xdhcp-leases.db",
        "xdhcp-leases.db-wal",
        "xdhcp-leases.db-shm",
        "kea-leases4.csv",
        "kea-leases4.csv.2",
    ] {
        let _ = std::fs::remove_file(lab.dir.join(f));
    }
}

fn start_xdhcp(lab: &BenchLab, bin: &Path, xdp: &str) -> Result<Logged> {
    let cfg = lab.dir.join("xdhcp.toml");
    std::fs::write(&cfg, xdhcp_config(&lab.dir, xdp, None))?;
    spawn_xdhcp(&lab.srv, bin, &cfg, &lab.control_socket())
}

/// An xdhcp node keeping its leases in a shared PostgreSQL database.
#[derive(Clone, Copy, Debug)]
pub(super) struct PgNode<'a> {
    /// The database's connection string.
    pub url: &'a str,
    /// Its name in the database, and the stem of its files in the lab's
    /// folder.
    pub name: &'a str,
    /// Its address on the segment, which is its server id.
    pub server_id: &'a str,
}

/// xdhcp's configuration: the embedded store, or `node`'s `[database]`.
/// (`dir`: the lab's folder).
pub(super) fn xdhcp_config(dir: &Path, xdp: &str, node: Option<PgNode>) -> String {
    let dir = dir.display().to_string();
    let text = XDHCP_CONFIG.replace("@DIR@", &dir).replace("@XDP@", xdp);
    let Some(n) = node else {
        return text;
    };
    let embedded = format!("lease_db = \"{dir}/xdhcp-leases.db\"\nlease_db_sync = \"full\"\n");
    assert!(text.contains(&embedded));
    text.replace(&embedded, "").replace(
        "server_id = \"198.18.0.1\"",
        &format!("server_id = \"{}\"", n.server_id),
    ) + &format!("\n[database]\nurl = \"{}\"\nnode = \"{}\"\n", n.url, n.name)
}

/// `node`'s configuration file, written.
pub(super) fn write_node_config(lab: &BenchLab, xdp: &str, node: PgNode) -> Result<PathBuf> {
    let cfg = lab.dir.join(format!("xdhcp-{}.toml", node.name));
    std::fs::write(&cfg, xdhcp_config(&lab.dir, xdp, Some(node)))?;
    Ok(cfg)
}

/// xdhcp `node` in `ns` on the shared database (whose schema the caller
/// has made), answering on `socket`.
pub(super) fn start_pg_node(
    lab: &BenchLab,
    ns: &Netns,
    bin: &Path,
    xdp: &str,
    node: PgNode,
    socket: &Path,
) -> Result<Logged> {
    let cfg = write_node_config(lab, xdp, node)?;
    spawn_xdhcp(ns, bin, &cfg, socket)
}

fn spawn_xdhcp(ns: &Netns, bin: &Path, cfg: &Path, socket: &Path) -> Result<Logged> {
    let _ = std::fs::remove_file(socket);
    let d = Logged::spawn(
        ns,
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(cfg)
            .arg("--control-socket")
            .arg(socket)
            .env("RUST_LOG", "warn,xdhcp::daemon::serve=info"),
        None,
    )?;
    d.wait_for("xdhcp serving", Duration::from_secs(30))?;
    Ok(d)
}

/// Kea for loadgen (raw sockets) with its PostgreSQL lease backend on
/// database `kea` at `host`, as `kea-admin db-init pgsql` made it.
pub(super) fn kea_pg_config(host: &str) -> String {
    let memfile = r#"{ "type": "memfile", "persist": true, "lfc-interval": 0,
                      "name": "@DIR@/kea-leases4.csv" }"#;
    let raw = kea_raw_config();
    assert!(raw.contains(memfile));
    raw.replace(
        memfile,
        &format!(
            r#"{{ "type": "postgresql", "name": "kea", "host": "{host}", "port": 5432,
                      "user": "postgres" }}"#
        ),
    )
}

pub(super) fn start_kea_with(lab: &BenchLab, ns: &Netns, kea_config: &str) -> Result<Logged> {
    let cfg = lab.dir.join("kea.json");
    std::fs::write(
        &cfg,
        kea_config.replace("@DIR@", &lab.dir.display().to_string()),
    )?;
    let d = Logged::spawn(
        ns,
        Command::new("kea-dhcp4")
            .arg("-c")
            .arg(&cfg)
            .env("KEA_PIDFILE_DIR", &lab.dir)
            .env("KEA_LOCKFILE_DIR", &lab.dir),
        None,
    )?;
    // Kea logs nothing at WARN when it starts well: give it time.
    std::thread::sleep(Duration::from_secs(2));
    Ok(d)
}

fn start_kea(lab: &BenchLab, kea_config: &str) -> Result<Logged> {
    start_kea_with(lab, &lab.srv, kea_config)
}

/// Sums the numbers in "received [A=1 B=2] sent [C=3]" from xdhcp's log.
pub(super) fn server_counts(lines: &[String]) -> Option<(u64, u64)> {
    let line = lines
        .iter()
        .find(|l| l.contains("control plane: received ["))?;
    let sum = |section: &str| -> u64 {
        line.split(section)
            .nth(1)
            .and_then(|r| r.split(']').next())
            .map_or(0, |kv| {
                kv.split_whitespace()
                    .filter_map(|p| p.split('=').nth(1)?.parse::<u64>().ok())
                    .sum()
            })
    };
    Some((sum("received ["), sum("sent [")))
}

/// Installs Kea (and with it perfdhcp) when missing, and ethtool (the
/// PostgreSQL section's bridge ports need GRO on).
pub(super) fn ensure_peer_packages() -> Result<()> {
    install_missing(&["kea-dhcp4-server", "kea-admin", "ethtool"])?;
    // The Debian package starts a system-wide Kea; it must not compete.
    let _ = Command::new("systemctl")
        .args(["stop", "kea-dhcp4-server"])
        .status();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdhcp_log_counts_are_summed_per_direction() {
        let lines = vec![
            "xdhcp serving".to_string(),
            "control plane: received [DISCOVER=10 REQUEST=7] sent [OFFER=10 ACK=6 NAK=1]"
                .to_string(),
        ];
        assert_eq!(server_counts(&lines), Some((17, 17)));
        assert_eq!(server_counts(&lines[..1]), None);
    }

    #[test]
    fn a_node_on_the_database_has_no_embedded_store() {
        let node = PgNode {
            url: "host=198.18.0.9 dbname=xdhcp",
            name: "node-b",
            server_id: "198.18.0.3",
        };
        let c = xdhcp_config(Path::new("/tmp/lab"), "native", Some(node));
        assert!(!c.contains("lease_db"), "{c}");
        assert!(c.contains("server_id = \"198.18.0.3\""), "{c}");
        assert!(c.ends_with(
            "\n[database]\nurl = \"host=198.18.0.9 dbname=xdhcp\"\nnode = \"node-b\"\n"
        ));
        assert_eq!(c.matches("198.18.0.1\"").count(), 0, "{c}");
        assert_eq!(
            xdhcp_config(Path::new("/tmp/lab"), "off", None),
            XDHCP_CONFIG
                .replace("@DIR@", "/tmp/lab")
                .replace("@XDP@", "off")
        );
        let k = kea_pg_config("198.18.0.9");
        assert!(k.contains(r#""type": "postgresql", "name": "kea", "host": "198.18.0.9""#));
        assert!(!k.contains("memfile") && k.contains(r#""dhcp-socket-type": "raw""#));
    }

    #[test]
    fn kea_for_loadgen_takes_raw_sockets() {
        let raw = kea_raw_config();
        assert!(raw.contains(r#""dhcp-socket-type": "raw""#));
        assert_eq!(raw.replace("\"raw\"", "\"udp\""), KEA_CONFIG);
    }
}
