//! Section 8's fast-path renewals with two nodes on one PostgreSQL. A
//! client renews unicast with the node that holds its binding, so no
//! segment is needed: each node has a direct veth to a generator of its
//! own (the bridge forwards in software and would cap the rate). Each
//! generator leases half the clients (its own MAC range) through its
//! node, then both renew at the same time, the bench stepping them
//! together through the section's ramp: the figure is the sum.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xdhcp_lab::{proc::Logged, Lab, Netns};

use super::{
    lab::{cpus, BenchLab},
    loadgen::{loadgen_in, s},
    model::{Key, Pt},
    pglab::{node_database, PgLab, NODES},
    pgsection::{figure_step, DbShare, Measured, PgSection},
    plan::BenchPlan,
    ramps::drive,
    servers::{start_pg_node, PgNode},
};

/// One node's part of the two-node renewal run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NodePart {
    pub name: &'static str,
    /// Its generator's step at each of the ramp's steps.
    pub steps: Vec<Pt>,
    /// Its follower at the ramp's end: the lag of the last change it read
    /// and the highest since start (ms), and the changes it read during
    /// the ramp (none: the lag is the DORA's).
    pub lag_ms: Option<f64>,
    pub max_lag_ms: Option<f64>,
    pub changes_in_ramp: Option<u64>,
}

/// Two direct veths: node A (`srv0`, 198.18.0.1) ⇄ generator A (`cli0`,
/// 198.18.0.2), node B (198.18.0.3) ⇄ generator B (198.18.0.4), each
/// pair in namespaces of its own; the nodes reach the database by its
/// Unix socket.
struct TwoLab {
    /// Node A in `a.srv`, generator A in `a.cli`.
    a: BenchLab,
    srv_b: Netns,
    cli_b: Netns,
}

impl TwoLab {
    fn new() -> Result<TwoLab> {
        let mut lab = Lab::new("pg2ren")?;
        let srv_a = lab.netns("srva")?;
        let cli_a = lab.netns("clia")?;
        let srv_b = lab.netns("srvb")?;
        let cli_b = lab.netns("clib")?;
        // One queue per CPU: each generator thread sends on its own.
        let queues = cpus() as u32;
        for (srv, srv_addr, cli, cli_addr) in [
            (&srv_a, "198.18.0.1/16", &cli_a, "198.18.0.2/16"),
            (&srv_b, "198.18.0.3/16", &cli_b, "198.18.0.4/16"),
        ] {
            lab.veth_with_queues(
                srv,
                "srv0",
                Some(srv_addr),
                cli,
                "cli0",
                Some(cli_addr),
                queues,
            )?;
        }
        let dir = std::env::temp_dir().join(lab.prefix());
        std::fs::create_dir_all(&dir)?;
        Ok(TwoLab {
            a: BenchLab::from_parts(lab, srv_a, cli_a, dir),
            srv_b,
            cli_b,
        })
    }

    /// Node `i`'s namespace, its generator's, and its control socket.
    fn node(&self, i: usize) -> (&Netns, &Netns, PathBuf) {
        match i {
            0 => (&self.a.srv, &self.a.cli, self.a.control_socket()),
            _ => (&self.srv_b, &self.cli_b, self.a.dir.join("control-b.sock")),
        }
    }
}

/// The two generators' steps as one: rates summed, the loss over all
/// requests sent (each step's `sent` weighs its `loss_pct`).
pub(super) fn sum_steps(steps: &[Value]) -> Pt {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let sent: f64 = steps.iter().map(|v| f(v, "sent")).sum();
    let lost: f64 = steps
        .iter()
        .map(|v| f(v, "sent") * v["loss_pct"].as_f64().unwrap_or(100.0) / 100.0)
        .sum();
    Pt {
        target: steps
            .iter()
            .map(|v| v["target_per_s"].as_u64().unwrap_or(0))
            .sum(),
        offered: steps.iter().map(|v| f(v, "offered_per_s")).sum(),
        answered: steps.iter().map(|v| f(v, "answered_per_s")).sum(),
        loss_pct: if sent > 0.0 {
            100.0 * lost / sent
        } else {
            100.0
        },
        refine: false,
    }
}

/// The follow counters of a node's `database` object (`node_database`).
fn follow(db: &Option<Value>, k: &str) -> Option<f64> {
    db.as_ref()?.pointer(&format!("/follower/{k}"))?.as_f64()
}

