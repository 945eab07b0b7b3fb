//! The PostgreSQL section's lab: one segment (a bridge in a namespace of
//! its own) joining the client namespace, two server namespaces (xdhcp
//! nodes A and B, or Kea in A's) and a database namespace where one
//! PostgreSQL 15 (`xdhcp_lab::postgres::PgCluster`) listens on the
//! segment; the databases reset between steps, and what the nodes and
//! PostgreSQL say they did.

use std::{path::Path, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xdhcp_lab::{postgres::PgCluster, proc::Logged, Lab, Netns};

use super::{
    lab::{cpus, BenchLab},
    loadgen_command,
    servers::{write_node_config, PgNode},
};

/// PostgreSQL's address on the segment.
pub(super) const DB_ADDR: &str = "198.18.0.9";

/// The nodes' names, their addresses (server ids) on the segment.
pub(super) const NODES: [(&str, &str); 2] = [("node-a", "198.18.0.1"), ("node-b", "198.18.0.3")];

pub(super) struct PgLab {
    // Stopped before the lab's namespaces go (its server runs in one).
    pub pg: PgCluster,
    /// Node A in `bench.srv`, the client in `bench.cli`: the bench's own
    /// drivers (loadgen, the renewal ramps) run on it unchanged.
    pub bench: BenchLab,
    pub node_b: Netns,
    url: String,
    _peers: Vec<Logged>,
}

impl PgLab {
    pub(super) fn new(bin: &Path) -> Result<PgLab> {
        let mut lab = Lab::new("pgbench")?;
        let br = lab.netns("br")?;
        let srv = lab.netns("srva")?;
        let node_b = lab.netns("srvb")?;
        let cli = lab.netns("cli")?;
        let db = lab.netns("db")?;
        br.run([
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        br.run(["ip", "link", "set", "br0", "up"])?;
        let queues = cpus() as u32;
        // A switch, not a firewall: bridged frames skip iptables where
        // br_netfilter is loaded (the keys exist only then).
        for key in ["iptables", "ip6tables", "arptables"] {
            let _ = br.run([
                "sysctl",
                "-qw",
                &format!("net.bridge.bridge-nf-call-{key}=0"),
            ]);
        }
        for (ns, ifname, addr, port) in [
            (&srv, "srv0", "198.18.0.1/16", "pa"),
            (&node_b, "srv0", "198.18.0.3/16", "pb"),
            (&cli, "cli0", "198.18.0.2/16", "pc"),
            (&db, "db0", "198.18.0.9/16", "pd"),
        ] {
            lab.veth_with_queues(ns, ifname, Some(addr), &br, port, None, queues)?;
            br.run(["ip", "link", "set", port, "master", "br0"])?;
            // A veth takes the frames its peer's XDP program sends back
            // (XDP_TX) only with NAPI on, which GRO turns on.
            br.run(["ethtool", "-K", port, "gro", "on"])?;
        }
        // ... but a veth wakes its peer for the frames its own XDP
        // program sends back only when the peer runs XDP too: the server
        // ports hold an XDP_PASS program, as the client's end of the
        // bench's direct veth does.
        let mut peers = Vec::new();
        for port in ["pa", "pb"] {
            let mut cmd = loadgen_command(bin);
            cmd.args(["lab-peer", port]);
            let p = Logged::spawn(&br, &cmd, None)?;
            p.wait_for("peer program attached", Duration::from_secs(30))?;
            peers.push(p);
        }
        let pg = PgCluster::start(Some((&db, DB_ADDR)))?;
        let dir = std::env::temp_dir().join(lab.prefix());
        std::fs::create_dir_all(&dir)?;
        let url = format!("host={DB_ADDR} port=5432 user=postgres dbname=xdhcp");
        Ok(PgLab {
            pg,
            bench: BenchLab::from_parts(lab, srv, cli, dir),
            node_b,
            url,
            _peers: peers,
        })
    }

    /// Node `i` (0: A, 1: B) on the shared database.
    pub(super) fn node(&self, i: usize) -> PgNode<'_> {
        PgNode {
            url: &self.url,
            name: NODES[i].0,
            server_id: NODES[i].1,
        }
    }

    /// Node A's connection string over PostgreSQL's Unix socket, for a
    /// node in another lab (a path reaches the server from any namespace).
    pub(super) fn socket_url(&self) -> String {
        format!(
            "host={} user=postgres dbname=xdhcp",
            self.pg.socket_dir().display()
        )
    }

    /// Node `i`'s namespace and control socket.
    pub(super) fn node_at(&self, i: usize) -> (&Netns, PathBuf) {
        match i {
            0 => (&self.bench.srv, self.bench.control_socket()),
            _ => (&self.node_b, self.bench.dir.join("control-b.sock")),
        }
    }

    /// An empty `xdhcp` database with its schema (`xdhcp db init`).
    pub(super) fn reset_xdhcp_db(&self, bin: &Path) -> Result<()> {
        self.recreate("xdhcp")?;
        let cfg = write_node_config(&self.bench, "off", self.node(0))?;
        let mut init = Command::new(bin);
        init.args(["db", "init", "--config"]).arg(cfg);
        run_in(&self.bench.srv, &init).context("xdhcp db init")
    }

    /// An empty `kea` database with Kea's schema (`kea-admin db-init`).
    pub(super) fn reset_kea_db(&self) -> Result<()> {
        self.recreate("kea")?;
        let mut init = Command::new("kea-admin");
        init.args([
            "db-init", "pgsql", "-u", "postgres", "-n", "kea", "-h", DB_ADDR,
        ]);
        run_in(&self.bench.srv, &init).context("kea-admin db-init pgsql")
    }

    fn recreate(&self, db: &str) -> Result<()> {
        self.pg
            .psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
        self.pg.psql(&format!("CREATE DATABASE {db}"))?;
        Ok(())
    }

    /// Transactions committed in database `db` so far. PostgreSQL's
    /// statistics reach the view when a backend flushes them (at the
    /// latest when it exits): read after the clients have gone.
    pub(super) fn commits(&self, db: &str) -> Result<u64> {
        let v = self.pg.psql(&format!(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"
        ))?;
        v.trim()
            .parse()
            .with_context(|| format!("xact_commit of {db}: {v:?}"))
    }
}

fn run_in(ns: &Netns, cmd: &Command) -> Result<()> {
    let out = ns.command_from(cmd).output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The `database` object of a node's `xdhcp status` (its counters of the
/// database's share), none if the node does not answer.
pub(super) fn node_database(bin: &Path, socket: &Path) -> Option<Value> {
    let out = Command::new(bin)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let st = &v["arguments"]["lease-store"];
    let mut db = st["database"].clone();
    if db.is_object() && st["follow"].is_object() {
        db["follower"] = st["follow"].clone();
    }
    db.is_object().then_some(db)
}
