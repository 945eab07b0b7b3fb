//! DECLINE and RELEASE: the client ends what it holds.

use super::*;

impl Server {
    pub(super) fn decline(
        &mut self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        now: u64,
    ) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_id) {
            return Outcome::drop("other_server");
        }
        let Some(ip) = req.requested_ip else {
            return Outcome::drop("decline_without_address");
        };
        let key = Self::identity(req);
        match self.leases.get(ip) {
            Some(l) if l.is_client(&key) => {
                let mut d = l.clone();
                let subnet = l.subnet_id;
                let caps = self
                    .subnets
                    .iter()
                    .find(|s| s.id == subnet)
                    .map_or_else(Caps::default, |s| s.caps);
                let keys = Keys::declines(subnet, &caps, &key, Self::line_of(req, arrival));
                if let Some(kind) = self.caps.decline_refused(&keys, &self.leases) {
                    // The address is not quarantined: the client's hold
                    // lapses as an unrequested offer would.
                    let why = kind.reason();
                    *self.counters.limited.entry(why).or_default() += 1;
                    return Outcome::drop(why);
                }
                tracing::warn!(%ip, "address declined by its client (in use elsewhere?): quarantined");
                self.offers.gone(ip);
                self.offers.declined(
                    subnet,
                    Self::line_of(req, arrival),
                    || Self::line_label(req, arrival),
                    now,
                );
                d.client = None;
                d.state = LeaseState::Declined;
                d.expires = now + self.probation;
                self.caps.declined(&keys, ip, d.expires);
                self.leases.put(d.clone());
                Outcome {
                    store: vec![StoreOp::Put(d)],
                    ..Default::default()
                }
            }
            _ => Outcome::drop("decline_unknown"),
        }
    }

    pub(super) fn release(&mut self, req: &DhcpRequest<'_>, now: u64) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_id) {
            return Outcome::drop("other_server");
        }
        let key = Self::identity(req);
        let ip = req.ciaddr;
        match self.leases.get(ip) {
            Some(l) if l.is_client(&key) && l.state == LeaseState::Bound => {
                let l = self
                    .leases
                    .set_state(ip, LeaseState::Released, now, now)
                    .cloned();
                Outcome {
                    store: l.into_iter().map(StoreOp::Put).collect(),
                    ..Default::default()
                }
            }
            _ => Outcome::drop("release_unknown"),
        }
    }
}
