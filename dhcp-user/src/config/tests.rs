use std::net::Ipv4Addr;

use super::*;

#[test]
fn embedded_default_parses() {
    let c = Config::default_config();
    assert_eq!(c.interfaces[0].name, "srv0");
    assert_eq!(c.interfaces[0].xdp, XdpSetting::Native);
}

#[test]
fn embedded_default_has_a_relay_reservation_and_valid_commented_classes() {
    let c = Config::default_config();
    assert!(c.subnets.iter().any(|s| s.reservations.iter().any(|r| r
        .written()
        .circuit_id
        .as_deref()
        == Some("olt1/1/3"))));
    let (head, rest) = DEFAULT_CONFIG.split_once("# BEGIN CLASSES\n").unwrap();
    let (block, _) = rest.split_once("# END CLASSES").unwrap();
    let uncommented: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = Config::parse(&format!("{head}{uncommented}"), "default").unwrap();
    assert_eq!(c.classes.len(), 4);
    assert_eq!(
        c.classes[1].options.boot_file_name.as_deref(),
        Some("uefi/grubx64.efi")
    );
}

#[test]
fn syntax_error_names_line() {
    let text = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = srv0\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.to_string().starts_with("x.toml:4:"), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_line() {
    let text = "[server]\nserver_id = \"198.18.0.1\"\n\n[[interface]]\nname = \"srv0\"\nxpd = \"native\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 6, "{e}");
    assert!(e.reason.contains("xpd"), "{e}");
}

#[test]
fn bad_value_is_rejected_with_line() {
    let text = "[server]\nserver_id = \"198.18.0.300\"\n[[interface]]\nname = \"srv0\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    let text =
        "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\nxdp = \"turbo\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn semantic_errors_name_line() {
    let text = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"a\"\n[[interface]]\nname = \"a\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert!(e.reason.contains("twice"), "{e}");
    let text = "[server]\nserver_id = \"0.0.0.0\"\n[[interface]]\nname = \"a\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    let text = "[server]\nserver_id = \"198.18.0.1\"\n";
    let e = Config::parse(text, "x.toml").unwrap_err();
    assert!(e.reason.contains("interface"), "{e}");
}

const HEAD: &str = "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\n";

fn refused(body: &str) -> ConfigError {
    let text = format!("{HEAD}{body}");
    Config::parse(&text, "x.toml").expect_err("accepted")
}

#[test]
fn audit_keys_default_and_are_validated_with_their_line() {
    let c = Config::parse(HEAD, "x.toml").unwrap();
    assert_eq!(
        (
            c.server.audit_interval_secs,
            c.server.audit_entries_per_sec,
            c.server.audit_repair
        ),
        (60, 200_000, true)
    );
    let with = |kv: &str| {
        format!("[server]\nserver_id = \"198.18.0.1\"\n{kv}\n[[interface]]\nname = \"srv0\"\n")
    };
    let c = Config::parse(
        &with("audit_interval_secs = 0\naudit_repair = false"),
        "x.toml",
    )
    .unwrap();
    assert_eq!(
        (c.server.audit_interval_secs, c.server.audit_repair),
        (0, false)
    );
    let e = Config::parse(&with("audit_entries_per_sec = 0"), "x.toml").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.reason.contains("audit_entries_per_sec"), "{e}");
    let e = Config::parse(&with("audit_interval_secs = 86401"), "x.toml").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.reason.contains("more than a day"), "{e}");
    let e = Config::parse(&with("audit_repair = 1"), "x.toml").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn parse_hex_refuses_what_is_not_hex_without_panicking() {
    assert_eq!(parse_hex("0a:0B-0c"), Ok(vec![0x0a, 0x0b, 0x0c]));
    assert_eq!(parse_hex("aabb"), Ok(vec![0xaa, 0xbb]));
    // Multi-byte characters used to be sliced mid-character (a panic),
    // and from_str_radix took a sign.
    for bad in [
        "0é0", "+f", "0a:+b", "é0", "0€", "éé", "", ":", "abc", "0x0a",
    ] {
        assert!(parse_hex(bad).is_err(), "{bad:?} accepted");
    }
    let e = refused(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
         [[subnet.reservation]]\nhw_address = \"02:00:00:00:0é0\"\nip = \"198.18.1.5\"\n",
    );
    assert_eq!(e.line, 8, "{e}");
    assert!(e.reason.contains("not hex"), "{e}");
    // At the refused option's own table (it was [options]'s line).
    let e = refused("[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"0€\"\n");
    assert_eq!(e.line, 6, "{e}");
    assert!(e.reason.contains("not hex"), "{e}");
}

