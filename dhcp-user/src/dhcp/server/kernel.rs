//! The XDP side of the state machine: what the kernel needs to answer a
//! binding's renewals (`fast_reply`), the grants it reports back, and the
//! restart paths (stripping the fast path, recovery after a crash).

use super::*;

impl Server {
    /// The XDP program's view of this ACK, when it can reproduce it: a
    /// lease-map key it can build, a template that fits its map slot.
    pub(super) fn fast_reply(
        &mut self,
        req: &DhcpRequest<'_>,
        arrival: &Arrival<'_>,
        key: &[u8],
        template: &[u8],
        offerable: bool,
        rapid: bool,
    ) -> Option<Arc<FastReply>> {
        if key.len() > 1 + dhcp_common::MAX_ID_LEN
            || template.len() > dhcp_common::TEMPLATE_OPTIONS_MAX
            || !self.trust.fast_path_ok(req.giaddr)
        {
            return None;
        }
        let rai = req.relay_info.unwrap_or(&[]);
        let template = match self.templates.get(template) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<[u8]> = template.into();
                // Each distinct PRL makes a template: bound what clients
                // can make us keep.
                if self.templates.len() < MAX_SHARED_TEMPLATES {
                    self.templates.insert(t.clone());
                }
                t
            }
        };
        Some(Arc::new(FastReply {
            iface: arrival.iface.into(),
            outer_vlan: arrival.tags.first().map_or(0, Tag::vid),
            inner_vlan: arrival.tags.get(1).map_or(0, Tag::vid),
            giaddr: req.giaddr,
            prl_len: req.prl.map_or(0, |p| p.len() as u16 + 1),
            shape_hash: dhcp_common::shape_hash(req.prl.unwrap_or(&[]), rai),
            max_message_size: req.max_message_size.unwrap_or(0),
            client_id_len: req.client_id.map_or(0, |c| c.len() as u8),
            relay_info_len: rai.len() as u8,
            offerable,
            rapid,
            template,
        }))
    }

    /// The XDP program granted `g.client` the address `g.ip` until `g.expires`
    /// (a renewal event, or an entry read as it left the map): the store
    /// change that records it, if the control plane did not know it yet.
    /// A binding the control plane ended while the kernel could still
    /// answer comes back when the kernel's grant outlives the end: it ran
    /// out (reclaim) while the kernel renewed it, or the client renewed
    /// after its release. Either way the client holds an ACK for it, and
    /// the address is not given to anyone else before it runs out.
    pub fn kernel_granted(&mut self, g: &KernelGrant, now: u64) -> Option<StoreOp> {
        self.take_kernel_grant(g, now, true)
    }

    /// A grant the committer already wrote with the batch that ended its
    /// binding (`daemon::commit::keep_kernel_grants`), taken by the same
    /// rule as `kernel_granted`; a binding it brings back comes without
    /// fast-path data, as the committer wrote it: its entry left the map
    /// with that batch, and the client's next renewal, answered by the
    /// control plane, maps it again.
    pub fn kernel_grant_kept(&mut self, g: &KernelGrant, now: u64) -> Option<StoreOp> {
        self.take_kernel_grant(g, now, false)
    }

    /// `kernel_granted`; a binding brought back keeps the fast-path data
    /// it was mapped with if `remap` (the store change maps it again).
    fn take_kernel_grant(&mut self, g: &KernelGrant, now: u64, remap: bool) -> Option<StoreOp> {
        let (key, ip, expires) = (&g.client[..], g.ip, g.expires);
        if let Some(l) = self
            .leases
            .get(ip)
            .filter(|l| l.is_client(key) && l.state == LeaseState::Bound)
        {
            if expires <= l.expires {
                return None;
            }
            let mut l = l.clone();
            l.expires = expires;
            self.leases.replace(l.clone());
            return Some(StoreOp::Renewed(l));
        }
        let hold = self.leases.hold(ip).filter(|h| h.lease.is_client(key))?;
        if expires <= now {
            return None;
        }
        let acked_at_ns = g
            .expires_ns
            .saturating_sub(u64::from(hold.lease.lease_secs) * 1_000_000_000);
        let honour = match hold.ended {
            None | Some((_, EndKind::Lapsed)) => true,
            Some((at_ns, EndKind::Ended)) => acked_at_ns + GRANT_ORDER_SLACK_NS >= at_ns,
        };
        if !honour {
            return None;
        }
        let mut l = hold.lease.clone();
        l.expires = expires;
        l.state = LeaseState::Bound;
        if !remap {
            l.fast = None;
        }
        *self
            .counters
            .dropped
            .entry("kernel_grant_restored")
            .or_default() += 1;
        let moved_on = self
            .leases
            .by_client(l.subnet_id, key)
            .is_some_and(|o| o.ip != ip && o.state == LeaseState::Bound);
        if moved_on {
            // The client is bound elsewhere in the subnet now: it keeps
            // that binding, and this address waits out the kernel's grant.
            tracing::warn!(%ip, expires, "the kernel renewed a binding its client has left; address quarantined until that grant ends");
            l.client = None;
            l.state = LeaseState::Declined;
            l.fast = None;
        } else {
            tracing::warn!(%ip, expires, "the kernel renewed a binding as the control plane ended it; kept bound until that grant ends");
        }
        self.leases.put(l.clone());
        Some(StoreOp::Put(l))
    }

    /// Takes every binding out of the kernel's hands (the replies it
    /// would build changed): the store changes for it.
    pub fn strip_fast(&mut self) -> Vec<StoreOp> {
        let ips: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|l| l.fast.is_some())
            .map(|l| l.ip)
            .collect();
        ips.into_iter()
            .filter_map(|ip| {
                let mut l = self.leases.get(ip)?.clone();
                l.fast = None;
                self.leases.replace(l.clone());
                Some(StoreOp::Put(l))
            })
            .collect()
    }

    /// After a stop that did not store every renewal the XDP program
    /// answered, a client may hold a lease the store remembers shorter
    /// than the kernel granted it. The kernel grants at most its own now +
    /// lease time, and it answered nothing after the stop, so every end it
    /// granted is before `now + lease_secs`; but it extends its entry from
    /// its own last grant, not the store's, so while events went unread it
    /// may have chained renewals well past the stored end. Every binding
    /// it could have held (Bound, with fast-path data: reclaim takes an
    /// entry out of the map before it writes the end) is extended to that
    /// bound, however old its stored end. The cost: addresses of clients
    /// that left stay held one lease time longer; never an address given
    /// to a second client.
    pub fn recover_unclean(&mut self, now: u64) -> Vec<StoreOp> {
        let due: Vec<Lease> = self
            .leases
            .iter()
            .filter(|l| {
                l.state == LeaseState::Bound
                    && l.fast.is_some()
                    && l.expires < now + u64::from(l.lease_secs)
            })
            .cloned()
            .collect();
        due.into_iter()
            .map(|mut l| {
                l.expires = now + u64::from(l.lease_secs);
                self.leases.replace(l.clone());
                StoreOp::Put(l)
            })
            .collect()
    }
}
