//! Replies to relays, from both planes, where the route back to giaddr
//! leaves from another address of the server than its identifier (issue
//! 21). The lab:
//!
//!   server srv0: 198.18.0.1/24 (the server identifier) and 198.18.1.1/24,
//!                198.18.2.0/24 via 198.18.1.2
//!   relay cli0:  198.18.1.2/24, giaddr 198.18.2.1, 198.18.0.0/24 via 198.18.1.1
//!
//! so the kernel's routing picks 198.18.1.1 as the source towards giaddr.
//! Every reply must still leave from 198.18.0.1, the address the relay
//! sent to, with the IP header `dhcp_common::reply_ip` defines.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use dhcp_common::reply_ip;
use xdhcp_lab::{
    daemon::{wait_until, DaemonLab},
    dhcp::{Msg, RelayClient, ReplyView, ACK, DISCOVER, INFORM, OFFER, REQUEST},
    frame::checksum,
    proc::Logged,
    raw::RawSocket,
    relay::StrictRelay,
};

const SERVER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SIGUSR1: i32 = 10;
const SIGTERM: i32 = 15;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[interface]]
name = "srv0"

[options]
lease_time = 600
dns_servers = ["198.18.0.53"]

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.150"

[[subnet]]
id = 2
subnet = "198.18.2.0/24"
options = { routers = ["198.18.2.1"] }
[[subnet.pool]]
start = "198.18.2.100"
end = "198.18.2.150"
"#;

/// The lab above, the daemon not started yet.
fn relay_lab(tag: &str) -> DaemonLab {
    let lab = DaemonLab::new(tag, CONFIG, Some("198.18.1.2/24")).unwrap();
    lab.srv
        .run(["ip", "addr", "add", "198.18.1.1/24", "dev", "srv0"])
        .unwrap();
    lab.srv
        .run(["ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2"])
        .unwrap();
    lab.cli
        .run(["ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1"])
        .unwrap();
    // The premise: routing would answer the relay from another address.
    let route = lab.srv.run(["ip", "route", "get", "198.18.2.1"]).unwrap();
    assert!(route.contains("src 198.18.1.1"), "{route}");
    lab
}

/// The next start serves `srv0` with XDP off: the control plane answers all.
fn set_xdp_off(lab: &DaemonLab) {
    let text = std::fs::read_to_string(&lab.config).unwrap();
    let off = text.replace("name = \"srv0\"\n", "name = \"srv0\"\nxdp = \"off\"\n");
    assert_ne!(text, off);
    std::fs::write(&lab.config, off).unwrap();
}

/// Control-plane log lines about the request with `xid` (serve logs every
/// request it handles at debug level).
fn handled_by_control_plane(lab: &DaemonLab, xid: u32) -> usize {
    lab.daemon().count(&format!("xid={xid:#010x}"))
}

/// The frame of the reply to `xid` that reached the relay's interface.
fn reply_frame(sock: &RawSocket, xid: u32) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Some(f) = sock.recv(Duration::from_millis(200)).unwrap() else {
            continue;
        };
        let l4 = 14 + usize::from(f.get(14).copied().unwrap_or(0) & 0x0f) * 4;
        if f.len() < l4 + 8 + 240 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
            continue;
        }
        let p = &f[l4 + 8..];
        if f[l4..l4 + 4] == [0, 67, 0, 67] && p[0] == 2 && p[4..8] == xid.to_be_bytes() {
            return f;
        }
    }
    panic!("no reply to xid {xid:#x} reached the relay");
}

/// From `from` to giaddr, and the header is the shared definition's (TOS,
/// TTL, DF, id from the xid), checksums right.
fn check_headers(what: &str, f: &[u8], xid: u32, from: Ipv4Addr) {
    let ip = &f[14..34];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    assert_eq!(src, from, "{what}: source address");
    assert_eq!(dst, GIADDR, "{what}: destination");
    assert_eq!(ip[0], 0x45, "{what}: no IP options");
    assert_eq!(ip[1], reply_ip::TOS, "{what}: TOS");
    assert_eq!(ip[8], reply_ip::TTL, "{what}: TTL");
    assert_eq!(ip[6] & 0x40 != 0, reply_ip::DONT_FRAGMENT, "{what}: DF");
    assert_eq!(ip[6] & 0x3f, 0, "{what}: not a fragment");
    assert_eq!(ip[7], 0, "{what}: not a fragment");
    assert_eq!(
        u16::from_be_bytes([ip[4], ip[5]]),
        reply_ip::id(xid),
        "{what}: IP id"
    );
    assert_eq!(checksum(&[ip]), 0, "{what}: IP checksum");
    let udp = &f[34..];
    let pseudo = [&ip[12..20], &[0, 17], &(udp.len() as u16).to_be_bytes()[..]].concat();
    assert_eq!(checksum(&[&pseudo, udp]), 0, "{what}: UDP checksum");
}

