//! Relay-identity reservations, classes, precedence, boot fields, stashed
//! relay information.

use super::*;

const SUB: &str = r#"
[server]
server_id = "198.18.0.1"

[options]
lease_time = 1000
dns_servers = ["198.18.0.53"]

[[interface]]
name = "srv0"

[[class]]
name = "ipxe"
match = 'user_class == "iPXE"'
options = { boot_file_name = "http://198.18.0.1/boot.ipxe" }

[[class]]
name = "uefi"
match = "client_arch == 7 or client_arch == 9"
options = { next_server = "198.18.0.1", server_hostname = "boot", boot_file_name = "uefi/shim.efi", tftp_server = "198.18.0.1" }

[[class]]
name = "bios"
match = "client_arch == 0"
options = { next_server = "198.18.0.1", boot_file_name = "pxelinux.0" }

[[class]]
name = "acme"
match = 'vendor_class starts_with "acme" and not agent.remote_id == "x"'
options = { domain_name = "class.test", dns_servers = ["198.18.0.54"], hostname = "cpe", domain_search = ["class.test", "test"] }

[[class]]
name = "gold"
match = 'agent.circuit_id starts_with "gold/"'
options = { domain_name = "gold.test" }

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.101"
client_classes = ["acme"]
options = { domain_name = "acme-pool.test" }
[[subnet.pool]]
start = "198.18.0.110"
end = "198.18.0.119"
options = { domain_name = "pool.test" }
[[subnet.reservation]]
hw_address = "02:00:00:00:00:99"
ip = "198.18.0.50"
options = { dns_servers = ["198.18.0.55"], hostname = "reserved" }

[[subnet]]
id = 4
subnet = "198.18.3.0/24"
relays = ["198.18.9.1"]
[[subnet.pool]]
start = "198.18.3.10"
end = "198.18.3.20"
[[subnet.reservation]]
circuit_id = "gold/1/3"
ip = "198.18.3.50"
[[subnet.reservation]]
circuit_id = "port-7"
giaddr = "198.18.9.1"
ip = "198.18.3.51"
[[subnet.reservation]]
remote_id = "0x0a0b0c"
ip = "198.18.3.52"
[[subnet.reservation]]
subscriber_id = "sub-42"
ip = "198.18.3.53"
"#;

fn sub_server() -> Server {
    Server::new(&Config::parse(SUB, "sub").unwrap(), Vec::new())
}

const RELAY: [u8; 4] = [198, 18, 9, 1];

fn rai(subs: &[(u8, &[u8])]) -> Vec<u8> {
    subs.iter()
        .flat_map(|(c, v)| [&[*c, v.len() as u8][..], v].concat())
        .collect()
}

/// DISCOVER + REQUEST with `extra` options; the ACK.
fn dora_with(s: &mut Server, n: u8, giaddr: [u8; 4], extra: &[(u8, Vec<u8>)]) -> Outcome {
    let with = |mut r: Req| {
        r = r.giaddr(giaddr);
        for (c, v) in extra {
            r = r.opt(*c, v);
        }
        r
    };
    let offer = handle(s, &with(req(msg::DISCOVER, n)));
    let ip = yiaddr(&offer);
    let ack = handle(
        s,
        &with(req(msg::REQUEST, n))
            .requested(ip.octets())
            .server_id([198, 18, 0, 1]),
    );
    assert_eq!(msg_type(&ack), v4::MessageType::Ack, "{:?}", ack.dropped);
    ack
}

