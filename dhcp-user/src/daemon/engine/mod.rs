//! The daemon's state, apart from its sockets: the state machine, the
//! configuration it runs (the file's, with the control API's
//! reservations), and the accounting that keeps the two planes one truth.
//! `serve` drives it from its event loop; the model-based test drives the
//! same code step by step.
//!
//! # The invariant
//!
//! Every binding in the XDP lease map is a Bound lease in the store, for
//! the same client key, address and subnet; the kernel never extends a
//! binding past what a crash-recovered store would grant; and no address
//! is ever held by two clients at once, where "held" includes any window
//! in which the kernel may still renew it. (`crate::audit` checks it.)
//!
//! How it is kept:
//! - the map follows the store's changes in commit order (`crate::daemon::commit`):
//!   removed before a batch that ends a binding is written, written after a
//!   batch that makes one is durable;
//! - an address handed to the map stays its client's (a `KernelHold`) until
//!   the committer reports the entry gone and the renewal ring has been
//!   read after that; a grant found then (an event, or an unreported
//!   renewal read from the entry as it left) is honoured, so reclaim,
//!   release or delete never free an address the kernel renewed;
//! - the ring is read before every reclaim;
//! - a start after a stop that did not store every kernel renewal holds
//!   each binding the kernel could have renewed until now + its lease time,
//!   before anything else looks at the leases.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use dhcp_common::RenewEvent;

mod follow;
mod reload;
mod reservations;

pub use follow::FollowCounts;
pub use reload::{reload, Overrides};
use reservations::reservation_command;
pub use reservations::with_reservations;

use crate::{
    api::control,
    config::Config,
    daemon::commit::{Commit, Written},
    dhcp::leases::EndKind,
    dhcp::server::Server,
    lease::{Lease, LeaseState},
    store::{ApiReservation, LeaseStore, StoreOp},
    xdp::clock::mono_ns_to_unix_ceil,
    xdp::map_sync::{client_key, lease_key, FastMaps, KernelGrant, MapReport},
};

pub struct Engine {
    pub server: Server,
    /// The running configuration: the file's with the API's reservations.
    pub config: Config,
    pub file_config: Config,
    pub extras: Vec<ApiReservation>,
    pub overrides: Overrides,
    pub config_path: Option<PathBuf>,
    seq: u64,
    /// The highest `MapReport::seq` received.
    reported: u64,
    /// Ring reads (`kernel_tick`) so far.
    ticks: u64,
    /// Map reports received since the last ring read, and those received
    /// before it (applied at the next read, so every renewal the kernel
    /// made before a removal is read first).
    fresh: Vec<MapReport>,
    settled: Vec<MapReport>,
    followed: FollowCounts,
}