/// Sends `m` through the relay; the reply's frame as it reached the relay
/// (headers checked) and the reply as the relay's socket read it.
fn exchange(
    what: &str,
    relay: &RelayClient,
    sock: &RawSocket,
    m: &Msg,
    want: u8,
) -> (Vec<u8>, ReplyView) {
    exchange_via(what, relay, sock, m, want, SERVER_ID, SERVER_ID)
}

/// `exchange` with the request sent to `to`, the reply expected from `from`.
fn exchange_via(
    what: &str,
    relay: &RelayClient,
    sock: &RawSocket,
    m: &Msg,
    want: u8,
    to: Ipv4Addr,
    from: Ipv4Addr,
) -> (Vec<u8>, ReplyView) {
    relay.send_to(m, to).unwrap();
    let f = reply_frame(sock, m.xid);
    check_headers(what, &f, m.xid, from);
    let r = relay
        .recv(m.xid, Duration::from_secs(5))
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: the relay's socket got no reply"));
    assert_eq!(r.msg_type(), Some(want), "{what}");
    (f, r)
}

/// Circuit-id and remote-id, as the relay adds them.
fn rai(port: u8) -> Vec<u8> {
    vec![1, 4, b'e', b't', b'h', port, 2, 4, 0xde, 0xad, 0xbe, 0xef]
}

/// A DHCPREQUEST in RENEWING the relay relays (giaddr and option 82),
/// padded past the BOOTP minimum.
fn renewing(mac: [u8; 6], ip: Ipv4Addr, xid: u32, rai: &[u8]) -> Msg {
    let mut m = Msg::new(REQUEST, mac, xid).opt(82, rai);
    m.ciaddr = ip;
    m.pad_to = 548;
    m
}

/// Relayed DISCOVER, REQUEST and INFORM of a new client, every reply from
/// the server identifier; its address.
fn dora_and_inform(
    plane: &str,
    relay: &RelayClient,
    sock: &RawSocket,
    mac: [u8; 6],
    xid: u32,
) -> Ipv4Addr {
    let rai = rai(mac[5]);
    let (_, offer) = exchange(
        &format!("{plane}: OFFER"),
        relay,
        sock,
        &Msg::new(DISCOVER, mac, xid).opt(82, &rai),
        OFFER,
    );
    let ip = offer.yiaddr();
    assert_eq!(ip.octets()[..3], [198, 18, 2], "{plane}: subnet of giaddr");
    let request = Msg::new(REQUEST, mac, xid + 1)
        .opt(50, &ip.octets())
        .opt(54, &SERVER_ID.octets())
        .opt(82, &rai);
    let (_, ack) = exchange(&format!("{plane}: ACK"), relay, sock, &request, ACK);
    assert_eq!(ack.yiaddr(), ip);
    assert_eq!(ack.option(82), Some(rai.clone()), "option 82 echoed");
    let mut inform = Msg::new(INFORM, mac, xid + 2).opt(82, &rai);
    inform.ciaddr = ip;
    let (_, ack) = exchange(
        &format!("{plane}: ACK to INFORM"),
        relay,
        sock,
        &inform,
        ACK,
    );
    assert_eq!(ack.option(54), Some(SERVER_ID.octets().to_vec()));
    ip
}

