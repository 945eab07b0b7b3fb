//! `cargo xtask demo`: a two-host lab, `xdhcp serve` on the embedded
//! default config on one side, real and crafted DHCP traffic from the other,
//! then what each path saw.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dhcp_common::layout::{msg, udp, DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use xdhcp_lab::{
    dhcp::ReplyView,
    frame::{FrameSpec, TPID_8021AD, TPID_8021Q},
    mutate::Parts,
    proc::Logged,
    raw::RawSocket,
    Lab, Netns,
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

        dhclient_dora_and_renewal(&client, &daemon, &dir)?;
        tagged_discovers(&client)?;
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
    summary(&daemon.lines());
    if !status.success() {
        bail!("xdhcp serve exited with {status}");
    }
    Ok(())
}

/// ISC dhclient's DORA (the control plane), then its renewal at T1, which
/// the XDP program answers.
fn dhclient_dora_and_renewal(client: &Netns, daemon: &Logged, dir: &Path) -> Result<()> {
    println!("== client: ISC dhclient asks for a lease (DISCOVER, OFFER, REQUEST, ACK: the control plane)");
    let script = dir.join("dhclient.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$reason\" in BOUND|RENEW|REBIND) ip addr flush dev $interface; ip addr add $new_ip_address/$new_subnet_mask dev $interface; echo \"   client | $reason: $new_ip_address lease $new_dhcp_lease_time s from $new_dhcp_server_identifier\" >&2;; esac\nexit 0\n",
    )?;
    run(Command::new("chmod").arg("+x").arg(&script))?;
    let started = Instant::now();
    let dhclient = Logged::spawn(
        client,
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

    println!("== client: dhclient renews at T1 (5 s in the demo config): a REQUEST in RENEWING");
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
    Ok(())
}

/// DISCOVERs behind an 802.1Q tag and a QinQ pair, with no VLAN interface
/// anywhere: the OFFERs come back behind the same tags.
fn tagged_discovers(client: &Netns) -> Result<()> {
    println!(
        "== client: DISCOVERs tagged 802.1Q 100 and QinQ 100/200 (no VLAN interfaces anywhere)"
    );
    let sock = RawSocket::open(client, "cli0")?;
    let mac = client.mac("cli0")?;
    for tags in [
        vec![(TPID_8021Q, 100)],
        vec![(TPID_8021AD, 100), (TPID_8021Q, 200)],
    ] {
        let mut d = FrameSpec::dhcp_request(mac, msg::DISCOVER);
        d.tags = tags.clone();
        sock.send(&d.build())?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Some(f) = sock.recv(Duration::from_millis(200))? else {
                continue;
            };
            let Some((vids, offer)) = offer_behind_tags(&f) else {
                continue;
            };
            if vids.len() == tags.len() {
                println!("   OFFER {} came back tagged {vids:?}", offer.yiaddr());
                break;
            }
        }
    }
    Ok(())
}

/// A frame's VLAN ids and its OFFER, if it is one (UDP 67 to 68).
fn offer_behind_tags(frame: &[u8]) -> Option<(Vec<u16>, ReplyView)> {
    let p = Parts::split(frame)?;
    let port = |r: std::ops::Range<usize>| u16::from_be_bytes(p.udp[r].try_into().unwrap());
    if port(udp::SRC_PORT) != DHCP_SERVER_PORT || port(udp::DST_PORT) != DHCP_CLIENT_PORT {
        return None;
    }
    let offer = ReplyView::parse(&p.payload).ok()?;
    if offer.msg_type() != Some(msg::OFFER) {
        return None;
    }
    let vids = p
        .tags
        .iter()
        .map(|t| u16::from_be_bytes([t[2], t[3]]) & 0xfff)
        .collect();
    Some((vids, offer))
}

/// What each path saw, from the daemon's last log lines.
fn summary(lines: &[String]) {
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
}