impl Engine {
    /// Opens the daemon's state on `store`: reservations, leases, recovery
    /// after an unclean stop (before anything else touches the leases, so
    /// it sees every binding the kernel could have renewed), then the
    /// configuration check of the reply templates.
    pub fn start(
        store: &mut dyn LeaseStore,
        file_config: Config,
        config_path: Option<PathBuf>,
        overrides: Overrides,
        now: u64,
    ) -> Result<Engine> {
        let extras = store.reservations().context("loading reservations")?;
        let (config, left_out) = with_reservations(&file_config, &extras);
        if let Err(e) = left_out.and_then(|()| config.validate_reservations()) {
            tracing::warn!("the control API's reservations clash with the file's ({e}); delete one of them (xdhcp reservations delete)");
        }
        let mut stored = store.load().context("loading leases")?;
        let loaded = stored.len();
        // Other nodes' leases: known, never answered from this node's
        // kernel with their node's reply (its server identifier and
        // interface), and never recovered as this node's own.
        let others: std::collections::HashMap<Ipv4Addr, String> =
            store.take_granted_by().into_iter().collect();
        for l in stored.iter_mut().filter(|l| others.contains_key(&l.ip)) {
            l.fast = None;
        }
        let mut server = Server::new(&config, stored);
        if let (Some(node), Some(db)) = (store.node(), &config.database) {
            server
                .leases
                .set_shared(&node, u64::from(db.mclt_secs), others);
        }
        tracing::info!(leases = loaded, db = %config.server.lease_db.display(), "lease store open");
        let clean = store.take_clean().with_context(|| {
            format!(
                "lease database {}: cannot be written (it is marked in use at start)",
                config.server.lease_db.display()
            )
        })?;
        if !clean {
            let ops = server.recover_unclean(now);
            tracing::warn!(
                extended = ops.len(),
                "the last run did not stop cleanly: renewals the XDP program answered may not have been stored, so bindings it could have renewed are held until now + their lease time"
            );
            store.apply(&ops).context("storing recovered leases")?;
        }
        // Reply templates were built under the configuration of their ACK;
        // one that changed since must not answer from the kernel until the
        // control plane has ACKed (and so rebuilt) each binding again.
        let fingerprint = reply_config_fingerprint(&config);
        if store.meta("reply_config")? != Some(fingerprint) {
            let mut ops = server.strip_fast();
            if !ops.is_empty() {
                tracing::info!(
                    bindings = ops.len(),
                    "configuration changed since these bindings were made: their next renewal goes through the control plane"
                );
            }
            ops.push(StoreOp::Meta("reply_config", fingerprint));
            store
                .apply(&ops)
                .context("storing bindings without their templates")?;
        }
        let portable = portable_fingerprint(&config);
        if store.meta("reply_portable")? != Some(portable) {
            store
                .set_meta("reply_portable", portable)
                .context("storing the reply fingerprint")?;
        }
        Ok(Engine {
            server,
            config,
            file_config,
            extras,
            overrides,
            config_path,
            seq: 0,
            reported: 0,
            ticks: 0,
            fresh: Vec::new(),
            settled: Vec::new(),
            followed: FollowCounts::default(),
        })
    }

    /// Writes every served binding the kernel may renew into `maps` (at
    /// start), holding each one that went in.
    pub fn load_map(&mut self, maps: &mut FastMaps) -> usize {
        let server = &self.server;
        let served: Vec<_> = server
            .leases
            .iter()
            .filter(|l| server.serves_subnet(l.subnet_id))
            .cloned()
            .collect();
        let n = maps.load(served.iter());
        for l in &served {
            if maps.holds_ip(l.ip) {
                self.server.leases.hold_for_kernel(l, 0);
            }
        }
        n
    }

    /// Wraps `ops` for the committer, noting which bindings the map will
    /// answer for and which it stops answering for.
    pub fn commit<W>(
        &mut self,
        ops: Vec<StoreOp>,
        replies: Vec<W>,
        done: Option<tokio::sync::oneshot::Sender<Written>>,
    ) -> Commit<W> {
        self.commit_at(ops, replies, done, u64::MAX)
    }

    /// `commit` of what a client's message decided, as of `at_ns` (Unix
    /// nanoseconds), when the message arrived: the bindings it ends end
    /// then. A RELEASE read late (a busy control plane, a long socket
    /// queue) must not end the binding the kernel gave the same client
    /// after it, answering its next DISCOVER and REQUEST meanwhile.
    pub fn commit_at<W>(
        &mut self,
        ops: Vec<StoreOp>,
        replies: Vec<W>,
        done: Option<tokio::sync::oneshot::Sender<Written>>,
        at_ns: u64,
    ) -> Commit<W> {
        self.seq += 1;
        // The instant, not the second: a grant the kernel makes just
        // before or just after this end is told apart by it.
        let now = crate::xdp::clock::unix_ns_now().min(at_ns);
        let leases = &mut self.server.leases;
        let mut deleted = Vec::new();
        for op in &ops {
            match op {
                StoreOp::Put(l) => {
                    let mappable = l.state == LeaseState::Bound
                        && l.fast.is_some()
                        && l.client.as_deref().and_then(lease_key).is_some();
                    if mappable {
                        leases.hold_for_kernel(l, self.seq);
                    } else {
                        let kind = if l.state == LeaseState::Expired {
                            EndKind::Lapsed
                        } else {
                            EndKind::Ended
                        };
                        if l.client.is_none() {
                            // A DECLINE's: the binding the kernel had is
                            // what its grants are weighed against.
                            deleted.extend(leases.hold(l.ip).map(|h| h.lease.clone()));
                        }
                        let still_bound = l.state == LeaseState::Bound
                            && leases
                                .hold(l.ip)
                                .is_some_and(|h| h.lease.client == l.client);
                        leases.hold_ended(
                            l.ip,
                            now,
                            if still_bound { EndKind::Lapsed } else { kind },
                        );
                    }
                }
                StoreOp::Delete { ip, .. } => {
                    deleted.extend(leases.hold(*ip).map(|h| h.lease.clone()));
                    leases.hold_ended(*ip, now, EndKind::Ended);
                }
                _ => {}
            }
        }
        Commit {
            seq: self.seq,
            ops,
            replies,
            done,
            unmap: Vec::new(),
            at_ns: now,
            deleted,
        }
    }

