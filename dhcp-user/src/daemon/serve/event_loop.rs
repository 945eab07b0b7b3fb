//! The loop: requests, the kernel's renewal reports, the committer's map
//! reports, the auditor, timers, signals and control commands, each with
//! its handler.

use anyhow::Result;
use std::{sync::Arc, time::Duration};

use super::{
    reply_after_commit, send_repair, unix_now, Daemon, Transmitter, Wake, Wire, HANDLE_BUDGET,
    READ_BUDGET,
};
use crate::{
    api::commands::{self, Route},
    api::control::{self, Pending},
    daemon::auditor,
    daemon::backlog::{self, Queued},
    daemon::commit::CommitQueue,
    daemon::engine::{read_ring, Engine},
    daemon::sockets::PacketSocket,
    daemon::transmit::Egress,
    dhcp::server::Arrival,
    proto::{self, msg},
};

/// Why a control command did not stop the loop.
enum Control {
    Continue,
    Stop { keep_fast_path: bool },
}

impl Daemon {
    /// Serves until a signal or `shutdown`; says whether the fast path is
    /// to be left running.
    pub(super) async fn serve(&mut self, w: &mut Wake) -> Result<bool> {
        loop {
            let audit_due = self.auditor.due();
            let reading = self.unread.contains(&true);
            let handling = !self.backlog.is_empty() && self.commit_tx.has_room();
            let waiting = !self.backlog.is_empty() && !self.commit_tx.has_room();
            tokio::select! {
                _ = w.sigint.recv() => { tracing::info!("SIGINT: shutting down"); return Ok(false); }
                _ = w.sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); return Ok(false); }
                Some(i) = w.ready_rx.recv() => self.read_socket(i),
                _ = std::future::ready(()), if reading => self.read_unread(),
                // Requests wait while the store has a full queue of commits:
                // the backlog, not memory, takes the pressure.
                _ = std::future::ready(()), if handling => self.handle_backlog(),
                _ = tokio::time::sleep(Duration::from_millis(5)), if waiting => {}
                _ = w.sighup.recv() => self.on_sighup(),
                Some(p) = w.control_rx.recv() => {
                    if let Control::Stop { keep_fast_path } = self.on_control(p) {
                        return Ok(keep_fast_path);
                    }
                }
                Some(r) = w.report_rx.recv() => {
                    let ops = self.engine.map_report(r);
                    if !ops.is_empty() {
                        self.commit_tx.send(self.engine.commit(ops, Vec::new(), None));
                    }
                    self.audit_poll();
                }
                Some(r) = w.audit_rx.recv() => {
                    let fix = self.auditor.on_reading(r, &mut self.engine);
                    send_repair(&mut self.engine, &self.commit_tx, fix);
                }
                // The store's side of an audit pass, a chunk per wake-up.
                _ = std::future::ready(()), if self.auditor.has_step() => {
                    let fix = self.auditor.step(&mut self.engine);
                    send_repair(&mut self.engine, &self.commit_tx, fix);
                }
                _ = tokio::time::sleep_until(audit_due.unwrap_or_else(std::time::Instant::now).into()), if audit_due.is_some() => self.audit_poll(),
                Some(f) = async { w.follow_rx.as_mut().expect("checked").recv().await }, if w.follow_rx.is_some() => {
                    let ops = self.engine.follow(f, unix_now());
                    if !ops.is_empty() {
                        self.commit_tx.send(self.engine.commit(ops, Vec::new(), None));
                    }
                }
                _ = w.reclaim.tick() => self.reclaim(),
                _ = w.event_poll.tick() => {
                    self.store_kernel_renewals();
                    self.audit_poll();
                }
                ready = async { w.log_fd.as_ref().unwrap().readable().await }, if w.log_fd.is_some() => {
                    let mut guard = ready?;
                    self.fastpath.flush_logs();
                    guard.clear_ready();
                }
            }
        }
    }

    fn read_socket(&mut self, i: usize) {
        self.unread[i] = backlog::read(
            &self.sockets[i],
            i,
            &self.names[i],
            &mut self.buf,
            &mut self.engine.server,
            &mut self.backlog,
            READ_BUDGET,
        );
    }

    fn read_unread(&mut self) {
        for i in 0..self.unread.len() {
            if self.unread[i] {
                self.read_socket(i);
            }
        }
    }

    fn handle_backlog(&mut self) {
        let out = Out {
            sockets: &self.sockets,
            names: &self.names,
            tx: &self.tx,
            commits: &self.commit_tx,
            store_down: self.store_health.lock().unwrap().failing_since.is_some(),
        };
        // Replies that need no write (OFFERs, NAKs) leave together after
        // the pass, one system call for up to HANDLE_BUDGET of them.
        let mut now = Vec::new();
        for _ in 0..HANDLE_BUDGET {
            if !out.commits.has_room() {
                break;
            }
            let Some(q) = self.backlog.pop() else { break };
            if let Some(w) = handle_queued(q, &mut self.engine, &mut self.egress, &out) {
                now.push(w);
            }
        }
        if !now.is_empty() {
            out.tx.send_all(&now.iter().collect::<Vec<_>>());
        }
    }

    /// Renewals the kernel answered, to the store.
    pub(super) fn store_kernel_renewals(&mut self) {
        let ops = self
            .engine
            .kernel_tick(read_ring(&mut self.events), unix_now());
        if !ops.is_empty() {
            self.commit_tx
                .send(self.engine.commit(ops, Vec::new(), None));
        }
    }

    fn reclaim(&mut self) {
        // Renewals the kernel answered first: reclaim must not expire what
        // it renewed.
        let ops = self.engine.reclaim(read_ring(&mut self.events), unix_now());
        if !ops.is_empty() {
            tracing::debug!(ops = ops.len(), "renewals stored, leases reclaimed");
            self.commit_tx
                .send(self.engine.commit(ops, Vec::new(), None));
        }
    }

    fn audit_poll(&mut self) {
        let fix = self.auditor.poll(&mut self.engine);
        send_repair(&mut self.engine, &self.commit_tx, fix);
    }

    /// A reloaded configuration's settings, to every part that holds one.
    fn apply_reloaded(&mut self, who: &str) {
        let config = &self.engine.config;
        if let Err(e) = self.rate_maps.apply(config, &self.rate_ifaces) {
            tracing::error!("{who}: rate limits kept as they were: {e:#}");
        }
        self.auditor
            .set_settings(auditor::Settings::from_config(&config.server));
        self.backlog.set_cap(config.server.request_queue as usize);
        self.commit_tx.set_cap(config.server.commit_queue as usize);
    }

    fn on_sighup(&mut self) {
        match self.engine.reload() {
            Ok((text, ops)) => {
                tracing::info!("SIGHUP: {text}");
                self.apply_reloaded("SIGHUP");
                if !ops.is_empty() {
                    self.commit_tx
                        .send(self.engine.commit(ops, Vec::new(), None));
                }
            }
            Err(e) => tracing::error!("SIGHUP: {e}"),
        }
    }

    fn on_control(&mut self, p: Pending) -> Control {
        match commands::route(&p.request) {
            Route::Shutdown { keep_fast_path } => return self.shutdown(p, keep_fast_path),
            Route::Reservation => self.reservation(p),
            Route::Audit { repair } => {
                let fix = self.auditor.request(p.reply, repair, &mut self.engine);
                send_repair(&mut self.engine, &self.commit_tx, fix);
            }
            Route::LeaseList => self.lease_list(p),
            Route::Reload => self.reload(p),
            Route::Here => self.execute(p),
        }
        Control::Continue
    }

    fn shutdown(&mut self, p: Pending, keep_fast_path: bool) -> Control {
        if keep_fast_path {
            if let Err(why) = self.fastpath.hitless_stop() {
                tracing::warn!("refused to stop keeping the fast path: {why}");
                let _ = p.reply.send(control::Response::error(format!("refused: the fast path would not outlive the daemon: {why}; still serving (stop without --keep-fast-path to stop anyway)")));
                return Control::Continue;
            }
        }
        tracing::info!(keep_fast_path, "shutdown requested through the control API");
        let _ = p.reply.send(control::Response::ok(
            if keep_fast_path {
                "stopping; the XDP fast path keeps answering renewals"
            } else {
                "stopping"
            },
            serde_json::Value::Null,
        ));
        Control::Stop { keep_fast_path }
    }

    fn reservation(&mut self, p: Pending) {
        match self.engine.reservation_command(&p.request, unix_now()) {
            Ok((response, ops)) if ops.is_empty() => {
                let _ = p.reply.send(response);
            }
            Ok((response, ops)) => {
                reply_after_commit(&mut self.engine, &self.commit_tx, ops, response, p.reply)
            }
            Err(e) => {
                let _ = p.reply.send(control::Response::error(e));
            }
        }
    }

    /// The kernel's view of many leases reads the whole map: off this task.
    fn lease_list(&mut self, p: Pending) {
        match commands::lease_rows(&self.engine.server, &p.request.arguments) {
            Ok(rows) => {
                let reader = self.lease_reader.clone();
                let reply = p.reply;
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(commands::lease_list(rows, Some(&reader)));
                });
            }
            Err(r) => {
                let _ = p.reply.send(r);
            }
        }
    }

    fn reload(&mut self, p: Pending) {
        match self.engine.reload() {
            Ok((text, ops)) => {
                tracing::info!("{text}");
                self.apply_reloaded("reload");
                let response = control::Response::ok(text, serde_json::Value::Null);
                reply_after_commit(&mut self.engine, &self.commit_tx, ops, response, p.reply);
            }
            Err(e) => {
                tracing::error!("reload: {e}");
                let _ = p.reply.send(control::Response::error(e));
            }
        }
    }

    /// Commands that need only the state machine and what it reports.
    fn execute(&mut self, p: Pending) {
        let mut cx = commands::Context {
            store_health: &self.store_health,
            server: &mut self.engine.server,
            fastpath: &self.fastpath,
            sync: &self.sync_stats,
            started: self.started,
            lease_db: self.lease_db.clone(),
            lease_map_capacity: self.config.server.lease_map_entries,
            now: unix_now(),
            kernel: Some(&self.lease_reader),
            audit: Some(&self.auditor),
        };
        let (response, ops) = commands::execute(&p.request, &mut cx);
        if ops.is_empty() {
            let _ = p.reply.send(response);
        } else {
            reply_after_commit(&mut self.engine, &self.commit_tx, ops, response, p.reply);
        }
    }
}

