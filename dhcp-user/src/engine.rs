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
//! - the map follows the store's changes in commit order (`crate::commit`):
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

use crate::{
    clock::mono_ns_to_unix_ceil,
    commands,
    commit::{Commit, Written},
    config::Config,
    control,
    fastmap::{client_key, lease_key, FastMaps, KernelGrant, MapReport},
    leases::{EndKind, LeaseState},
    server::Server,
    store::{ApiReservation, LeaseStore, StoreOp},
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
        let config = with_reservations(&file_config, &extras);
        if let Err(e) = config.validate_reservations() {
            tracing::warn!("the control API's reservations clash with the file's ({e}); delete one of them (xdhcp reservations delete)");
        }
        let stored = store.load().context("loading leases")?;
        let loaded = stored.len();
        let mut server = Server::new(&config, stored);
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
        self.seq += 1;
        // The instant, not the second: a grant the kernel makes just
        // before or just after this end is told apart by it.
        let now = crate::clock::unix_ns_now();
        let leases = &mut self.server.leases;
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
                StoreOp::Delete(ip) => leases.hold_ended(*ip, now, EndKind::Ended),
                _ => {}
            }
        }
        Commit {
            seq: self.seq,
            ops,
            replies,
            done,
            unmap: Vec::new(),
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

    /// A batch's map report, from the committer.
    pub fn map_report(&mut self, mut report: MapReport) {
        self.reported = self.reported.max(report.seq);
        // Another node's client holds these: this node's binding ends
        // (never mapped, no ACK sent) and the holder's lease takes its
        // place, so the address is not offered again here.
        let now = crate::clock::unix_ns_now();
        for mut l in std::mem::take(&mut report.lost) {
            self.server.leases.hold_ended(l.ip, now, EndKind::Ended);
            l.fast = None;
            self.server.leases.put(l);
        }
        self.fresh.push(report);
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
            expires_ns: crate::clock::mono_ns_to_unix_ns(ev.expires_mono_ns),
            lease_secs: 0,
        });
    }
    out
}

/// What the replies depend on: server identifier, options, subnets,
/// classes.
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

/// The file's configuration with the API's reservations added to their
/// subnets (those of subnets no longer configured are kept in the store,
/// unused).
pub fn with_reservations(file: &Config, extras: &[ApiReservation]) -> Config {
    let mut c = file.clone();
    for r in extras {
        if let Some(sn) = c.subnets.iter_mut().find(|s| s.id == r.subnet_id) {
            let written = crate::config::Identity {
                hw_address: r.hw_address.clone(),
                client_id: r.client_id.clone(),
                circuit_id: r.relay.as_ref().and_then(|x| x.circuit_id.clone()),
                remote_id: r.relay.as_ref().and_then(|x| x.remote_id.clone()),
                subscriber_id: r.relay.as_ref().and_then(|x| x.subscriber_id.clone()),
                giaddr: r.relay.as_ref().and_then(|x| x.giaddr),
            };
            sn.reservations.push(crate::config::Reservation::new(
                written,
                r.ip,
                Default::default(),
            ));
        }
    }
    c
}

