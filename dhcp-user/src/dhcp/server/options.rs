//! Options for a reply: the configuration's levels overlaid (global,
//! subnet, pool, class, reservation), encoded once, and written into the
//! reply with what the client's request echoes.

use super::*;

pub(super) fn overlay(base: &OptionSet, over: &OptionSet) -> OptionSet {
    let mut custom = base.custom.clone();
    for c in &over.custom {
        custom.retain(|b| b.code != c.code);
        custom.push(c.clone());
    }
    // Each option the upper level sets, else the lower's.
    macro_rules! overlaid {
        ($($field:ident),*) => {
            OptionSet {
                $($field: over.$field.as_ref().or(base.$field.as_ref()).cloned(),)*
                custom,
            }
        };
    }
    overlaid!(
        lease_time,
        renewal_time,
        rebinding_time,
        routers,
        dns_servers,
        domain_name,
        classless_routes,
        hostname,
        domain_search,
        next_server,
        server_hostname,
        boot_file_name,
        tftp_server
    )
}

pub(super) fn resolve(o: &OptionSet, net: &Ipv4Net) -> Resolved {
    // Explicit T1 and T2 are below the lease and T1 below T2 (refused at
    // load otherwise); a default gives way to an explicit value (T2 is at
    // least T1, T1 at most T2), which is sent as written.
    let lease_secs = o.lease_time.unwrap_or(DEFAULT_LEASE_SECS);
    let t2 = o.rebinding_time.unwrap_or_else(|| {
        ((u64::from(lease_secs) * 7 / 8) as u32).max(o.renewal_time.unwrap_or(0))
    });
    // A reservation's own T1/T2 under a class's shorter lease is the one
    // mix the load checks cannot see: kept in order here.
    let t2 = if t2 >= lease_secs {
        (u64::from(lease_secs) * 7 / 8) as u32
    } else {
        t2
    };
    let t1 = o.renewal_time.unwrap_or(lease_secs / 2).min(t2);
    let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    options.insert(opt::SUBNET_MASK, net.mask().to_be_bytes().to_vec());
    if let Some(r) = &o.routers {
        options.insert(opt::ROUTER, r.iter().flat_map(|a| a.octets()).collect());
    }
    if let Some(d) = &o.dns_servers {
        options.insert(opt::DNS, d.iter().flat_map(|a| a.octets()).collect());
    }
    if let Some(d) = &o.domain_name {
        options.insert(opt::DOMAIN_NAME, d.as_bytes().to_vec());
    }
    if let Some(routes) = &o.classless_routes {
        let mut v = Vec::new();
        for r in routes {
            v.push(r.destination.prefix);
            let sig = usize::from(r.destination.prefix).div_ceil(8);
            v.extend_from_slice(&r.destination.addr.octets()[..sig]);
            v.extend_from_slice(&r.gateway.octets());
        }
        options.insert(opt::CLASSLESS_ROUTES, v);
    }
    crate::dhcp::server::subscriber::resolve_more(o, &mut options);
    for c in &o.custom {
        options.insert(c.code, c.encoded().to_vec());
    }
    options.retain(|_, v| !v.is_empty() && v.len() <= 255);
    Resolved {
        lease_secs,
        t1,
        t2,
        options: options.into_iter().collect(),
        boot: crate::dhcp::subscriber::boot_of(o),
    }
}

