//! What `xdhcp leases audit` costs on N bindings (default 1,000,000): the
//! daemon's own auditor (`xdhcp::daemon::auditor`), its reader thread on a second
//! handle of a real XDP lease map holding N entries, and the main-task
//! side run the way `serve` runs it (a chunk per wake-up of a
//! current-thread runtime), against the control plane's leases in an
//! `Engine` opened on a store of N Bound fast-path leases. Reports the
//! wall time of one full-speed pass, the longest the main task was held
//! in one go (what serving waits for at most), and the same with a few
//! planted disagreements (their confirmation: drain, re-read, re-check).
//! Then a background pass at the default pace, and the kernel's view of
//! every lease as `xdhcp leases list` reads it (the whole map once).
//!
//! The synthetic leases use 100.64.0.0/10 (RFC 6598): 1,000,000 addresses
//! do not fit 198.18.0.0/15. No frame is sent: the program is loaded,
//! never attached.
//!
//! `cargo run --release -p xdhcp --example audit_cost -- [N]`

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use dhcp_common::{LeaseKey, LeaseValue};
use serde_json::Value;
use xdhcp::{
    api::control::Response,
    config::Config,
    daemon::auditor::{Auditor, Reading, Settings},
    daemon::engine::{reply_config_fingerprint, Engine, Overrides},
    daemon::serve::unix_now,
    lease::{hw_key, FastReply, Lease, LeaseState},
    store::{LeaseStore, MemoryStore, StoreOp},
    xdp::loader::Fastpath,
    xdp::map_sync::{lease_key, unix_to_mono_ns, FastIface, FastMaps},
};

fn mac(i: u32) -> [u8; 6] {
    [
        0x02,
        0x21,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ]
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 10)) + i)
}

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
audit_interval_secs = 0
audit_repair = false

[[interface]]
name = "lo"

[options]
lease_time = 3600

[[subnet]]
id = 1
subnet = "100.64.0.0/10"
interface = "lo"
[[subnet.pool]]
start = "100.64.0.10"
end = "100.127.255.250"
"#;

/// Drives `auditor` as `serve` does until `rx` answers; returns the
/// answer and how long it took.
async fn drive(
    auditor: &mut Auditor,
    audit_rx: &mut tokio::sync::mpsc::Receiver<Reading>,
    engine: &mut Engine,
    mut answer: Option<tokio::sync::oneshot::Receiver<Response>>,
) -> (Option<Response>, Duration) {
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            Some(r) = audit_rx.recv() => { auditor.on_reading(r, engine); }
            _ = std::future::ready(()), if auditor.has_step() => { auditor.step(engine); }
            _ = tick.tick() => { auditor.poll(engine); }
            r = async { answer.as_mut().unwrap().await }, if answer.is_some() => {
                return (r.ok(), t0.elapsed());
            }
        }
        if answer.is_none() && auditor.due().is_some() {
            return (None, t0.elapsed());
        }
    }
}

fn line(what: &str, r: &Response, took: Duration) {
    let a = &r.arguments;
    println!(
        "{what:<44} {:>8.2} s   main task: {} ms CPU, longest step {} us ({} us CPU)   {} entries, {} bound fast-path, result {} ({})",
        took.as_secs_f64(),
        a["main-task-cpu-ms"],
        a["longest-step-us"],
        a["longest-step-cpu-us"],
        a["map-entries"],
        a["store-fast-path-bindings"],
        r.result,
        r.text
    );
}