#[test]
fn reservation_of_the_server_id_is_refused() {
    let e = refused(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\n\
         [[subnet.reservation]]\nhw_address = \"02:00:00:00:00:01\"\nip = \"198.18.0.1\"\n",
    );
    assert_eq!(e.line, 8, "{e}");
    assert!(
        e.reason.contains("reservation 198.18.0.1") && e.reason.contains("server_id"),
        "{e}"
    );
    // The same check for one added through the control API.
    let text = format!("{HEAD}[[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\n");
    let mut c = Config::parse(&text, "x.toml").unwrap();
    let written = Identity {
        hw_address: Some("02:00:00:00:00:01".into()),
        ..Identity::default()
    };
    c.subnets[0].reservations.push(
        Reservation::new(written, Ipv4Addr::new(198, 18, 0, 1), OptionSet::default()).unwrap(),
    );
    let e = c.validate_reservations().unwrap_err();
    assert!(e.contains("server_id"), "{e}");
}

#[test]
fn options_longer_than_255_bytes_are_refused() {
    let ips = |n: u32| {
        (0..n)
            .map(|i| format!("\"10.0.{}.{}\"", i / 250, i % 250 + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // 63 addresses are 252 bytes: fine.
    let text = format!("{HEAD}[options]\ndns_servers = [{}]\n", ips(63));
    Config::parse(&text, "x.toml").unwrap();
    let e = refused(&format!("[options]\ndns_servers = [{}]\n", ips(64)));
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.reason.contains("dns_servers") && e.reason.contains("256 bytes"),
        "{e}"
    );
    let e = refused(&format!(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = {{ routers = [{}] }}\n",
        ips(70)
    ));
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.reason.contains("routers") && e.reason.contains("280 bytes"),
        "{e}"
    );
    // 29 host routes of 9 bytes each: 261 bytes.
    let routes = (0..29)
        .map(|i| format!("{{ destination = \"10.1.0.{i}/32\", gateway = \"198.18.1.1\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let e = refused(&format!(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n[[subnet.pool]]\n\
         start = \"198.18.1.10\"\nend = \"198.18.1.20\"\noptions = {{ classless_routes = [{routes}] }}\n"
    ));
    assert_eq!(e.line, 8, "{e}");
    assert!(
        e.reason.contains("classless_routes") && e.reason.contains("261 bytes"),
        "{e}"
    );
}

#[test]
fn inherited_timers_beyond_the_lease_are_refused_where_they_meet() {
    // A subnet's shorter lease under global T1/T2 (line 9: [[subnet]]).
    let e = refused(
        "[options]\nlease_time = 3600\nrenewal_time = 1800\nrebinding_time = 3000\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { lease_time = 600 }\n",
    );
    assert_eq!((e.line, e.column), (9, 1), "{e}");
    assert!(e.reason.contains("subnet 198.18.1.0/24"), "{e}");
    assert!(
        e.reason.contains("renewal_time 1800 (from [options])")
            && e.reason.contains("lease_time 600 (from the subnet)"),
        "{e}"
    );
    // A pool's T2 under the subnet's T1.
    let e = refused(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { renewal_time = 900 }\n\
         [[subnet.pool]]\nstart = \"198.18.1.10\"\nend = \"198.18.1.20\"\n\
         options = { rebinding_time = 600 }\n",
    );
    assert_eq!(e.line, 9, "{e}");
    assert!(
        e.reason.contains("pool 198.18.1.10-198.18.1.20")
            && e.reason.contains("renewal_time 900 (from the subnet)")
            && e.reason.contains("rebinding_time 600 (from the pool)"),
        "{e}"
    );
    // A reservation's short lease under a pool-less subnet's T2.
    let e = refused(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { rebinding_time = 900 }\n\
         [[subnet.reservation]]\nhw_address = \"02:00:00:00:00:01\"\nip = \"198.18.1.5\"\n\
         options = { lease_time = 900 }\n",
    );
    assert_eq!(e.line, 9, "{e}");
    assert!(
        e.reason.contains("reservation 198.18.1.5")
            && e.reason.contains("rebinding_time 900 (from the subnet)")
            && e.reason.contains("lease_time 900 (from the reservation)"),
        "{e}"
    );
    // T1 beyond the default lease (3600 s), at the global level.
    let e = refused("[options]\nrenewal_time = 4000\n");
    assert_eq!(e.line, 5, "{e}");
    assert!(e.reason.contains("default lease_time 3600"), "{e}");
    // Explicit conflicts at one level are still reported at that level.
    let e = refused(
        "[options]\nlease_time = 600\n[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
         options = { renewal_time = 700, lease_time = 3600, rebinding_time = 600 }\n",
    );
    assert_eq!(e.line, 7, "{e}");
    assert!(
        e.reason
            .contains("renewal_time 700 must be below rebinding_time 600"),
        "{e}"
    );
    // Inherited values that fit are fine.
    let text = format!(
        "{HEAD}[options]\nlease_time = 30\nrenewal_time = 6\nrebinding_time = 8\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = {{ lease_time = 3600 }}\n"
    );
    Config::parse(&text, "x.toml").unwrap();
}

#[test]
fn custom_options_cannot_shadow_named_ones_or_repeat() {
    // A global custom option 3 used to replace a subnet's routers.
    let e = refused(
        "[options]\n[[options.option]]\ncode = 3\ntype = \"ips\"\nvalue = [\"10.0.0.1\"]\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\noptions = { routers = [\"198.18.1.1\"] }\n",
    );
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.reason.contains("option 3") && e.reason.contains("routers"),
        "{e}"
    );
    // And a custom option 1 the mask computed from the prefix.
    let e = refused(
        "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
         options = { option = [{ code = 1, type = \"ip\", value = \"255.0.0.0\" }] }\n",
    );
    assert_eq!(e.line, 5, "{e}");
    assert!(e.reason.contains("option 1"), "{e}");
    // The same code twice at one level: one of them was dropped.
    let e = refused(
        "[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"01\"\n\
         [[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"02\"\n",
    );
    assert_eq!(e.line, 5, "{e}");
    assert!(
        e.reason.contains("option 43") && e.reason.contains("twice"),
        "{e}"
    );
    // Overriding a custom option at a more specific level is fine.
    let text = format!(
        "{HEAD}[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"01\"\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
         options = {{ option = [{{ code = 43, type = \"hex\", value = \"02\" }}] }}\n"
    );
    Config::parse(&text, "x.toml").unwrap();
}

#[test]
fn logging_level_typos_are_refused() {
    for good in ["info", "debug", "xdhcp=debug", "warn,xdhcp=trace", "OFF"] {
        let text = format!("{HEAD}[logging]\nlevel = \"{good}\"\n");
        Config::parse(&text, "x.toml").unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    // tracing ignores a directive it cannot parse, and takes a bare
    // word for a target: either way next to nothing is logged.
    for bad in ["xdhcp=loud", "inof", "info,debgu", "xdhcp=", "=debug"] {
        let e = refused(&format!("[logging]\nlevel = \"{bad}\"\n"));
        assert_eq!(e.line, 6, "{bad}: {e}");
        assert!(e.reason.contains("logging.level"), "{e}");
    }
}

/// The reply fingerprint stored with the leases is computed over the
/// configuration's `Debug`: parsing a leaf once must leave what it shows
/// as the table it was written as, or an upgrade would see every reply
/// changed.
#[test]
fn checked_leaves_show_what_was_written() {
    let text = format!(
        "{HEAD}[[class]]\nname = \"k\"\nmatch = \"vlan == 7\"\n\
         [[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n\
         options = {{ option = [{{ code = 43, type = \"hex\", value = \"0a:0b\" }}] }}\n\
         [[subnet.reservation]]\ncircuit_id = \"c/1\"\ngiaddr = \"198.18.1.1\"\nip = \"198.18.1.5\"\n"
    );
    let c = Config::parse(&text, "x.toml").unwrap();
    assert_eq!(
        format!("{:?}", c.subnets[0].reservations[0]),
        "Reservation { hw_address: None, client_id: None, circuit_id: Some(\"c/1\"), \
         remote_id: None, subscriber_id: None, giaddr: Some(198.18.1.1), ip: 198.18.1.5, \
         options: OptionSet { lease_time: None, renewal_time: None, rebinding_time: None, \
         routers: None, dns_servers: None, domain_name: None, classless_routes: None, \
         hostname: None, domain_search: None, next_server: None, server_hostname: None, \
         boot_file_name: None, tftp_server: None, custom: [] } }"
    );
    assert_eq!(
        format!("{:?}", c.subnets[0].options.custom),
        "[CustomOption { code: 43, value: Hex(\"0a:0b\") }]"
    );
    assert_eq!(
        format!("{:?}", c.classes[0]).split(", options").next(),
        Some("ClientClass { name: \"k\", test: \"vlan == 7\"")
    );
    // And what they parse to.
    assert_eq!(
        c.subnets[0].reservations[0].id(),
        &ReservationId::RelayCircuit(Ipv4Addr::new(198, 18, 1, 1), b"c/1".to_vec())
    );
    assert_eq!(c.subnets[0].options.custom[0].encoded(), &[10, 11][..]);
    assert_eq!(c.classes[0].expr(), &Expr::parse("vlan == 7").unwrap());
}

#[test]
fn metrics_address_is_parsed_where_it_is_read() {
    let with = |v: &str| {
        format!("[server]\nserver_id = \"198.18.0.1\"\nmetrics_address = \"{v}\"\n[[interface]]\nname = \"srv0\"\n")
    };
    let c = Config::parse(HEAD, "x.toml").unwrap();
    assert_eq!(
        c.server.metrics_address,
        MetricsAddress::At("127.0.0.1:9167".parse().unwrap())
    );
    let c = Config::parse(&with("off"), "x.toml").unwrap();
    assert_eq!(c.server.metrics_address, MetricsAddress::Off);
    let c = Config::parse(&with("[::1]:9000"), "x.toml").unwrap();
    assert_eq!(
        c.server.metrics_address,
        MetricsAddress::At("[::1]:9000".parse().unwrap())
    );
    for bad in ["9167", "localhost:9167", "Off", ""] {
        let e = Config::parse(&with(bad), "x.toml").unwrap_err();
        assert_eq!(e.line, 3, "{bad}: {e}");
        assert!(
            e.reason.contains("metrics_address") && e.reason.contains("address:port"),
            "{e}"
        );
    }
}

#[test]
fn domain_search_is_encoded_once_and_refused_with_its_reason() {
    let c = Config::parse(
        &format!("{HEAD}[options]\ndomain_search = [\"lab.example\", \"example.\"]\n"),
        "x.toml",
    )
    .unwrap();
    let d = c.options.domain_search.as_ref().unwrap();
    assert_eq!(d.names(), ["lab.example", "example."]);
    assert_eq!(d.encoded(), &b"\x03lab\x07example\x00\x07example\x00"[..]);
    assert_eq!(format!("{d:?}"), "[\"lab.example\", \"example.\"]");
    // At the value (it was [options]'s line).
    let e = refused("[options]\ndomain_search = [\"a..b\"]\n");
    assert_eq!((e.line, e.column), (6, 17), "{e}");
    assert!(e.reason.contains("labels must be 1-63 bytes"), "{e}");
    let e = refused("[options]\ndomain_search = []\n");
    assert!(e.reason.contains("1-255 bytes in one option"), "{e}");
}

/// A leaf refused as it is read names its own table, not the first of its
/// array (serde's `try_from` alone would give the toml crate the span of
/// the whole array).
#[test]
fn a_refused_leaf_names_its_own_table() {
    let sub = "[[subnet]]\nid = 1\nsubnet = \"198.18.1.0/24\"\n";
    let res = |hw: &str, ip: u8| {
        format!("[[subnet.reservation]]\nhw_address = \"{hw}\"\nip = \"198.18.1.{ip}\"\n")
    };
    // The second of two reservations (line 11), and one in the second
    // subnet after a first with reservations of its own (line 17).
    let e = refused(&format!(
        "{sub}{}{}",
        res("02:00:00:00:00:01", 5),
        res("zz", 6)
    ));
    assert_eq!((e.line, e.column), (11, 1), "{e}");
    assert!(e.reason.starts_with("reservation 198.18.1.6: "), "{e}");
    let e = refused(&format!(
        "{sub}{}[[subnet]]\nid = 2\nsubnet = \"198.18.2.0/24\"\n\
         [[subnet.reservation]]\nclient_id = \"01\"\nip = \"198.18.2.5\"\n",
        res("02:00:00:00:00:01", 5)
    ));
    assert_eq!(e.line, 14, "{e}");
    assert!(
        e.reason.contains("client_id must be at least 2 bytes"),
        "{e}"
    );
    // Inline tables, one a line: the refused one's line.
    let e = refused(&format!(
        "{sub}reservation = [\n  {{ hw_address = \"02:00:00:00:00:01\", ip = \"198.18.1.5\" }},\n  \
         {{ remote_id = \"r\", giaddr = \"198.18.1.1\", ip = \"198.18.1.6\" }},\n]\n"
    ));
    assert_eq!((e.line, e.column), (10, 3), "{e}");
    assert!(e.reason.contains("giaddr goes with circuit_id"), "{e}");
    let e = refused(&format!(
        "{sub}[subnet.options]\noption = [\n  {{ code = 43, type = \"hex\", value = \"01\" }},\n  \
         {{ code = 44, type = \"hex\", value = \"0\" }},\n]\n"
    ));
    assert_eq!((e.line, e.column), (11, 3), "{e}");
    assert!(e.reason.contains("option 44: \"0\""), "{e}");
    // The second [[class]] (line 8), and a second [[options.option]].
    let e = refused(
        "[[class]]\nname = \"a\"\nmatch = 'vlan == 1'\n[[class]]\nname = \"b\"\nmatch = 'vlan =='\n",
    );
    assert_eq!(e.line, 8, "{e}");
    assert!(e.reason.starts_with("class \"b\": match: at column"), "{e}");
    let e = refused(
        "[options]\n[[options.option]]\ncode = 43\ntype = \"hex\"\nvalue = \"01\"\n\
         [[options.option]]\ncode = 44\ntype = \"hex\"\nvalue = \"xy\"\n",
    );
    assert_eq!(e.line, 10, "{e}");
    assert!(e.reason.contains("option 44"), "{e}");
}