#[test]
fn relayed_replies_leave_from_the_server_identifier_on_both_planes() {
    let mut lab = relay_lab("relaysrc");
    // The relay's own address on its client side (no clients here: the
    // test speaks for them).
    lab.cli
        .run(["ip", "addr", "add", "198.18.2.1/32", "dev", "lo"])
        .unwrap();
    lab.start().unwrap();
    let relay = lab
        .cli
        .enter(|| RelayClient::open_here(GIADDR, SERVER_ID))
        .unwrap()
        .unwrap();
    let sock = RawSocket::open(&lab.cli, "cli0").unwrap();

    // XDP on: DISCOVER, REQUEST and INFORM are the control plane's, the
    // relayed RENEWING is the kernel's.
    let a = [2, 0, 0, 0, 0x21, 1];
    let ip_a = dora_and_inform("XDP on", &relay, &sock, a, 0x2100);
    let renew_a = renewing(a, ip_a, 0x21ff, &rai(a[5]));
    let (from_kernel, ack) = exchange("XDP on: RENEWING", &relay, &sock, &renew_a, ACK);
    assert_eq!(ack.yiaddr(), ip_a);
    assert_eq!(
        handled_by_control_plane(&lab, renew_a.xid),
        0,
        "the kernel answers the relayed RENEWING"
    );
    let (_, lines) = lab.stop(SIGTERM).unwrap();
    let counters = lines.iter().find(|l| l.contains("xdp counters")).unwrap();
    assert!(counters.contains("fp_ack_renewing=1 "), "{counters}");

    // XDP off: the control plane answers all four.
    set_xdp_off(&lab);
    lab.start().unwrap();
    let b = [2, 0, 0, 0, 0x22, 1];
    let ip_b = dora_and_inform("XDP off", &relay, &sock, b, 0x2200);
    let renew_b = renewing(b, ip_b, 0x22ff, &rai(b[5]));
    exchange("XDP off: RENEWING", &relay, &sock, &renew_b, ACK);
    // The very request the kernel answered, now the control plane's: the
    // two replies are the same frame, whole.
    let (from_control_plane, _) =
        exchange("XDP off: the same RENEWING", &relay, &sock, &renew_a, ACK);
    assert!(handled_by_control_plane(&lab, renew_a.xid) > 0);
    assert_eq!(
        from_kernel, from_control_plane,
        "the kernel's and the control plane's replies to one RENEWING differ"
    );
}

/// A relay configured with another address of the server (198.18.1.1)
/// gets its replies from that address, from the control plane: the kernel
/// passes such requests (`pass_other_address`), with XDP on. One sent to
/// an address that is not the server's (198.18.0.77, routed to it) is
/// answered from the server identifier, and the log says so once.
#[test]
fn a_relay_sending_to_another_address_gets_replies_from_it() {
    let other = Ipv4Addr::new(198, 18, 1, 1);
    let foreign = Ipv4Addr::new(198, 18, 0, 77);
    let mut lab = relay_lab("relayother");
    lab.cli
        .run(["ip", "addr", "add", "198.18.2.1/32", "dev", "lo"])
        .unwrap();
    lab.start().unwrap();
    let relay = lab
        .cli
        .enter(|| RelayClient::open_here(GIADDR, SERVER_ID))
        .unwrap()
        .unwrap();
    let sock = RawSocket::open(&lab.cli, "cli0").unwrap();
    let mac = [2, 0, 0, 0, 0x23, 1];
    let rai = rai(mac[5]);
    let (_, offer) = exchange_via(
        "OFFER",
        &relay,
        &sock,
        &Msg::new(DISCOVER, mac, 0x2300).opt(82, &rai),
        OFFER,
        other,
        other,
    );
    let ip = offer.yiaddr();
    let request = Msg::new(REQUEST, mac, 0x2301)
        .opt(50, &ip.octets())
        .opt(54, &SERVER_ID.octets())
        .opt(82, &rai);
    exchange_via("ACK", &relay, &sock, &request, ACK, other, other);
    // A renewal the kernel would answer if sent to the server identifier.
    let renew = renewing(mac, ip, 0x2302, &rai);
    exchange_via("RENEWING", &relay, &sock, &renew, ACK, other, other);
    assert!(
        handled_by_control_plane(&lab, renew.xid) > 0,
        "the control plane answers"
    );
    exchange(
        "RENEWING to the server identifier",
        &relay,
        &sock,
        &renewing(mac, ip, 0x2303, &rai),
        ACK,
    );
    assert_eq!(
        handled_by_control_plane(&lab, 0x2303),
        0,
        "the kernel answers"
    );
    for xid in [0x2304, 0x2305] {
        exchange_via(
            "RENEWING to a foreign address",
            &relay,
            &sock,
            &renewing(mac, ip, xid, &rai),
            ACK,
            foreign,
            SERVER_ID,
        );
    }
    let (_, lines) = lab.stop(SIGTERM).unwrap();
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("not this host's") && l.contains("198.18.0.77"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    let counters = lines.iter().find(|l| l.contains("xdp counters")).unwrap();
    assert!(counters.contains("pass_other_address=3"), "{counters}");
    assert!(counters.contains("fp_ack_renewing=1 "), "{counters}");
}

/// The first client event after the first `after` starting with `prefix`.
fn wait(
    lab: &DaemonLab,
    relay: &StrictRelay,
    client: &Logged,
    prefix: &str,
    after: usize,
    what: &str,
) -> String {
    wait_until(Duration::from_secs(15), || {
        lab.events()
            .into_iter()
            .skip(after)
            .find(|e| e.starts_with(prefix))
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: no {prefix:?} event; relay {:?}\nevents {:?}\nclient {:?}\nserver {:?}",
            relay.stats(),
            lab.events(),
            client.lines(),
            lab.daemon().lines()
        )
    })
}

