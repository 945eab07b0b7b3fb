//! How the control plane's replies leave: every reply is a whole frame on
//! the interface (and VLAN tags) its request arrived on, written with the
//! IP header `dhcp_common::reply_ip` defines, so it is the frame the XDP
//! program would have sent (README, "Reply addressing").
//!
//! - To a directly connected client: RFC 2131 §4.1, from the server
//!   identifier, to the client's MAC (or broadcast), without ARP.
//! - To a relay: to giaddr port 67, through the neighbour that handed us
//!   the request (its source MAC), as the XDP program does; from the
//!   address the relay sent the request to (normally the server
//!   identifier), so relays and firewalls that accept only their
//!   configured server address accept it, whatever the route to giaddr.
//!   Not through the kernel's routing: a UDP socket would pick the source
//!   the route to giaddr prefers and set DF, and the two planes would
//!   differ.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use dhcp_common::reply_ip::{reply_source, Source};

use crate::{
    dhcp::server::Dest,
    proto::{self, FrameHeader, RxFrame},
};

/// A reply ready for the wire: a frame for the packet socket of interface
/// `iface` (an index into the configured interfaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Frame { iface: usize, bytes: Vec<u8> },
}

/// Requests sent to addresses not this host's are answered from the server
/// identifier; each such address is logged once, up to this many.
const WARN_ONCE_MAX: usize = 1024;
/// The host's addresses are read again after this long, or on a miss
/// after `REFRESH_ON_MISS` (an address added since).
const REFRESH: Duration = Duration::from_secs(10);
const REFRESH_ON_MISS: Duration = Duration::from_secs(1);

/// Chooses reply sources and frames replies. One per daemon.
pub struct Egress {
    server_id: Ipv4Addr,
    local: Box<dyn FnMut(Ipv4Addr) -> bool + Send>,
    warned: HashSet<Ipv4Addr>,
}

impl Egress {
    /// Replies from `server_id`, or from another address of this host
    /// (the network namespace's interfaces) a relay sent to.
    pub fn new(server_id: Ipv4Addr) -> Egress {
        let mut addrs = LocalAddrs::default();
        Egress::with_locality(server_id, move |a| addrs.contains(a))
    }

    /// As [`Egress::new`], with `is_local` telling this host's addresses.
    pub fn with_locality(
        server_id: Ipv4Addr,
        is_local: impl FnMut(Ipv4Addr) -> bool + Send + 'static,
    ) -> Egress {
        Egress {
            server_id,
            local: Box::new(is_local),
            warned: HashSet::new(),
        }
    }

    /// The source address of a reply to `dest` for a request sent to
    /// `request_dst` (`dhcp_common::reply_ip::reply_source`).
    pub fn source(&mut self, dest: &Dest, request_dst: Ipv4Addr) -> Ipv4Addr {
        let local = &mut self.local;
        match reply_source(
            matches!(dest, Dest::Relay(_)),
            request_dst.octets(),
            self.server_id.octets(),
            |a| local(Ipv4Addr::from(a)),
        ) {
            Source::ServerId => self.server_id,
            Source::RequestDestination => request_dst,
            Source::ServerIdNotLocal => {
                if self.warned.len() < WARN_ONCE_MAX && self.warned.insert(request_dst) {
                    tracing::warn!(
                        request_destination = %request_dst,
                        server_id = %self.server_id,
                        "a relay sent to an address that is not this host's: replies to requests sent there leave from the server identifier (logged once per address)"
                    );
                }
                self.server_id
            }
        }
    }

    /// The frame answering `request` (received on interface `iface`, whose
    /// MAC is `our_mac`) with `payload`, to `dest`.
    pub fn frame_for(
        &mut self,
        dest: &Dest,
        request: &RxFrame<'_>,
        our_mac: [u8; 6],
        payload: Vec<u8>,
        iface: usize,
    ) -> Wire {
        let src_ip = self.source(dest, request.dst_ip);
        let (dst_ip, dst_mac, dst_port) = match dest {
            Dest::Relay(giaddr) => (*giaddr, request.src_mac, dhcp_common::DHCP_SERVER_PORT),
            Dest::Direct { ip, mac } => (*ip, *mac, dhcp_common::DHCP_CLIENT_PORT),
            Dest::Broadcast => (
                Ipv4Addr::BROADCAST,
                [0xff; 6],
                dhcp_common::DHCP_CLIENT_PORT,
            ),
        };
        let h = FrameHeader {
            src_mac: our_mac,
            dst_mac,
            tags: request.tags.clone(),
            src_ip,
            dst_ip,
            src_port: dhcp_common::DHCP_SERVER_PORT,
            dst_port,
        };
        Wire::Frame {
            iface,
            bytes: proto::build_frame(&h, &payload),
        }
    }
}

