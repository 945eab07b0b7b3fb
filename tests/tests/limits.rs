//! Issue 14, the control plane's side: relay trust, lease caps per line,
//! DECLINE caps. The lab (as in relay.rs):
//!
//!   server srv0: 198.18.0.1/24 (the server identifier) and 198.18.1.1/24
//!   cli0: 198.18.1.2/24, the relay 198.18.2.1 on its loopback
//!
//! The trusted relay sends from its giaddr, 198.18.2.1. A spoofer in the
//! same namespace sends relayed requests naming that giaddr from
//! 198.18.1.2, a host on the access port: any reply would reach the
//! relay's socket (replies go to giaddr:67), so the relay's socket seeing
//! nothing is the proof, on both planes.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use xdhcp_lab::{
    daemon::DaemonLab,
    dhcp::{Msg, RelayClient, ACK, DISCOVER, OFFER, REQUEST},
};

const SERVER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SPOOFER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const DECLINE: u8 = 4;
const WAIT: Duration = Duration::from_secs(2);

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[relay]]
address = "198.18.2.1"

[[interface]]
name = "srv0"

[options]
lease_time = 600

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
[subnet.limits]
leases_per_circuit_id = 1
[[subnet.pool]]
start = "198.18.2.100"
end = "198.18.2.199"
"#;

fn lab(tag: &str) -> DaemonLab {
    let mut lab = DaemonLab::new(tag, CONFIG, Some("198.18.1.2/24")).unwrap();
    lab.srv
        .run(["ip", "addr", "add", "198.18.1.1/24", "dev", "srv0"])
        .unwrap();
    lab.srv
        .run(["ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2"])
        .unwrap();
    lab.cli
        .run(["ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1"])
        .unwrap();
    lab.cli
        .run(["ip", "addr", "add", "198.18.2.1/32", "dev", "lo"])
        .unwrap();
    lab.start().unwrap();
    lab
}

/// Whether nothing answers `xid` within WAIT. A socket error (an ICMP
/// error queued on the relay's socket) is no answer: it is logged and
/// the wait goes on.
fn no_reply(relay: &RelayClient, xid: u32) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        match relay.recv(xid, left) {
            Ok(None) => return true,
            Ok(Some(_)) => return false,
            Err(e) => eprintln!("waiting for {xid:#x}: {e} (not an answer)"),
        }
    }
}

fn relay(lab: &DaemonLab) -> RelayClient {
    lab.cli
        .enter(|| RelayClient::open_here(GIADDR, SERVER_ID))
        .unwrap()
        .unwrap()
}

fn count(v: &Value, table: &str, reason: &str) -> u64 {
    v["arguments"][table][reason]
        .as_u64()
        .or_else(|| v[table][reason].as_u64())
        .unwrap_or(0)
}

/// Leases in `v` (anywhere in it) whose state is "declined".
fn declined_leases(v: &Value) -> usize {
    match v {
        Value::Object(m) => {
            let own = m.contains_key("ip-address")
                && m.get("state").and_then(Value::as_str) == Some("declined");
            usize::from(own) + m.values().map(declined_leases).sum::<usize>()
        }
        Value::Array(a) => a.iter().map(declined_leases).sum(),
        _ => 0,
    }
}

/// Option 82 with a circuit-id.
fn rai(circuit: &[u8]) -> Vec<u8> {
    let mut v = vec![1, circuit.len() as u8];
    v.extend_from_slice(circuit);
    v
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0x14, n]
}

/// Sends `m` as relayed through GIADDR, from the spoofer's address.
fn spoof(lab: &DaemonLab, m: &Msg) {
    let mut m = m.clone();
    m.giaddr = GIADDR;
    m.hops = 1;
    let bytes = m.encode();
    lab.cli
        .enter(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(SPOOFER, 0)).unwrap();
            s.send_to(&bytes, SocketAddrV4::new(SERVER_ID, 67)).unwrap();
        })
        .unwrap();
}

