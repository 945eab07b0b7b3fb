use dhcp_common::{layout::bootp, ETH_P_8021AD, ETH_P_8021Q};
use dhcproto::{v4, Decodable};

use super::*;
use crate::config::Config;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
decline_probation_secs = 600
offer_hold_secs = 30

[options]
lease_time = 1000
dns_servers = ["198.18.0.53"]
domain_name = "lab.test"

[[interface]]
name = "srv0"

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.102"
[[subnet.reservation]]
hw_address = "02:00:00:00:00:99"
ip = "198.18.0.50"
options = { lease_time = 5000 }

[[subnet]]
id = 2
subnet = "198.18.1.0/24"
interface = "srv0"
vlan = 100
rapid_commit = true
[[subnet.pool]]
start = "198.18.1.10"
end = "198.18.1.20"

[[subnet]]
id = 3
subnet = "198.18.2.0/24"
interface = "srv0"
vlan = 100
inner_vlan = 200
[[subnet.pool]]
start = "198.18.2.10"
end = "198.18.2.20"

[[subnet]]
id = 4
subnet = "198.18.3.0/24"
relays = ["198.18.9.1"]
[[subnet.pool]]
start = "198.18.3.10"
end = "198.18.3.20"
"#;

const NOW: u64 = 1_000_000;

fn server() -> Server {
    let c = Config::parse(CONFIG, "test").unwrap();
    Server::new(&c, Vec::new())
}

#[derive(Clone)]
struct Req {
    msg_type: u8,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    flags: u16,
    opts: Vec<(u8, Vec<u8>)>,
}

fn req(msg_type: u8, n: u8) -> Req {
    Req {
        msg_type,
        mac: [2, 0, 0, 0, 0, n],
        ciaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        flags: 0,
        opts: Vec::new(),
    }
}

impl Req {
    fn opt(mut self, code: u8, v: &[u8]) -> Req {
        self.opts.push((code, v.to_vec()));
        self
    }
    fn requested(self, ip: [u8; 4]) -> Req {
        self.opt(opt::REQUESTED_IP, &ip)
    }
    fn server_id(self, ip: [u8; 4]) -> Req {
        self.opt(opt::SERVER_ID, &ip)
    }
    fn ciaddr(mut self, ip: [u8; 4]) -> Req {
        self.ciaddr = ip.into();
        self
    }
    fn giaddr(mut self, ip: [u8; 4]) -> Req {
        self.giaddr = ip.into();
        self
    }
    fn broadcast(mut self) -> Req {
        self.flags = bootp::FLAG_BROADCAST;
        self
    }
    fn raw(&self) -> Vec<u8> {
        let mut p = vec![0u8; bootp::FIXED_LEN];
        p[bootp::OP] = bootp::BOOTREQUEST;
        p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
        p[bootp::HLEN] = 6;
        p[bootp::XID].copy_from_slice(&(0x1000 + u32::from(self.mac[5])).to_be_bytes());
        p[bootp::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        p[bootp::CIADDR].copy_from_slice(&self.ciaddr.octets());
        p[bootp::GIADDR].copy_from_slice(&self.giaddr.octets());
        p[bootp::CHADDR][..6].copy_from_slice(&self.mac);
        p.extend_from_slice(&bootp::MAGIC_COOKIE);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, self.msg_type]);
        for (c, v) in &self.opts {
            p.push(*c);
            p.push(v.len() as u8);
            p.extend_from_slice(v);
        }
        p.push(opt::END);
        p
    }
}

const UNTAGGED: &[Tag] = &[];
const VLAN100: &[Tag] = &[Tag {
    tpid: ETH_P_8021Q,
    tci: 100,
}];
const QINQ: &[Tag] = &[
    Tag {
        tpid: ETH_P_8021AD,
        tci: 100,
    },
    Tag {
        tpid: ETH_P_8021Q,
        tci: 200,
    },
];

fn handle_on(s: &mut Server, r: &Req, tags: &[Tag], now: u64) -> Outcome {
    let raw = r.raw();
    let parsed = proto::parse_dhcp(&raw).unwrap();
    let arrival = Arrival {
        iface: "srv0",
        tags,
        src_mac: r.mac,
        src_ip: if parsed.giaddr.is_unspecified() {
            parsed.ciaddr
        } else {
            parsed.giaddr
        },
    };
    s.handle(&parsed, &arrival, now)
}

fn handle(s: &mut Server, r: &Req) -> Outcome {
    handle_on(s, r, UNTAGGED, NOW)
}

fn decode(o: &Outcome) -> v4::Message {
    let r = o
        .reply
        .as_ref()
        .unwrap_or_else(|| panic!("no reply: dropped {:?}", o.dropped));
    v4::Message::from_bytes(&r.payload).expect("reply decodes with dhcproto")
}

fn msg_type(o: &Outcome) -> v4::MessageType {
    decode(o).opts().msg_type().unwrap()
}

fn yiaddr(o: &Outcome) -> Ipv4Addr {
    decode(o).yiaddr()
}

fn option_codes(o: &Outcome) -> Vec<u8> {
    let payload = &o.reply.as_ref().unwrap().payload;
    let mut i = bootp::OPTIONS;
    let mut codes = Vec::new();
    while payload[i] != opt::END {
        codes.push(payload[i]);
        i += 2 + usize::from(payload[i + 1]);
    }
    codes
}

fn raw_option(o: &Outcome, code: u8) -> Option<Vec<u8>> {
    let payload = &o.reply.as_ref().unwrap().payload;
    let mut i = bootp::OPTIONS;
    while payload[i] != opt::END {
        let len = usize::from(payload[i + 1]);
        if payload[i] == code {
            return Some(payload[i + 2..i + 2 + len].to_vec());
        }
        i += 2 + len;
    }
    None
}

/// DISCOVER + REQUEST; returns the bound address.
fn dora(s: &mut Server, n: u8) -> Ipv4Addr {
    let ip = yiaddr(&handle(s, &req(msg::DISCOVER, n)));
    let ack = handle(
        s,
        &req(msg::REQUEST, n)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(ack.store.len(), 1);
    ip
}

#[test]
fn discover_offers_distinct_pool_addresses_and_holds_them() {
    let mut s = server();
    let a = handle(&mut s, &req(msg::DISCOVER, 1));
    assert_eq!(msg_type(&a), v4::MessageType::Offer);
    let b = handle(&mut s, &req(msg::DISCOVER, 2));
    assert_ne!(yiaddr(&a), yiaddr(&b));
    // The same client asking again gets the same offer.
    assert_eq!(yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1))), yiaddr(&a));
    assert!(a.store.is_empty(), "offers are not persisted");
    let m = decode(&a);
    assert_eq!(m.xid(), 0x1001);
    assert_eq!(
        m.opts().get(v4::OptionCode::ServerIdentifier),
        Some(&v4::DhcpOption::ServerIdentifier(Ipv4Addr::new(
            198, 18, 0, 1
        )))
    );
    assert_eq!(
        m.opts().get(v4::OptionCode::AddressLeaseTime),
        Some(&v4::DhcpOption::AddressLeaseTime(1000))
    );
    assert_eq!(
        m.opts().get(v4::OptionCode::Renewal),
        Some(&v4::DhcpOption::Renewal(500))
    );
    assert_eq!(
        m.opts().get(v4::OptionCode::Rebinding),
        Some(&v4::DhcpOption::Rebinding(875))
    );
    assert_eq!(
        m.opts().get(v4::OptionCode::SubnetMask),
        Some(&v4::DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        m.opts().get(v4::OptionCode::Router),
        Some(&v4::DhcpOption::Router(vec![Ipv4Addr::new(198, 18, 0, 1)]))
    );
}

