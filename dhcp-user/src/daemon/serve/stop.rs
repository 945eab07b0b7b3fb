//! Stopping: no more renewals in the kernel (or, for a hitless stop, the
//! pinned fast path keeps answering), every change handed to the committer
//! written, and the store marked clean only if it is exact.

use anyhow::Result;
use std::sync::atomic::Ordering;

use super::{unix_now, Daemon, Wake};
use crate::{dhcp::server::Server, proto::msg};

impl Daemon {
    pub(super) fn stop(mut self, wake: Wake, keep_fast_path: bool) -> Result<()> {
        stop_tasks(wake);
        if let Some(f) = &self.follow_stop {
            f.store(true, Ordering::Relaxed);
        }
        if keep_fast_path {
            // The kernel keeps answering renewals; their events wait in the
            // pinned ring for the next daemon.
            self.fastpath.keep_attached()?;
        } else {
            // No renewals in the kernel from here on; the last ones are
            // stored.
            self.fastpath.detach_all()?;
        }
        self.store_kernel_renewals();
        // Every change handed to the committer is written before we exit
        // (or, with the store failing, given up on after a while).
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.commit_tx);
        let (all_written, mut committer) = self
            .committer_thread
            .join()
            .map_err(|_| anyhow::anyhow!("committer panicked"))?;
        let mut clean = all_written && !keep_fast_path;
        if clean {
            // Renewals the kernel answered without reporting them (within
            // lease/8 of the last report) go into the store too, so a clean
            // store is exact and the next start needs no recovery.
            if let Some(m) = committer.maps.as_ref() {
                let grants = m.unreported();
                let ops = self.engine.kernel_tick(grants, unix_now());
                if let Err(e) = committer.store.apply(&ops) {
                    tracing::error!("storing the kernel's last renewals: {e:#}; the next start recovers as after a crash");
                    clean = false;
                }
            }
        }
        // With the fast path left running, renewals go on without a daemon
        // to store them: the next start must recover as after a crash.
        if let Err(e) = committer.store.set_clean(clean) {
            tracing::error!(
                "marking the lease store: {e:#}; the next start recovers as after a crash"
            );
        }
        let health = self.store_health.lock().unwrap().clone();
        tracing::info!(
            batches = health.batches,
            failed_writes = health.failed_writes,
            clean,
            "lease store flushed"
        );
        if let Some(m) = committer.maps.as_ref() {
            tracing::info!("XDP lease map: {:?}", m.stats);
        }
        log_counters(&self.engine.server);
        self.fastpath.flush_logs();
        let stats = self.fastpath.stats()?;
        let received: u64 = self.engine.server.counters.received.iter().sum();
        tracing::info!(control_plane_received = received, "xdp counters: {stats}");
        if keep_fast_path {
            tracing::info!(
                "XDP fast path left attached and pinned in {}; the next xdhcp serve adopts it (xdhcp detach removes it); bye",
                self.config.server.pin_dir.as_deref().map_or("?".into(), |d| d.display().to_string())
            );
        } else {
            tracing::info!("XDP programs detached; bye");
        }
        if !all_written {
            // An init system should know: the store was left as after a
            // crash.
            anyhow::bail!(
                "stopped with lease changes the store refused to take ({}): the next start recovers as after a crash",
                health.last_error.as_deref().unwrap_or("unknown error")
            );
        }
        Ok(())
    }
}

/// The socket watchers and API tasks end before the store is flushed.
fn stop_tasks(wake: Wake) {
    for w in wake.watchers {
        w.abort();
    }
    wake.control_task.abort();
    if let Some(t) = wake.metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&wake.socket_path);
}

fn log_counters(server: &Server) {
    let c = &server.counters;
    let fmt = |a: &[u64; 9]| {
        (1..=8u8)
            .filter(|t| a[usize::from(*t)] > 0)
            .map(|t| format!("{}={}", msg::name(t), a[usize::from(t)]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dropped = c
        .dropped
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let malformed = c
        .malformed
        .iter()
        .map(|(k, v)| format!("{}={v}", k.name()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        "control plane: received [{}] sent [{}] dropped [{}] malformed [{}] leases={} fast_path_renewals_stored={}",
        fmt(&c.received),
        fmt(&c.sent),
        dropped,
        malformed,
        server.leases.len(),
        c.fast_renewals
    );
}
