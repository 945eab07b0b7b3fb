//! Reservations the control API adds and removes (`reservation-*`): kept
//! in the store, merged into the file's configuration, and applied by
//! rebuilding the state machine as a reload does.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{portable_fingerprint, reply_config_fingerprint};
use crate::{
    api::{commands, control},
    config::Config,
    dhcp::server::Server,
    lease::ClientKey,
    store::{ApiReservation, StoreOp},
};

/// The file's configuration with the API's reservations added to their
/// subnets (those of subnets no longer configured are kept in the store,
/// unused). One whose identity does not parse is left out, and the first
/// such is the `Err` beside the configuration: callers that check the
/// result refuse it as a file's would be.
pub fn with_reservations(
    file: &Config,
    extras: &[ApiReservation],
) -> (Config, std::result::Result<(), String>) {
    let mut c = file.clone();
    let mut left_out = Ok(());
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
            match crate::config::Reservation::new(written, r.ip, Default::default()) {
                Ok(res) => sn.reservations.push(res),
                Err(e) => left_out = left_out.and(Err(e)),
            }
        }
    }
    (c, left_out)
}

/// A command's answer and the store changes it waits on, or the error
/// it is refused with.
type Answer = std::result::Result<(control::Response, Vec<StoreOp>), String>;

/// reservation-get-all / reservation-add / reservation-del. A change
/// rebuilds the state machine on the new reservation set (as a reload
/// does) and is answered once stored. Other clients' replies do not
/// change, so their bindings stay in the XDP map.
pub(super) fn reservation_command(
    req: &control::Request,
    file_config: &Config,
    extras: &mut Vec<ApiReservation>,
    running: &mut Config,
    server: &mut Server,
    now: u64,
) -> Answer {
    let a = &req.arguments;
    let mut set = ReservationSet {
        file_config,
        extras,
        running,
        server,
    };
    match req.command.as_str() {
        "reservation-get-all" => Ok((list(set.running, set.extras), Vec::new())),
        "reservation-add" => set.add(a, now),
        "reservation-del" => set.delete(a),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// What a change of the API's reservations works on: the file's
/// configuration, the API's reservations, and the running configuration
/// and state machine rebuilt from both.
struct ReservationSet<'a> {
    file_config: &'a Config,
    extras: &'a mut Vec<ApiReservation>,
    running: &'a mut Config,
    server: &'a mut Server,
}

fn ip_argument(a: &Value) -> std::result::Result<Ipv4Addr, String> {
    a.get("ip-address")
        .and_then(Value::as_str)
        .ok_or("ip-address is required")?
        .parse()
        .map_err(|e| format!("ip-address: {e}"))
}

/// Every reservation in force, the file's and the API's.
fn list(running: &Config, extras: &[ApiReservation]) -> control::Response {
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
    if n == 0 {
        control::Response::empty("0 reservations")
    } else {
        control::Response::ok(format!("{n} reservations"), json!({ "reservations": list }))
    }
}

impl ReservationSet<'_> {
    fn add(&mut self, a: &Value, now: u64) -> Answer {
        let ip = ip_argument(a)?;
        let subnet_id = self
            .server
            .subnet_of(ip)
            .ok_or_else(|| format!("{ip} is in no configured subnet"))?;
        let relay = crate::dhcp::subscriber::api_relay_id(a)?;
        let key = match &relay {
            Some(_) => None,
            None => Some(commands::client_of(a)?.0),
        };
        check_free(ip, subnet_id, key.as_ref(), self.running, self.server, now)?;
        let r = ApiReservation {
            subnet_id,
            ip,
            hw_address: string_argument(a, "hw-address"),
            client_id: string_argument(a, "client-id"),
            relay,
        };
        let mut next = self.extras.clone();
        next.push(r.clone());
        let (candidate, left_out) = with_reservations(self.file_config, &next);
        // The same checks as a file's reservations (format, duplicates).
        left_out
            .and_then(|()| candidate.validate_reservations())
            .map_err(|e| format!("refused: {e}"))?;
        *self.extras = next;
        rebuild(
            candidate,
            current_leases(self.server),
            self.running,
            self.server,
        );
        tracing::info!(%ip, subnet_id, "reservation added by the control API");
        Ok((
            control::Response::ok(format!("{ip} reserved in subnet {subnet_id}"), Value::Null),
            vec![
                StoreOp::PutReservation(r),
                StoreOp::Meta("reply_config", reply_config_fingerprint(self.running)),
                StoreOp::Meta("reply_portable", portable_fingerprint(self.running)),
            ],
        ))
    }

    fn delete(&mut self, a: &Value) -> Answer {
        let ip = ip_argument(a)?;
        let Some(pos) = self.extras.iter().position(|e| e.ip == ip) else {
            if self
                .running
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
        let r = self.extras.remove(pos);
        // A stored one that does not parse stays out, as it is from the
        // running configuration.
        let (candidate, _) = with_reservations(self.file_config, self.extras);
        rebuild(
            candidate,
            current_leases(self.server),
            self.running,
            self.server,
        );
        tracing::info!(%ip, "reservation deleted by the control API");
        Ok((
            control::Response::ok(format!("reservation of {ip} deleted"), Value::Null),
            vec![
                StoreOp::DeleteReservation {
                    subnet_id: r.subnet_id,
                    ip,
                },
                StoreOp::Meta("reply_config", reply_config_fingerprint(self.running)),
                StoreOp::Meta("reply_portable", portable_fingerprint(self.running)),
            ],
        ))
    }
}

fn string_argument(a: &Value, name: &str) -> Option<String> {
    a.get(name).and_then(Value::as_str).map(str::to_string)
}

/// Refuses an address already reserved, or leased to a client other than
/// `key` (a relayed line's reservation has no client to compare).
fn check_free(
    ip: Ipv4Addr,
    subnet_id: u32,
    key: Option<&ClientKey>,
    running: &Config,
    server: &Server,
    now: u64,
) -> std::result::Result<(), String> {
    let sn = running
        .subnets
        .iter()
        .find(|s| s.id == subnet_id)
        .expect("subnet_of");
    if sn.reservations.iter().any(|r| r.ip == ip) {
        return Err(format!("{ip} is already reserved"));
    }
    if let (Some(l), Some(key)) = (server.leases.get(ip), key) {
        if !server.leases.available_to(ip, key, now) && !l.is_client(key) {
            return Err(format!(
                "{ip} is leased to another client; delete that lease first"
            ));
        }
    }
    Ok(())
}

/// Replaces the state machine with one built on `candidate` around
/// `leases`, keeping the counters.
pub(super) fn rebuild(
    candidate: Config,
    leases: Vec<crate::lease::Lease>,
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

pub(super) fn current_leases(server: &Server) -> Vec<crate::lease::Lease> {
    server.leases.iter().cloned().collect()
}