/// Issue 20: held offers beyond the protected share yield to new
/// clients when the pool runs out. The client that lost its offer is NAKed
/// once the address is bound to the taker, and its next DORA works; while
/// the taker only holds it, the first REQUEST wins it.
#[test]
fn a_held_offer_yields_to_a_new_client_when_the_pool_is_out() {
    let mut s = server();
    let first = yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1)));
    for n in 2..=3 {
        handle(&mut s, &req(msg::DISCOVER, n));
    }
    // Pool of 3, 10% protected (1 offer): the oldest offer's address goes.
    let o = handle(&mut s, &req(msg::DISCOVER, 4));
    assert_eq!(yiaddr(&o), first);
    assert_eq!(s.counters.dropped.get("offer_taken_back"), Some(&1));
    // Client 4 completes with the address it was offered...
    let ack = handle(
        &mut s,
        &req(msg::REQUEST, 4)
            .requested(first.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    // ...so client 1's REQUEST for it is NAKed.
    let nak = handle(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(first.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&nak), v4::MessageType::Nak);
    // Client 1 starts again and gets an address (client 2's old offer).
    let ip = dora(&mut s, 1);
    assert_ne!(ip, first);
    let (o, _) = s.offer_stats(1);
    assert_eq!(o.taken_back, 2);
}

/// A REQUEST beats a hold: the client whose offer was taken back, asking
/// first, gets it; the taker, asking later, is NAKed.
#[test]
fn the_first_request_wins_an_address_that_is_only_held() {
    let mut s = server();
    let first = yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1)));
    for n in 2..=4 {
        handle(&mut s, &req(msg::DISCOVER, n));
    }
    let ask = |s: &mut Server, n| {
        msg_type(&handle(
            s,
            &req(msg::REQUEST, n)
                .requested(first.octets())
                .server_id([198, 18, 0, 1]),
        ))
    };
    assert_eq!(ask(&mut s, 1), v4::MessageType::Ack);
    assert_eq!(ask(&mut s, 4), v4::MessageType::Nak);
}

/// Within the protected share, offers keep their addresses (and with all
/// of the pool protected, an exhausted pool offers nothing, as before).
#[test]
fn offer_hold_expires() {
    let c = Config::parse(
        &CONFIG.replace(
            "offer_hold_secs = 30",
            "offer_hold_secs = 30\noffer_protected_percent = 100",
        ),
        "test",
    )
    .unwrap();
    let mut s = Server::new(&c, Vec::new());
    let ips: Vec<_> = (1..=3)
        .map(|n| yiaddr(&handle(&mut s, &req(msg::DISCOVER, n))))
        .collect();
    let o = handle(&mut s, &req(msg::DISCOVER, 4));
    assert_eq!(o.dropped, Some("pool_exhausted"));
    // After the hold, the offers are gone and the pool has room again.
    let o = handle_on(&mut s, &req(msg::DISCOVER, 4), UNTAGGED, NOW + 31);
    assert!(ips.contains(&yiaddr(&o)));
}

#[test]
fn requested_address_is_offered_when_free_and_not_when_held() {
    let mut s = server();
    let o = handle(&mut s, &req(msg::DISCOVER, 1).requested([198, 18, 0, 102]));
    assert_eq!(yiaddr(&o), Ipv4Addr::new(198, 18, 0, 102));
    let o = handle(&mut s, &req(msg::DISCOVER, 2).requested([198, 18, 0, 102]));
    assert_ne!(yiaddr(&o), Ipv4Addr::new(198, 18, 0, 102));
    // Outside every pool: ignored.
    let o = handle(&mut s, &req(msg::DISCOVER, 3).requested([198, 18, 0, 7]));
    assert_ne!(yiaddr(&o), Ipv4Addr::new(198, 18, 0, 7));
}

#[test]
fn pool_exhaustion_sends_nothing_and_is_counted() {
    let mut s = server();
    for n in 1..=3 {
        dora(&mut s, n);
    }
    let o = handle(&mut s, &req(msg::DISCOVER, 9));
    assert!(o.reply.is_none());
    assert_eq!(o.dropped, Some("pool_exhausted"));
    assert_eq!(s.counters.dropped["pool_exhausted"], 1);
}

#[test]
fn reservation_is_offered_with_its_own_options() {
    let mut s = server();
    let r = req(msg::DISCOVER, 0x99);
    let o = handle(&mut s, &r);
    assert_eq!(yiaddr(&o), Ipv4Addr::new(198, 18, 0, 50));
    assert_eq!(
        raw_option(&o, opt::LEASE_TIME),
        Some(5000u32.to_be_bytes().to_vec())
    );
    // Reserved addresses never come out of the pool for others, and
    // requesting it does not work either.
    let o = handle(
        &mut s,
        &req(msg::REQUEST, 5)
            .requested([198, 18, 0, 50])
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
}

#[test]
fn selecting_ack_is_persisted_and_addressed_per_rfc2131() {
    let mut s = server();
    let ip = yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1)));
    let ack = handle(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
    assert_eq!(yiaddr(&ack), ip);
    match &ack.store[..] {
        [StoreOp::Put(l)] => {
            assert_eq!(l.ip, ip);
            assert_eq!(l.state, LeaseState::Bound);
            assert_eq!(l.expires, NOW + 1000);
        }
        other => panic!("{other:?}"),
    }
    // No broadcast flag, Ethernet: unicast to yiaddr at chaddr.
    assert_eq!(
        ack.reply.as_ref().unwrap().dest,
        Dest::Direct {
            ip,
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    // Broadcast flag: broadcast.
    let ack = handle(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1])
            .broadcast(),
    );
    assert_eq!(ack.reply.as_ref().unwrap().dest, Dest::Broadcast);
}

#[test]
fn selecting_another_server_drops_and_frees_our_offer() {
    let mut s = server();
    let ips: Vec<_> = (1..=3)
        .map(|n| yiaddr(&handle(&mut s, &req(msg::DISCOVER, n))))
        .collect();
    let o = handle(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(ips[0].octets())
            .server_id([198, 18, 0, 2]),
    );
    assert!(o.reply.is_none());
    assert_eq!(o.dropped, Some("other_server"));
    // Its address is free for the next client right away.
    assert_eq!(yiaddr(&handle(&mut s, &req(msg::DISCOVER, 4))), ips[0]);
}

