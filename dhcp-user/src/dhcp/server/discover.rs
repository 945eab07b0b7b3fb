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
        if self
            .leases
            .live_peers_binding(self.subnets[si].id, &key, now)
        {
            return Outcome::drop("peer_binding");
        }
        let mut reclaimed = self.hand_over(si, req, &key, now);
        let ip = match self.address_to_offer(&mut si, req, arrival, &key, now, &mut reclaimed) {
            Ok(ip) => ip,
            Err(why) => {
                let mut o = Outcome::drop(why);
                o.store = reclaimed;
                return o;
            }
        };
        if self.subnets[si].rapid_commit && req.rapid_commit {
            let mut o = self.bind(si, req, arrival, key, ip, now, true);
            // What was reclaimed on the way happened before the binding:
            // written after it, a reclaimed lease of the same address
            // would overwrite the binding the ACK announces.
            reclaimed.append(&mut o.store);
            o.store = reclaimed;
            return o;
        }
        let bound_already = self
            .leases
            .get(ip)
            .is_some_and(|l| l.is_client(&key) && l.state == LeaseState::Bound && l.expires > now);
        if !bound_already {
            let displaced = self.hold_offer(si, req, arrival, ip, now);
            reclaimed.extend(displaced.map(StoreOp::Put));
        }
        self.offer(si, req, arrival, ip, reclaimed)
    }

    /// The address to offer, by preference: the client's reservation, its
    /// binding, the address it asks for, a free one. `si` becomes the
    /// subnet of a shared network the address was found in. `Err` is the
    /// reason the DISCOVER is dropped.
    fn address_to_offer(
        &mut self,
        si: &mut usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: &ClientKey,
        now: u64,
        reclaimed: &mut Vec<StoreOp>,
    ) -> Result<Ipv4Addr, &'static str> {
        let sn = &self.subnets[*si];
        let sid = sn.id;
        if let Some(r) = self.reservation(sn, req) {
            if !self.leases.available_to(r.ip, key, now) {
                tracing::warn!(ip = %r.ip, "reserved address held by another client; no offer");
                return Err("reservation_conflict");
            }
            return Ok(r.ip);
        }
        if let Some(l) = self
            .leases
            .by_client(sid, key)
            .filter(|l| l.state != LeaseState::Declined && self.acceptable(sn, req, key, l.ip, now))
        {
            return Ok(l.ip);
        }
        if let Some(r) = req.requested_ip.filter(|ip| {
            sn.pools.iter().any(|p| ip_in(p, *ip)) && self.acceptable(sn, req, key, *ip, now)
        }) {
            return Ok(r);
        }
        match self.free_address(si, req, arrival, now, reclaimed) {
            Some(ip) => Ok(ip),
            None => {
                self.log_exhausted(*si, now);
                Err("pool_exhausted")
            }
        }
    }

    /// A free address of the subnet's open pools, else of a shared
    /// network's next subnets (`si` becomes that subnet), else a held
    /// offer taken back.
    fn free_address(
        &mut self,
        si: &mut usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        now: u64,
        reclaimed: &mut Vec<StoreOp>,
    ) -> Option<Ipv4Addr> {
        let sid = self.subnets[*si].id;
        let open = self.open_pools(*si);
        let mut got = self.leases.allocate_in(sid, now, &open);
        // Offer holds and leases that ran out since the last background
        // reclaim are only returned to the pool by a reclaim; do one now
        // (at most once a second, the scan is O(leases)).
        if got.is_none() && now > self.last_exhausted_reclaim {
            self.last_exhausted_reclaim = now;
            *reclaimed = self.reclaim(now);
            got = self.leases.allocate_in(sid, now, &open);
        }
        if got.is_some() {
            return got;
        }
        // A shared network's next subnets, in order.
        if let Some((other, a)) = self.allocate_shared(*si, now) {
            *si = other;
            return Some(a);
        }
        self.take_back_offer(sid, req, arrival, now)
    }

    /// Held offers beyond the protected share yield, oldest first.
    fn take_back_offer(
        &mut self,
        sid: u32,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let line = Self::line_of(req, arrival);
        let size = self.pool_size(sid);
        let leases = &self.leases;
        let still = |a: Ipv4Addr| {
            leases
                .get(a)
                .is_some_and(|l| l.state == LeaseState::Offered)
        };
        let a = self.offers.take_back(sid, size, line, still, now)?;
        self.leases.remove(a);
        *self.counters.dropped.entry("offer_taken_back").or_default() += 1;
        Some(a)
    }

    /// A flood of DISCOVERs into a full pool writes one line per
    /// interval, not one per DISCOVER.
    fn log_exhausted(&mut self, si: usize, now: u64) {
        let sn = &self.subnets[si];
        let (last, refused) = self.exhausted_logged.entry(sn.id).or_insert((0, 0));
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
    }

    /// Holds `ip` for the client until the line's offer hold ends; returns
    /// the lease the hold displaced.
    fn hold_offer(
        &mut self,
        si: usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        ip: Ipv4Addr,
        now: u64,
    ) -> Option<Lease> {
        let sid = self.subnets[si].id;
        let line = Self::line_of(req, arrival);
        let client = Self::identity(req);
        self.end_other_offer(sid, &client, ip);
        let expires = now + self.offers.hold_secs(line);
        let displaced = self.leases.put(client_lease(
            req,
            client.clone(),
            ip,
            sid,
            LeaseState::Offered,
            expires,
        ));
        let size = self.pool_size(sid);
        let keys = self.cap_keys(si, req, arrival);
        self.caps.leased(&keys, ip, &client);
        let place = offers::Place {
            subnet: sid,
            pool_size: size,
            line,
        };
        self.offers
            .offered(ip, place, &client, || Self::line_label(req, arrival), now);
        displaced
    }

    /// The OFFER of `ip`, carrying `store`.
    fn offer(
        &self,
        si: usize,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        ip: Ipv4Addr,
        store: Vec<StoreOp>,
    ) -> Outcome {
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
            store,
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
        let rapid_subnet = sn.rapid_commit;
        // The template is what a renewal's ACK carries before its echoes:
        // a rapid ACK's own options may lack one that did not fit beside
        // the 80 echo, so the template is built as for a request without
        // it (the kernel passes a rapid DISCOVER whose ACK would differ).
        let plain =
            rapid.then(|| self.build_marked(req, msg::ACK, req.ciaddr, ip, Some(&resolved), false));
        let (tpayload, tmark) = plain.as_ref().map_or((&payload, mark), |(p, m)| (p, *m));
        let fast = (self.kernel_can_answer(req, &resolved)
            && subscriber::fixed_fields_clear(tpayload))
        .then(|| {
            self.fast_reply(
                req,
                arrival,
                &key,
                &tpayload[proto::BOOTP_FIXED_LEN + 4..tmark],
                offerable,
                rapid_subnet,
            )
        })
        .flatten();
        let expires = now + u64::from(resolved.lease_secs);
        let lease = Lease {
            lease_secs: resolved.lease_secs,
            fast,
            relay: self.stash_of(req),
            ..client_lease(req, key, ip, subnet_id, LeaseState::Bound, expires)
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

/// The client's lease of `ip`, without a lease time, a kernel reply or a
/// relay's stash.
fn client_lease(
    req: &DhcpRequest<'_>,
    key: ClientKey,
    ip: Ipv4Addr,
    subnet_id: u32,
    state: LeaseState,
    expires: u64,
) -> Lease {
    Lease {
        ip,
        client: Some(key),
        hw: hw_of(req),
        subnet_id,
        state,
        expires,
        lease_secs: 0,
        fast: None,
        relay: None,
    }
}
