//! The control plane with real DHCP clients from Debian (busybox udhcpc,
//! ISC dhclient, perfdhcp) and with a relay, in the netns lab.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use xdhcp::{
    config::DbSync,
    lease::LeaseState,
    store::{LeaseStore, SqliteStore},
};
use xdhcp_lab::{
    daemon::{wait_until, DaemonLab},
    dhcp::{RelayClient, ACK},
    proc::Logged,
};

const SIGKILL: i32 = 9;
const SIGUSR1: i32 = 10;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
offer_hold_secs = 10

[[interface]]
name = "srv0"

[options]
# The kernel reports a renewal that moves the stored end by lease/8
# (3.75 s; the stored end is rounded up to the second): every renewal at
# T1 (6 s) is one it reports.
lease_time = 30
renewal_time = 6
rebinding_time = 8
dns_servers = ["198.18.0.53"]

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.150"

[[subnet]]
id = 3
subnet = "198.18.3.0/24"
[[subnet.pool]]
start = "198.18.3.10"
end = "198.18.3.250"

[[subnet]]
id = 64
subnet = "198.18.64.0/18"
relays = ["198.18.0.2"]
options = { lease_time = 3600 }
[[subnet.pool]]
start = "198.18.64.10"
end = "198.18.127.250"
"#;

fn stored(lab: &DaemonLab) -> Vec<xdhcp::lease::Lease> {
    SqliteStore::open(&lab.db(), DbSync::Full)
        .unwrap()
        .load()
        .unwrap()
}

fn acks(lab: &DaemonLab) -> usize {
    lab.daemon().count("REQUEST -> ACK")
}

/// Renewals the XDP program answered (the control plane only stores them).
fn kernel_renewals(lab: &DaemonLab, ip: Ipv4Addr) -> usize {
    lab.daemon().count(&format!("ip={ip} expires="))
}

/// tcpdump -vv output cut into packets, those sent by the server only.
fn server_packets(lines: &[String]) -> Vec<String> {
    let mut packets: Vec<String> = Vec::new();
    for l in lines {
        if l.starts_with(char::is_numeric) {
            packets.push(String::new());
        }
        if let Some(p) = packets.last_mut() {
            p.push_str(l);
            p.push('\n');
        }
    }
    packets
        .into_iter()
        .filter(|p| p.contains("198.18.0.1.67 > "))
        .collect()
}

/// tcpdump in the client namespace, decoding DHCP and checking checksums.
fn tcpdump(lab: &DaemonLab) -> Logged {
    let t = Logged::spawn(
        &lab.cli,
        Command::new("sh").args(["-c", "exec tcpdump -i cli0 -n -vv -l -s 0 udp port 68 1>&2"]),
        None,
    )
    .unwrap();
    t.wait_for("listening on", Duration::from_secs(10)).unwrap();
    t
}

