//! `cargo xtask demo`: a two-host lab, `xdhcp serve` on the embedded
//! default config on one side, real and crafted DHCP traffic from the other,
//! then what each path saw.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use xdhcp_lab::{
    frame::{FrameSpec, TPID_8021AD, TPID_8021Q},
    raw::RawSocket,
    Lab,
};

use crate::{cargo, root_dir, run};

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root_dir().join("target"))
}

pub fn demo() -> Result<()> {
    run(cargo().args(["build", "-p", "xdhcp", "--bins"]))?;
    let bin = target_dir().join("debug/xdhcp");

    let mut lab = Lab::new("demo")?;
    let server = lab.netns("server")?;
    let client = lab.netns("client")?;
    lab.veth(&server, "srv0", Some("198.18.0.1/24"), &client, "cli0", None)?;
    println!("== lab {}: server srv0 198.18.0.1/24 <-- veth --> client cli0", lab.prefix());

    let mut daemon = server
        .command_from(Command::new(&bin).arg("serve"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting xdhcp serve")?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = {
        let stderr = daemon.stderr.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("   server | {line}");
                if line.contains("xdhcp serving") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        })
    };
    let pid = daemon.id();
    let outcome = (|| -> Result<()> {
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            bail!("xdhcp serve did not come up within 30 s");
        }
        println!(
            "== server: XDP mode on srv0 = {}",
            server.xdp_mode("srv0")?.unwrap_or_else(|| "none".into())
        );

        println!("== client: busybox udhcpc sends DISCOVERs (no OFFER yet: the control plane's state machine comes next)");
        let started = Instant::now();
        let _ = client
            .command_from(Command::new("busybox").args(["udhcpc", "-i", "cli0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true"]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running busybox udhcpc")?;
        println!("   udhcpc gave up after {:.1} s", started.elapsed().as_secs_f64());

        println!("== client: one DISCOVER tagged 802.1Q vid 100, one QinQ 100/200, one ARP (raw frames)");
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

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc_kill(pid as i32, 2) };
    let status = daemon.wait()?;
    let _ = reader.join();
    outcome?;
    println!("== server exited ({status}); XDP on srv0 afterwards: {}",
        server.xdp_mode("srv0")?.unwrap_or_else(|| "none (detached)".into()));
    let lines = lines.lock().unwrap();
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

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
