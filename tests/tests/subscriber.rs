//! Subscriber-aware serving with real clients in the netns lab: a PXE boot
//! (option 93 in, next-server and boot file out, the file fetched with
//! tftp-hpa from a TFTP server on the next-server address), classes by
//! vendor class with udhcpc and dhclient, and relay-identity reservations
//! through a relay (a replaced CPE keeps its line's address).

use std::{net::Ipv4Addr, process::Command, time::Duration};

use xdhcp_lab::{
    daemon::{read_lines, wait_until, DaemonLab},
    dhcp::{RelayClient, ACK},
    proc::Logged,
};

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[interface]]
name = "srv0"

[options]
lease_time = 600
dns_servers = ["198.18.0.53"]

[[class]]
name = "uefi"
match = "client_arch == 7 or client_arch == 9"
options = { next_server = "198.18.0.1", boot_file_name = "uefi/grubx64.efi", tftp_server = "198.18.0.1" }

[[class]]
name = "bios"
match = "client_arch == 0"
options = { next_server = "198.18.0.1", boot_file_name = "bios/pxelinux.0" }

[[class]]
name = "acme"
match = 'vendor_class starts_with "acme"'
options = { domain_name = "acme.test", hostname = "acme-cpe" }

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.109"
client_classes = ["acme"]
[[subnet.pool]]
start = "198.18.0.120"
end = "198.18.0.150"

[[subnet]]
id = 3
subnet = "198.18.3.0/24"
[[subnet.pool]]
start = "198.18.3.10"
end = "198.18.3.250"
[[subnet.reservation]]
circuit_id = "olt1/1/3"
ip = "198.18.3.77"
options = { hostname = "line-1-3" }
"#;

/// The first hook event of `kind` ("bound", ...), its fields.
fn event(lab: &DaemonLab, kind: &str) -> Vec<String> {
    let ev = lab.dir.join("events");
    wait_until(Duration::from_secs(20), || {
        read_lines(&ev)
            .into_iter()
            .find(|l| l.starts_with(kind))
            .map(|l| l.split(' ').map(str::to_string).collect())
    })
    .unwrap_or_else(|| panic!("no {kind} event: {:?}", read_lines(&ev)))
}

fn udhcpc(lab: &DaemonLab, fields: &str, args: &[&str]) -> Logged {
    let script = lab
        .script(
            "hook.sh",
            &format!(
                "#!/bin/sh\necho \"$1 $ip {fields}\" >> {ev}\ncase \"$1\" in\n bound|renew) ip addr flush dev $interface; ip addr add $ip/$subnet dev $interface ;;\n deconfig) ip addr flush dev $interface ;;\nesac\n",
                ev = lab.dir.join("events").display()
            ),
        )
        .unwrap();
    Logged::spawn(
        &lab.cli,
        Command::new("busybox")
            .args(["udhcpc", "-f", "-i", "cli0", "-t", "5", "-T", "1", "-s"])
            .arg(&script)
            .args(args),
        None,
    )
    .unwrap()
}

#[test]
fn a_pxe_client_gets_its_architecture_boot_file_and_fetches_it_over_tftp() {
    let mut lab = DaemonLab::new("pxe", CONFIG, None).unwrap();
    // The TFTP server's files, and the server itself on next-server.
    let root = lab.dir.join("tftp");
    for (f, body) in [
        ("uefi/grubx64.efi", "uefi boot image\n"),
        ("bios/pxelinux.0", "bios boot image\n"),
    ] {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    let _tftpd = Logged::spawn(
        &lab.srv,
        Command::new("in.tftpd")
            .args(["--foreground", "--listen", "--user", "root"])
            .args(["--address", "198.18.0.1:69", "--secure"])
            .arg(&root),
        None,
    )
    .unwrap();
    // Listening before anything asks it (the fetch below gets an empty
    // file, and tftp exits 0, from a server not yet bound).
    let listening = wait_until(Duration::from_secs(5), || {
        let out = lab
            .srv
            .command_from(Command::new("ss").args(["-Hlun", "sport = :69"]))
            .output()
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    });
    assert!(listening.is_some(), "in.tftpd is not listening on :69");
    lab.start().unwrap();
    // UEFI x86-64 (option 93 = 7), asking for options 66 and 67.
    let client = udhcpc(
        &lab,
        "$siaddr $boot_file $bootfile $tftp",
        &["-x", "0x5d:0007", "-O", "bootfile", "-O", "tftp"],
    );
    let bound = event(&lab, "bound");
    drop(client);
    assert_eq!(
        bound[2..],
        [
            "198.18.0.1",
            "uefi/grubx64.efi",
            "uefi/grubx64.efi",
            "198.18.0.1"
        ],
        "{bound:?}"
    );
    assert!(bound[1].starts_with("198.18.0.12"), "open pool: {bound:?}");
    // The real TFTP client fetches that file from next-server.
    let got = lab.dir.join("fetched");
    let out = lab
        .cli
        .command_from(
            Command::new("tftp")
                .args(["-m", "binary", &bound[2], "-c", "get", &bound[3]])
                .arg(&got),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "tftp: {out:?}");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "uefi boot image\n");
    // BIOS (option 93 = 0) gets the other file.
    std::fs::remove_file(lab.dir.join("events")).unwrap();
    let client = udhcpc(&lab, "$siaddr $boot_file", &["-x", "0x5d:0000"]);
    let bound = event(&lab, "bound");
    drop(client);
    assert_eq!(bound[2..], ["198.18.0.1", "bios/pxelinux.0"], "{bound:?}");
}