#[test]
fn udhcpc_obtains_renews_rebinds_and_releases() {
    let mut lab = DaemonLab::new("udhcpc", CONFIG, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("$lease").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(15));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((100..=150).contains(&ip.octets()[3]), "{bound}");
    assert!(bound.ends_with(" 30"), "lease time 30 expected: {bound}");
    assert!(lab
        .cli
        .run(["ip", "-4", "addr", "show", "cli0"])
        .unwrap()
        .contains(&ip.to_string()));

    // Renew on demand (SIGUSR1): a unicast REQUEST from the bound address,
    // answered by the XDP program: the control plane sends no ACK, it
    // only stores the renewal the kernel reports. The kernel reports a
    // renewal that moves the stored end by at least lease/8 (3.75 s here,
    // plus up to 1 s of rounding): give the lease that long first.
    std::thread::sleep(Duration::from_millis(5_000));
    let dump = tcpdump(&lab);
    let n = lab.events().len();
    let acks_before = acks(&lab);
    let kernel_before = kernel_renewals(&lab, ip);
    client.signal(SIGUSR1);
    let renew = lab.wait_event("renew ", n, Duration::from_secs(10));
    assert!(
        renew.contains(&ip.to_string()),
        "same address after renewal: {renew}"
    );
    wait_until(Duration::from_secs(5), || {
        (kernel_renewals(&lab, ip) > kernel_before).then_some(())
    })
    .expect("the XDP program's renewal reaches the control plane");
    assert_eq!(
        acks(&lab),
        acks_before,
        "the control plane answered a renewal"
    );
    // What the client saw: a DHCP ACK from the server, checksums right.
    // (The client's own requests show "bad udp cksum": checksum offload,
    // filled in after tcpdump's tap.)
    let ack = wait_until(Duration::from_secs(5), || {
        server_packets(&dump.lines())
            .into_iter()
            .find(|p| p.contains("DHCP-Message (53), length 1: ACK"))
    })
    .unwrap_or_else(|| panic!("tcpdump shows no ACK: {:?}", dump.lines()));
    assert!(ack.contains("udp sum ok"), "{ack}");
    assert!(!ack.contains("bad"), "{ack}");
    assert!(ack.contains(&format!("Your-IP {ip}")), "{ack}");
    assert!(
        ack.contains("Server-ID (54), length 4: 198.18.0.1"),
        "{ack}"
    );
    drop(dump);

    // Unicast to the server blackholed: udhcpc's renewals (kernel UDP)
    // fail, and past T2 (8 s) it rebinds by broadcast, also answered in
    // the kernel.
    let n = lab.events().len();
    let kernel_before = kernel_renewals(&lab, ip);
    lab.cli
        .run(["ip", "route", "add", "blackhole", "198.18.0.1/32"])
        .unwrap();
    let rebound = lab.wait_event("renew ", n, Duration::from_secs(30));
    assert!(
        rebound.contains(&ip.to_string()),
        "same address after rebinding: {rebound}"
    );
    wait_until(Duration::from_secs(5), || {
        (kernel_renewals(&lab, ip) > kernel_before).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the rebinding was answered in the kernel: {:?} {:?}",
            lab.daemon().lines(),
            lab.events()
        )
    });
    assert_eq!(
        acks(&lab),
        acks_before,
        "the control plane answered a renewal"
    );
    lab.cli
        .run(["ip", "route", "del", "blackhole", "198.18.0.1/32"])
        .unwrap();

    // Release (SIGUSR2): the lease is released in the store.
    client.signal(SIGUSR2);
    lab.daemon()
        .wait_for("RELEASE -> -", Duration::from_secs(10))
        .unwrap();
    drop(client);
    let (status, lines) = lab.stop(SIGTERM).unwrap();
    assert!(status.success());
    let counters = lines.iter().find(|l| l.contains("xdp counters")).unwrap();
    assert!(!counters.contains("fp_ack_renewing=0 "), "{counters}");
    assert!(!counters.contains("fp_ack_rebinding=0 "), "{counters}");
    let l = stored(&lab)
        .into_iter()
        .find(|l| l.ip == ip)
        .expect("lease stored");
    assert_eq!(l.state, LeaseState::Released);
}

#[test]
fn dhclient_obtains_renews_and_releases() {
    let mut lab = DaemonLab::new("dhclient", CONFIG, None).unwrap();
    lab.start().unwrap();
    let ev = lab.dir.join("events");
    let script = lab
        .script(
            "dhclient.sh",
            &format!(
                "#!/bin/sh\necho \"$reason $new_ip_address $old_ip_address\" >> {ev}\ncase \"$reason\" in\n BOUND|RENEW|REBIND|REBOOT) ip addr flush dev $interface; ip addr add $new_ip_address/$new_subnet_mask dev $interface ;;\n EXPIRE|FAIL|RELEASE|STOP) ip addr flush dev $interface ;;\nesac\nexit 0\n",
                ev = ev.display()
            ),
        )
        .unwrap();
    let pid = lab.dir.join("dhclient.pid");
    let leases = lab.dir.join("dhclient.leases");
    let args = |extra: &[&str]| {
        let mut c = Command::new("dhclient");
        c.args(["-4", "-v"])
            .args(extra)
            .arg("-sf")
            .arg(&script)
            .arg("-pf")
            .arg(&pid)
            .arg("-lf")
            .arg(&leases)
            .arg("cli0");
        c
    };
    let client = Logged::spawn(&lab.cli, &args(&["-d"]), None).unwrap();
    let bound = lab.wait_event("BOUND ", 0, Duration::from_secs(20));
    let ip = bound.split_whitespace().nth(1).unwrap().to_string();

    // T1 is 6 s: dhclient renews by itself (unicast to the server), and
    // the XDP program answers: the control plane sends no further ACK.
    let dump = tcpdump(&lab);
    let acks_before = acks(&lab);
    let n = lab.events().len();
    let renew = lab.wait_event("RENEW ", n, Duration::from_secs(10));
    assert!(renew.starts_with(&format!("RENEW {ip}")), "{renew}");
    let n = lab.events().len();
    let renew = lab.wait_event("RENEW ", n, Duration::from_secs(10));
    assert!(renew.starts_with(&format!("RENEW {ip}")), "{renew}");
    let addr: Ipv4Addr = ip.parse().unwrap();
    // Events are collected every 100 ms: the last one may still be on its way.
    wait_until(Duration::from_secs(5), || {
        (kernel_renewals(&lab, addr) >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "renewals answered in the kernel: {:?}",
            lab.daemon().lines()
        )
    });
    assert_eq!(
        acks(&lab),
        acks_before,
        "the control plane answered a renewal"
    );
    let ack = server_packets(&dump.lines())
        .into_iter()
        .find(|p| p.contains("DHCP-Message (53), length 1: ACK"))
        .unwrap_or_else(|| panic!("tcpdump shows no ACK: {:?}", dump.lines()));
    assert!(ack.contains("udp sum ok") && !ack.contains("bad"), "{ack}");
    drop(dump);

    // (dhclient's LPF path sends even unicast renewals as link broadcasts,
    // so its REBINDING cannot be forced from outside here; the udhcpc test
    // covers rebinding.)

    // Release: `dhclient -r` sends DHCPRELEASE and stops the client.
    let out = lab.cli.command_from(&args(&["-r"])).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.daemon()
        .wait_for("RELEASE -> -", Duration::from_secs(10))
        .unwrap();
    drop(client);
    lab.stop(SIGTERM).unwrap();
    let l = stored(&lab)
        .into_iter()
        .find(|l| l.ip.to_string() == ip)
        .expect("lease stored");
    assert_eq!(l.state, LeaseState::Released);
}