/// Where a handled request's answer goes.
struct Out<'a> {
    sockets: &'a [Arc<PacketSocket>],
    names: &'a [String],
    tx: &'a Transmitter,
    commits: &'a CommitQueue<Wire>,
    /// The store refuses writes (a batch is being retried): no new
    /// allocation can be ACKed, so none is offered.
    store_down: bool,
}

/// Runs one queued request through the state machine: its reply is
/// returned to leave now, or leaves after its lease changes are durable.
fn handle_queued(
    q: Queued,
    engine: &mut Engine,
    egress: &mut Egress,
    out: &Out<'_>,
) -> Option<Wire> {
    let i = q.iface;
    let server = &mut engine.server;
    let frame = match proto::parse_frame(&q.frame, q.stripped_tag, q.check_udp) {
        Ok(f) => f,
        Err(m) => {
            server.count_malformed(m);
            return None;
        }
    };
    let req = match proto::parse_dhcp(frame.payload) {
        Ok(r) => r,
        Err(m) => {
            server.count_malformed(m);
            return None;
        }
    };
    if out.store_down && req.msg_type == msg::DISCOVER {
        // Silence, as RFC 2131 allows a server that cannot commit: an
        // OFFER now would only hold an address for a REQUEST whose ACK
        // waits for the store. The client's retransmission is answered
        // once the store takes writes again.
        server.counters.received[usize::from(msg::DISCOVER)] += 1;
        *server
            .counters
            .dropped
            .entry("store_unavailable")
            .or_default() += 1;
        return None;
    }
    let arrival = Arrival {
        iface: &out.names[i],
        tags: &frame.tags,
        src_mac: frame.src_mac,
        src_ip: frame.src_ip,
    };
    let o = server.handle(&req, &arrival, unix_now());
    tracing::debug!(
        interface = %out.names[i], xid = format_args!("{:#010x}", req.xid),
        "{} -> {}", msg::name(req.msg_type),
        o.reply.as_ref().map_or(o.dropped.unwrap_or("-"), |r| msg::name(r.msg_type))
    );
    let mac = out.sockets[i].mac;
    let wire = o
        .reply
        .map(|r| egress.frame_for(&r.dest, &frame, mac, r.payload, i));
    if o.store.is_empty() {
        return wire;
    }
    out.commits
        .send(engine.commit_at(o.store, wire.into_iter().collect(), None, q.arrived_ns));
    None
}