/// DORA for half the clients through each node, then the renewal ramp,
/// each step both generators at half the rate each: the summed steps,
/// the database's share during the ramp, each node's part.
pub(super) fn two_node_renewals(
    pl: &PgLab,
    bin: &Path,
    plan: &BenchPlan,
) -> Result<(Measured, Vec<NodePart>)> {
    pl.reset_xdhcp_db(bin)?;
    let lab = TwoLab::new()?;
    let url = pl.socket_url();
    let half = plan.clients / 2;
    let daemons: Vec<Logged> = (0..2)
        .map(|i| {
            let (ns, _, sock) = lab.node(i);
            let node = PgNode {
                url: &url,
                ..pl.node(i)
            };
            start_pg_node(&lab.a, ns, bin, "native", node, &sock)
        })
        .collect::<Result<_>>()?;
    let bindings = |i: usize| lab.a.dir.join(format!("bindings-{i}.txt"));
    // Client i of generator g is client g × half + i: its own MACs.
    let common = |i: usize, sock: &Path| {
        vec![
            s("--clients"),
            s(half),
            s("--mac-offset"),
            s(i as u32 * half),
            s("--server-socket"),
            sock.display().to_string(),
        ]
    };
    for (i, (name, _)) in NODES.iter().enumerate() {
        let (_, cli, sock) = lab.node(i);
        let mut args = common(i, &sock);
        // Below a shared database's DORA limit: every client must hold a
        // lease.
        args.extend(
            ["--phase", "dora", "--rate", "2000", "--duration", "60"]
                .map(String::from)
                .into_iter()
                .chain([s("--bindings-out"), bindings(i).display().to_string()]),
        );
        let r = loadgen_in(cli, bin, &args)?;
        let ok = r
            .iter()
            .find(|x| x["phase"] == "dora")
            .and_then(|x| x["ok"].as_u64())
            .unwrap_or(0);
        if ok < u64::from(half) * 9 / 10 {
            bail!("only {ok} of {half} clients got a lease from {name}");
        }
    }
    let dbs =
        || -> Vec<Option<Value>> { (0..2).map(|i| node_database(bin, &lab.node(i).2)).collect() };
    let before = dbs();
    let mut parts: Vec<NodePart> = (0..2)
        .map(|i| NodePart {
            name: NODES[i].0,
            ..NodePart::default()
        })
        .collect();
    let (pts, o) = drive(&plan.xdp, |rate, _| {
        let reports: Vec<Result<Vec<Value>>> = std::thread::scope(|sc| {
            let runs: Vec<_> = (0..2)
                .map(|i| {
                    let (_, cli, sock) = lab.node(i);
                    let mut args = common(i, &sock);
                    args.extend([
                        s("--bindings-in"),
                        bindings(i).display().to_string(),
                        s("--phase"),
                        s("renew"),
                        s("--engine"),
                        s("xdp"),
                        s("--rate"),
                        s((rate / 2).max(1)),
                        s("--count"),
                        s(1_000_000_000u64),
                        s("--duration"),
                        s(plan.xdp_secs),
                        s("--threads"),
                        s(cpus()),
                    ]);
                    sc.spawn(move || loadgen_in(cli, bin, &args))
                })
                .collect();
            runs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("a generator panicked")))
                .collect()
        });
        let mut steps = Vec::new();
        for (part, r) in parts.iter_mut().zip(reports) {
            let step = r?
                .into_iter()
                .find(|x| x["phase"] == "renew")
                .context("a generator reported no renewal step")?;
            part.steps.push(Pt::from_json(&step, &Value::Null));
            steps.push(step);
        }
        Ok(sum_steps(&steps))
    })?;
    let after = dbs();
    for (i, part) in parts.iter_mut().enumerate() {
        part.lag_ms = follow(&after[i], "lag-ms");
        part.max_lag_ms = follow(&after[i], "max-lag-ms");
        part.changes_in_ramp = follow(&after[i], "changes")
            .zip(follow(&before[i], "changes"))
            .map(|(a, b)| (a - b).max(0.0) as u64);
    }
    let share = DbShare {
        scope: Some("the ramp alone"),
        ..DbShare::of_nodes(&after).minus(&DbShare::of_nodes(&before))
    };
    drop(daemons);
    let _ = std::fs::remove_dir_all(&lab.a.dir);
    Ok(((pts, o, vec![share]), parts))
}