#[test]
fn spoofed_relay_traffic_gets_no_reply_from_either_plane_and_is_counted() {
    let lab = lab("lim-spoof");
    let relay = relay(&lab);
    let a = mac(1);
    let circuit = rai(b"olt1/1/1");
    let ack = relay
        .dora(a, 0x1401, &[(82, circuit.clone())], WAIT)
        .unwrap()
        .expect("the trusted relay's client is bound");
    let ip = ack.yiaddr();

    // The kernel answers this client's renewal from its relay...
    let mut renew = Msg::new(REQUEST, a, 0x1402).opt(82, &circuit);
    renew.ciaddr = ip;
    relay.send(&renew).unwrap();
    let r = relay.recv(0x1402, WAIT).unwrap().expect("renewal answered");
    assert_eq!(r.msg_type(), Some(ACK));

    // ...and neither plane answers it, nor a DISCOVER, nor a DISCOVER
    // with 118, from a host on the access port naming the relay.
    let mut renew = Msg::new(REQUEST, a, 0x1403).opt(82, &circuit);
    renew.ciaddr = ip;
    spoof(&lab, &renew);
    spoof(&lab, &Msg::new(DISCOVER, mac(2), 0x1404));
    spoof(
        &lab,
        &Msg::new(DISCOVER, mac(3), 0x1405).opt(118, &[198, 18, 0, 0]),
    );
    for xid in [0x1403, 0x1404, 0x1405] {
        assert!(
            no_reply(&relay, xid),
            "a spoofed request {xid:#x} was answered"
        );
    }
    // The trusted relay is not trusted with 118: one naming another
    // subnet than its giaddr's is dropped too.
    relay
        .send(&Msg::new(DISCOVER, mac(4), 0x1406).opt(118, &[198, 18, 0, 0]))
        .unwrap();
    assert!(no_reply(&relay, 0x1406));

    let s = lab.stats();
    assert_eq!(count(&s, "dropped", "untrusted_relay"), 3, "{s}");
    assert_eq!(count(&s, "dropped", "untrusted_selector"), 1, "{s}");
}

#[test]
fn a_circuit_cap_refuses_a_second_lease_on_a_line_while_others_are_served() {
    let lab = lab("lim-cap");
    let relay = relay(&lab);
    let port1 = rai(b"olt1/1/1");
    let port2 = rai(b"olt1/1/2");
    let ack = relay
        .dora(mac(1), 0x1411, &[(82, port1.clone())], WAIT)
        .unwrap()
        .expect("the first client on the port is bound");
    // A second device on the same ONU port: no OFFER...
    let d = Msg::new(DISCOVER, mac(2), 0x1412).opt(82, &port1);
    relay.send(&d).unwrap();
    assert!(no_reply(&relay, 0x1412));
    // ...and a REQUEST for an address nobody offered it: a NAK.
    let r = Msg::new(REQUEST, mac(2), 0x1413)
        .opt(50, &[198, 18, 2, 150])
        .opt(54, &SERVER_ID.octets())
        .opt(82, &port1);
    relay.send(&r).unwrap();
    let nak = relay.recv(0x1413, WAIT).unwrap().expect("NAK");
    assert_eq!(nak.msg_type(), Some(6));
    // Other ports are served, the first client comes back to its address.
    for (n, xid) in [(3u8, 0x1414u32), (4, 0x1415)] {
        let port = rai(format!("olt1/2/{n}").as_bytes());
        relay
            .dora(mac(n), xid, &[(82, port)], WAIT)
            .unwrap()
            .expect("a client on another port is bound");
    }
    relay
        .dora(mac(2), 0x1416, &[(82, port2)], WAIT)
        .unwrap()
        .expect("the refused device, on its own port, is bound");
    let again = Msg::new(DISCOVER, mac(1), 0x1417).opt(82, &port1);
    relay.send(&again).unwrap();
    let o = relay.recv(0x1417, WAIT).unwrap().expect("its OFFER");
    assert_eq!((o.msg_type(), o.yiaddr()), (Some(OFFER), ack.yiaddr()));
    let s = lab.stats();
    assert_eq!(count(&s, "limited", "cap_circuit_id"), 2, "{s}");
}

#[test]
fn a_decline_flood_from_one_client_quarantines_at_most_the_cap() {
    let lab = lab("lim-decl");
    let relay = relay(&lab);
    let port = rai(b"olt1/1/9");
    let mut declined = 0;
    for i in 0..30u32 {
        let xid = 0x1420 + i;
        relay
            .send(&Msg::new(DISCOVER, mac(9), xid).opt(82, &port))
            .unwrap();
        let Some(o) = relay.recv(xid, WAIT).unwrap() else {
            break;
        };
        let d = Msg::new(DECLINE, mac(9), xid)
            .opt(50, &o.yiaddr().octets())
            .opt(54, &SERVER_ID.octets())
            .opt(82, &port);
        relay.send(&d).unwrap();
        declined += 1;
    }
    assert_eq!(declined, 30, "every DISCOVER answered");
    let (code, out) = lab
        .cli(&["leases", "list", "--state", "declined", "--json"])
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let quarantined = declined_leases(&serde_json::from_str(&out).unwrap());
    assert_eq!(quarantined, 4, "declines_per_client (default 4): {out}");
    let s = lab.stats();
    assert_eq!(count(&s, "limited", "decline_cap_client"), 26, "{s}");
}
