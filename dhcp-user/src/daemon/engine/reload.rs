//! `config-reload` and SIGHUP: a new configuration file applied to the
//! running server, or refused with the running one kept.

use super::{
    portable_fingerprint, reply_config_fingerprint,
    reservations::{current_leases, rebuild, with_reservations},
};
use crate::{
    config::Config,
    dhcp::server::Server,
    store::{ApiReservation, StoreOp},
};

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
    let (new, left_out) = with_reservations(&new_file, extras);
    // The file's reservations against the API's: one address or client
    // reserved twice is refused, as within the file.
    left_out
        .and_then(|()| new.validate_reservations())
        .map_err(|e| {
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
    let portable = portable_fingerprint(&new);
    let changed = fingerprint != reply_config_fingerprint(running);
    rebuild(new, current_leases(server), running, server);
    if changed {
        ops = server.strip_fast();
        ops.push(StoreOp::Meta("reply_config", fingerprint));
        ops.push(StoreOp::Meta("reply_portable", portable));
    }
    let moved = ops.len().saturating_sub(2);
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
