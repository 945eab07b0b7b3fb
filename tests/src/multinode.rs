//! Several `xdhcp serve` nodes on one L2 segment and one PostgreSQL
//! (issue 15): a Linux bridge in a namespace of its own, each node in its
//! namespace with a veth onto it (fast path on), PostgreSQL in another on
//! a lab address, and client namespaces on the bridge: one for the load
//! generator, one for dhclient, one for udhcpc. Every node sees every
//! broadcast. Everything goes on drop, also when a test panics.
//!
//! Addresses: node i 198.18.0.(1+i), PostgreSQL 198.18.0.250, the pool
//! 198.18.1.0 to 198.18.63.255 of 198.18.0.0/16.

use std::{net::Ipv4Addr, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    daemon::{read_lines, wait_until},
    postgres::PgCluster,
    proc::{loadgen_bin, xdhcp_bin, Logged},
    Lab, Netns,
};

pub const DB_ADDR: &str = "198.18.0.250";

/// A node's configuration; `@ID@`, `@IF@`, `@URL@`, `@NODE@`, `@LEASE@`
/// and `@EXTRA@` (more `[options]` keys) are filled per node.
const CONFIG: &str = r#"
[server]
server_id = "@ID@"

[[interface]]
name = "@IF@"

[options]
lease_time = @LEASE@
@EXTRA@

[[subnet]]
id = 1
subnet = "198.18.0.0/16"
interface = "@IF@"
[[subnet.pool]]
start = "198.18.1.0"
end = "198.18.63.255"

[database]
url = "@URL@"
node = "@NODE@"
timeout_secs = 2
"#;

pub struct Node {
    pub ns: Netns,
    pub name: String,
    pub addr: Ipv4Addr,
    pub config: PathBuf,
    pub socket: PathBuf,
    daemon: Option<Logged>,
    /// Lines of this node's stopped daemons, for diagnostics.
    pub history: Vec<String>,
}

impl Node {
    pub fn daemon(&self) -> &Logged {
        self.daemon.as_ref().expect("node running")
    }

    pub fn running(&self) -> bool {
        self.daemon.is_some()
    }