    /// The auditor's repair: stray entries out of the map (through the
    /// committer, see `FastMaps::unmap`), with `ops` (bindings whose
    /// fast path it strips) in the same batch.
    pub fn repair<W>(
        &mut self,
        ops: Vec<StoreOp>,
        unmap: Vec<(dhcp_common::LeaseKey, dhcp_common::LeaseValue)>,
    ) -> Commit<W> {
        let mut c = self.commit(ops, Vec::new(), None);
        c.unmap = unmap;
        c
    }

    /// A batch's map report, from the committer. Returns the store
    /// changes it calls for, to commit: none, unless the table moved on
    /// from what the batch wrote (see `take_kept`).
    #[must_use]
    pub fn map_report(&mut self, mut report: MapReport) -> Vec<StoreOp> {
        self.reported = self.reported.max(report.seq);
        // Another node's client holds these: this node's binding ends
        // (never mapped, no ACK sent) and the holder's lease takes its
        // place, so the address is not offered again here.
        let now = crate::xdp::clock::unix_ns_now();
        let nodes: std::collections::HashMap<_, _> =
            std::mem::take(&mut report.lost_nodes).into_iter().collect();
        for mut l in std::mem::take(&mut report.lost) {
            self.server.leases.hold_ended(l.ip, now, EndKind::Ended);
            l.fast = None;
            match nodes.get(&l.ip) {
                // Nothing of the client's other address is released for
                // it: this node's binding there is not the one lost.
                Some(node) => {
                    let ip = l.ip;
                    let _ = self.server.leases.put_foreign(l, node, now / 1_000_000_000);
                    debug_assert!(self.server.leases.is_foreign(ip));
                }
                None => {
                    self.server.leases.put(l);
                }
            }
        }
        let kept = std::mem::take(&mut report.kept);
        let ops = self.take_kept(kept, report.seq);
        self.fresh.push(report);
        ops
    }

    /// The grants the committer wrote with batch `seq` (the lease as
    /// written with each) go into the table now, by the rule for any
    /// grant: read at the next ring read instead, the table would hold
    /// a binding ended that the store holds bound. With no commit made
    /// after the batch, the store holds exactly what it wrote, and a
    /// change equal to that is not written again; otherwise a later
    /// batch may have overwritten it, and the change is written after it
    /// (rewriting an equal lease changes nothing).
    fn take_kept(&mut self, kept: Vec<(KernelGrant, Lease)>, seq: u64) -> Vec<StoreOp> {
        let now = crate::xdp::clock::unix_now();
        let last = self.seq == seq;
        kept.into_iter()
            .filter_map(|(g, written)| {
                let op = self.server.kernel_grant_kept(&g, now)?;
                (!last || op.lease() != Some(&written)).then_some(op)
            })
            .collect()
    }

    /// The last commit handed out (`Commit::seq`).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The last commit the committer has reported on: written (or given
    /// up on) and the map changed after it.
    pub fn reported_seq(&self) -> u64 {
        self.reported
    }