fn text(o: &Outcome, code: u8) -> Option<String> {
    raw_option(o, code).map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn relay_identities_reserve_addresses_and_a_replaced_cpe_keeps_the_line_address() {
    let mut s = sub_server();
    let cases: [(Vec<u8>, Ipv4Addr); 4] = [
        (rai(&[(1, b"gold/1/3")]), Ipv4Addr::new(198, 18, 3, 50)),
        (rai(&[(1, b"port-7")]), Ipv4Addr::new(198, 18, 3, 51)),
        (
            rai(&[(1, b"p"), (2, &[10, 11, 12])]),
            Ipv4Addr::new(198, 18, 3, 52),
        ),
        (rai(&[(6, b"sub-42")]), Ipv4Addr::new(198, 18, 3, 53)),
    ];
    for (i, (info, ip)) in cases.iter().enumerate() {
        let ack = dora_with(&mut s, 10 + i as u8, RELAY, &[(82, info.clone())]);
        assert_eq!(yiaddr(&ack), *ip, "case {i}");
    }
    // (giaddr, circuit-id) names one relay's circuit: another relay's
    // port-7 is a pool client.
    let other = dora_with(&mut s, 20, [198, 18, 3, 1], &[(82, rai(&[(1, b"port-7")]))]);
    assert_ne!(yiaddr(&other), Ipv4Addr::new(198, 18, 3, 51));
    // A new CPE (new MAC) on gold/1/3: the old one's binding ends, the
    // line keeps its address.
    let info = rai(&[(1, b"gold/1/3")]);
    let ack = dora_with(&mut s, 30, RELAY, &[(82, info.clone())]);
    assert_eq!(yiaddr(&ack), Ipv4Addr::new(198, 18, 3, 50));
    let old = hw_key(1, &[2, 0, 0, 0, 0, 10]);
    assert!(s
        .leases
        .by_client(4, &old)
        .is_none_or(|l| l.state != LeaseState::Bound));
    assert_eq!(s.counters.dropped.get("line_hand_over"), Some(&1));
}

#[test]
fn a_unicast_renewal_is_served_with_the_stashed_relay_information() {
    let mut s = sub_server();
    let info = rai(&[(1, b"gold/1/3")]);
    let ack = dora_with(&mut s, 1, RELAY, &[(82, info.clone())]);
    assert_eq!(text(&ack, opt::DOMAIN_NAME).as_deref(), Some("gold.test"));
    let ip = yiaddr(&ack);
    // RENEWING: unicast from the client, no relay, no option 82.
    let renew = handle(&mut s, &req(msg::REQUEST, 1).ciaddr(ip.octets()));
    assert_eq!(
        msg_type(&renew),
        v4::MessageType::Ack,
        "{:?}",
        renew.dropped
    );
    assert_eq!(text(&renew, opt::DOMAIN_NAME).as_deref(), Some("gold.test"));
    assert_eq!(raw_option(&renew, 82), None, "nothing to echo");
    // The stash survives the store (a restart) and the renewal keeps it.
    let stored = renew.store[0].lease().unwrap().clone();
    assert_eq!(stored.relay.as_deref().map(|r| &r[4..]), Some(&info[..]));
    let mut s = Server::new(&Config::parse(SUB, "sub").unwrap(), vec![stored]);
    let renew = handle(&mut s, &req(msg::REQUEST, 1).ciaddr(ip.octets()));
    assert_eq!(
        msg_type(&renew),
        v4::MessageType::Ack,
        "{:?}",
        renew.dropped
    );
    assert_eq!(text(&renew, opt::DOMAIN_NAME).as_deref(), Some("gold.test"));
}

#[test]
fn precedence_is_reservation_then_class_then_pool_then_subnet_then_global() {
    let mut s = sub_server();
    let acme = [(60u8, b"acme-router-9".to_vec())];
    // A class client in the class's pool: class over pool.
    let ack = dora_with(&mut s, 1, [0; 4], &acme);
    assert!(ip_in_range(yiaddr(&ack), 100, 101), "{}", yiaddr(&ack));
    assert_eq!(text(&ack, opt::DOMAIN_NAME).as_deref(), Some("class.test"));
    assert_eq!(raw_option(&ack, opt::DNS), Some(vec![198, 18, 0, 54]));
    assert_eq!(
        raw_option(&ack, opt::ROUTER),
        Some(vec![198, 18, 0, 1]),
        "subnet"
    );
    assert_eq!(text(&ack, opt::HOSTNAME).as_deref(), Some("cpe"));
    assert_eq!(
        raw_option(&ack, opt::DOMAIN_SEARCH),
        Some(b"\x05class\x04test\x00\x04test\x00".to_vec())
    );
    // Not in the class: the open pool, its option, the global DNS.
    let ack = dora_with(&mut s, 2, [0; 4], &[(60, b"other".to_vec())]);
    assert!(ip_in_range(yiaddr(&ack), 110, 119), "{}", yiaddr(&ack));
    assert_eq!(text(&ack, opt::DOMAIN_NAME).as_deref(), Some("pool.test"));
    assert_eq!(raw_option(&ack, opt::DNS), Some(vec![198, 18, 0, 53]));
    assert_eq!(raw_option(&ack, opt::HOSTNAME), None);
    // A reserved class client: reservation over class, class over the rest.
    let ack = dora_with(&mut s, 0x99, [0; 4], &acme);
    assert_eq!(yiaddr(&ack), Ipv4Addr::new(198, 18, 0, 50));
    assert_eq!(raw_option(&ack, opt::DNS), Some(vec![198, 18, 0, 55]));
    assert_eq!(text(&ack, opt::HOSTNAME).as_deref(), Some("reserved"));
    assert_eq!(text(&ack, opt::DOMAIN_NAME).as_deref(), Some("class.test"));
}

fn ip_in_range(ip: Ipv4Addr, lo: u8, hi: u8) -> bool {
    let o = ip.octets();
    o[..3] == [198, 18, 0] && (lo..=hi).contains(&o[3])
}

#[test]
fn class_pools_are_closed_to_others_and_overflow_to_open_ones() {
    let mut s = sub_server();
    let acme = [(60u8, b"acme".to_vec())];
    let mut got = Vec::new();
    for n in 1..=3 {
        got.push(yiaddr(&dora_with(&mut s, n, [0; 4], &acme)));
    }
    assert!(ip_in_range(got[0], 100, 101) && ip_in_range(got[1], 100, 101));
    assert!(ip_in_range(got[2], 110, 119), "overflow: {got:?}");
    // The open addresses left, then nothing: never the class's pool.
    for n in 4..=12 {
        assert!(ip_in_range(
            yiaddr(&dora_with(&mut s, n, [0; 4], &[])),
            110,
            119
        ));
    }
    let o = handle(&mut s, &req(msg::DISCOVER, 13));
    assert_eq!(o.dropped, Some("pool_exhausted"));
    // A client asking for an address in a pool closed to it is not given it.
    let mut s = sub_server();
    let o = handle(&mut s, &req(msg::DISCOVER, 6).requested([198, 18, 0, 100]));
    assert!(ip_in_range(yiaddr(&o), 110, 119));
}

#[test]
fn boot_fields_follow_the_architecture_and_ipxe_wins_over_it() {
    let mut s = sub_server();
    let fields = |o: &Outcome| {
        let p = &o.reply.as_ref().unwrap().payload;
        let z =
            |b: &[u8]| String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap()).into_owned();
        (
            Ipv4Addr::new(p[20], p[21], p[22], p[23]),
            z(&p[44..108]),
            z(&p[108..236]),
        )
    };
    let uefi = dora_with(&mut s, 1, [0; 4], &[(93, vec![0, 7])]);
    assert_eq!(
        fields(&uefi),
        (
            Ipv4Addr::new(198, 18, 0, 1),
            "boot".into(),
            "uefi/shim.efi".into()
        )
    );
    assert_eq!(text(&uefi, opt::BOOTFILE).as_deref(), Some("uefi/shim.efi"));
    assert_eq!(text(&uefi, opt::TFTP_SERVER).as_deref(), Some("198.18.0.1"));
    // The kernel writes no boot fields: such a binding is never its.
    let l = uefi.store[0].lease().unwrap();
    assert!(l.fast.is_none());
    let bios = dora_with(&mut s, 2, [0; 4], &[(93, vec![0, 0])]);
    assert_eq!(
        fields(&bios),
        (
            Ipv4Addr::new(198, 18, 0, 1),
            String::new(),
            "pxelinux.0".into()
        )
    );
    let chain = dora_with(
        &mut s,
        3,
        [0; 4],
        &[(93, vec![0, 7]), (77, b"iPXE".to_vec())],
    );
    assert_eq!(fields(&chain).2, "http://198.18.0.1/boot.ipxe");
    assert_eq!(
        fields(&chain).0,
        Ipv4Addr::new(198, 18, 0, 1),
        "the uefi class's next-server"
    );
    // No class: no boot fields, and the binding may be the kernel's.
    let plain = dora_with(&mut sub_server(), 4, [0; 4], &[]);
    assert_eq!(
        fields(&plain),
        (Ipv4Addr::UNSPECIFIED, String::new(), String::new())
    );
}