    /// `xdhcp ARGS --socket <this node's socket>`: exit code and output.
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String)> {
        let out = Command::new(xdhcp_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()?;
        let Some(code) = out.status.code() else {
            bail!("xdhcp {args:?} killed");
        };
        Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// The node's bound leases as (address, hardware address).
    pub fn bound(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let (code, out) = self.cli(&["leases", "list", "--state", "bound", "--json"])?;
        if code != 0 {
            bail!("leases list on {}: {out}", self.name);
        }
        let v: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
        let rows = v["arguments"]["leases"]
            .as_array()
            .or_else(|| v["leases"].as_array())
            .or_else(|| v.as_array())
            .with_context(|| format!("no leases in {out}"))?;
        rows.iter()
            .map(|l| {
                let ip = l["ip-address"].as_str().context("ip-address")?.parse()?;
                let hw = l["hw-address"].as_str().unwrap_or("").to_string();
                Ok((ip, hw))
            })
            .collect()
    }
}

pub struct MultiNodeLab {
    pub nodes: Vec<Node>,
    pub pg: PgCluster,
    pub bridge: Netns,
    pub db: Netns,
    /// The load generator's namespace (`lg0`).
    pub lg: Netns,
    /// dhclient's (`cli0`) and udhcpc's (`cli0`).
    pub c1: Netns,
    pub c2: Netns,
    pub dir: PathBuf,
    /// XDP_PASS on the bridge's node ports: a veth delivers what its peer
    /// sends with XDP_TX (kernel-answered renewals) only to an end that
    /// runs XDP itself.
    peers: Vec<Logged>,
    // Dropped last: namespaces outlive the processes inside them.
    pub lab: Lab,
}

impl MultiNodeLab {
    /// `n` nodes with `lease_secs` leases, every one started; `extra`
    /// goes into each node's `[options]` table.
    pub fn new(tag: &str, n: usize, lease_secs: u32, extra: &str) -> Result<MultiNodeLab> {
        Self::with_pool(tag, n, lease_secs, extra, "198.18.63.255")
    }

    /// As `new`, the pool ending at `pool_end` (from 198.18.1.0).
    pub fn with_pool(
        tag: &str,
        n: usize,
        lease_secs: u32,
        extra: &str,
        pool_end: &str,
    ) -> Result<MultiNodeLab> {
        crate::require_lab();
        crate::postgres::require_postgres();
        let mut lab = Lab::new(tag)?;
        let bridge = lab.netns("br")?;
        bridge.run(["ip", "link", "add", "br0", "type", "bridge"])?;
        // No STP and no learning delay: ports forward at once.
        bridge.run("ip link set br0 type bridge stp_state 0 forward_delay 0".split(' '))?;
        bridge.run(["ip", "link", "set", "br0", "up"])?;
        let port = |lab: &Lab, ns: &Netns, ifname: &str, addr: Option<&str>, p: &str| {
            lab.veth(ns, ifname, addr, &bridge, p, None)?;
            bridge.run(["ip", "link", "set", p, "master", "br0"])?;
            Ok::<_, anyhow::Error>(())
        };
        let db = lab.netns("db")?;
        port(&lab, &db, "eth0", Some(&format!("{DB_ADDR}/16")), "pdb")?;
        let lg = lab.netns("lg")?;
        port(&lab, &lg, "lg0", None, "plg")?;
        let c1 = lab.netns("c1")?;
        port(&lab, &c1, "cli0", None, "pc1")?;
        let c2 = lab.netns("c2")?;
        port(&lab, &c2, "cli0", None, "pc2")?;
        let dir = std::env::temp_dir().join(lab.prefix());
        std::fs::create_dir_all(&dir)?;
        let pg = PgCluster::start(Some((&db, DB_ADDR)))?;
        let init = Command::new(xdhcp_bin())
            .args(["db", "init"])
            .env("XDHCP_DATABASE_URL", pg.url())
            .output()?;
        if !init.status.success() {
            bail!("db init: {}", String::from_utf8_lossy(&init.stderr));
        }
        let mut nodes = Vec::new();
        let mut peers = Vec::new();
        for i in 0..n {
            let addr = Ipv4Addr::new(198, 18, 0, 1 + i as u8);
            let ns = lab.netns(&format!("n{i}"))?;
            let p = format!("pn{i}");
            port(&lab, &ns, "eth0", Some(&format!("{addr}/16")), &p)?;
            let mut peer = Command::new(loadgen_bin());
            peer.args(["lab-peer", &p]);
            let peer = Logged::spawn(&bridge, &peer, None)?;
            peer.wait_for("peer program attached", Duration::from_secs(20))?;
            peers.push(peer);
            let name = format!("node-{i}");
            let config = dir.join(format!("{name}.toml"));
            let url = pg.tcp_url().expect("listening on the lab address");
            std::fs::write(
                &config,
                CONFIG
                    .replace("@ID@", &addr.to_string())
                    .replace("@IF@", "eth0")
                    .replace("@URL@", &url)
                    .replace("@NODE@", &name)
                    .replace("@LEASE@", &lease_secs.to_string())
                    .replace("@EXTRA@", extra)
                    .replace("198.18.63.255", pool_end),
            )?;
            let socket = dir.join(format!("{name}.sock"));
            nodes.push(Node {
                ns,
                name,
                addr,
                config,
                socket,
                daemon: None,
                history: Vec::new(),
            });
        }
        let mut l = MultiNodeLab {
            nodes,
            pg,
            bridge,
            db,
            lg,
            c1,
            c2,
            dir,
            peers,
            lab,
        };
        for i in 0..n {
            l.start(i)?;
        }
        Ok(l)
    }

    /// Starts node `i` (debug logs on) and waits until it serves.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        if node.daemon.is_some() {
            bail!("{} already running", node.name);
        }
        let mut cmd = Command::new(xdhcp_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&node.config)
            .arg("--control-socket")
            .arg(&node.socket)
            .env("RUST_LOG", "info,xdhcp=debug");
        let d = Logged::spawn(&node.ns, &cmd, None)?;
        d.wait_for("xdhcp serving", Duration::from_secs(30))
            .with_context(|| format!("{} did not start: {:?}", node.name, d.lines()))?;
        node.daemon = Some(d);
        Ok(())
    }

    /// Stops node `i` with `sig` (15, or 9 for a node that dies with what
    /// its kernel answered unstored) and returns what it logged.
    pub fn stop(&mut self, i: usize, sig: i32) -> Result<Vec<String>> {
        let node = &mut self.nodes[i];
        let mut d = node.daemon.take().context("node not running")?;
        d.signal(sig);
        d.wait(Duration::from_secs(20))?;
        let lines = d.lines();
        node.history.extend(lines.iter().cloned());
        Ok(lines)
    }

    /// kill -9: the node dies with its batch and its kernel's unreported
    /// renewals unstored (its XDP program goes with its namespace's link
    /// when the process holding it exits).
    pub fn kill9(&mut self, i: usize) -> Result<Vec<String>> {
        self.stop(i, 9)
    }

    /// Cuts node `i` off from PostgreSQL and its peers (blackhole routes
    /// in its namespace) while its clients still reach it on the segment.
    pub fn partition(&self, i: usize) -> Result<()> {
        self.blackholes(i, "add")
    }

    pub fn heal(&self, i: usize) -> Result<()> {
        self.blackholes(i, "del")
    }

    fn blackholes(&self, i: usize, op: &str) -> Result<()> {
        for dst in self.peer_addrs(i) {
            let dst = format!("{dst}/32");
            self.nodes[i]
                .ns
                .run(["ip", "route", op, "blackhole", &dst])?;
        }
        Ok(())
    }

    fn peer_addrs(&self, i: usize) -> Vec<String> {
        let mut v = vec![DB_ADDR.to_string()];
        v.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.addr.to_string()),
        );
        v
    }

    /// `xdhcp-loadgen` on `lg0` with node `stats_of`'s control socket for
    /// its counters; its JSON report, by phase.
    pub fn loadgen(&self, stats_of: usize, args: &[&str]) -> Result<Vec<Value>> {
        let out = self.loadgen_command(stats_of, args).output()?;
        report(out)
    }

    /// The same, in the background (the lab stays free for the test to
    /// stop the database or cut a node off meanwhile).
    pub fn loadgen_spawn(
        &self,
        stats_of: usize,
        args: &[&str],
    ) -> std::thread::JoinHandle<Result<Vec<Value>>> {
        let mut cmd = self.loadgen_command(stats_of, args);
        std::thread::spawn(move || report(cmd.output()?))
    }

    fn loadgen_command(&self, stats_of: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(loadgen_bin());
        cmd.args(["--iface", "lg0", "--json"])
            .arg("--server-socket")
            .arg(&self.nodes[stats_of].socket)
            .args(args);
        self.lg.command_from(&cmd)
    }

    /// Waits until `sql` (a count) reaches `want`.
    pub fn wait_count(&self, sql: &str, want: u64, t: Duration) -> Result<()> {
        wait_until(t, || {
            let n: u64 = self.psql(sql).ok()?.parse().ok()?;
            (n >= want).then_some(())
        })
        .with_context(|| format!("{sql} below {want} after {t:?}: {:?}", self.psql(sql)))
    }

    /// Waits until node `i`'s `status` says `needle` (or, with `absent`,
    /// no longer says it).
    pub fn wait_status(&self, i: usize, needle: &str, absent: bool, t: Duration) -> Result<()> {
        wait_until(t, || {
            let (_, s) = self.nodes[i].cli(&["status"]).ok()?;
            (s.contains(needle) != absent).then_some(())
        })
        .with_context(|| {
            format!(
                "{} status after {t:?}: {:?}",
                self.nodes[i].name,
                self.nodes[i].cli(&["status"])
            )
        })
    }

    /// SQL over the Unix socket (the test's view, never partitioned).
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.pg.psql(sql)
    }

    /// Addresses bound to two different clients across the nodes' tables
    /// (what each node would answer for), and clients bound to two
    /// addresses in the database.
    pub fn double_bindings(&self) -> Result<(usize, u64)> {
        let mut holder: std::collections::HashMap<Ipv4Addr, String> = Default::default();
        let mut twice = 0;
        for n in self.nodes.iter().filter(|n| n.running()) {
            for (ip, hw) in n.bound()? {
                match holder.get(&ip) {
                    Some(h) if *h != hw => twice += 1,
                    Some(_) => {}
                    None => {
                        holder.insert(ip, hw);
                    }
                }
            }
        }
        let clients: u64 = self
            .psql(
                "SELECT count(*) FROM (SELECT hw FROM xdhcp_leases WHERE state = 1 \
                 GROUP BY hw HAVING count(*) > 1) d",
            )?
            .parse()?;
        Ok((twice, clients))
    }

    /// A script in the lab directory that appends its first argument's
    /// event to `events-NAME`.
    fn script(&self, name: &str, body: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }

    pub fn events(&self, client: &str) -> Vec<String> {
        read_lines(&self.dir.join(format!("events-{client}")))
    }

    /// The first event of `client` ("dhclient", "udhcpc") after the first
    /// `after` that starts with `prefix`.
    pub fn wait_event(&self, client: &str, prefix: &str, after: usize, t: Duration) -> String {
        wait_until(t, || {
            self.events(client)
                .into_iter()
                .skip(after)
                .find(|e| e.starts_with(prefix))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix:?} event of {client} within {t:?}: {:?}\nnodes: {:?}",
                self.events(client),
                self.nodes
                    .iter()
                    .map(|n| n.daemon.as_ref().map(|d| d.lines().join("\n")))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// ISC dhclient in the foreground in `c1`; events "REASON new old".
    pub fn dhclient(&self) -> Result<Logged> {
        let ev = self.dir.join("events-dhclient");
        let script = self.script(
            "dhclient.sh",
            &format!(
                "#!/bin/sh\necho \"$reason $new_ip_address $old_ip_address\" >> {}\ncase \"$reason\" in\n BOUND|RENEW|REBIND|REBOOT) ip addr flush dev $interface; ip addr add $new_ip_address/$new_subnet_mask dev $interface ;;\n EXPIRE|FAIL|RELEASE|STOP) ip addr flush dev $interface ;;\nesac\nexit 0\n",
                ev.display()
            ),
        )?;
        let mut c = Command::new("dhclient");
        c.args(["-4", "-v", "-d", "-sf"])
            .arg(&script)
            .arg("-pf")
            .arg(self.dir.join("dhclient.pid"))
            .arg("-lf")
            .arg(self.dir.join("dhclient.leases"))
            .arg("cli0");
        Logged::spawn(&self.c1, &c, None)
    }

    /// busybox udhcpc in the foreground in `c2`; events "ACTION ip".
    pub fn udhcpc(&self) -> Result<Logged> {
        let ev = self.dir.join("events-udhcpc");
        let script = self.script(
            "udhcpc.sh",
            &format!(
                "#!/bin/sh\ncase \"$1\" in\n bound|renew) ip addr flush dev $interface; ip addr add $ip/$subnet dev $interface ;;\n deconfig) ip addr flush dev $interface ;;\nesac\necho \"$1 $ip $serverid\" >> {}\n",
                ev.display()
            ),
        )?;
        Logged::spawn(
            &self.c2,
            Command::new("busybox")
                .args(["udhcpc", "-f", "-i", "cli0", "-t", "10", "-T", "1", "-s"])
                .arg(&script),
            None,
        )
    }

    /// Everything the nodes logged, running or stopped, for a panic message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let lines = n.daemon.as_ref().map(Logged::lines).unwrap_or_default();
            let tail: Vec<_> = n.history.iter().chain(&lines).rev().take(40).collect();
            s += &format!("--- {} (last lines, newest first)\n", n.name);
            for l in tail {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

fn report(out: std::process::Output) -> Result<Vec<Value>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "loadgen failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_str(&stdout).with_context(|| stdout.to_string())?;
    Ok(v.as_array().context("report")?.clone())
}

impl Drop for MultiNodeLab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            drop(n.daemon.take());
        }
        drop(std::mem::take(&mut self.peers));
        // The cluster (stopped by its own drop, inside `db`) goes before
        // the namespaces: fields drop in order, `lab` last.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
