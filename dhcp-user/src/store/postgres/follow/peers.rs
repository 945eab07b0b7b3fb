//! The other nodes as the follower sees them: heartbeats, silence, and
//! the takeover of a silent node's bindings.

use anyhow::Result;
use postgres::Client;

use super::{Followed, Follower, Remote};
use crate::store::postgres::read::{row_lease_at, LEASE_COLUMNS};

impl Follower {
    /// Writes this node's heartbeat and reads the others'; returns the
    /// peers to take over now (silent for `takeover`, not taken yet),
    /// each with whether its replies are this node's but for option 54.
    pub(super) fn heartbeat(
        &mut self,
        c: &mut Client,
        may_take: bool,
    ) -> Result<Vec<(String, bool)>> {
        c.execute(
            "INSERT INTO xdhcp_meta (node, k, v) VALUES ($1, 'heartbeat', extract(epoch FROM now())::bigint)
             ON CONFLICT (node, k) DO UPDATE SET v = EXCLUDED.v",
            &[&self.node],
        )?;
        let rows = c.query(
            "SELECT h.node, h.v, extract(epoch FROM now())::bigint - h.v, p.v FROM xdhcp_meta h
             LEFT JOIN xdhcp_meta p ON p.node = h.node AND p.k = 'reply_portable'
             WHERE h.k = 'heartbeat' AND h.node <> $1",
            &[&self.node],
        )?;
        let mut due = Vec::new();
        let mut alive = vec![self.node.clone()];
        let mut peers = self.stats.peers.lock().unwrap();
        for r in rows {
            let node: String = r.get(0);
            let silent: i64 = r.get(2);
            if silent < self.takeover {
                self.taken.remove(&node);
                alive.push(node.clone());
            } else if may_take && self.taken.insert(node.clone()) {
                due.push((
                    node.clone(),
                    r.get::<_, Option<i64>>(3) == Some(self.portable),
                ));
            }
            let p = peers.entry(node).or_default();
            p.heartbeat = r.get(1);
            p.silent_secs = silent;
        }
        alive.sort();
        self.share = (
            alive.iter().position(|n| *n == self.node).unwrap_or(0) as i64,
            alive.len() as i64,
        );
        self.alive = alive;
        Ok(due)
    }

    /// A silent peer's bound leases, with their templates: this node's
    /// share of them, when several nodes are alive (address modulo the
    /// number of live nodes, by rank of name), so no two survivors'
    /// kernels answer one client.
    pub(super) fn take_over(
        &mut self,
        c: &mut Client,
        (node, same_replies): (String, bool),
    ) -> Result<Followed> {
        let rows = c.query(
            &format!(
                "SELECT {LEASE_COLUMNS}, node FROM xdhcp_leases
                 WHERE node = $1 AND state = 1 AND ip % $2 = $3"
            ),
            &[&node, &self.share.1, &self.share.0],
        )?;
        let leases = rows
            .iter()
            .map(|r| {
                let lease = row_lease_at(r, 0)?;
                Ok(Remote {
                    ip: lease.ip,
                    node: node.clone(),
                    lease: Some(lease),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tracing::warn!(
            node = %node,
            bindings = leases.len(),
            silent_secs = self.takeover,
            "a peer is silent: taking over its bindings"
        );
        Ok(Followed::Takeover {
            node,
            leases,
            same_replies,
        })
    }
}
