//! `cargo xtask demo`: a two-host lab, `xdhcp serve` on the embedded
//! default config on one side, real and crafted DHCP traffic from the other,
//! then what each path saw.

use std::{
    process::{Command, Stdio},
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
    run(cargo().args(["build", "-p", "xdhcp", "--bins"]))?;
    // xtask runs from target/debug too, so the lab finds the binary there.
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

    let mut daemon = Logged::spawn(
        &server,
        Command::new(&bin).arg("serve"),
        Some("   server | "),
    )?;
    let outcome = (|| -> Result<()> {
        daemon.wait_for("xdhcp serving", Duration::from_secs(30))?;
        println!(
            "== server: XDP mode on srv0 = {}",
            server.xdp_mode("srv0")?.unwrap_or_else(|| "none".into())
        );

        println!("== client: busybox udhcpc sends DISCOVERs (no OFFER yet: the control plane's state machine comes next)");
        let started = Instant::now();
        let _ = client
            .command_from(Command::new("busybox").args([
                "udhcpc",
                "-i",
                "cli0",
                "-n",
                "-q",
                "-t",
                "2",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running busybox udhcpc")?;
        println!(
            "   udhcpc gave up after {:.1} s",
            started.elapsed().as_secs_f64()
        );

        println!(
            "== client: one DISCOVER tagged 802.1Q vid 100, one QinQ 100/200, one ARP (raw frames)"
        );
        let sock = RawSocket::open(&client, "cli0")?;
        let mac = client.mac("cli0")?;
        let mut tagged = FrameSpec::dhcp_request(mac, 1);
        tagged.tags = vec![(TPID_8021Q, 100)];
        sock.send(&tagged.build())?;
        tagged.tags = vec![(TPID_8021AD, 100), (TPID_8021Q, 200)];
        sock.send(&tagged.build())?;
        let arp = FrameSpec {
            ethertype: xdhcp_lab::frame::ETH_P_ARP,
            src_mac: mac,
            payload: vec![0; 28],
            ..Default::default()
        };
        sock.send(&arp.build())?;
        std::thread::sleep(Duration::from_millis(500));
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
    let lines = daemon.lines();
    let received = lines.iter().filter(|l| l.contains(": received ")).count();
    if let Some(counters) = lines.iter().find(|l| l.contains("xdp counters")) {
        println!("== summary: the control plane received {received} DHCP messages; the XDP program counted:");
        if let Some((_, kv)) = counters.split_once("xdp counters: ") {
            for pair in kv.split_whitespace() {
                println!("     {pair}");
            }
        }
    }
    if !status.success() {
        bail!("xdhcp serve exited with {status}");
    }
    Ok(())
}
