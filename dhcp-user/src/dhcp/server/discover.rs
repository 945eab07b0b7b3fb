//! DISCOVER: an address for the client (its binding, its reservation, its
//! offer, or a free one) and the OFFER; `bind`, shared with REQUEST,
//! makes the binding an ACK promises.

use super::*;

impl Server {
    pub(super) fn discover(
        &mut self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        now: u64,
    ) -> Outcome {
        let Some(mut si) = self
            .subnet_for_link(req, arrival)
            .map(|si| self.shared_home(si, req))
        else {
            return Outcome::drop("no_subnet");
        };
        let key = Self::identity(req);
        if let Some(why) = self.cap_refusal(si, req, arrival, &key, now) {
            return Outcome::drop(why);
        }
        let mut reclaimed = self.hand_over(si, req, &key, now);
        let sn = &self.subnets[si];
        let mut sid = sn.id;
        let ip = if let Some(r) = self.reservation(sn, req) {
            if !self.leases.available_to(r.ip, &key, now) {
                tracing::warn!(ip = %r.ip, "reserved address held by another client; no offer");
                let mut o = Outcome::drop("reservation_conflict");
                o.store = reclaimed;
                return o;
            }
            r.ip
        } else if let Some(l) = self.leases.by_client(sid, &key).filter(|l| {
            l.state != LeaseState::Declined && self.acceptable(sn, req, &key, l.ip, now)
        }) {
            l.ip
        } else if let Some(r) = req.requested_ip.filter(|ip| {
            sn.pools.iter().any(|p| ip_in(p, *ip)) && self.acceptable(sn, req, &key, *ip, now)
        }) {
            r
        } else {
            let open = self.open_pools(si);
            let mut got = self.leases.allocate_in(sid, now, &open);
            // Offer holds and leases that ran out since the last background
            // reclaim are only returned to the pool by a reclaim; do one now
            // (at most once a second, the scan is O(leases)).
            if got.is_none() && now > self.last_exhausted_reclaim {
                self.last_exhausted_reclaim = now;
                reclaimed = self.reclaim(now);
                got = self.leases.allocate_in(sid, now, &open);
            }
            if got.is_none() {
                // A shared network's next subnets, in order.
                if let Some((other, a)) = self.allocate_shared(si, now) {
                    si = other;
                    sid = self.subnets[si].id;
                    got = Some(a);
                }
            }
            if got.is_none() {
                // Held offers beyond the protected share yield, oldest first.
                let line = Self::line_of(req, arrival);
                let size = self.pool_size(sid);
                let leases = &self.leases;
                let still = |a: Ipv4Addr| {
                    leases
                        .get(a)
                        .is_some_and(|l| l.state == LeaseState::Offered)
                };
                if let Some(a) = self.offers.take_back(sid, size, line, still, now) {
                    self.leases.remove(a);
                    *self.counters.dropped.entry("offer_taken_back").or_default() += 1;
                    got = Some(a);
                }
            }
            let sn = &self.subnets[si];
            match got {
                Some(ip) => ip,
                None => {
                    // A flood of DISCOVERs into a full pool writes one line
                    // per interval, not one per DISCOVER.
                    let (last, refused) = self.exhausted_logged.entry(sid).or_insert((0, 0));
                    *refused += 1;
                    if *last == 0 || now >= *last + EXHAUSTED_LOG_SECS {
                        let n_refused = std::mem::take(refused);
                        *last = now;
                        let decliner = self
                            .offers
                            .top_decliner()
                            .map(|(line, n)| format!(" (most declines: {line}, {n})"))
                            .unwrap_or_default();
                        tracing::warn!(subnet = %sn.net, refused = n_refused, "pool exhausted: no address to offer{decliner}");
                    }
                    let mut o = Outcome::drop("pool_exhausted");
                    o.store = reclaimed;
                    return o;
                }
            }
        };
        if self.subnets[si].rapid_commit && req.rapid_commit {
            let mut o = self.bind(si, req, arrival, key, ip, now, true);
            o.store.extend(reclaimed);
            return o;
        }
        let bound_already = self
            .leases
            .get(ip)
            .is_some_and(|l| l.is_client(&key) && l.state == LeaseState::Bound && l.expires > now);
        if !bound_already {
            let line = Self::line_of(req, arrival);
            self.end_other_offer(sid, &key, ip);
            let displaced = self.leases.put(Lease {
                ip,
                client: Some(key),
                hw: hw_of(req),
                subnet_id: sid,
                state: LeaseState::Offered,
                expires: now + self.offers.hold_secs(line),
                lease_secs: 0,
                fast: None,
                relay: None,
            });
            reclaimed.extend(displaced.map(StoreOp::Put));
            let size = self.pool_size(sid);
            let client = Self::identity(req);
            let keys = self.cap_keys(si, req, arrival);
            self.caps.leased(&keys, ip, &client);
            let place = offers::Place {
                subnet: sid,
                pool_size: size,
                line,
            };
            self.offers
                .offered(ip, place, &client, || Self::line_label(req, arrival), now);
        }
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, ip);
        let payload = self.build(
            req,
            msg::OFFER,
            Ipv4Addr::UNSPECIFIED,
            ip,
            Some(&resolved),
            false,
        );
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::OFFER,
                payload,
                dest: dest(req, arrival, msg::OFFER, ip),
            }),
            store: reclaimed,
            dropped: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn bind(
        &mut self,
        si: usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: ClientKey,
        ip: Ipv4Addr,
        now: u64,
        rapid: bool,
    ) -> Outcome {
        let subnet_id = self.subnets[si].id;
        if self
            .leases
            .get(ip)
            .is_some_and(|l| l.state == LeaseState::Offered && l.is_client(&key))
        {
            self.offers.requested(ip, &key);
        } else {
            self.offers.gone(ip);
        }
        self.end_other_offer(subnet_id, &key, ip);
        let sn = &self.subnets[si];
        let resolved = self.resolved_for(sn, req, ip).into_owned();
        let (payload, mark) =
            self.build_marked(req, msg::ACK, req.ciaddr, ip, Some(&resolved), rapid);
        // A DISCOVER gets this binding back unless a reservation of the
        // client's points elsewhere (`discover` tries reservations first).
        let offerable = self.reservation(sn, req).is_none_or(|r| r.ip == ip);
        let fast = (!rapid
            && self.kernel_can_answer(req, &resolved)
            && subscriber::fixed_fields_clear(&payload))
        .then(|| {
            self.fast_reply(
                req,
                arrival,
                &key,
                &payload[proto::BOOTP_FIXED_LEN + 4..mark],
                offerable,
            )
        })
        .flatten();
        let lease = Lease {
            ip,
            client: Some(key),
            hw: hw_of(req),
            subnet_id,
            state: LeaseState::Bound,
            expires: now + u64::from(resolved.lease_secs),
            lease_secs: resolved.lease_secs,
            fast,
            relay: self.stash_of(req),
        };
        let keys = self.cap_keys(si, req, arrival);
        if let Some(k) = &lease.client {
            self.caps.leased(&keys, ip, k);
        }
        let mut store = vec![StoreOp::Put(lease.clone())];
        if let Some(moved_from) = self.leases.put(lease) {
            store.push(StoreOp::Put(moved_from));
        }
        Outcome {
            reply: Some(Outgoing {
                msg_type: msg::ACK,
                payload,
                dest: dest(req, arrival, msg::ACK, ip),
            }),
            store,
            dropped: None,
        }
    }
}