/// The kernel answers renewals with the options of the ACK it copied; a
/// restart with different options must not keep answering with the old
/// ones: the next renewal goes to the control plane, later ones are the
/// kernel's again, with the new options.
#[test]
fn a_changed_configuration_is_never_answered_from_old_templates() {
    let mut lab = DaemonLab::new("cfgchange", CONFIG, None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("$dns").unwrap();
    let bound = lab.wait_event("bound ", 0, Duration::from_secs(15));
    let ip: Ipv4Addr = bound.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(bound.ends_with("198.18.0.53"), "{bound}");
    // Lease 30 s: udhcpc renews at 15 s by itself; the kernel answers.
    let n = lab.events().len();
    lab.wait_event("renew ", n, Duration::from_secs(25));
    wait_until(Duration::from_secs(5), || {
        (kernel_renewals(&lab, ip) >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", lab.daemon().lines()));
    // The client keeps running (and its lease) across the restart.
    lab.stop(SIGTERM).unwrap();
    std::fs::write(
        &lab.config,
        std::fs::read_to_string(&lab.config)
            .unwrap()
            .replace("198.18.0.53", "198.18.0.99"),
    )
    .unwrap();
    lab.start().unwrap();
    let acks_before = acks(&lab);
    let n = lab.events().len();
    let renew = lab.wait_event("renew ", n, Duration::from_secs(25));
    assert!(
        renew.ends_with("198.18.0.99"),
        "old options from the kernel: {renew}"
    );
    assert!(
        acks(&lab) > acks_before,
        "the control plane made the new binding"
    );
    // The next renewal is the kernel's again, with the new options.
    let kernel_before = kernel_renewals(&lab, ip);
    let n = lab.events().len();
    let renew = lab.wait_event("renew ", n, Duration::from_secs(25));
    assert!(renew.ends_with("198.18.0.99"), "{renew}");
    wait_until(Duration::from_secs(5), || {
        (kernel_renewals(&lab, ip) > kernel_before).then_some(())
    })
    .expect("renewed in the kernel after the control plane rebound it");
    drop(client);
    let (_, lines) = lab.stop(SIGTERM).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("configuration changed since these bindings were made")),
        "{lines:?}"
    );
}

/// A relay (giaddr set, option 82) gets the replies at its own port 67,
/// with option 82 echoed byte for byte.
#[test]
fn relayed_requests_are_answered_at_the_relay_with_option_82_echoed() {
    let mut lab = DaemonLab::new("relay", CONFIG, Some("198.18.0.2/24")).unwrap();
    lab.cli
        .run(["ip", "addr", "add", "198.18.3.1/24", "dev", "cli0"])
        .unwrap();
    lab.srv
        .run(["ip", "route", "add", "198.18.3.0/24", "via", "198.18.0.2"])
        .unwrap();
    lab.start().unwrap();
    let relay = lab
        .cli
        .enter(|| {
            RelayClient::open_here(Ipv4Addr::new(198, 18, 3, 1), Ipv4Addr::new(198, 18, 0, 1))
        })
        .unwrap()
        .unwrap();
    // Circuit-id and remote-id, remote-id first: must come back unchanged.
    let rai = vec![
        2u8, 4, 0xde, 0xad, 0xbe, 0xef, 1, 6, b'e', b't', b'h', b'0', b'/', b'7',
    ];
    let ack = relay
        .dora(
            [2, 0, 0, 0, 3, 1],
            0xabcd,
            &[(82, rai.clone())],
            Duration::from_secs(3),
        )
        .unwrap()
        .expect("DORA through the relay");
    assert_eq!(ack.msg_type(), Some(ACK));
    assert_eq!(ack.giaddr(), Ipv4Addr::new(198, 18, 3, 1));
    assert_eq!(ack.yiaddr().octets()[..3], [198, 18, 3]);
    assert_eq!(ack.option(82), Some(rai));
    assert_eq!(ack.options().last().unwrap().0, 82, "option 82 last");
}

/// Acknowledged leases survive a graceful restart and a kill -9 in the
/// middle of a DORA load: after it, the store holds every ACK the
/// clients received, with the address they were given.
#[test]
fn restart_and_kill_9_under_load_lose_no_acknowledged_lease() {
    let mut lab = DaemonLab::new("kill9", CONFIG, Some("198.18.0.2/24")).unwrap();
    lab.start().unwrap();
    let relay = lab
        .cli
        .enter(|| {
            RelayClient::open_here(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 1))
        })
        .unwrap()
        .unwrap();
    let clients: u32 = 1500;
    let mut acked: HashMap<[u8; 6], Ipv4Addr> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut n: u32 = 0;
    let mut interruptions = 0;
    while (acked.len() as u32) < clients && Instant::now() < deadline {
        n += 1;
        let id = n % clients;
        let mac = [2, 1, 0, (id >> 16) as u8, (id >> 8) as u8, id as u8];
        if acked.contains_key(&mac) {
            continue;
        }
        if let Some(ack) = relay.dora(mac, n, &[], Duration::from_millis(300)).unwrap() {
            if let Some(prev) = acked.insert(mac, ack.yiaddr()) {
                assert_eq!(prev, ack.yiaddr());
            }
        }
        // Interrupt the server twice mid-load: gracefully, then kill -9.
        if interruptions == 0 && acked.len() == 500 {
            interruptions += 1;
            lab.stop(SIGTERM).unwrap();
            lab.start().unwrap();
        }
        if interruptions == 1 && acked.len() == 1000 {
            interruptions += 1;
            let (status, _) = lab.stop(SIGKILL).unwrap();
            assert!(!status.success());
            lab.start().unwrap();
        }
    }
    assert_eq!(interruptions, 2);
    assert_eq!(acked.len() as u32, clients, "load did not finish in time");
    let distinct: HashSet<_> = acked.values().collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "an address was ACKed to two clients"
    );
    lab.stop(SIGKILL).unwrap();
    let by_ip: HashMap<Ipv4Addr, xdhcp::lease::Lease> =
        stored(&lab).into_iter().map(|l| (l.ip, l)).collect();
    for (mac, ip) in &acked {
        let l = by_ip
            .get(ip)
            .unwrap_or_else(|| panic!("ACKed lease {ip} for {mac:02x?} lost"));
        assert_eq!(l.state, LeaseState::Bound, "{ip}");
        assert_eq!(&l.hw[1..], &mac[..], "{ip} stored for another client");
    }
}

