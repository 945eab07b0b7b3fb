//! `cargo xtask demo`: a two-host lab, `xdhcp serve` on the embedded
//! default config on one side, real and crafted DHCP traffic from the other,
//! then what each path saw.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use xdhcp_lab::{
    frame::{FrameSpec, TPID_8021AD, TPID_8021Q},
    proc::Logged,
    raw::RawSocket,
    Lab,
};

use crate::{cargo, run};

pub fn demo() -> Result<()> {
    run(cargo().args(["build", "-p", "xdhcp", "-p", "xdhcp-loadgen", "--bins"]))?;
    // xtask runs from target/debug too, so the lab finds the binaries there.
    let bin = xdhcp_lab::proc::xdhcp_bin();

    let mut lab = Lab::new("demo")?;
    let server = lab.netns("server")?;
    let client = lab.netns("client")?;
    lab.veth(
        &server,
        "srv0",
        Some("198.18.0.1/24"),
        &client,
        "cli0",
        None,
    )?;
    println!(
        "== lab {}: server srv0 198.18.0.1/24 <-- veth --> client cli0",
        lab.prefix()
    );

    let dir = std::env::temp_dir().join(lab.prefix());
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("leases.db");
    let mut daemon = Logged::spawn(
        &server,
        Command::new(&bin)
            .arg("serve")
            .arg("--lease-db")
            .arg(&db)
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .env("RUST_LOG", "info,xdhcp=debug"),
        Some("   server | "),
    )?;
    let outcome = (|| -> Result<()> {
        daemon.wait_for("xdhcp serving", Duration::from_secs(30))?;
        println!(
            "== server: XDP mode on srv0 = {}",
            server.xdp_mode("srv0")?.unwrap_or_else(|| "none".into())
        );

        // A veth delivers XDP_TX frames only to a peer running XDP; a real
        // NIC needs nothing of the sort.
        let _peer = Logged::spawn(
            &client,
            Command::new(xdhcp_lab::proc::loadgen_bin()).args(["lab-peer", "cli0"]),
            None,
        )?;
        _peer.wait_for("peer program attached", Duration::from_secs(20))?;

        println!("== client: ISC dhclient asks for a lease (DISCOVER, OFFER, REQUEST, ACK: the control plane)");
        let script = dir.join("dhclient.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\ncase \"$reason\" in BOUND|RENEW|REBIND) ip addr flush dev $interface; ip addr add $new_ip_address/$new_subnet_mask dev $interface; echo \"   client | $reason: $new_ip_address lease $new_dhcp_lease_time s from $new_dhcp_server_identifier\" >&2;; esac\nexit 0\n",
        )?;
        run(Command::new("chmod").arg("+x").arg(&script))?;
        let started = Instant::now();
        let dhclient = Logged::spawn(
            &client,
            Command::new("dhclient")
                .args(["-4", "-d", "-sf"])
                .arg(&script)
                .arg("-pf")
                .arg(dir.join("dhclient.pid"))
                .arg("-lf")
                .arg(dir.join("dhclient.leases"))
                .arg("cli0"),
            None,
        )?;
        let bound = dhclient
            .wait_for("client | BOUND:", Duration::from_secs(20))
            .context("dhclient got no lease")?;
        println!("{bound}");
        println!(
            "   lease obtained in {:.0} ms; cli0 now has {}",
            started.elapsed().as_secs_f64() * 1000.0,
            client
                .run(["ip", "-4", "-o", "addr", "show", "cli0"])?
                .split_whitespace()
                .nth(3)
                .unwrap_or("?")
        );

        println!(
            "== client: dhclient renews at T1 (5 s in the demo config): a REQUEST in RENEWING"
        );
        let acks_before = daemon.count("REQUEST -> ACK");
        let renew = dhclient
            .wait_for("client | RENEW:", Duration::from_secs(15))
            .context("dhclient's renewal got no answer")?;
        println!("{renew}");
        daemon
            .wait_for("renewed by the XDP program", Duration::from_secs(5))
            .context("the renewal was not the XDP program's")?;
        println!(
            "   answered by the XDP program with XDP_TX; control-plane ACKs before {} after {} (it only stored the new expiry)",
            acks_before,
            daemon.count("REQUEST -> ACK")
        );
        dhclient.signal(15);
        drop(dhclient);

        println!(
            "== client: DISCOVERs tagged 802.1Q 100 and QinQ 100/200 (no VLAN interfaces anywhere)"
        );
        let sock = RawSocket::open(&client, "cli0")?;
        let mac = client.mac("cli0")?;
        for tags in [
            vec![(TPID_8021Q, 100)],
            vec![(TPID_8021AD, 100), (TPID_8021Q, 200)],
        ] {
            let mut d = FrameSpec::dhcp_request(mac, 1);
            d.tags = tags.clone();
            sock.send(&d.build())?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let Some(f) = sock.recv(Duration::from_millis(200))? else {
                    continue;
                };
                // An OFFER: UDP 67->68 behind the same tags.
                let l3 = 14 + 4 * tags.len();
                if f.len() > l3 + 28 + 20 && f[l3 + 20..l3 + 24] == [0, 67, 0, 68] {
                    let yiaddr = &f[l3 + 28 + 16..l3 + 28 + 20];
                    let vids: Vec<u16> = (0..tags.len())
                        .map(|i| u16::from_be_bytes([f[14 + 4 * i], f[15 + 4 * i]]) & 0xfff)
                        .collect();
                    println!(
                        "   OFFER {}.{}.{}.{} came back tagged {vids:?}",
                        yiaddr[0], yiaddr[1], yiaddr[2], yiaddr[3]
                    );
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    })();

    daemon.signal(2);
    let status = daemon.wait(Duration::from_secs(10))?;
    outcome?;
    println!(
        "== server exited ({status}); XDP on srv0 afterwards: {}",
        server
            .xdp_mode("srv0")?
            .unwrap_or_else(|| "none (detached)".into())
    );
    let _ = std::fs::remove_dir_all(&dir);
    let lines = daemon.lines();
    if let Some(cp) = lines.iter().find(|l| l.contains("control plane: received")) {
        if let Some((_, rest)) = cp.split_once("control plane: ") {
            println!("== summary: control plane {rest}");
        }
    }
    if let Some(counters) = lines.iter().find(|l| l.contains("xdp counters")) {
        println!("== the XDP program counted (fp_ack_*: answered in the kernel; pass_*: handed to the control plane, by reason):");
        if let Some((_, kv)) = counters.split_once("xdp counters: ") {
            for pair in kv.split_whitespace().filter(|p| !p.ends_with("=0")) {
                println!("     {pair}");
            }
        }
    }
    if !status.success() {
        bail!("xdhcp serve exited with {status}");
    }
    Ok(())
}
