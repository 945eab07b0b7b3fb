//! REQUEST in every RFC 2131 state (SELECTING, INIT-REBOOT, RENEWING,
//! REBINDING), its NAK, and INFORM.

use super::*;

impl Server {
    pub(super) fn nak(
        &self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        why: &'static str,
    ) -> Outcome {
        tracing::debug!(xid = req.xid, "NAK: {why}");
        let payload = self.build(
            req,
            msg::NAK,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            None,
            false,
        );
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::NAK,
                payload,
                dest: dest(req, arrival, msg::NAK, Ipv4Addr::UNSPECIFIED),
            }),
            ..Default::default()
        }
    }

    pub(super) fn request(
        &mut self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        now: u64,
    ) -> Outcome {
        let key = Self::identity(req);
        if let Some(sid) = req.server_id {
            // SELECTING.
            let si = self
                .subnet_for_link(req, arrival)
                .map(|si| self.shared_containing(si, req.requested_ip));
            if sid != self.server_id {
                // The client took another server's offer: ours is free again.
                if let Some(si) = si {
                    let sub = self.subnets[si].id;
                    if let Some(l) = self.leases.by_client(sub, &key) {
                        if l.state == LeaseState::Offered {
                            let ip = l.ip;
                            self.leases.remove(ip);
                            self.offers.gone(ip);
                        }
                    }
                }
                return Outcome::drop("other_server");
            }
            let Some(si) = si else {
                return Outcome::drop("no_subnet");
            };
            let Some(ip) = req.requested_ip else {
                return Outcome::drop("selecting_without_address");
            };
            // Its offer was taken back for another client's, which is still
            // only a hold: the REQUEST wins it back.
            if self
                .leases
                .get(ip)
                .is_some_and(|l| l.state == LeaseState::Offered && !l.is_client(&key))
                && self.offers.reclaim_for(ip, &key, now)
            {
                self.leases.remove(ip);
                *self.counters.dropped.entry("offer_taken_back").or_default() += 1;
            }
            if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
                return self.nak(req, arrival, why);
            }
            if self.acceptable(&self.subnets[si], req, &key, ip, now) {
                return self.bind(si, req, arrival, key, ip, now, false);
            }
            // Its offer may have been taken back under pressure: it showed
            // interest, its next offer is kept.
            self.offers.interested(&key, now);
            return self.nak(req, arrival, "requested address not available");
        }
        if let (Some(ip), true) = (req.requested_ip, req.ciaddr.is_unspecified()) {
            // INIT-REBOOT.
            let Some(si) = self
                .subnet_for_link(req, arrival)
                .map(|si| self.shared_containing(si, Some(ip)))
            else {
                return Outcome::drop("no_subnet");
            };
            if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
                return self.nak(req, arrival, why);
            }
            let sn = &self.subnets[si];
            if !sn.net.contains(ip) {
                return self.nak(req, arrival, "address not on the client's network");
            }
            if self.leases.live_peers_binding(sn.id, &key, now) {
                return Outcome::drop("peer_binding");
            }
            let reserved_here = self.reservation(sn, req).is_some_and(|r| r.ip == ip);
            let known = self.leases.by_client(sn.id, &key).map(|l| (l.ip, l.state));
            return match known {
                None if !reserved_here => Outcome::drop("unknown_client"),
                Some((lip, st)) if lip != ip || st == LeaseState::Declined => {
                    self.nak(req, arrival, "client's binding is another address")
                }
                _ if self.acceptable(sn, req, &key, ip, now) => {
                    self.bind(si, req, arrival, key, ip, now, false)
                }
                _ => self.nak(req, arrival, "address held by another client"),
            };
        }
        if !req.ciaddr.is_unspecified() && req.requested_ip.is_none() {
            // RENEWING (unicast) or REBINDING (broadcast).
            let ip = req.ciaddr;
            let Some(si) = self.subnet_containing(ip) else {
                return Outcome::drop("not_our_network");
            };
            let sn = &self.subnets[si];
            if self.leases.live_peers_binding(sn.id, &key, now) {
                return Outcome::drop("peer_binding");
            }
            let ours = self
                .leases
                .by_client(sn.id, &key)
                .is_some_and(|l| l.ip == ip && l.state != LeaseState::Declined);
            let reserved_here = self.reservation(sn, req).is_some_and(|r| r.ip == ip);
            if (ours || reserved_here) && self.acceptable(sn, req, &key, ip, now) {
                return self.bind(si, req, arrival, key, ip, now, false);
            }
            return self.nak(req, arrival, "no binding for this client and address");
        }
        Outcome::drop("request_in_no_known_state")
    }

    /// The client's offer of another address than `ip` in `subnet` ends
    /// (it is offered or bound `ip` now).
    pub(super) fn end_other_offer(&mut self, subnet: u32, key: &[u8], ip: Ipv4Addr) {
        if let Some(prev) = self
            .leases
            .by_client(subnet, key)
            .filter(|l| l.state == LeaseState::Offered && l.ip != ip)
        {
            self.offers.gone(prev.ip);
        }
    }

    pub(super) fn inform(&mut self, req: &DhcpRequest<'_>, arrival: &Arrival<'_>) -> Outcome {
        let si = if req.ciaddr.is_unspecified() {
            self.subnet_for_link(req, arrival)
        } else {
            self.subnet_containing(req.ciaddr)
                .or_else(|| self.subnet_for_link(req, arrival))
        };
        let Some(si) = si else {
            return Outcome::drop("no_subnet");
        };
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, req.ciaddr).into_owned();
        let mut payload = Reply::new(
            req,
            msg::ACK,
            req.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
        );
        payload.set_boot(&resolved.boot);
        payload.push(opt::SERVER_ID, &self.server_id.octets());
        self.push_options(&mut payload, req, &resolved, false);
        self.push_echoes(&mut payload, req, false);
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::ACK,
                payload: payload.finish(),
                dest: dest(req, arrival, msg::INFORM, Ipv4Addr::UNSPECIFIED),
            }),
            ..Default::default()
        }
    }
}