#[test]
fn selecting_nak_when_the_address_is_gone() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    let o = handle(
        &mut s,
        &req(msg::REQUEST, 2)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    assert_eq!(o.reply.as_ref().unwrap().dest, Dest::Broadcast);
    assert!(o.store.is_empty());
    assert_eq!(yiaddr(&o), Ipv4Addr::UNSPECIFIED);
    // NAK carries no lease or configuration options.
    assert_eq!(option_codes(&o), vec![opt::MESSAGE_TYPE, opt::SERVER_ID]);
}

#[test]
fn init_reboot_ack_nak_and_silence() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    // Valid binding: ACK.
    let o = handle(&mut s, &req(msg::REQUEST, 1).requested(ip.octets()));
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    // Address on another network: NAK.
    let o = handle(&mut s, &req(msg::REQUEST, 1).requested([198, 19, 5, 5]));
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    // Another address than its binding: NAK.
    let o = handle(&mut s, &req(msg::REQUEST, 1).requested([198, 18, 0, 101]));
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    // A client we know nothing about: silence.
    let o = handle(&mut s, &req(msg::REQUEST, 7).requested([198, 18, 0, 101]));
    assert!(o.reply.is_none());
    assert_eq!(o.dropped, Some("unknown_client"));
    // The reserved client rebooting into its reservation: ACK.
    let o = handle(&mut s, &req(msg::REQUEST, 0x99).requested([198, 18, 0, 50]));
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
}

#[test]
fn renewing_and_rebinding() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    // RENEWING: unicast, ciaddr set; ACK straight to ciaddr.
    let o = handle_on(
        &mut s,
        &req(msg::REQUEST, 1).ciaddr(ip.octets()),
        UNTAGGED,
        NOW + 500,
    );
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    assert_eq!(
        o.reply.as_ref().unwrap().dest,
        Dest::Direct {
            ip,
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    match &o.store[..] {
        [StoreOp::Put(l)] => assert_eq!(l.expires, NOW + 500 + 1000, "fresh lease time"),
        other => panic!("{other:?}"),
    }
    assert_eq!(decode(&o).ciaddr(), ip);
    // REBINDING (broadcast, same fields): ACK.
    let o = handle_on(
        &mut s,
        &req(msg::REQUEST, 1).ciaddr(ip.octets()).broadcast(),
        UNTAGGED,
        NOW + 900,
    );
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    // Someone else's address: NAK.
    let other = dora(&mut s, 2);
    let o = handle(&mut s, &req(msg::REQUEST, 1).ciaddr(other.octets()));
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    // A binding we do not have: NAK.
    let o = handle(&mut s, &req(msg::REQUEST, 3).ciaddr([198, 18, 0, 102]));
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    // Not one of our networks: silence.
    let o = handle(&mut s, &req(msg::REQUEST, 3).ciaddr([198, 19, 0, 5]));
    assert_eq!(o.dropped, Some("not_our_network"));
}

#[test]
fn expired_lease_is_reclaimed_and_its_client_can_still_renew_until_reused() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    let ops = s.reclaim(NOW + 1000);
    assert_eq!(ops.len(), 1);
    assert_eq!(s.leases.get(ip).unwrap().state, LeaseState::Expired);
    // Nobody took it yet: the late renewal is accepted.
    let o = handle_on(
        &mut s,
        &req(msg::REQUEST, 1).ciaddr(ip.octets()),
        UNTAGGED,
        NOW + 1001,
    );
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
}

#[test]
fn release_frees_the_address() {
    let mut s = server();
    let ips: Vec<_> = (1..=3).map(|n| dora(&mut s, n)).collect();
    assert_eq!(
        handle(&mut s, &req(msg::DISCOVER, 4)).dropped,
        Some("pool_exhausted")
    );
    let o = handle(
        &mut s,
        &req(msg::RELEASE, 2)
            .ciaddr(ips[1].octets())
            .server_id([198, 18, 0, 1]),
    );
    assert!(o.reply.is_none());
    assert!(matches!(&o.store[..], [StoreOp::Put(l)] if l.state == LeaseState::Released));
    assert_eq!(yiaddr(&handle(&mut s, &req(msg::DISCOVER, 4))), ips[1]);
    // Releasing what is not yours does nothing.
    let o = handle(&mut s, &req(msg::RELEASE, 9).ciaddr(ips[0].octets()));
    assert_eq!(o.dropped, Some("release_unknown"));
    assert_eq!(s.leases.get(ips[0]).unwrap().state, LeaseState::Bound);
}

#[test]
fn decline_quarantines_for_the_probation_time() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    let o = handle(
        &mut s,
        &req(msg::DECLINE, 1)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert!(o.reply.is_none());
    assert!(
        matches!(&o.store[..], [StoreOp::Put(l)] if l.state == LeaseState::Declined && l.client.is_none())
    );
    // Nobody gets it during probation, not even by asking for it.
    for n in 2..=4 {
        let o = handle(&mut s, &req(msg::DISCOVER, n).requested(ip.octets()));
        if o.reply.is_some() {
            assert_ne!(yiaddr(&o), ip);
        }
    }
    let o = handle(
        &mut s,
        &req(msg::REQUEST, 5)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    // After probation it is usable again.
    s.reclaim(NOW + 600);
    let o = handle_on(
        &mut s,
        &req(msg::DISCOVER, 6).requested(ip.octets()),
        UNTAGGED,
        NOW + 601,
    );
    assert_eq!(yiaddr(&o), ip);
}

#[test]
fn inform_returns_configuration_without_a_lease() {
    let mut s = server();
    let o = handle(&mut s, &req(msg::INFORM, 1).ciaddr([198, 18, 0, 7]));
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    let m = decode(&o);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.ciaddr(), Ipv4Addr::new(198, 18, 0, 7));
    let codes = option_codes(&o);
    for c in [opt::LEASE_TIME, opt::RENEWAL_TIME, opt::REBINDING_TIME] {
        assert!(!codes.contains(&c), "{codes:?}");
    }
    assert!(codes.contains(&opt::DNS));
    assert_eq!(
        o.reply.as_ref().unwrap().dest,
        Dest::Direct {
            ip: Ipv4Addr::new(198, 18, 0, 7),
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    assert!(o.store.is_empty());
    assert!(s.leases.is_empty());
}

#[test]
fn rapid_commit_only_where_enabled() {
    let mut s = server();
    let o = handle_on(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::RAPID_COMMIT, &[]),
        VLAN100,
        NOW,
    );
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    assert!(option_codes(&o).contains(&opt::RAPID_COMMIT));
    assert_eq!(o.store.len(), 1);
    let o = handle(&mut s, &req(msg::DISCOVER, 1).opt(opt::RAPID_COMMIT, &[]));
    assert_eq!(msg_type(&o), v4::MessageType::Offer);
    assert!(!option_codes(&o).contains(&opt::RAPID_COMMIT));
}

/// A rapid ACK's binding is mapped, with the template a renewal's ACK
/// carries (built without 80), and marked for rapid commit only where the
/// subnet enables it.
#[test]
fn a_rapid_commit_binding_is_mapped_with_the_renewals_template() {
    let mut s = server();
    let fast_of = |o: &Outcome| match &o.store[..] {
        [StoreOp::Put(l), ..] => l.fast.clone().expect("mapped"),
        other => panic!("{other:?}"),
    };
    let o = handle_on(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::RAPID_COMMIT, &[]),
        VLAN100,
        NOW,
    );
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    let rapid = fast_of(&o);
    assert!(rapid.rapid && rapid.offerable);
    assert!(!rapid.template.contains(&opt::RAPID_COMMIT));
    let ip = decode(&o).yiaddr().octets();
    let o = handle_on(&mut s, &req(msg::REQUEST, 1).ciaddr(ip), VLAN100, NOW);
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    let renewal = fast_of(&o);
    assert_eq!(renewal.template, rapid.template);
    assert!(renewal.rapid);
    // The flags survive the store's encoding.
    let back = FastReply::decode(&rapid.encode()).unwrap();
    assert!(back.rapid && back.offerable);
    // Without rapid commit on the subnet, not marked.
    let ip = dora(&mut s, 2).octets();
    let o = handle(&mut s, &req(msg::REQUEST, 2).ciaddr(ip));
    assert!(!fast_of(&o).rapid);
}