/// reservation-get-all / reservation-add / reservation-del. A change
/// rebuilds the state machine on the new reservation set (as a reload
/// does) and is answered once stored. Other clients' replies do not
/// change, so their bindings stay in the XDP map.
fn reservation_command(
    req: &control::Request,
    file_config: &Config,
    extras: &mut Vec<ApiReservation>,
    running: &mut Config,
    server: &mut Server,
    now: u64,
) -> std::result::Result<(control::Response, Vec<StoreOp>), String> {
    use serde_json::{json, Value};
    let a = &req.arguments;
    let ip_arg = || -> std::result::Result<Ipv4Addr, String> {
        a.get("ip-address")
            .and_then(Value::as_str)
            .ok_or("ip-address is required")?
            .parse()
            .map_err(|e| format!("ip-address: {e}"))
    };
    match req.command.as_str() {
        "reservation-get-all" => {
            let mut list = Vec::new();
            for sn in &running.subnets {
                for r in &sn.reservations {
                    let api = extras.iter().any(|e| e.subnet_id == sn.id && e.ip == r.ip);
                    let w = r.written();
                    list.push(json!({
                        "subnet-id": sn.id,
                        "ip-address": r.ip.to_string(),
                        "hw-address": w.hw_address,
                        "client-id": w.client_id,
                        "circuit-id": w.circuit_id,
                        "remote-id": w.remote_id,
                        "subscriber-id": w.subscriber_id,
                        "giaddr": w.giaddr.map(|g| g.to_string()),
                        "source": if api { "api" } else { "config" },
                    }));
                }
            }
            let n = list.len();
            Ok((
                if n == 0 {
                    control::Response::empty("0 reservations")
                } else {
                    control::Response::ok(
                        format!("{n} reservations"),
                        json!({ "reservations": list }),
                    )
                },
                Vec::new(),
            ))
        }
        "reservation-add" => {
            let ip = ip_arg()?;
            let subnet_id = server
                .subnet_of(ip)
                .ok_or_else(|| format!("{ip} is in no configured subnet"))?;
            let relay = crate::subscriber::api_relay_id(a)?;
            let key = match &relay {
                Some(_) => None,
                None => Some(commands::client_of(a)?.0),
            };
            let sn = running
                .subnets
                .iter()
                .find(|s| s.id == subnet_id)
                .expect("subnet_of");
            if sn.reservations.iter().any(|r| r.ip == ip) {
                return Err(format!("{ip} is already reserved"));
            }
            if let (Some(l), Some(key)) = (server.leases.get(ip), &key) {
                if !server.leases.available_to(ip, key, now) && !l.is_client(key) {
                    return Err(format!(
                        "{ip} is leased to another client; delete that lease first"
                    ));
                }
            }
            let r = ApiReservation {
                subnet_id,
                ip,
                hw_address: a
                    .get("hw-address")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                client_id: a
                    .get("client-id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                relay,
            };
            let mut next = extras.clone();
            next.push(r.clone());
            let candidate = with_reservations(file_config, &next);
            // The same checks as a file's reservations (format, duplicates).
            candidate
                .validate_reservations()
                .map_err(|e| format!("refused: {e}"))?;
            *extras = next;
            rebuild(candidate, current_leases(server), running, server);
            tracing::info!(%ip, subnet_id, "reservation added by the control API");
            Ok((
                control::Response::ok(format!("{ip} reserved in subnet {subnet_id}"), Value::Null),
                vec![
                    StoreOp::PutReservation(r),
                    StoreOp::Meta("reply_config", reply_config_fingerprint(running)),
                ],
            ))
        }
        "reservation-del" => {
            let ip = ip_arg()?;
            let Some(pos) = extras.iter().position(|e| e.ip == ip) else {
                if running
                    .subnets
                    .iter()
                    .any(|s| s.reservations.iter().any(|r| r.ip == ip))
                {
                    return Err(format!(
                        "{ip} is reserved in the configuration file: edit it and reload"
                    ));
                }
                return Ok((
                    control::Response::empty(format!("{ip} is not reserved")),
                    Vec::new(),
                ));
            };
            let r = extras.remove(pos);
            let candidate = with_reservations(file_config, extras);
            rebuild(candidate, current_leases(server), running, server);
            tracing::info!(%ip, "reservation deleted by the control API");
            Ok((
                control::Response::ok(format!("reservation of {ip} deleted"), Value::Null),
                vec![
                    StoreOp::DeleteReservation {
                        subnet_id: r.subnet_id,
                        ip,
                    },
                    StoreOp::Meta("reply_config", reply_config_fingerprint(running)),
                ],
            ))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Replaces the state machine with one built on `candidate` around
/// `leases`, keeping the counters.
fn rebuild(
    candidate: Config,
    leases: Vec<crate::leases::Lease>,
    running: &mut Config,
    server: &mut Server,
) {
    let counters = std::mem::take(&mut server.counters);
    let holds = server.leases.take_holds();
    *server = Server::new(&candidate, leases);
    server.counters = counters;
    server.leases.set_holds(holds);
    *running = candidate;
}

fn current_leases(server: &Server) -> Vec<crate::leases::Lease> {
    server.leases.iter().cloned().collect()
}

/// What the command line sets over the configuration file; applied to
/// every reading of it (start and reload), so a reload never mistakes a
/// command-line value for a change in the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub lease_db: Option<std::path::PathBuf>,
    pub control_socket: Option<std::path::PathBuf>,
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.lease_db {
            c.server.lease_db = v.clone();
        }
        if let Some(v) = &self.control_socket {
            c.server.control_socket = Some(v.clone());
        }
        if let Some(v) = &self.pin_dir {
            c.server.pin_dir = Some(v.clone());
        }
    }
}

/// Applies the configuration at `path` to the running server: subnets,
/// pools, options and reservations change in place; what needs new
/// sockets, programs or maps (interfaces, server identifier, lease store,
/// map size, control socket) is refused. When the replies change, every
/// binding leaves the XDP lease map (written to the store in the same
/// batch) so its next renewal is answered, and rebound, by the control
/// plane with the new options.
pub fn reload(
    path: Option<&std::path::Path>,
    overrides: &Overrides,
    running: &mut Config,
    file_config: &mut Config,
    extras: &[ApiReservation],
    server: &mut Server,
) -> std::result::Result<(String, Vec<StoreOp>), String> {
    let path = path.ok_or("running on the embedded default configuration: nothing to reload")?;
    let mut new_file = Config::from_file(path)
        .map_err(|e| format!("refused, the running configuration stays: {e}"))?;
    overrides.apply(&mut new_file);
    let new = with_reservations(&new_file, extras);
    // The file's reservations against the API's: one address or client
    // reserved twice is refused, as within the file.
    new.validate_reservations().map_err(|e| {
        format!(
            "refused, the running configuration stays: with the control API's reservations: {e}"
        )
    })?;
    let restart = |what: &str| Err(format!("refused: {what} changed; that needs a restart"));
    if new.interfaces != running.interfaces {
        return restart("[[interface]]");
    }
    let (a, b) = (&new.server, &running.server);
    if a.server_id != b.server_id {
        return restart("server_id");
    }
    if a.lease_db != b.lease_db || a.lease_db_sync != b.lease_db_sync {
        return restart("the lease store");
    }
    if a.lease_map_entries != b.lease_map_entries {
        return restart("lease_map_entries");
    }
    if a.pin_dir != b.pin_dir
        || a.control_socket != b.control_socket
        || a.metrics_address != b.metrics_address
    {
        return restart("pin_dir, control_socket or metrics_address");
    }
    let mut ops = Vec::new();
    let fingerprint = reply_config_fingerprint(&new);
    let changed = fingerprint != reply_config_fingerprint(running);
    rebuild(new, current_leases(server), running, server);
    if changed {
        ops = server.strip_fast();
        ops.push(StoreOp::Meta("reply_config", fingerprint));
    }
    let moved = ops.len().saturating_sub(1);
    *file_config = new_file;
    Ok((
        format!(
            "configuration reloaded from {}: {} subnets; {moved} bindings answered by the control plane at their next renewal",
            path.display(),
            running.subnets.len()
        ),
        ops,
    ))
}
