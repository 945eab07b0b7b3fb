//! Other nodes' changes, from the shared store's follower
//! (`crate::store::postgres::follow`), into the table.
//!
//! The database is the arbiter (a claim it refused is never ACKed), so
//! the table only has to learn, never to judge. It never lets a change
//! read from the database undo one of its own the database may not have
//! yet:
//! - an address this node's kernel may answer for (a hold) is left as it
//!   is: its next write to the store settles it, by the claim's rule;
//! - nor one this node's own lease holds now (its commit may be in
//!   flight; if the database gave the address to another client, that
//!   write is refused and the holder's lease comes back as a lost claim);
//! - nor a client's binding here that ends later than the other node's
//!   binding of the same client (an ACK of this node's the other has not
//!   seen yet).
//!
//! Everything else takes the database's row: another node's lease is
//! marked as such (held for the MCLT past its end, never expired or
//! offered here before), a row gone removes another node's lease.

use std::collections::HashSet;

use super::Engine;
use crate::{
    lease::LeaseState,
    store::postgres::follow::{Followed, Remote},
    store::StoreOp,
};

/// What following did, for `status`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FollowCounts {
    /// Other nodes' changes taken into the table.
    pub applied: u64,
    /// Changes left for the claim's rule to settle (see the module).
    pub kept_own: u64,
    /// Silent peers' bindings taken into this node's kernel.
    pub taken_over: u64,
}

impl Engine {
    /// Takes other nodes' changes into the table; returns the store
    /// changes that follow from them (a client's binding here released
    /// because another node bound it to another address since).
    #[must_use]
    pub fn follow(&mut self, f: Followed, now: u64) -> Vec<StoreOp> {
        let remotes = match f {
            Followed::Takeover {
                node,
                leases,
                same_replies,
            } => return self.take_over(&node, leases, same_replies, now),
            Followed::Alive(alive) => {
                tracing::info!(?alive, "live peers");
                self.server.leases.set_alive_peers(alive);
                return Vec::new();
            }
            Followed::Changes(r) => r,
            Followed::Resync(mut all) => {
                // Another node's lease the full read no longer has was
                // deleted (or is now this node's: its row then says so).
                let listed: HashSet<_> = all.iter().map(|r| r.ip).collect();
                for ip in self.server.leases.foreign_ips() {
                    if !listed.contains(&ip) {
                        all.push(Remote {
                            ip,
                            node: String::new(),
                            lease: None,
                        });
                    }
                }
                all
            }
        };
        let mut ops = Vec::new();
        for r in remotes {
            match self.take_remote(r, now) {
                Some(op) => {
                    self.followed.applied += 1;
                    ops.extend(op);
                }
                None => self.followed.kept_own += 1,
            }
        }
        ops
    }

    /// A silent peer's bindings, into this node's XDP map with the
    /// peer's templates answering as this node: its clients' broadcasts
    /// (REBINDING, INIT-REBOOT, DISCOVER) are answered in the kernel. Each
    /// is written as this node's (same client, same address, same end:
    /// the database lets it) and stays held here for the MCLT past its end
    /// like any other node's binding, since the silent node's kernel may
    /// have granted more than it stored. Only where the peer's replies are
    /// this node's but for the server identifier; elsewhere its clients
    /// are ACKed by the control plane, which builds this node's own.
    fn take_over(
        &mut self,
        node: &str,
        leases: Vec<Remote>,
        same_replies: bool,
        now: u64,
    ) -> Vec<StoreOp> {
        if !same_replies {
            tracing::warn!(node, "a silent peer's reply configuration differs from this node's (reply_portable): its clients are ACKed by this node's control plane, not taken into the kernel");
            return Vec::new();
        }
        let server_id = self.server.server_id();
        let ifaces: HashSet<&str> = self
            .config
            .interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        let leases_t = &mut self.server.leases;
        // Shown as this node's (the database row says so from the write
        // on), held as another node's until this node grants it itself.
        let serving = leases_t.own_node().unwrap_or(node).to_string();
        let mut ops = Vec::new();
        for r in leases {
            let Some(mut l) = r.lease else { continue };
            let ours_to_take = leases_t.hold(l.ip).is_none()
                && leases_t.is_foreign(l.ip)
                && leases_t
                    .get(l.ip)
                    .is_some_and(|t| t.client == l.client && t.state == LeaseState::Bound)
                && l.state == LeaseState::Bound
                && l.expires > now + dhcp_common::EXPIRY_MARGIN_SECS;
            let fast = l
                .fast
                .as_ref()
                .filter(|f| ifaces.contains(&*f.iface))
                .and_then(|f| f.answering_as(server_id));
            let (true, Some(fast)) = (ours_to_take, fast) else {
                continue;
            };
            l.fast = Some(std::sync::Arc::new(fast));
            // The client's other address here, if it was bound, is
            // released and stored, as for any followed change.
            ops.extend(
                leases_t
                    .put_foreign(l.clone(), &serving, now)
                    .map(StoreOp::Put),
            );
            ops.push(StoreOp::Put(l));
        }
        self.followed.taken_over += ops.len() as u64;
        tracing::warn!(
            node,
            bindings = ops.len(),
            "took over a silent peer's bindings: this node's kernel answers its clients"
        );
        ops
    }

    pub fn follow_counts(&self) -> FollowCounts {
        self.followed
    }

    /// None: left as the table has it; Some(op): taken, with the store
    /// change it calls for, if any.
    fn take_remote(&mut self, r: Remote, now: u64) -> Option<Option<StoreOp>> {
        let leases = &mut self.server.leases;
        if leases.hold(r.ip).is_some() {
            return None;
        }
        let foreign = leases.is_foreign(r.ip);
        if leases
            .get(r.ip)
            .is_some_and(|l| !foreign && l.holds_address(now))
        {
            return None;
        }
        let Some(mut l) = r.lease else {
            if foreign {
                leases.remove(r.ip);
            }
            return Some(None);
        };
        if let Some(key) = l.client.as_deref() {
            let newer_here = leases.by_client(l.subnet_id, key).is_some_and(|o| {
                o.ip != l.ip
                    && !leases.is_foreign(o.ip)
                    && o.state == LeaseState::Bound
                    && o.expires > l.expires
            });
            if newer_here {
                return None;
            }
        }
        // Its template is the other node's reply (that node's server
        // identifier and interface): this node's kernel answers the client
        // only after this node's control plane has ACKed it.
        l.fast = None;
        Some(leases.put_foreign(l, &r.node, now).map(StoreOp::Put))
    }
}