#[test]
fn parameter_request_list_and_option_order() {
    let mut s = server();
    let o = handle(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::PARAMETER_REQUEST_LIST, &[3]),
    );
    assert_eq!(option_codes(&o), vec![53, 54, 51, 58, 59, 1, 3]);
    let o = handle(&mut s, &req(msg::DISCOVER, 1));
    assert_eq!(option_codes(&o), vec![53, 54, 51, 58, 59, 1, 3, 6, 15]);
}

#[test]
fn maximum_message_size_is_respected() {
    let mut c = Config::parse(CONFIG, "t").unwrap();
    c.options.custom = (200..=230)
        .map(|code| {
            let value = crate::config::OptionValue::String("x".repeat(40));
            crate::config::CustomOption::new(code, value).unwrap()
        })
        .collect();
    let mut s = Server::new(&c, Vec::new());
    let big = handle(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::MAX_MESSAGE_SIZE, &1500u16.to_be_bytes()),
    );
    assert!(big.reply.as_ref().unwrap().payload.len() > 1000);
    // No option 57: RFC 2131 caps replies at 576 bytes.
    let o = handle(&mut s, &req(msg::DISCOVER, 1));
    assert!(o.reply.as_ref().unwrap().payload.len() <= 576 - 28);
    let o = handle(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::MAX_MESSAGE_SIZE, &576u16.to_be_bytes()),
    );
    assert!(o.reply.as_ref().unwrap().payload.len() <= 576 - 28);
    // The lease essentials survive the cut.
    assert!(option_codes(&o).starts_with(&[53, 54, 51, 58, 59, 1]));
    decode(&o);
    let o = handle(
        &mut s,
        &req(msg::DISCOVER, 1).opt(opt::MAX_MESSAGE_SIZE, &1000u16.to_be_bytes()),
    );
    assert!(o.reply.as_ref().unwrap().payload.len() <= 1000 - 28);
}

#[test]
fn client_identifier_is_the_identity_and_is_echoed() {
    let mut s = server();
    let a = req(msg::DISCOVER, 1).opt(opt::CLIENT_ID, &[0xff, 1, 2, 3, 4]);
    let b = req(msg::DISCOVER, 1).opt(opt::CLIENT_ID, &[0xff, 9, 9, 9, 9]);
    let oa = handle(&mut s, &a);
    let ob = handle(&mut s, &b);
    assert_ne!(
        yiaddr(&oa),
        yiaddr(&ob),
        "same chaddr, different client-ids: two clients"
    );
    assert_eq!(
        raw_option(&oa, opt::CLIENT_ID),
        Some(vec![0xff, 1, 2, 3, 4])
    );
}

#[test]
fn relayed_requests_choose_subnet_and_echo_option_82_verbatim() {
    let mut s = server();
    // Sub-options in an unusual order must come back exactly.
    let rai = [2u8, 3, b'r', b'i', b'd', 1, 4, b'p', b'o', b'r', b't'];
    let r = req(msg::DISCOVER, 1)
        .giaddr([198, 18, 3, 1])
        .opt(opt::RELAY_AGENT_INFO, &rai);
    let o = handle(&mut s, &r);
    assert!(s.subnets[3].net.contains(yiaddr(&o)));
    assert_eq!(raw_option(&o, opt::RELAY_AGENT_INFO), Some(rai.to_vec()));
    assert_eq!(
        *option_codes(&o).last().unwrap(),
        opt::RELAY_AGENT_INFO,
        "82 goes last"
    );
    assert_eq!(
        o.reply.as_ref().unwrap().dest,
        Dest::Relay(Ipv4Addr::new(198, 18, 3, 1))
    );
    assert_eq!(decode(&o).giaddr(), Ipv4Addr::new(198, 18, 3, 1));
    // By the relays list.
    let o = handle(&mut s, &req(msg::DISCOVER, 2).giaddr([198, 18, 9, 1]));
    assert!(s.subnets[3].net.contains(yiaddr(&o)));
    // Option 118 and link selection win over giaddr.
    let o = handle(
        &mut s,
        &req(msg::DISCOVER, 3)
            .giaddr([198, 18, 9, 1])
            .opt(opt::SUBNET_SELECTION, &[198, 18, 1, 0]),
    );
    assert!(s.subnets[1].net.contains(yiaddr(&o)));
    let o = handle(
        &mut s,
        &req(msg::DISCOVER, 4)
            .giaddr([198, 18, 9, 1])
            .opt(opt::RELAY_AGENT_INFO, &[5, 4, 198, 18, 2, 0]),
    );
    assert!(s.subnets[2].net.contains(yiaddr(&o)));
    // Unknown relay: nothing.
    let o = handle(&mut s, &req(msg::DISCOVER, 5).giaddr([198, 19, 9, 9]));
    assert_eq!(o.dropped, Some("no_subnet"));
}

#[test]
fn nak_through_a_relay_sets_the_broadcast_bit() {
    let mut s = server();
    let o = handle(
        &mut s,
        &req(msg::REQUEST, 1)
            .giaddr([198, 18, 3, 1])
            .requested([198, 18, 3, 99])
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&o), v4::MessageType::Nak);
    assert_eq!(
        o.reply.as_ref().unwrap().dest,
        Dest::Relay(Ipv4Addr::new(198, 18, 3, 1))
    );
    assert!(decode(&o).flags().broadcast());
}

#[test]
fn vlan_tags_select_the_subnet() {
    let mut s = server();
    let o = handle_on(&mut s, &req(msg::DISCOVER, 1), VLAN100, NOW);
    assert!(s.subnets[1].net.contains(yiaddr(&o)));
    let o = handle_on(&mut s, &req(msg::DISCOVER, 1), QINQ, NOW);
    assert!(s.subnets[2].net.contains(yiaddr(&o)));
    let o = handle_on(
        &mut s,
        &req(msg::DISCOVER, 1),
        &[Tag {
            tpid: ETH_P_8021Q,
            tci: 999,
        }],
        NOW,
    );
    assert_eq!(o.dropped, Some("no_subnet"));
}