fn main() -> Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |s| s.parse())?;
    let config = Config::parse(CONFIG, "audit_cost")?;
    let mut fp = Fastpath::load_sized(false, n + 1024)?;
    let mut maps = FastMaps::new(
        &mut fp,
        &[FastIface {
            name: "lo".into(),
            ifindex: 1,
            mac: [2, 0, 0x5e, 0, 0, 1],
        }],
        config.server.server_id,
    )?;
    let fast = Arc::new(FastReply {
        offerable: false,
        rapid: false,
        iface: "lo".into(),
        outer_vlan: 0,
        inner_vlan: 0,
        giaddr: Ipv4Addr::UNSPECIFIED,
        prl_len: 6,
        shape_hash: dhcp_common::shape_hash(&[1, 3, 6, 15, 28], &[]),
        max_message_size: 0,
        client_id_len: 0,
        relay_info_len: 0,
        template: vec![53, 1, 5, 54, 4, 198, 18, 0, 1, 51, 4, 0, 0, 14, 16].into(),
    });
    let expires = unix_now() + 1800;
    let mut store = MemoryStore::default();
    store.apply(&[StoreOp::Meta(
        "reply_config",
        reply_config_fingerprint(&config),
    )])?;
    for i in 0..n {
        let mut hw = vec![1u8];
        hw.extend_from_slice(&mac(i));
        let l = Lease {
            ip: ip(i),
            client: Some(hw_key(1, &mac(i))),
            hw: hw.into_boxed_slice(),
            subnet_id: 1,
            state: LeaseState::Bound,
            expires,
            lease_secs: 3600,
            fast: Some(fast.clone()),
            relay: None,
        };
        store.leases.insert(l.ip, l);
    }
    let t0 = Instant::now();
    let mut engine = Engine::start(
        &mut store,
        config.clone(),
        None,
        Overrides::default(),
        unix_now(),
    )?;
    drop(store);
    let loaded = engine.load_map(&mut maps);
    ensure!(
        loaded == n as usize,
        "only {loaded} of {n} bindings in the map"
    );
    println!(
        "{n} bindings: leases opened and the map loaded in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The main-task pieces alone, in this thread's CPU time (the machine
    // may be shared): collecting the addresses of the store's side, and
    // one step of each side.
    let cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let c0 = cpu();
    let ips: Vec<Ipv4Addr> = engine
        .server
        .leases
        .iter()
        .filter(|l| l.state == LeaseState::Bound && l.fast.is_some())
        .map(|l| l.ip)
        .collect();
    println!(
        "{:<44} {:>8.2} ms CPU ({} addresses)",
        "collecting the store side's addresses",
        (cpu() - c0).as_secs_f64() * 1e3,
        ips.len()
    );
    drop(ips);
    let reader = Arc::new(maps.reader()?);
    let t0 = Instant::now();
    let all = reader.entries()?;
    println!(
        "{:<44} {:>8.2} s   ({} entries; BPF_MAP_LOOKUP_BATCH, {} a call)",
        "the whole map read once (leases list)",
        t0.elapsed().as_secs_f64(),
        all.len(),
        xdhcp::xdp::map_sync::READ_CHUNK
    );
    ensure!(all.len() == n as usize);
    drop(all);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = Settings::from_config(&config.server);
    let (mut auditor, mut audit_rx) = Auditor::spawn(reader, maps.eligibility(), settings)?;
    rt.block_on(async {
        for round in 1..=2 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            auditor.request(tx, false, &mut engine);
            let (r, took) = drive(&mut auditor, &mut audit_rx, &mut engine, Some(rx)).await;
            let r = r.expect("answered");
            line(&format!("leases audit, clean (run {round})"), &r, took);
            assert_eq!(r.result, 0, "{}", r.text);
        }
        Ok::<_, anyhow::Error>(())
    })?;

    // Plant: 50 entries for no lease, 50 leases' entries gone.
    let mut v: LeaseValue = bytemuck::Zeroable::zeroed();
    v.expires_mono_ns = unix_to_mono_ns(unix_now() + 600);
    v.reported_mono_ns = v.expires_mono_ns;
    v.subnet_id = 1;
    v.lease_secs = 3600;
    for i in 0..50u32 {
        let mut k = lease_key(&hw_key(1, &mac(n + 10 + i))).unwrap();
        k._pad = [0; 2];
        v.ip = u32::from_ne_bytes(ip(n + 10 + i).octets());
        maps.raw_insert(k, v)?;
        let gone: LeaseKey = lease_key(&hw_key(1, &mac(i * 7))).unwrap();
        maps.raw_remove(&gone)?;
    }
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        auditor.request(tx, false, &mut engine);
        let (r, took) = drive(&mut auditor, &mut audit_rx, &mut engine, Some(rx)).await;
        let r = r.expect("answered");
        line("leases audit, 100 planted disagreements", &r, took);
        let kinds: Vec<&str> = r.arguments["current"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        assert_eq!(r.result, 4, "{}", r.text);
        assert_eq!(kinds.iter().filter(|k| **k == "no_lease").count(), 50);
        assert_eq!(kinds.iter().filter(|k| **k == "missing").count(), 50);

        // The background pace (audit_entries_per_sec default).
        let mut bg = Config::parse(
            &CONFIG.replace("audit_interval_secs = 0", "audit_interval_secs = 1"),
            "audit_cost",
        )?
        .server;
        bg.audit_repair = false;
        auditor.set_settings(Settings::from_config(&bg));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        auditor.poll(&mut engine);
        let t0 = Instant::now();
        loop {
            tokio::select! {
                Some(r) = audit_rx.recv() => { auditor.on_reading(r, &mut engine); }
                _ = std::future::ready(()), if auditor.has_step() => { auditor.step(&mut engine); }
                _ = tokio::time::sleep(Duration::from_millis(100)) => { auditor.poll(&mut engine); }
            }
            if auditor.due().is_some() {
                break;
            }
        }
        let st = auditor.status_json();
        let last: &Value = &st["last-pass"];
        println!(
            "{:<44} {:>8.2} s   main task: {} ms CPU, longest step {} us ({} us CPU)   ({} entries/s; {} disagreements)",
            "background pass at the default pace",
            t0.elapsed().as_secs_f64(),
            last["main-task-cpu-ms"],
            last["longest-step-us"],
            last["longest-step-cpu-us"],
            bg.audit_entries_per_sec,
            last["disagreements"],
        );
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