#[test]
fn class_and_relay_reservation_config_errors_name_their_line() {
    let head = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\n";
    let bad = |body: &str| Config::parse(&format!("{head}{body}"), "x.toml").unwrap_err();
    // At the class's table (it was its `match` key's line, 7).
    let e = bad("[[class]]\nname = \"a\"\nmatch = 'vendor_class == '\n");
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.reason.contains("class \"a\": match: at column") && e.reason.contains("value missing"),
        "{e}"
    );
    let e = bad("[[class]]\nname = \"a\"\nmatch = 'vlan == 1'\n[[class]]\nname = \"a\"\nmatch = 'vlan == 2'\n");
    assert_eq!(e.line, 8, "{e}");
    assert!(e.reason.contains("twice"), "{e}");
    let e = bad("[[class]]\nname = \"a\"\nmatch = 'vlan == 1'\noptions = { renewal_time = 5 }\n");
    assert!(e.reason.contains("need lease_time"), "{e}");
    let e = bad("[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n[[subnet.pool]]\nstart = \"198.18.1.10\"\nend = \"198.18.1.20\"\nclient_classes = [\"nope\"]\n");
    assert_eq!(e.line, 8, "{e}");
    assert!(e.reason.contains("\"nope\" is not a [[class]]"), "{e}");
    let res = |ids: &str| {
        bad(&format!("[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n[[subnet.reservation]]\n{ids}\nip = \"198.18.1.5\"\n"))
    };
    let e = res("circuit_id = \"a\"\nremote_id = \"b\"");
    assert_eq!(e.line, 8, "{e}");
    assert!(e.reason.contains("exactly one"), "{e}");
    let e = res("remote_id = \"b\"\ngiaddr = \"198.18.1.1\"");
    assert!(e.reason.contains("giaddr goes with circuit_id"), "{e}");
    let e = res("circuit_id = \"0xzz\"");
    assert!(e.reason.contains("not hex"), "{e}");
    let e = bad("[options]\nboot_file_name = \"\"\n");
    assert!(e.reason.contains("boot_file_name"), "{e}");
    let e = bad("[options]\ndomain_search = [\"a..b\"]\n");
    assert!(e.reason.contains("labels"), "{e}");
    let e = bad("[options]\n[[options.option]]\ncode = 67\ntype = \"string\"\nvalue = \"x\"\n");
    assert!(e.reason.contains("boot_file_name"), "{e}");
}