/// Each node's part of the two nodes' renewals at the figure's step, the
/// followers at the ramp's end, and what the shared CPUs mean for the
/// sum.
pub(super) fn two_node_line(sec: &PgSection, cpus: usize) -> String {
    let Some(m) = sec.measured.iter().find(|m| m.curve.key == Key::PgRenew2) else {
        return "xdhcp renewals, 2 nodes: no figure (see the table)".into();
    };
    let Some(i) = figure_step(&m.curve.points) else {
        return "xdhcp renewals, 2 nodes: no step within the loss threshold".into();
    };
    let parts = sec
        .two_nodes
        .iter()
        .filter_map(|p| {
            let s = p.steps.get(i)?;
            Some(format!(
                "{} {}/s ({:.2}% loss)",
                p.name,
                xdhcp_ramp::thousands(s.answered),
                s.loss_pct
            ))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    let lags = sec
        .two_nodes
        .iter()
        .map(|p| {
            let during = match p.changes_in_ramp {
                // A kernel renewal within the stored lease writes nothing.
                Some(0) => "none read during the ramp: the lag is the DORA's".into(),
                Some(c) => format!("{c} changes read during the ramp"),
                None => "changes during the ramp unknown".into(),
            };
            format!(
                "{} {} (highest {}), {during}",
                p.name,
                ms(p.lag_ms),
                ms(p.max_lag_ms)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "xdhcp renewals, 2 nodes, at the figure's step (target {}/s in all): {parts}. \
         Followers at the ramp's end, the lag of the last change each read: {lags}. \
         The two generators ({cpus} sending threads each) and both nodes' XDP share these {cpus} CPUs: \
         the sum is what {cpus} CPUs did for two generators and two nodes, not two nodes' capacity",
        xdhcp_ramp::thousands(m.curve.points[i].target as f64)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use xdhcp_ramp::End;

    use super::*;
    use crate::bench::{model::curve_of, pgsection::PgMeasured};

    #[test]
    fn two_generators_steps_sum_and_their_loss_weighs_by_what_each_sent() {
        let a = json!({"target_per_s": 500, "offered_per_s": 490.0, "answered_per_s": 480.0,
                       "loss_pct": 2.0, "sent": 1000});
        let b = json!({"target_per_s": 500, "offered_per_s": 300.0, "answered_per_s": 300.0,
                       "loss_pct": 0.0, "sent": 3000});
        let p = sum_steps(&[a.clone(), b]);
        assert_eq!((p.target, p.offered, p.answered), (1000, 790.0, 780.0));
        // 20 of 4,000 lost: 0.5%, not the 1% of the two losses' mean.
        assert!((p.loss_pct - 0.5).abs() < 1e-9, "{p:?}");
        // A generator that sent nothing did not answer anything either.
        assert_eq!(sum_steps(&[json!({})]).loss_pct, 100.0);
        assert_eq!(sum_steps(&[a]).loss_pct, 2.0);
    }

    fn section(m: Vec<PgMeasured>) -> PgSection {
        PgSection {
            measured: m,
            failed: Vec::new(),
            two_nodes: Vec::new(),
        }
    }

    #[test]
    fn the_two_nodes_parts_are_the_figures_step() {
        let pt = |answered, loss_pct| Pt {
            target: 250_000,
            offered: answered,
            answered,
            loss_pct,
            refine: false,
        };
        // The sum's figure is its second step, the first within the loss
        // threshold at the highest rate: each node's part is that step's.
        let mut m = PgMeasured {
            curve: curve_of(Key::PgRenew2, 400_000.0, End::Loss),
            shares: Vec::new(),
        };
        m.curve.points = vec![pt(200_000.0, 0.0), pt(400_000.0, 0.5), pt(450_000.0, 9.0)];
        let part = |name, steps: Vec<Pt>, lag| NodePart {
            name,
            steps,
            lag_ms: Some(lag),
            max_lag_ms: Some(90.0),
            changes_in_ramp: Some(0),
        };
        let mut sec = section(vec![m]);
        sec.two_nodes = vec![
            part(
                "node-a",
                vec![pt(1.0, 0.0), pt(190_000.0, 1.0), pt(2.0, 0.0)],
                12.0,
            ),
            part(
                "node-b",
                vec![pt(3.0, 0.0), pt(210_000.0, 0.0), pt(4.0, 0.0)],
                40.0,
            ),
        ];
        let l = two_node_line(&sec, 2);
        assert!(
            l.starts_with("xdhcp renewals, 2 nodes, at the figure's step (target 250,000/s in all): node-a 190,000/s (1.00% loss), node-b 210,000/s (0.00% loss). "),
            "{l}"
        );
        assert!(
            l.contains(
                "node-a 12 ms (highest 90 ms), none read during the ramp: the lag is the DORA's; node-b 40 ms"
            ),
            "{l}"
        );
        assert!(l.ends_with("share these 2 CPUs: the sum is what 2 CPUs did for two generators and two nodes, not two nodes' capacity"), "{l}");
        assert!(two_node_line(&section(vec![]), 2).ends_with("no figure (see the table)"));
    }
}
