//! What the control API's commands do, on the daemon's main task. Every
//! command is named here: `route` says which ones the daemon's loop carries
//! out itself, `execute` runs the others.

pub mod json;
mod leases;
mod status;

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::Value;

use crate::{
    api::control::{Request, Response},
    dhcp::server::Server,
    store::StoreOp,
    xdp::loader::Fastpath,
    xdp::map_sync::{LeaseReader, SyncStats},
};

pub use crate::store::StoreHealth;
pub use json::{kernel_json, lease_json, lease_json_both, map_key, store_json, with_kernel_view};
pub use leases::{client_of, lease_list, lease_rows, ClientAndHw, LeaseRows};

/// A command's answer and the lease changes to persist before it is sent.
pub type Outcome = (Response, Vec<StoreOp>);

/// An answer that changes no lease.
fn reply(r: Response) -> Outcome {
    (r, Vec::new())
}

/// What the commands may look at besides the state machine.
pub struct Context<'a> {
    pub store_health: &'a Arc<Mutex<StoreHealth>>,
    pub server: &'a mut Server,
    pub fastpath: &'a Fastpath,
    pub sync: &'a Arc<Mutex<SyncStats>>,
    pub started: Instant,
    pub lease_db: String,
    pub lease_map_capacity: u32,
    pub now: u64,
    /// A read handle on the lease map, for the kernel's view of a lease.
    pub kernel: Option<&'a LeaseReader>,
    pub audit: Option<&'a dyn AuditView>,
}

/// What the commands show of the plane auditor. The auditor is a task of
/// the daemon, which drives these commands: they see it through this, so
/// the API does not depend on the daemon.
pub trait AuditView {
    /// Its settings, counts and last pass (`status-get`).
    fn status_json(&self) -> Value;
    /// Its counts (`statistic-get-all`, and so Prometheus).
    fn stats_json(&self) -> Value;
}

/// Where a control command is carried out. Most need only the state
/// machine and what it reports (`execute`); these need the daemon's loop
/// (its committer, auditor, reload or a blocking read of the map).
pub enum Route {
    Shutdown {
        keep_fast_path: bool,
    },
    /// `reservation-*`: changes the running configuration.
    Reservation,
    Audit {
        repair: bool,
    },
    /// `lease4-get-all`: reads the whole map, off the main task.
    LeaseList,
    Reload,
    Here,
}

pub fn route(req: &Request) -> Route {
    let flag = |name: &str| {
        req.arguments
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    match req.command.as_str() {
        "shutdown" => Route::Shutdown {
            keep_fast_path: flag("keep-fast-path"),
        },
        c if c.starts_with("reservation-") => Route::Reservation,
        "lease4-audit" => Route::Audit {
            repair: flag("repair"),
        },
        "lease4-get-all" => Route::LeaseList,
        "config-reload" => Route::Reload,
        _ => Route::Here,
    }
}

/// Every command `execute` knows, for the error that names them.
const KNOWN: &str = "status, statistic-get-all, lease4-get-all, lease4-get, lease4-add, lease4-del, lease4-release, lease4-audit, reservation-get-all, reservation-add, reservation-del, config-reload, shutdown";

/// Runs one command; returns the answer and the lease changes to commit.
pub fn execute(req: &Request, cx: &mut Context<'_>) -> Outcome {
    let a = &req.arguments;
    match req.command.as_str() {
        // Kea's name too.
        "status" | "status-get" => reply(status::status(cx)),
        "statistic-get-all" => reply(status::statistics(cx)),
        "lease4-get-all" => reply(match lease_rows(cx.server, a) {
            Ok(rows) => lease_list(rows, cx.kernel),
            Err(r) => r,
        }),
        "lease4-get" => leases::get(cx, a),
        "lease4-del" => leases::delete(cx, a),
        "lease4-release" => leases::release(cx, a),
        "lease4-add" => leases::add(cx, a),
        other => reply(Response::error(format!(
            "unknown command {other:?} (known: {KNOWN})"
        ))),
    }
}