#[test]
fn vendor_class_clients_get_their_class_pool_and_options() {
    let mut lab = DaemonLab::new("vclass", CONFIG, None).unwrap();
    lab.start().unwrap();
    // udhcpc -V sets option 60.
    let client = udhcpc(
        &lab,
        "$domain $hostname",
        &["-V", "acme-router", "-O", "hostname"],
    );
    let bound = event(&lab, "bound");
    drop(client);
    assert!(bound[1].starts_with("198.18.0.10"), "class pool: {bound:?}");
    assert_eq!(bound[2..], ["acme.test", "acme-cpe"], "{bound:?}");
    // dhclient with vendor-class-identifier.
    let conf = lab
        .script(
            "dhclient.conf",
            "send vendor-class-identifier \"acme-dhclient\";\nrequest subnet-mask, routers, domain-name, host-name;\n",
        )
        .unwrap();
    let lease = lab.dir.join("dhclient.leases");
    let out = lab
        .cli
        .command_from(
            Command::new("timeout")
                .args(["30", "dhclient", "-1", "-v", "-cf"])
                .arg(&conf)
                .arg("-lf")
                .arg(&lease)
                .arg("-pf")
                .arg(lab.dir.join("dhclient.pid"))
                .args(["-sf", "/bin/true", "cli0"]),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "dhclient: {out:?}");
    let text = std::fs::read_to_string(&lease).unwrap();
    assert!(text.contains("fixed-address 198.18.0.10"), "{text}");
    assert!(text.contains("option domain-name \"acme.test\""), "{text}");
    assert!(text.contains("option host-name \"acme-cpe\""), "{text}");
    let _ = lab.cli.run([
        "sh",
        "-c",
        &format!(
            "kill $(cat {}) 2>/dev/null; true",
            lab.dir.join("dhclient.pid").display()
        ),
    ]);
    // And without the vendor class: the open pool, no class options.
    std::fs::remove_file(lab.dir.join("events")).unwrap();
    let client = udhcpc(&lab, "$domain.", &[]);
    let bound = event(&lab, "bound");
    drop(client);
    assert!(bound[1].starts_with("198.18.0.12"), "open pool: {bound:?}");
    assert_eq!(bound[2], ".", "{bound:?}");
    // A reload that changes the class: its clients get the new options.
    let text = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(&lab.config, text.replace("\"acme.test\"", "\"acme2.test\"")).unwrap();
    let (code, out) = lab.cli(&["reload"]).unwrap();
    assert_eq!(code, 0, "{out}");
    std::fs::remove_file(lab.dir.join("events")).unwrap();
    let client = udhcpc(&lab, "$domain", &["-V", "acme-router"]);
    let bound = event(&lab, "bound");
    drop(client);
    assert_eq!(bound[2..], ["acme2.test"], "{bound:?}");
}

#[test]
fn relayed_requests_with_a_reserved_circuit_id_get_its_address_whatever_the_cpe() {
    let mut lab = DaemonLab::new("circuit", CONFIG, Some("198.18.0.2/24")).unwrap();
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
    let line = [1u8, 8, b'o', b'l', b't', b'1', b'/', b'1', b'/', b'3'].to_vec();
    let t = Duration::from_secs(3);
    let ack = relay
        .dora([2, 0, 0, 0, 3, 1], 0x100, &[(82, line.clone())], t)
        .unwrap()
        .expect("DORA through the relay");
    assert_eq!(ack.msg_type(), Some(ACK));
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(198, 18, 3, 77));
    assert_eq!(ack.option(12), Some(b"line-1-3".to_vec()));
    // Another port: a pool address.
    let other = [1u8, 8, b'o', b'l', b't', b'1', b'/', b'1', b'/', b'4'].to_vec();
    let ack = relay
        .dora([2, 0, 0, 0, 3, 2], 0x200, &[(82, other)], t)
        .unwrap()
        .expect("DORA on another port");
    assert_ne!(ack.yiaddr(), Ipv4Addr::new(198, 18, 3, 77));
    // The CPE on olt1/1/3 replaced: the new one gets the line's address (a
    // DISCOVER or two while the old binding is taken back).
    let ack = wait_until(Duration::from_secs(20), || {
        relay
            .dora(
                [2, 0, 0, 0, 3, 9],
                0x300,
                &[(82, line.clone())],
                Duration::from_secs(1),
            )
            .unwrap()
    })
    .expect("the replaced CPE is served");
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(198, 18, 3, 77));
    // A line reserved through the control API (this relay's circuit only).
    let (code, out) = lab
        .cli(&[
            "reservations",
            "add",
            "198.18.3.78",
            "circuit-id=olt1/1/5",
            "--giaddr",
            "198.18.3.1",
        ])
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let (_, list) = lab.cli(&["reservations", "list"]).unwrap();
    assert!(list.contains("circuit-id=olt1/1/5@198.18.3.1"), "{list}");
    let five = [1u8, 8, b'o', b'l', b't', b'1', b'/', b'1', b'/', b'5'].to_vec();
    let ack = relay
        .dora([2, 0, 0, 0, 3, 5], 0x400, &[(82, five)], t)
        .unwrap()
        .expect("DORA on the API-reserved line");
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(198, 18, 3, 78));
}