/// Through a relay agent that accepts replies only from its configured
/// server address (198.18.0.1), busybox udhcpc behind it obtains a lease
/// and renews it: once answered by the kernel, once (XDP off) by the
/// control plane.
///
///   client c0 (udhcpc) -- rly1 198.18.2.1/24 [relay] cli0 -- srv0 [server]
#[test]
fn a_relay_that_accepts_only_its_server_address_serves_dora_and_renewals() {
    let mut lab = relay_lab("strictrelay");
    let c = lab.lab.netns("c").unwrap();
    lab.lab
        .veth(&lab.cli, "rly1", Some("198.18.2.1/24"), &c, "c0", None)
        .unwrap();
    lab.start().unwrap();
    let relay = StrictRelay::start(&lab.cli, "rly1", GIADDR, SERVER_ID, b"rly1").unwrap();
    let events = lab.dir.join("events");
    let script = lab
        .script(
            "udhcpc-relay.sh",
            &format!(
                "#!/bin/sh\necho \"$1 $ip\" >> {ev}\ncase \"$1\" in\n bound|renew) ip addr flush dev $interface; ip addr add $ip/$subnet dev $interface; ip route replace 198.18.0.0/24 via $router dev $interface ;;\n deconfig) ip addr flush dev $interface ;;\nesac\n",
                ev = events.display()
            ),
        )
        .unwrap();
    let client = Logged::spawn(
        &c,
        Command::new("busybox")
            .args(["udhcpc", "-f", "-i", "c0", "-t", "5", "-T", "1", "-s"])
            .arg(&script),
        None,
    )
    .unwrap();
    let bound = wait(&lab, &relay, &client, "bound ", 0, "DORA through the relay");
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..3], [198, 18, 2], "{bound}");
    assert!(relay.stats().refused.is_empty(), "{:?}", relay.stats());

    // RENEWING: the client unicasts to the server identifier, the relay
    // relays it (option 82, giaddr), the kernel answers.
    let acks = |lab: &DaemonLab| lab.daemon().count("REQUEST -> ACK");
    let acks_before = acks(&lab);
    let n = lab.events().len();
    client.signal(SIGUSR1);
    let renew = wait(
        &lab,
        &relay,
        &client,
        "renew ",
        n,
        "renewal answered by the kernel",
    );
    assert!(renew.contains(&ip.to_string()), "{renew}");
    assert_eq!(acks(&lab), acks_before, "the kernel answers the renewal");
    let (_, lines) = lab.stop(SIGTERM).unwrap();
    let counters = lines.iter().find(|l| l.contains("xdp counters")).unwrap();
    assert!(!counters.contains("fp_ack_renewing=0 "), "{counters}");

    // XDP off: the control plane answers the renewal.
    set_xdp_off(&lab);
    lab.start().unwrap();
    let n = lab.events().len();
    client.signal(SIGUSR1);
    let renew = wait(
        &lab,
        &relay,
        &client,
        "renew ",
        n,
        "renewal answered by the control plane",
    );
    assert!(renew.contains(&ip.to_string()), "{renew}");
    assert!(acks(&lab) > 0, "the control plane answers the renewal");
    let stats = relay.stats();
    assert!(stats.refused.is_empty(), "{stats:?}");
    assert!(stats.to_client >= 4, "{stats:?}");
    drop(client);
    lab.stop(SIGTERM).unwrap();
}