/// perfdhcp (Kea's load generator, acting as a relay) completes DORA for
/// more than 10,000 distinct clients; no address goes to two of them.
#[test]
fn perfdhcp_ten_thousand_clients_no_duplicates() {
    let mut lab = DaemonLab::new("perfdhcp", CONFIG, Some("198.18.0.2/24")).unwrap();
    lab.start().unwrap();
    // Random MACs from a million: ~11,000 requests give >10,000 distinct.
    // A correctness test, not a rate one: a modest rate, and replies count
    // up to 5 s late, as tests share the machine (at 3,000/s and perfdhcp's
    // 1 s default, a busy CI machine lost a fifth of them).
    let out = lab
        .cli
        .command_from(Command::new("perfdhcp").args([
            "-4",
            "-l",
            "198.18.0.2",
            "-r",
            "1000",
            "-d",
            "5",
            "-R",
            "1000000",
            "-n",
            "11500",
            "-p",
            "60",
            "-s",
            "7",
            "198.18.0.1",
        ]))
        .output()
        .expect("perfdhcp (Debian kea-admin)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    lab.stop(SIGTERM).unwrap();
    let leases: Vec<_> = stored(&lab)
        .into_iter()
        .filter(|l| l.state == LeaseState::Bound && l.subnet_id == 64)
        .collect();
    let clients: HashSet<_> = leases.iter().map(|l| l.client.clone()).collect();
    let ips: HashSet<_> = leases.iter().map(|l| l.ip).collect();
    assert!(
        leases.len() >= 10_000,
        "only {} leases bound\nperfdhcp:\n{report}",
        leases.len()
    );
    assert_eq!(clients.len(), leases.len(), "a client holds two addresses");
    assert_eq!(ips.len(), leases.len());
}

/// VLAN-tagged clients (802.1Q and QinQ) are served from the tagged
/// frames: the tags select the subnet and the replies carry the same tags.
#[test]
fn tagged_clients_complete_dora_on_their_vlan_subnet() {
    use xdhcp_lab::{
        dhcp::{Msg, ReplyView, DISCOVER, OFFER, REQUEST},
        frame::{FrameSpec, TPID_8021AD, TPID_8021Q},
        raw::RawSocket,
    };
    let config = format!(
        "{CONFIG}\n[[subnet]]\nid = 100\nsubnet = \"198.18.200.0/24\"\ninterface = \"srv0\"\nvlan = 100\n[[subnet.pool]]\nstart = \"198.18.200.10\"\nend = \"198.18.200.20\"\n\n[[subnet]]\nid = 200\nsubnet = \"198.18.201.0/24\"\ninterface = \"srv0\"\nvlan = 100\ninner_vlan = 200\n[[subnet.pool]]\nstart = \"198.18.201.10\"\nend = \"198.18.201.20\"\n"
    );
    let mut lab = DaemonLab::new("vlan", &config, None).unwrap();
    lab.start().unwrap();
    let sock = RawSocket::open(&lab.cli, "cli0").unwrap();
    let recv_reply = |tags: &[(u16, u16)], xid: u32| -> ReplyView {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some(f) = sock.recv(Duration::from_millis(200)).unwrap() else {
                continue;
            };
            let l3 = 14 + 4 * tags.len();
            if f.len() < l3 + 28 || f[l3 + 20..l3 + 24] != [0, 67, 0, 68] {
                continue;
            }
            for (i, (tpid, vid)) in tags.iter().enumerate() {
                assert_eq!(
                    u16::from_be_bytes([f[12 + 4 * i], f[13 + 4 * i]]),
                    *tpid,
                    "tag {i} TPID"
                );
                assert_eq!(
                    u16::from_be_bytes([f[14 + 4 * i], f[15 + 4 * i]]) & 0xfff,
                    *vid,
                    "tag {i} VID"
                );
            }
            let r = ReplyView::parse(&f[l3 + 28..]).unwrap();
            if r.xid() == xid {
                return r;
            }
        }
        panic!("no reply tagged {tags:?}");
    };
    for (tags, subnet, id) in [
        (vec![(TPID_8021Q, 100)], [198, 18, 200], 100u32),
        (
            vec![(TPID_8021AD, 100), (TPID_8021Q, 200)],
            [198, 18, 201],
            200,
        ),
    ] {
        let mac = [2, 0, 0, 0, 0x10, id as u8];
        let xid = 0x7700 + id;
        let send = |m: &Msg| {
            let f = FrameSpec {
                tags: tags.clone(),
                src_mac: mac,
                payload: m.encode(),
                ..Default::default()
            };
            sock.send(&f.build()).unwrap();
        };
        send(&Msg::new(DISCOVER, mac, xid));
        let offer = recv_reply(&tags, xid);
        assert_eq!(offer.msg_type(), Some(OFFER));
        assert_eq!(offer.yiaddr().octets()[..3], subnet);
        send(
            &Msg::new(REQUEST, mac, xid)
                .opt(50, &offer.yiaddr().octets())
                .opt(54, &[198, 18, 0, 1]),
        );
        let ack = recv_reply(&tags, xid);
        assert_eq!(ack.msg_type(), Some(ACK));
        assert_eq!(ack.yiaddr(), offer.yiaddr());
        assert_eq!(ack.chaddr(), mac);
    }
    lab.stop(SIGTERM).unwrap();
    let subnets: HashSet<u32> = stored(&lab)
        .iter()
        .filter(|l| l.state == LeaseState::Bound)
        .map(|l| l.subnet_id)
        .collect();
    assert_eq!(subnets, HashSet::from([100, 200]));
}