/// This network namespace's IPv4 addresses, read with getifaddrs(3) and
/// cached.
#[derive(Default)]
struct LocalAddrs {
    addrs: HashSet<Ipv4Addr>,
    read_at: Option<Instant>,
}

impl LocalAddrs {
    fn contains(&mut self, a: Ipv4Addr) -> bool {
        let age = self.read_at.map_or(Duration::MAX, |t| t.elapsed());
        if age >= REFRESH || (!self.addrs.contains(&a) && age >= REFRESH_ON_MISS) {
            match read_local_addrs() {
                Ok(set) => self.addrs = set,
                Err(e) => tracing::warn!("reading this host's addresses: {e}"),
            }
            self.read_at = Some(Instant::now());
        }
        self.addrs.contains(&a)
    }
}

fn read_local_addrs() -> std::io::Result<HashSet<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = HashSet::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of its family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET: a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.insert(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Tag;

    const SID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

    fn egress() -> Egress {
        Egress::with_locality(SID, |a| a == SID || a == OTHER)
    }

    fn request(dst_ip: Ipv4Addr, tags: Vec<Tag>, payload: &[u8]) -> RxFrame<'_> {
        RxFrame {
            dst_mac: OUR_MAC,
            src_mac: RELAY_MAC,
            tags,
            src_ip: GIADDR,
            dst_ip,
            src_port: 67,
            dst_port: 67,
            payload,
        }
    }

    #[test]
    fn relay_replies_leave_from_the_address_the_relay_sent_to() {
        let mut e = egress();
        let relay = Dest::Relay(GIADDR);
        assert_eq!(e.source(&relay, SID), SID);
        assert_eq!(e.source(&relay, OTHER), OTHER);
        // Not ours (a broadcast, a removed address): the server identifier.
        assert_eq!(e.source(&relay, Ipv4Addr::BROADCAST), SID);
        assert_eq!(e.source(&relay, Ipv4Addr::new(198, 18, 9, 9)), SID);
        assert_eq!(e.warned.len(), 2, "each foreign address noted once");
        assert_eq!(e.source(&relay, Ipv4Addr::BROADCAST), SID);
        assert_eq!(e.warned.len(), 2);
    }

    #[test]
    fn direct_replies_keep_the_server_identifier() {
        let mut e = egress();
        let direct = Dest::Direct {
            ip: Ipv4Addr::new(198, 18, 0, 100),
            mac: [2, 0, 0, 0, 0, 9],
        };
        for to in [SID, OTHER, Ipv4Addr::BROADCAST] {
            assert_eq!(e.source(&direct, to), SID);
            assert_eq!(e.source(&Dest::Broadcast, to), SID);
        }
        assert!(e.warned.is_empty());
    }

    #[test]
    fn a_relay_reply_is_a_frame_back_through_the_neighbour_with_the_shared_header() {
        let mut e = egress();
        let mut payload = vec![0u8; 300];
        payload[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let tags = vec![Tag {
            tpid: dhcp_common::ETH_P_8021Q,
            tci: 42,
        }];
        let Wire::Frame { iface, bytes } = e.frame_for(
            &Dest::Relay(GIADDR),
            &request(OTHER, tags.clone(), &[]),
            OUR_MAC,
            payload.clone(),
            3,
        );
        assert_eq!(iface, 3);
        let f = proto::parse_frame(&bytes, None, true).unwrap();
        assert_eq!((f.src_mac, f.dst_mac), (OUR_MAC, RELAY_MAC));
        assert_eq!(f.tags, tags);
        assert_eq!((f.src_ip, f.dst_ip), (OTHER, GIADDR));
        assert_eq!((f.src_port, f.dst_port), (67, 67));
        assert_eq!(f.payload, &payload[..]);
        let ip = &bytes[18..38];
        let want = dhcp_common::reply_ip::header(OTHER.octets(), GIADDR.octets(), 308, 0xdead_beef);
        assert_eq!(ip, &want[..]);
    }

    #[test]
    fn this_hosts_addresses_include_loopback() {
        let mut l = LocalAddrs::default();
        assert!(l.contains(Ipv4Addr::LOCALHOST));
        assert!(!l.contains(Ipv4Addr::new(198, 19, 255, 254)));
    }
}