const SHARED: &str = r#"
[server]
server_id = "198.18.0.1"

[[interface]]
name = "srv0"

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
shared_network = "campus"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.100"

[[subnet]]
id = 2
subnet = "198.18.1.0/24"
interface = "srv0"
shared_network = "campus"
options = { routers = ["198.18.1.1"] }
[[subnet.pool]]
start = "198.18.1.10"
end = "198.18.1.11"
"#;

#[test]
fn a_shared_network_overflows_in_order_and_known_clients_keep_their_subnet() {
    let mut s = Server::new(&Config::parse(SHARED, "shared").unwrap(), Vec::new());
    let a = dora_with(&mut s, 1, [0; 4], &[]);
    assert_eq!(yiaddr(&a), Ipv4Addr::new(198, 18, 0, 100));
    let b = dora_with(&mut s, 2, [0; 4], &[]);
    assert_eq!(
        yiaddr(&b),
        Ipv4Addr::new(198, 18, 1, 10),
        "overflow to the next subnet"
    );
    assert_eq!(
        raw_option(&b, opt::ROUTER),
        Some(vec![198, 18, 1, 1]),
        "its subnet's options"
    );
    assert_eq!(
        raw_option(&b, opt::SUBNET_MASK),
        Some(vec![255, 255, 255, 0])
    );
    // Known clients keep their subnets (and addresses) when they come back.
    assert_eq!(
        yiaddr(&dora_with(&mut s, 2, [0; 4], &[])),
        Ipv4Addr::new(198, 18, 1, 10)
    );
    assert_eq!(
        yiaddr(&dora_with(&mut s, 1, [0; 4], &[])),
        Ipv4Addr::new(198, 18, 0, 100)
    );
    // INIT-REBOOT in the second subnet.
    let r = handle(&mut s, &req(msg::REQUEST, 2).requested([198, 18, 1, 10]));
    assert_eq!(msg_type(&r), v4::MessageType::Ack);
    dora_with(&mut s, 3, [0; 4], &[]);
    assert_eq!(
        handle(&mut s, &req(msg::DISCOVER, 4)).dropped,
        Some("pool_exhausted")
    );
    // Two subnets on one link without a shared network are still refused.
    let e = Config::parse(&SHARED.replace("shared_network = \"campus\"\n", ""), "x").unwrap_err();
    assert!(e.reason.contains("already serves this interface"), "{e}");
}

#[test]
fn options_that_do_not_fit_overload_the_file_field_and_stay_out_of_the_kernel() {
    let text = SUB.replace(
        "[[class]]\nname = \"ipxe\"",
        "[[class]]\nname = \"big\"\nmatch = 'agent.circuit_id == \"big\"'\n\
         options = { hostname = \"HOST\", \
         option = [{ code = 43, type = \"hex\", value = \"PAYLOAD\" }] }\n\n[[class]]\nname = \"ipxe\"",
    )
    .replace("PAYLOAD", &"ab".repeat(60))
    .replace("HOST", &"h".repeat(250));
    let mut s = Server::new(&Config::parse(&text, "big").unwrap(), Vec::new());
    let info = rai(&[(1, b"big")]);
    let ack = dora_with(
        &mut s,
        1,
        RELAY,
        &[(82, info), (57, 576u16.to_be_bytes().to_vec())],
    );
    let p = &ack.reply.as_ref().unwrap().payload;
    assert!(p.len() <= 576 - 28, "{}", p.len());
    assert_eq!(
        raw_option(&ack, opt::OVERLOAD),
        Some(vec![1]),
        "{:?}",
        option_codes(&ack)
    );
    assert_eq!(raw_option(&ack, opt::HOSTNAME).map(|v| v.len()), Some(250));
    assert_eq!(raw_option(&ack, 43), None, "not in the options field");
    assert_eq!((p[108], p[109]), (43, 60), "in the file field");
    assert_eq!(p[110..170], [0xab; 60]);
    assert_eq!(p[170], opt::END);
    assert!(ack.store[0].lease().unwrap().fast.is_none());
}