    /// How many times `kernel_tick` has run: a map report received before
    /// one tick is applied (its holds released) at the next.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Renewals the kernel granted (from the ring), then the map reports
    /// that came in before the previous read: store changes for what the
    /// control plane did not know, and the holds that end.
    pub fn kernel_tick(
        &mut self,
        grants: impl IntoIterator<Item = KernelGrant>,
        now: u64,
    ) -> Vec<StoreOp> {
        self.ticks += 1;
        let mut ops = Vec::new();
        for g in grants {
            if let Some(op) = self.server.kernel_granted(&g, now) {
                tracing::debug!(ip = %g.ip, expires = g.expires, "renewed by the XDP program");
                self.server.counters.fast_renewals += 1;
                ops.push(op);
            }
        }
        for r in std::mem::take(&mut self.settled) {
            for g in &r.grants {
                ops.extend(self.server.kernel_granted(g, now));
            }
            for ip in &r.gone {
                self.server.leases.release_hold(*ip, r.seq, now);
            }
        }
        self.settled = std::mem::take(&mut self.fresh);
        ops
    }

    /// Expires what ran out, after the renewals the kernel answered (read
    /// off the ring just before): reclaim must not expire what it renewed.
    pub fn reclaim(
        &mut self,
        grants: impl IntoIterator<Item = KernelGrant>,
        now: u64,
    ) -> Vec<StoreOp> {
        let mut ops = self.kernel_tick(grants, now);
        ops.extend(self.server.reclaim(now));
        ops
    }

    /// `config-reload` and SIGHUP.
    pub fn reload(&mut self) -> std::result::Result<(String, Vec<StoreOp>), String> {
        reload(
            self.config_path.as_deref(),
            &self.overrides,
            &mut self.config,
            &mut self.file_config,
            &self.extras,
            &mut self.server,
        )
    }

    /// `reservation-*`.
    pub fn reservation_command(
        &mut self,
        req: &control::Request,
        now: u64,
    ) -> std::result::Result<(control::Response, Vec<StoreOp>), String> {
        reservation_command(
            req,
            &self.file_config,
            &mut self.extras,
            &mut self.config,
            &mut self.server,
            now,
        )
    }
}

/// Renewal events waiting in the XDP program's ring, as grants.
pub fn read_ring(events: &mut RingBuf<MapData>) -> Vec<KernelGrant> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        if item.len() < std::mem::size_of::<RenewEvent>() {
            continue;
        }
        let ev: RenewEvent =
            bytemuck::pod_read_unaligned(&item[..std::mem::size_of::<RenewEvent>()]);
        let Some(client) = client_key(&ev.key) else {
            continue;
        };
        out.push(KernelGrant {
            client,
            ip: Ipv4Addr::from(ev.ip.to_ne_bytes()),
            expires: mono_ns_to_unix_ceil(ev.expires_mono_ns),
            expires_ns: crate::xdp::clock::mono_ns_to_unix_ns(ev.expires_mono_ns),
            lease_secs: 0,
        });
    }
    out
}

/// What the replies depend on: server identifier, options, subnets,
/// classes.
/// The reply fingerprint without the server identifier: nodes whose
/// configurations differ only in it build the same templates but for
/// option 54, so one may answer from the other's (`follow::adopt`).
pub fn portable_fingerprint(config: &Config) -> i64 {
    let mut c = config.clone();
    c.server.server_id = Ipv4Addr::UNSPECIFIED;
    reply_config_fingerprint(&c)
}

pub fn reply_config_fingerprint(config: &Config) -> i64 {
    // Caps change no reply: a reload that changes them leaves bindings in
    // the kernel's hands.
    let subnets: Vec<_> = config
        .subnets
        .iter()
        .cloned()
        .map(|mut s| {
            s.limits = Default::default();
            s
        })
        .collect();
    let mut text = format!(
        "{:?}|{:?}|{:?}|{:?}",
        config.server.server_id, config.options, subnets, config.classes
    );
    // Which relayed bindings the kernel may renew follows relay trust
    // (`server::trust`). Only when set, so configurations without it keep
    // the fingerprint they had (an upgrade strips nothing).
    if !config.relays.is_empty() || config.server.relay_trust != crate::config::RelayTrust::Auto {
        text += &format!("|{:?}|{:?}", config.relays, config.server.relay_trust);
    }
    i64::from(dhcp_common::fnv1a(text.as_bytes()))
}