#[test]
fn request_with_no_recognisable_state_is_dropped() {
    let mut s = server();
    let o = handle(&mut s, &req(msg::REQUEST, 1));
    assert_eq!(o.dropped, Some("request_in_no_known_state"));
    let o = handle(&mut s, &req(msg::REQUEST, 1).server_id([198, 18, 0, 1]));
    assert_eq!(o.dropped, Some("selecting_without_address"));
}

#[test]
fn leases_survive_a_restart_through_the_store() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    let stored: Vec<Lease> = s
        .leases
        .iter()
        .filter(|l| l.state == LeaseState::Bound)
        .cloned()
        .collect();
    let c = Config::parse(CONFIG, "t").unwrap();
    let mut s2 = Server::new(&c, stored);
    // The binding is known: renewal ACKed, the address never offered to others.
    let o = handle(&mut s2, &req(msg::REQUEST, 1).ciaddr(ip.octets()));
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    for n in 2..=3 {
        assert_ne!(yiaddr(&handle(&mut s2, &req(msg::DISCOVER, n))), ip);
    }
}

/// Many clients doing random things: no address is ever bound to two
/// clients at once.
#[test]
fn never_the_same_address_to_two_clients() {
    let mut c = Config::parse(CONFIG, "t").unwrap();
    c.subnets[0].pools[0].end = Ipv4Addr::new(198, 18, 0, 140);
    let mut s = Server::new(&c, Vec::new());
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = NOW;
    for _ in 0..20_000 {
        now += rnd() % 3;
        let n = (rnd() % 60) as u8 + 1;
        let kind = rnd() % 6;
        let bound = s
            .leases
            .by_client(1, &hw_key(1, &[2, 0, 0, 0, 0, n]))
            .filter(|l| l.state == LeaseState::Bound)
            .map(|l| l.ip);
        let r = match (kind, bound) {
            (0, _) | (1, None) => req(msg::DISCOVER, n),
            (1, Some(_)) | (2, _) => {
                let target =
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 100)) + (rnd() % 45) as u32);
                req(msg::REQUEST, n)
                    .requested(target.octets())
                    .server_id([198, 18, 0, 1])
            }
            (3, Some(ip)) => req(msg::REQUEST, n).ciaddr(ip.octets()),
            (4, Some(ip)) => req(msg::RELEASE, n).ciaddr(ip.octets()),
            (5, Some(ip)) if rnd() % 10 == 0 => req(msg::DECLINE, n).requested(ip.octets()),
            _ => {
                s.reclaim(now);
                continue;
            }
        };
        let o = handle_on(&mut s, &r, UNTAGGED, now);
        if let Some(rep) = &o.reply {
            if rep.msg_type == msg::ACK {
                let ip = yiaddr(&o);
                let holders: Vec<_> = s
                    .leases
                    .iter()
                    .filter(|l| l.ip == ip && l.state == LeaseState::Bound && l.expires > now)
                    .collect();
                assert_eq!(holders.len(), 1);
            }
        }
        // Invariant over the whole table: one live holder per address, and
        // one live address per client.
        let mut by_client: HashMap<&[u8], usize> = HashMap::new();
        for l in s
            .leases
            .iter()
            .filter(|l| l.state == LeaseState::Bound && l.expires > now)
        {
            *by_client.entry(l.client.as_deref().unwrap()).or_default() += 1;
        }
        assert!(
            by_client.values().all(|n| *n == 1),
            "a client holds two addresses"
        );
    }
}

fn fast_reply() -> Arc<FastReply> {
    Arc::new(FastReply::minimal("srv0"))
}

fn stored_lease(last: u8, state: LeaseState, expires: u64, fast: bool) -> Lease {
    Lease {
        ip: Ipv4Addr::new(198, 18, 0, last),
        client: Some(hw_key(1, &[2, 0, 0, 0, 0, last])),
        hw: Box::new([1, 2, 0, 0, 0, 0, last]),
        subnet_id: 1,
        state,
        expires,
        lease_secs: 1000,
        fast: fast.then(fast_reply),
        relay: None,
    }
}

#[test]
fn an_ack_carries_what_the_kernel_needs_and_its_template() {
    let mut s = server();
    let out = handle_on(&mut s, &req(msg::DISCOVER, 1), &[], NOW);
    let offered = yiaddr(&out);
    let out = handle_on(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(offered.octets())
            .server_id([198, 18, 0, 1])
            .opt(opt::PARAMETER_REQUEST_LIST, &[1, 3, 6])
            .opt(opt::MAX_MESSAGE_SIZE, &1400u16.to_be_bytes()),
        &[],
        NOW,
    );
    let lease = out.store.iter().find_map(|o| o.lease()).expect("stored");
    let f = lease
        .fast
        .as_ref()
        .expect("an ACK is renewable in the kernel");
    assert_eq!(
        (f.prl_len, f.max_message_size, f.client_id_len),
        (4, 1400, 0)
    );
    assert_eq!(f.shape_hash, dhcp_common::shape_hash(&[1, 3, 6], &[]));
    // The template is the ACK's options up to the echoes: it starts with
    // 53 = ACK and ends where the reply's END sits (no 61/82 here).
    let payload = &out.reply.as_ref().unwrap().payload;
    assert_eq!(&f.template[..3], &[opt::MESSAGE_TYPE, 1, msg::ACK]);
    let end = bootp::OPTIONS + f.template.len();
    assert_eq!(&payload[bootp::OPTIONS..end], &f.template[..]);
    assert_eq!(payload[end], opt::END);
}

#[test]
fn unclean_stop_holds_kernel_renewable_bindings_until_now_plus_lease_time() {
    let c = Config::parse(CONFIG, "test").unwrap();
    let mut s = Server::new(
        &c,
        vec![
            stored_lease(100, LeaseState::Bound, NOW + 100, true),
            stored_lease(101, LeaseState::Bound, NOW + 100, false),
            stored_lease(102, LeaseState::Bound, NOW - 1500, true),
            stored_lease(50, LeaseState::Released, NOW + 100, true),
        ],
    );
    let ops = s.recover_unclean(NOW);
    let mut ips: Vec<Ipv4Addr> = ops.iter().filter_map(|o| o.lease()).map(|l| l.ip).collect();
    ips.sort();
    // .102's stored end is long past, but the kernel may have chained
    // renewals on it while its events went unread: held too.
    assert_eq!(
        ips,
        vec![
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 102)
        ]
    );
    assert_eq!(
        s.leases
            .get(Ipv4Addr::new(198, 18, 0, 100))
            .unwrap()
            .expires,
        NOW + 1000
    );
    assert_eq!(
        s.leases
            .get(Ipv4Addr::new(198, 18, 0, 101))
            .unwrap()
            .expires,
        NOW + 100
    );
    // A renewal reported by the kernel extends the binding, never shortens it.
    let key = hw_key(1, &[2, 0, 0, 0, 0, 100]);
    assert!(s
        .kernel_granted(&grant(&key, Ipv4Addr::new(198, 18, 0, 100), NOW + 10), NOW)
        .is_none());
    let op = s
        .kernel_granted(
            &grant(&key, Ipv4Addr::new(198, 18, 0, 100), NOW + 2000),
            NOW,
        )
        .unwrap();
    assert!(matches!(op, StoreOp::Renewed(ref l) if l.expires == NOW + 2000));
    // Not this client's binding: nothing.
    assert!(s
        .kernel_granted(
            &grant(
                &hw_key(1, &[2, 0, 0, 0, 0, 7]),
                Ipv4Addr::new(198, 18, 0, 100),
                NOW + 3000
            ),
            NOW
        )
        .is_none());
}