impl Server {
    /// The client's reservation: by client identifier first, then by
    /// hardware address (operators reserve by MAC even for clients that
    /// send option 61).
    pub(super) fn reservation<'s>(
        &self,
        sn: &'s SubnetRt,
        req: &DhcpRequest<'_>,
    ) -> Option<&'s ReservationRt> {
        req.client_id
            .and_then(|id| sn.reservations.get(&client_id_key(id)))
            .or_else(|| sn.reservations.get(&hw_key(req.htype, req.chaddr())))
            .or_else(|| self.relay_reservation(sn, req))
    }

    pub(super) fn resolved_for<'s>(
        &'s self,
        sn: &'s SubnetRt,
        req: &DhcpRequest<'_>,
        ip: Ipv4Addr,
    ) -> Cow<'s, Resolved> {
        let reserved = self.reservation(sn, req).filter(|r| r.ip == ip);
        if self.cls != 0 {
            return Cow::Owned(self.resolved_with_classes(sn, reserved, ip));
        }
        if let Some(r) = reserved {
            return Cow::Borrowed(&r.resolved);
        }
        Cow::Borrowed(
            sn.pools
                .iter()
                .find(|p| ip_in(p, ip))
                .and_then(|p| p.resolved.as_ref())
                .unwrap_or(&sn.resolved),
        )
    }

    /// OFFER/ACK/NAK payload. Order: 53, 54, 51, 58, 59, configured options
    /// by code, 61, 80, 82 (relay information last, RFC 3046 §2.1).
    pub(super) fn build(
        &self,
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        resolved: Option<&Resolved>,
        rapid: bool,
    ) -> Vec<u8> {
        self.build_marked(req, msg_type, ciaddr, yiaddr, resolved, rapid)
            .0
    }

    /// `build`, and where the echoed options (61, 80, 82) begin: what
    /// comes before them from offset 240 is the XDP reply template.
    pub(super) fn build_marked(
        &self,
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        resolved: Option<&Resolved>,
        rapid: bool,
    ) -> (Vec<u8>, usize) {
        let mut r = Reply::new(req, msg_type, ciaddr, yiaddr, Ipv4Addr::UNSPECIFIED);
        if msg_type == msg::NAK && !req.giaddr.is_unspecified() {
            r.set_broadcast();
        }
        r.push(opt::SERVER_ID, &self.server_id.octets());
        if let Some(res) = resolved.filter(|_| msg_type != msg::NAK) {
            r.set_boot(&res.boot);
        }
        if let Some(res) = resolved {
            r.push(opt::LEASE_TIME, &res.lease_secs.to_be_bytes());
            r.push(opt::RENEWAL_TIME, &res.t1.to_be_bytes());
            r.push(opt::REBINDING_TIME, &res.t2.to_be_bytes());
            self.push_options(&mut r, req, res, rapid);
        }
        let mark = r.written();
        self.push_echoes(&mut r, req, rapid && resolved.is_some());
        (r.finish(), mark)
    }

    pub(super) fn push_echoes(&self, r: &mut Reply, req: &DhcpRequest<'_>, rapid: bool) {
        if let Some(id) = req.client_id {
            r.push(opt::CLIENT_ID, id);
        }
        if rapid {
            r.push(opt::RAPID_COMMIT, &[]);
        }
        if let Some(rai) = req.relay_info {
            r.push(opt::RELAY_AGENT_INFO, rai);
        }
    }

    /// Configured options the client asked for (all of them when it sent no
    /// parameter request list; the subnet mask always), within its maximum
    /// message size.
    pub(super) fn push_options(
        &self,
        r: &mut Reply,
        req: &DhcpRequest<'_>,
        res: &Resolved,
        rapid: bool,
    ) {
        let limit = usize::from(req.max_message_size.unwrap_or(0)).max(proto::MIN_MAX_MESSAGE) - 28;
        let echo_len = req.client_id.map_or(0, |v| 2 + v.len())
            + if rapid { 2 } else { 0 }
            + req.relay_info.map_or(0, |v| 2 + v.len());
        let mut left = Vec::new();
        for (code, value) in &res.options {
            let wanted = *code == opt::SUBNET_MASK || req.prl.is_none() || req.requested(*code);
            if wanted && r.len_with_end() + 2 + value.len() + echo_len <= limit {
                r.push(*code, value);
            } else if wanted {
                left.push((*code, &value[..]));
            }
        }
        subscriber::overload(r, &left, &res.boot, limit, echo_len);
    }
}