/// Every configuration the loader accepts resolves, at subnet, pool and
/// reservation level, to T1 <= T2 < lease, and keeps the values the
/// operator wrote (issue 12, item 10). Exhaustive over three levels.
#[test]
fn accepted_timers_resolve_to_t1_t2_below_the_lease() {
    let mut c = Config::parse(
        r#"
[server]
server_id = "198.18.0.1"
[[interface]]
name = "srv0"
[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.110"
[[subnet.reservation]]
hw_address = "02:00:00:00:00:99"
ip = "198.18.0.50"
"#,
        "t",
    )
    .unwrap();
    let leases = [None, Some(100), Some(4000)];
    let timers = [None, Some(30), Some(90), Some(100), Some(4000)];
    let mut levels = Vec::new();
    for l in leases {
        for t1 in timers {
            for t2 in timers {
                levels.push((l, t1, t2));
            }
        }
    }
    let set = |o: &mut OptionSet, (l, t1, t2): (Option<u32>, Option<u32>, Option<u32>)| {
        o.lease_time = l;
        o.renewal_time = t1;
        o.rebinding_time = t2;
    };
    let (mut accepted, mut refused) = (0u32, 0u32);
    for &g in &levels {
        for &sn in &levels {
            for &p in &levels {
                set(&mut c.options, g);
                set(&mut c.subnets[0].options, sn);
                set(&mut c.subnets[0].pools[0].options, p);
                set(&mut c.subnets[0].reservations[0].options, p);
                if c.validate_reservations().is_err() {
                    refused += 1;
                    continue;
                }
                accepted += 1;
                let net = c.subnets[0].subnet;
                let subnet = overlay(&c.options, &c.subnets[0].options);
                for (what, eff) in [
                    ("subnet", subnet.clone()),
                    ("pool", overlay(&subnet, &c.subnets[0].pools[0].options)),
                    (
                        "reservation",
                        overlay(&subnet, &c.subnets[0].reservations[0].options),
                    ),
                ] {
                    let r = resolve(&eff, &net);
                    let ctx = format!("{what}: global {g:?} subnet {sn:?} pool {p:?} -> {r:?}");
                    assert!(r.t1 <= r.t2 && r.t2 < r.lease_secs, "{ctx}");
                    assert_eq!(
                        r.lease_secs,
                        eff.lease_time.unwrap_or(DEFAULT_LEASE_SECS),
                        "{ctx}"
                    );
                    assert!(eff.renewal_time.is_none_or(|t| t == r.t1), "{ctx}");
                    assert!(eff.rebinding_time.is_none_or(|t| t == r.t2), "{ctx}");
                }
            }
        }
    }
    // Both outcomes well covered (8,877 and 412,998 of 421,875).
    assert!(accepted > 5_000 && refused > 5_000, "{accepted} {refused}");
}

/// A reservation whose identifier does not parse cannot be built (the
/// server used to leave such a one out), so none is keyed by an empty
/// identifier that a client sending hlen 0 would match.
#[test]
fn unparsable_reservation_id_is_not_an_empty_one() {
    let c = Config::parse(CONFIG, "t").unwrap();
    let r = &c.subnets[0].reservations[0];
    for bad in ["zz", ""] {
        let written = crate::config::Identity {
            hw_address: Some(bad.into()),
            ..r.written().clone()
        };
        let e = crate::config::Reservation::new(written, r.ip, r.options.clone()).unwrap_err();
        assert!(
            e.contains("not hex") || e.contains("even number"),
            "{bad:?}: {e}"
        );
    }
    let mut s = Server::new(&c, Vec::new());
    let mut raw = req(msg::DISCOVER, 7).raw();
    raw[2] = 0;
    let parsed = proto::parse_dhcp(&raw).unwrap();
    let arrival = Arrival {
        iface: "srv0",
        tags: UNTAGGED,
        src_mac: [2, 0, 0, 0, 0, 7],
        src_ip: Ipv4Addr::UNSPECIFIED,
    };
    let o = s.handle(&parsed, &arrival, NOW);
    assert_ne!(yiaddr(&o), Ipv4Addr::new(198, 18, 0, 50));
}

/// Issue 20: a line whose offers go unrequested holds them for less and
/// less; a REQUEST from it makes the hold whole again.
#[test]
fn a_line_whose_offers_go_unrequested_holds_them_shorter() {
    let mut s = server();
    let expires = |o: &Outcome, s: &Server| s.leases.get(yiaddr(o)).unwrap().expires;
    let o = handle(&mut s, &req(msg::DISCOVER, 1));
    assert_eq!(expires(&o, &s), NOW + 30);
    let mut now = NOW;
    for _ in 0..6 {
        now += 31;
        s.reclaim(now);
        handle_on(&mut s, &req(msg::DISCOVER, 1), UNTAGGED, now);
    }
    now += 31;
    s.reclaim(now);
    let o = handle_on(&mut s, &req(msg::DISCOVER, 1), UNTAGGED, now);
    assert_eq!(
        expires(&o, &s),
        now + 1,
        "30 s halved per unanswered offer, to 1 s"
    );
    let ip = yiaddr(&o);
    handle_on(
        &mut s,
        &req(msg::REQUEST, 1)
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
        UNTAGGED,
        now,
    );
    let o = handle_on(&mut s, &req(msg::DISCOVER, 2), UNTAGGED, now);
    assert_eq!(expires(&o, &s), now + 30);
}

/// Issue 20: a client whose offer a storm took back, REQUESTing it, wins
/// it back from the storm's hold and is bound.
#[test]
fn a_client_whose_offer_a_storm_took_is_bound_at_its_request() {
    let mut s = server();
    let first = yiaddr(&handle(&mut s, &req(msg::DISCOVER, 9)));
    // Storm from other MACs on the same line (the pool holds 3).
    for n in 10..20 {
        handle(&mut s, &req(msg::DISCOVER, n));
    }
    let ack = handle(
        &mut s,
        &req(msg::REQUEST, 9)
            .requested(first.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&ack), v4::MessageType::Ack);
}

fn grant(key: &[u8], ip: Ipv4Addr, expires: u64) -> crate::xdp::map_sync::KernelGrant {
    crate::xdp::map_sync::KernelGrant {
        client: key.into(),
        ip,
        expires,
        expires_ns: expires * 1_000_000_000,
        lease_secs: 0,
    }
}

/// A renewal the kernel answered a fraction of a second before the
/// client's RELEASE, read after it (unreported in the entry, or late off
/// the ring), does not bring the binding back; one answered after the
/// release does. Seconds cannot order the two (CI caught a lease left
/// bound after udhcpc released it, the grant 0.4 s before).
#[test]
fn a_grant_before_the_release_stays_released_one_after_it_comes_back() {
    let c = Config::parse(CONFIG, "test").unwrap();
    let bound = stored_lease(100, LeaseState::Bound, NOW + 1000, true);
    let key = bound.client.clone().unwrap();
    let ended_ns = NOW * 1_000_000_000 + 300_000_000;
    let grant_at = |acked_ns: u64| crate::xdp::map_sync::KernelGrant {
        client: key.to_vec().into(),
        ip: bound.ip,
        expires: (acked_ns + 1000 * 1_000_000_000).div_ceil(1_000_000_000),
        expires_ns: acked_ns + 1000 * 1_000_000_000,
        lease_secs: 1000,
    };
    let fresh = || {
        let mut s = Server::new(&c, vec![bound.clone()]);
        s.leases.hold_for_kernel(&bound, 1);
        let mut released = bound.clone();
        released.state = LeaseState::Released;
        s.leases.put(released);
        s.leases.hold_ended(bound.ip, ended_ns, EndKind::Ended);
        s
    };
    for (acked_ns, comes_back) in [
        (ended_ns - 400_000_000, false),
        (ended_ns - 1_200_000_000, false),
        (ended_ns - 5_000_000, true),
        (ended_ns + 5_000_000, true),
        (ended_ns + 900_000_000, true),
    ] {
        let mut s = fresh();
        let op = s.kernel_granted(&grant_at(acked_ns), NOW);
        assert_eq!(
            op.is_some(),
            comes_back,
            "grant at {acked_ns} vs end at {ended_ns}"
        );
        assert_eq!(
            s.leases.get(bound.ip).unwrap().state == LeaseState::Bound,
            comes_back
        );
    }
}

/// The kernel may answer a DISCOVER only with what the control plane
/// would offer: a client whose reservation points elsewhere than its
/// binding is offered the reservation, so its binding is not offerable.
#[test]
fn a_binding_is_offerable_unless_the_clients_reservation_is_elsewhere() {
    let c = Config::parse(CONFIG, "test").unwrap();
    // Client ..:99 bound on .100 before its reservation (.50) was made.
    let mut old = stored_lease(100, LeaseState::Bound, NOW + 100, false);
    old.client = Some(hw_key(1, &[2, 0, 0, 0, 0, 0x99]));
    old.hw = Box::new([1, 2, 0, 0, 0, 0, 0x99]);
    let mut s = Server::new(&c, vec![old]);
    let fast_of = |o: &Outcome| match &o.store[..] {
        [StoreOp::Put(l), ..] => l.fast.clone().expect("mapped"),
        other => panic!("{other:?}"),
    };
    let o = handle(&mut s, &req(msg::REQUEST, 0x99).ciaddr([198, 18, 0, 100]));
    assert_eq!(msg_type(&o), v4::MessageType::Ack);
    assert!(!fast_of(&o).offerable);
    let o = handle(&mut s, &req(msg::DISCOVER, 0x99));
    assert_eq!(decode(&o).yiaddr(), Ipv4Addr::new(198, 18, 0, 50));
    // Anyone else's binding is.
    dora(&mut s, 1);
    let o = handle(&mut s, &req(msg::REQUEST, 1).ciaddr([198, 18, 0, 101]));
    let f = fast_of(&o);
    assert!(f.offerable);
    // And it survives the store's encoding; version 1 reads as not.
    let back = FastReply::decode(&f.encode()).unwrap();
    assert!(back.offerable && back.template == f.template && back.iface == f.iface);
    let mut v1 = f.encode();
    v1[0] = 1;
    v1.remove(19);
    let old = FastReply::decode(&v1).unwrap();
    assert!(!old.offerable && old.template == f.template && old.iface == f.iface);
}

fn server_with(edit: impl Fn(&str) -> String) -> Server {
    let c = Config::parse(&edit(CONFIG), "test").unwrap();
    Server::new(&c, Vec::new())
}

fn handle_from(s: &mut Server, r: &Req, src: [u8; 4]) -> Outcome {
    let raw = r.raw();
    let parsed = proto::parse_dhcp(&raw).unwrap();
    let arrival = Arrival {
        iface: "srv0",
        tags: UNTAGGED,
        src_mac: r.mac,
        src_ip: src.into(),
    };
    s.handle(&parsed, &arrival, NOW)
}

const LINE_CAP: &str = "options = { routers = [\"198.18.0.1\"] }\n";

#[test]
fn a_line_cap_refuses_a_second_client_while_other_lines_are_served() {
    let mut s = server_with(|c| {
        c.replace(
            LINE_CAP,
            &format!("{LINE_CAP}[subnet.limits]\nleases_per_line = 1\n"),
        )
    });
    let ip = dora(&mut s, 1);
    let second = handle(&mut s, &req(msg::DISCOVER, 2));
    assert_eq!(second.dropped, Some("cap_line"));
    // A REQUEST for an address nobody offered it: NAK.
    let r = handle(
        &mut s,
        &req(msg::REQUEST, 2)
            .requested([198, 18, 0, 101])
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&r), v4::MessageType::Nak);
    assert!(r.store.is_empty());
    // Another line (VLAN 100) serves it.
    let o = handle_on(&mut s, &req(msg::DISCOVER, 2), VLAN100, NOW);
    assert_eq!(msg_type(&o), v4::MessageType::Offer);
    // The line's own client renews and comes back.
    let renew = handle(&mut s, &req(msg::REQUEST, 1).ciaddr(ip.octets()));
    assert_eq!(msg_type(&renew), v4::MessageType::Ack);
    assert_eq!(yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1))), ip);
    // A reserved client is the operator's choice: not capped.
    let r = handle(&mut s, &req(msg::DISCOVER, 0x99));
    assert_eq!(yiaddr(&r), Ipv4Addr::new(198, 18, 0, 50));
    assert_eq!(s.counters.limited.get("cap_line"), Some(&2));
    // Its client releases: the line takes a new one.
    let rel = handle(
        &mut s,
        &req(msg::RELEASE, 1)
            .ciaddr(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert!(rel.dropped.is_none());
    assert_eq!(
        msg_type(&handle(&mut s, &req(msg::DISCOVER, 3))),
        v4::MessageType::Offer
    );
}

#[test]
fn a_decline_flood_from_one_client_quarantines_at_most_its_cap() {
    let mut s = server_with(|c| {
        c.replace(
            "start = \"198.18.0.100\"\nend = \"198.18.0.102\"",
            "start = \"198.18.0.100\"\nend = \"198.18.0.199\"",
        )
    });
    for _ in 0..50 {
        let ip = yiaddr(&handle(&mut s, &req(msg::DISCOVER, 1)));
        handle(
            &mut s,
            &req(msg::DECLINE, 1)
                .requested(ip.octets())
                .server_id([198, 18, 0, 1]),
        );
    }
    let quarantined = s
        .leases
        .iter()
        .filter(|l| l.state == LeaseState::Declined)
        .count();
    assert_eq!(
        quarantined,
        crate::config::DEFAULT_DECLINES_PER_CLIENT as usize,
        "declines_per_client"
    );
    assert!(s.counters.limited.get("decline_cap_client").copied() >= Some(40));
    // Many clients on one line: the line's cap.
    let mut s = server_with(|c| {
        c.replace(
            "start = \"198.18.0.100\"\nend = \"198.18.0.102\"",
            "start = \"198.18.0.100\"\nend = \"198.18.0.199\"",
        )
        .replace(
            LINE_CAP,
            &format!("{LINE_CAP}[subnet.limits]\ndeclines_per_line = 5\n"),
        )
    });
    for n in 1..=20 {
        let ip = yiaddr(&handle(&mut s, &req(msg::DISCOVER, n)));
        handle(
            &mut s,
            &req(msg::DECLINE, n)
                .requested(ip.octets())
                .server_id([198, 18, 0, 1]),
        );
    }
    let quarantined = s
        .leases
        .iter()
        .filter(|l| l.state == LeaseState::Declined)
        .count();
    assert_eq!(quarantined, 5);
    assert_eq!(s.counters.limited.get("decline_cap_line"), Some(&15));
}

const RELAY_LISTED: &str = "[options]\n";

fn trusting(extra: &str) -> Server {
    server_with(|c| c.replacen(RELAY_LISTED, &format!("{extra}{RELAY_LISTED}"), 1))
}

#[test]
fn relayed_requests_only_from_listed_relays_and_selectors_only_if_trusted() {
    let mut s = trusting("[[relay]]\naddress = \"198.18.9.1\"\n");
    let d = || req(msg::DISCOVER, 1).giaddr([198, 18, 9, 1]);
    let ok = handle_from(&mut s, &d(), [198, 18, 9, 1]);
    assert_eq!(yiaddr(&ok).octets()[..3], [198, 18, 3]);
    // The same giaddr from a host on an access port.
    let spoof = handle_from(&mut s, &d(), [198, 18, 0, 77]);
    assert_eq!(spoof.dropped, Some("untrusted_relay"));
    assert!(spoof.reply.is_none() && spoof.store.is_empty());
    // A renewal, a RELEASE: the same.
    let r = handle_from(
        &mut s,
        &req(msg::REQUEST, 1)
            .giaddr([198, 18, 9, 1])
            .ciaddr([198, 18, 3, 10]),
        [198, 18, 0, 77],
    );
    assert_eq!(r.dropped, Some("untrusted_relay"));
    // 118 from a relay not trusted with it, naming another subnet: dropped;
    // naming the relay's own: served without it.
    let sel = handle_from(
        &mut s,
        &d().opt(opt::SUBNET_SELECTION, &[198, 18, 0, 0]),
        [198, 18, 9, 1],
    );
    assert_eq!(sel.dropped, Some("untrusted_selector"));
    let same = handle_from(
        &mut s,
        &d().opt(opt::SUBNET_SELECTION, &[198, 18, 3, 0]),
        [198, 18, 9, 1],
    );
    assert_eq!(yiaddr(&same).octets()[..3], [198, 18, 3]);
    // A direct client naming another subnet.
    let direct = handle_from(
        &mut s,
        &req(msg::DISCOVER, 2).opt(opt::SUBNET_SELECTION, &[198, 18, 3, 0]),
        [0, 0, 0, 0],
    );
    assert_eq!(direct.dropped, Some("untrusted_selector"));
    assert_eq!(s.counters.dropped.get("untrusted_relay"), Some(&2));
    assert_eq!(s.counters.dropped.get("untrusted_selector"), Some(&2));

    // Trusted with 118, the relay chooses.
    let mut s = trusting("[[relay]]\naddress = \"198.18.9.1\"\ntrust_subnet_selection = true\n");
    let o = handle_from(
        &mut s,
        &d().opt(opt::SUBNET_SELECTION, &[198, 18, 0, 0]),
        [198, 18, 9, 1],
    );
    assert_eq!(yiaddr(&o).octets()[..3], [198, 18, 0]);
}

#[test]
fn without_a_listed_relay_every_relay_is_trusted_as_before() {
    let mut s = server();
    assert!(s.relays_open());
    let o = handle_from(
        &mut s,
        &req(msg::DISCOVER, 1)
            .giaddr([198, 18, 9, 1])
            .opt(opt::SUBNET_SELECTION, &[198, 18, 0, 0]),
        [198, 18, 0, 77],
    );
    assert_eq!(yiaddr(&o).octets()[..3], [198, 18, 0]);
}

#[test]
fn bound_clients_are_told_apart_from_new_ones() {
    let mut s = server();
    let ip = dora(&mut s, 1);
    let raw = |r: &Req| r.raw();
    let arrival = Arrival {
        iface: "srv0",
        tags: UNTAGGED,
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: Ipv4Addr::UNSPECIFIED,
    };
    let bound = |s: &Server, r: &Req| {
        let b = raw(r);
        s.from_bound_client(&proto::parse_dhcp(&b).unwrap(), &arrival)
    };
    assert!(bound(&s, &req(msg::REQUEST, 1).ciaddr(ip.octets())));
    assert!(bound(&s, &req(msg::REQUEST, 1).requested(ip.octets())));
    assert!(!bound(&s, &req(msg::DISCOVER, 1)));
    assert!(!bound(&s, &req(msg::REQUEST, 2).ciaddr(ip.octets())));
    assert!(!bound(
        &s,
        &req(msg::REQUEST, 3)
            .requested([198, 18, 0, 102])
            .server_id([198, 18, 0, 1])
    ));
}

mod subscriber;

/// A grant the committer already wrote with the batch that ended the
/// binding (reclaim, while the kernel renewed it) comes back as written
/// there: bound until the kernel's end, without fast-path data (its entry
/// left the map). The same grant read off the ring brings the binding
/// back mapped again.
#[test]
fn a_kept_grant_comes_back_as_the_committer_wrote_it() {
    let c = Config::parse(CONFIG, "test").unwrap();
    let bound = stored_lease(100, LeaseState::Bound, NOW + 10, true);
    let key = bound.client.clone().unwrap();
    let lapsed = || {
        let mut s = Server::new(&c, vec![bound.clone()]);
        s.leases.hold_for_kernel(&bound, 1);
        let mut expired = bound.clone();
        expired.state = LeaseState::Expired;
        s.leases.put(expired);
        s.leases
            .hold_ended(bound.ip, NOW * 1_000_000_000, EndKind::Lapsed);
        s
    };
    let g = grant(&key, bound.ip, NOW + 600);
    for (kept, mapped) in [(true, false), (false, true)] {
        let mut s = lapsed();
        let op = if kept {
            s.kernel_grant_kept(&g, NOW)
        } else {
            s.kernel_granted(&g, NOW)
        };
        let l = s.leases.get(bound.ip).unwrap().clone();
        assert_eq!((l.state, l.expires), (LeaseState::Bound, NOW + 600));
        assert_eq!(l.fast.is_some(), mapped, "kept: {kept}");
        assert_eq!(op, Some(StoreOp::Put(l)));
        // Read again (the ring's event, the report's grant): nothing new.
        assert_eq!(s.kernel_granted(&g, NOW), None);
    }
}
