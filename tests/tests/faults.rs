//! Store faults under the real daemon, in the netns lab: a full disk
//! (size-limited tmpfs), I/O errors and a clearable read-only filesystem
//! (a FUSE passthrough that fails on demand: this kernel has no
//! device-mapper), the kernel turning the filesystem read-only under the
//! daemon (ext4 errors=remount-ro), a corrupt database at start, and a
//! kill -9 loop under mixed load.
//!
//! In each fault: no ACK leaves for a lease that is not durable (counted
//! at the clients), the daemon stays up and says why (status, metrics,
//! log), retries, and recovers when the fault clears; nothing a client was
//! ACKed is lost.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp::{
    config::DbSync,
    lease::LeaseState,
    store::{LeaseStore, SqliteStore},
};
use xdhcp_lab::{
    churn::{self, Churn, StoredLease},
    daemon::{wait_until, DaemonLab},
    dhcp::RelayClient,
    faultfs::{Fault, FaultFs},
    mounts::Mount,
    proc::{xdhcp_bin, Logged},
};

/// One test of this file at a time: a mount made by one would be copied
/// into the mount namespace of every daemon another starts meanwhile
/// (`ip netns exec` copies the whole tree), and held there.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
const METRICS: &str = "127.0.0.1:9187";

/// Relayed clients (the relay is the client namespace, 198.18.0.2) in
/// subnet 64; `@DB@` is where the test puts the store.
const RELAYED: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
metrics_address = "127.0.0.1:9187"

[[interface]]
name = "srv0"

[options]
lease_time = 3600

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.150"

[[subnet]]
id = 64
subnet = "198.18.64.0/18"
relays = ["198.18.0.2"]
[[subnet.pool]]
start = "198.18.64.10"
end = "198.18.127.250"
"#;

/// The lab's daemon keeps its store at `db` (on whatever the test
/// mounted there).
fn use_store(lab: &DaemonLab, db: &Path) {
    std::fs::write(
        &lab.config,
        RELAYED.replace("@DB@", &db.display().to_string()),
    )
    .unwrap();
}

fn relay(lab: &DaemonLab) -> RelayClient {
    lab.cli
        .enter(|| {
            RelayClient::open_here(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 1))
        })
        .unwrap()
        .unwrap()
}

/// A place for a mount, outside the lab directory (which the lab removes
/// while it may still be mounted). The lab is made first, the mount then
/// (so only the daemon's mount namespace, made at its start, has it), and
/// the daemon stops before it goes: `slot` outlives the lab.
fn mount_point(lab: &DaemonLab, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{what}", lab.lab.prefix()))
}

fn relayed_mac(i: u32) -> [u8; 6] {
    [2, 0x46, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// The clients' side of the test: DORAs through the relay, and every ACK
/// they got.
struct Clients {
    relay: RelayClient,
    next: u32,
    acked: HashMap<[u8; 6], Ipv4Addr>,
}

impl Clients {
    fn new(lab: &DaemonLab) -> Clients {
        Clients {
            relay: relay(lab),
            next: 1,
            acked: HashMap::new(),
        }
    }

    /// One DORA of a new client; whether it was ACKed.
    fn dora(&mut self) -> bool {
        let i = self.next;
        self.next += 1;
        let mac = relayed_mac(i);
        match self
            .relay
            .dora(mac, 0x5100_0000 | i, &[], Duration::from_millis(300))
            .unwrap()
        {
            Some(ack) => {
                assert!(
                    self.acked.insert(mac, ack.yiaddr()).is_none(),
                    "{mac:02x?} ACKed twice"
                );
                true
            }
            None => false,
        }
    }

    /// `n` DORAs; how many were ACKed.
    fn doras(&mut self, n: u32) -> u32 {
        (0..n).map(|_| u32::from(self.dora())).sum()
    }

    /// Every ACK these clients got is in the store at `db` now, read while
    /// the daemon runs (and its store may be failing): an ACK leaves only
    /// once its lease is durable.
    fn all_durable_now(&self, db: &Path) {
        let stored: HashMap<Ipv4Addr, StoredLease> =
            read_store(db).into_iter().map(|l| (l.ip, l)).collect();
        for (mac, ip) in &self.acked {
            match stored.get(ip) {
                Some(l) if l.bound && l.mac == mac[..] => {}
                other => panic!("{mac:02x?} was ACKed {ip}, not durable: {other:?}"),
            }
        }
    }

    /// Every ACK these clients got must be in the (closed) store at `db`.
    fn all_stored(&self, db: &Path) {
        let stored: HashMap<Ipv4Addr, xdhcp::lease::Lease> = SqliteStore::open(db, DbSync::Full)
            .unwrap()
            .load()
            .unwrap()
            .into_iter()
            .map(|l| (l.ip, l))
            .collect();
        for (mac, ip) in &self.acked {
            let l = stored
                .get(ip)
                .unwrap_or_else(|| panic!("ACKed lease {ip} of {mac:02x?} lost"));
            assert_eq!(l.state, LeaseState::Bound, "{ip}");
            assert_eq!(&l.hw[1..], &mac[..], "{ip} stored for another client");
        }
    }
}

fn status(lab: &DaemonLab) -> Value {
    let (code, out) = lab.cli(&["status", "--json"]).unwrap();
    assert_eq!(code, 0, "status: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["arguments"]["lease-store"].clone()
}

fn status_text(lab: &DaemonLab) -> String {
    lab.cli(&["status"]).unwrap().1
}

fn metrics(lab: &DaemonLab) -> String {
    lab.srv
        .enter(|| {
            let mut c = TcpStream::connect(METRICS).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            s
        })
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// DORAs until one goes unanswered and the store says it is failing
/// (bounded); returns the store's status then.
fn until_refused(lab: &DaemonLab, db: &Path, clients: &mut Clients) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..200 {
        assert!(Instant::now() < deadline, "the store never refused");
        if clients.dora() {
            // The ACK came: its lease is in the store already.
            clients.all_durable_now(db);
        } else {
            let st = status(lab);
            if st["healthy"] == false {
                return st;
            }
        }
    }
    panic!("200 DORAs and the store never refused: {}", status(lab));
}

/// While the store refuses: DORAs of new clients get no ACK, the status,
/// the metrics and the log say why. `why` is in the reason given.
fn fails_closed_and_says_why(lab: &DaemonLab, db: &Path, clients: &mut Clients, why: &[&str]) {
    clients.all_durable_now(db);
    let before = clients.acked.len();
    assert_eq!(clients.doras(15), 0, "ACKs left while the store refused");
    assert_eq!(clients.acked.len(), before);
    let st = status(lab);
    assert_eq!(st["healthy"], false, "{st}");
    let err = st["last-error"].as_str().unwrap_or_default().to_string();
    for w in why {
        assert!(err.contains(w), "status last-error {err:?} lacks {w:?}");
    }
    assert!(st["failing-since"].as_u64().is_some(), "{st}");
    // (The batch being retried may be one without replies, a reclaim.)
    assert!(st["withheld-replies"].as_u64().is_some(), "{st}");
    assert!(st["failed-writes"].as_u64().unwrap() >= 2, "retried: {st}");
    let text = status_text(lab);
    assert!(text.contains("FAILING") && text.contains(why[0]), "{text}");
    let m = metrics(lab);
    assert_eq!(metric(&m, "xdhcp_lease_store_healthy"), 0.0, "{m}");
    assert!(metric(&m, "xdhcp_lease_store_failed_writes_total") >= 2.0);
    assert!(metric(&m, "xdhcp_lease_store_withheld_replies") >= 0.0);
    assert!(metric(&m, "xdhcp_lease_store_failing_since_seconds") > 0.0);
    let last = why[why.len() - 1];
    let log = lab
        .daemon()
        .lines()
        .into_iter()
        .find(|l| l.contains("lease store write failed; replies withheld") && l.contains(last))
        .unwrap_or_else(|| panic!("no log line says {last:?}"));
    println!("store refused: status says {err:?}; log: {log}");
}

/// Once the fault clears: the retried batch lands, the store is healthy,
/// and new clients are ACKed again.
fn recovers(lab: &DaemonLab, clients: &mut Clients) {
    wait_until(Duration::from_secs(20), || {
        (status(lab)["healthy"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("no recovery: {}", status(lab)));
    lab.daemon()
        .wait_for(
            "lease store write succeeded after retrying",
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(clients.doras(10), 10, "DORA after the store recovered");
    let m = metrics(lab);
    assert_eq!(metric(&m, "xdhcp_lease_store_healthy"), 1.0);
    assert!(metric(&m, "xdhcp_lease_store_recovered_batches_total") >= 1.0);
}

/// A full disk: the write that needs space fails with SQLITE_FULL, no ACK
/// leaves until space returns, then the batch lands and service resumes;
/// stopping while it is full leaves the store unclean, and the next start
/// recovers.
#[test]
fn a_full_disk_withholds_acks_says_why_and_recovers_when_space_returns() {
    let _serial = serial();
    let mut slot = None;
    let mut lab = DaemonLab::new("diskfull", RELAYED, Some("198.18.0.2/24")).unwrap();
    let dir = mount_point(&lab, "full");
    let mnt: &Mount = slot.insert(Mount::tmpfs(&dir, "4m").unwrap());
    let db = dir.join("leases.db");
    use_store(&lab, &db);
    lab.start().unwrap();
    let mut clients = Clients::new(&lab);
    assert_eq!(clients.doras(20), 20, "before the fault");

    let filled = mnt.fill("filler").unwrap();
    assert!(filled > 0);
    until_refused(&lab, &db, &mut clients);
    fails_closed_and_says_why(&lab, &db, &mut clients, &["database or disk is full"]);
    std::fs::remove_file(dir.join("filler")).unwrap();
    recovers(&lab, &mut clients);

    // Full again, and the daemon told to stop: it gives up on the batch,
    // says so, exits non-zero, and does not mark the store clean.
    mnt.fill("filler").unwrap();
    until_refused(&lab, &db, &mut clients);
    let (status, lines) = lab.stop(SIGTERM).unwrap();
    assert!(!status.success(), "a stop with changes unwritten exits 0");
    let all = lines.join("\n");
    assert!(all.contains("batch abandoned"), "{all}");
    assert!(all.contains("stopped with lease changes the store refused"));
    std::fs::remove_file(dir.join("filler")).unwrap();
    lab.start().unwrap();
    lab.daemon()
        .wait_for("the last run did not stop cleanly", Duration::from_secs(1))
        .unwrap();
    assert_eq!(clients.doras(10), 10);
    let (status, _) = lab.stop(SIGTERM).unwrap();
    assert!(status.success());
    clients.all_stored(&db);
}

/// I/O errors (EIO on writes and fsyncs) and a read-only filesystem
/// (EROFS), both cleared in place, from a FUSE passthrough.
#[test]
fn io_errors_and_a_read_only_filesystem_withhold_acks_until_they_clear() {
    let _serial = serial();
    let mut slot = None;
    let mut lab = DaemonLab::new("eio", RELAYED, Some("198.18.0.2/24")).unwrap();
    let dir = mount_point(&lab, "eio");
    let backing = mount_point(&lab, "eio-backing");
    let fs: &FaultFs = slot.insert(FaultFs::mount(&dir, &backing).unwrap());
    let db = dir.join("leases.db");
    use_store(&lab, &db);
    lab.start().unwrap();
    let mut clients = Clients::new(&lab);
    assert_eq!(clients.doras(20), 20, "before the fault");
    for (fault, why) in [
        (Fault::Eio, ["disk I/O error", "Input/output error"]),
        (Fault::ReadOnly, ["disk I/O error", "Read-only file system"]),
    ] {
        let refused = fs.refused();
        fs.set(fault);
        until_refused(&lab, &db, &mut clients);
        fails_closed_and_says_why(&lab, &db, &mut clients, &why);
        assert!(fs.refused() > refused);
        fs.set(Fault::None);
        recovers(&lab, &mut clients);
    }
    let (status, _) = lab.stop(SIGTERM).unwrap();
    assert!(status.success());
    clients.all_stored(&db);
}

/// The kernel turns the store's filesystem read-only under the daemon
/// (ext4 errors=remount-ro, as after a metadata error; an administrator's
/// `mount -o remount,ro` is refused while the store is open for writing).
/// No ACK leaves; this filesystem cannot go back to read-write in place
/// (its journal is aborted), so the daemon is stopped, the filesystem
/// checked and remounted, and the next start recovers.
#[test]
fn a_filesystem_the_kernel_turns_read_only_withholds_acks_and_the_next_start_recovers() {
    let _serial = serial();
    let mut slot = None;
    let mut lab = DaemonLab::new("rofs", RELAYED, Some("198.18.0.2/24")).unwrap();
    let dir = mount_point(&lab, "ro");
    let mnt: &mut Mount = slot.insert(Mount::ext4(&dir, 64).unwrap());
    let db = dir.join("leases.db");
    use_store(&lab, &db);
    lab.start().unwrap();
    let mut clients = Clients::new(&lab);
    assert_eq!(clients.doras(20), 20, "before the fault");
    // Refused: the store is open for writing.
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "remount,ro went through with the store open: {}",
        mnt.options().unwrap()
    );
    assert_eq!(clients.doras(5), 5, "still serving");

    mnt.trigger_ext4_error().unwrap();
    wait_until(Duration::from_secs(5), || {
        mnt.options()
            .ok()
            .filter(|o| o.starts_with("ro") || o.contains("emergency_ro"))
    })
    .expect("the kernel turned the filesystem read-only");
    until_refused(&lab, &db, &mut clients);
    fails_closed_and_says_why(&lab, &db, &mut clients, &["Read-only file system"]);
    let (status, lines) = lab.stop(SIGTERM).unwrap();
    assert!(!status.success());
    assert!(lines.join("\n").contains("batch abandoned"));
    mnt.unmount().unwrap();
    mnt.fsck().unwrap();
    mnt.mount_image().unwrap();
    lab.start().unwrap();
    lab.daemon()
        .wait_for("the last run did not stop cleanly", Duration::from_secs(1))
        .unwrap();
    assert_eq!(clients.doras(10), 10, "after the filesystem came back");
    let (status, _) = lab.stop(SIGTERM).unwrap();
    assert!(status.success());
    clients.all_stored(&db);
}

/// `xdhcp serve` once, for a start that must fail: exit status and log.
fn serve_once(lab: &DaemonLab) -> (std::process::ExitStatus, Vec<String>) {
    let mut cmd = Command::new(xdhcp_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(&lab.config)
        .arg("--control-socket")
        .arg(lab.socket());
    let mut d = Logged::spawn(&lab.srv, &cmd, None).unwrap();
    let status = d.wait(Duration::from_secs(20)).unwrap();
    (status, d.lines())
}

/// A database that is not a whole xdhcp store is refused at start, with
/// the file and the reason, non-zero, nothing attached, the file as it
/// was: never an empty store in its place.
#[test]
fn a_corrupt_store_refuses_to_start_and_is_left_as_it_was() {
    let _serial = serial();
    let mut lab = DaemonLab::new("corrupt", RELAYED, Some("198.18.0.2/24")).unwrap();
    let db = lab.db();
    lab.start().unwrap();
    let mut clients = Clients::new(&lab);
    assert_eq!(clients.doras(40), 40);
    assert!(lab.stop(SIGTERM).unwrap().0.success());
    let real = std::fs::read(&db).unwrap();
    let other = lab.dir.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('not leases');")
        .unwrap();
    let mut scribbled = real.clone();
    for b in &mut scribbled[4096..8192] {
        *b ^= 0x5a;
    }
    // The empty file and the other database first: the daemon used to
    // start on them, empty.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the file is empty"),
        (
            "another database",
            std::fs::read(&other).unwrap(),
            "without a leases table",
        ),
        (
            "garbage",
            b"GARBAGE ".repeat(4096),
            "not an SQLite database",
        ),
        ("truncated", real[..real.len() / 2].to_vec(), "damaged"),
        ("scribbled", scribbled, "damaged"),
    ];
    for (name, bytes, why) in cases {
        std::fs::write(&db, &bytes).unwrap();
        let (status, lines) = serve_once(&lab);
        let all = lines.join("\n");
        assert!(!status.success(), "{name}: started\n{all}");
        assert!(all.contains(&db.display().to_string()), "{name}: {all}");
        assert!(all.contains(why), "{name}: no {why:?} in {all}");
        assert!(all.contains("refusing to start"), "{name}: {all}");
        assert!(!all.contains("xdhcp serving"), "{name}: {all}");
        assert_eq!(lab.srv.xdp_mode("srv0").unwrap(), None, "{name}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "{name}: file changed");
    }
    // The real one back: every lease it held is served again.
    std::fs::write(&db, &real).unwrap();
    lab.start().unwrap();
    assert!(lab.stop(SIGTERM).unwrap().0.success());
    clients.all_stored(&db);
}

/// Raw clients on the server's link: DORA, renewals the XDP program
/// answers, releases. Short leases and fewer addresses than clients, so
/// addresses change hands (after releases and expiries) during the loop.
const DIRECT: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"
offer_hold_secs = 3
# Small: the map is preallocated at every one of the restarts.
lease_map_entries = 4096

[[interface]]
name = "srv0"

[options]
lease_time = 20
renewal_time = 5
rebinding_time = 15

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.219"
"#;

/// The leases in the store at `db`, read through a read-only connection
/// (the daemon may be running, its filesystem full or failing).
fn read_store(db: &Path) -> Vec<StoredLease> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT ip, hw, state, expires FROM leases")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok(StoredLease {
                ip: Ipv4Addr::from(r.get::<_, i64>(0)? as u32),
                mac: r.get::<_, Vec<u8>>(1)?[1..].to_vec(),
                bound: LeaseState::from_code(r.get(2)?) == Some(LeaseState::Bound),
                expires: r.get::<_, i64>(3)? as u64,
            })
        })
        .unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// kill -9 at a random moment of mixed load, `XDHCP_KILL_CYCLES` times
/// (50 by default), restarting on the same store each time. After every
/// restart the store holds every lease a client was ACKed and still
/// holds (not released, not ended), ending no earlier than the client
/// was told; over the whole run no address was held by two clients at
/// once, by what the clients were told.
#[test]
fn kill_9_loop_under_mixed_load_loses_no_acknowledged_lease() {
    let _serial = serial();
    let cycles: u32 = std::env::var("XDHCP_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut lab = DaemonLab::new("kill9loop", DIRECT, None).unwrap();
    let db = lab.db();
    let server_mac = lab.srv.mac("srv0").unwrap();
    let seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut load = Churn::new(
        &lab.cli,
        "cli0",
        160,
        Ipv4Addr::new(198, 18, 0, 1),
        server_mac,
        seed,
    )
    .unwrap();
    let mut rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut random = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let started = Instant::now();
    let mut checked = 0usize;
    let mut restarts = Duration::ZERO;
    lab.start().unwrap();
    for cycle in 0..cycles {
        assert!(
            started.elapsed() < Duration::from_secs(60 + 20 * u64::from(cycles)),
            "cycle {cycle}: out of time"
        );
        let kill_after = Duration::from_millis(200 + random() % 1000);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let load = &mut load;
            let stop = &stop;
            let t = s.spawn(move || {
                load.run(
                    400,
                    Duration::from_secs(10),
                    Duration::from_millis(200),
                    stop,
                )
            });
            std::thread::sleep(kill_after);
            let (status, _) = lab.stop(SIGKILL).unwrap();
            assert!(!status.success());
            stop.store(true, Ordering::SeqCst);
            t.join().unwrap();
        });
        let t = Instant::now();
        lab.start()
            .unwrap_or_else(|e| panic!("cycle {cycle}: restart: {e:#}"));
        restarts += t.elapsed();
        let (n, lost) = churn::unacknowledged_losses(
            &load.acked,
            &load.released,
            f64::INFINITY,
            churn::unix_f64(),
            &read_store(&db),
        );
        checked += n;
        if !lost.is_empty() {
            let text = lost.join("\n");
            let ips: std::collections::BTreeSet<Ipv4Addr> = load
                .acked
                .iter()
                .map(|a| a.ip)
                .filter(|ip| text.contains(&format!("ACKed {ip} until")))
                .collect();
            let mut why = String::new();
            for ip in ips {
                let word = format!("{ip}");
                why += &format!("\n{ip}, as the clients saw it:\n  ");
                why += &churn::story(&load.acked, &load.released, ip).join("\n  ");
                why += &format!("\n{ip}, in the daemon's log:\n  ");
                let logged: Vec<&String> = lab
                    .history
                    .iter()
                    .filter(|l| {
                        l.match_indices(&word).any(|(i, _)| {
                            !l[i + word.len()..].starts_with(|c: char| c.is_ascii_digit())
                        })
                    })
                    .collect();
                why += &logged
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ");
            }
            panic!(
                "cycle {cycle}: {} ACKed leases lost:\n{text}\n{why}",
                lost.len()
            );
        }
    }
    let (status, lines) = lab.stop(SIGTERM).unwrap();
    assert!(status.success(), "{}", lines.join("\n"));
    let overlaps = churn::overlaps(&load.acked, &load.released);
    assert!(
        overlaps.is_empty(),
        "{} overlapping leases:\n{}",
        overlaps.len(),
        overlaps.join("\n")
    );
    let c = &load.counts;
    let history = lab.history.join("\n");
    let kernel = history.matches("renewed by the XDP program").count();
    let distinct: std::collections::HashSet<_> = load.acked.iter().map(|a| a.ip).collect();
    let mut holders: HashMap<Ipv4Addr, std::collections::HashSet<u32>> = HashMap::new();
    for a in &load.acked {
        holders.entry(a.ip).or_default().insert(a.client);
    }
    let shared = holders.values().filter(|h| h.len() > 1).count();
    println!(
        "kill -9 loop: {cycles} cycles in {:.0} s (restarts {:.0} s); clients sent {} DISCOVERs, {} REQUESTs, {} renewals, {} releases; \
         {} ACKs accepted ({} DORA, {} renewals; the daemon stored {kernel} renewals the XDP program answered), {} NAKs, {} timeouts; \
         {} addresses used, {shared} of them by more than one client in turn; {checked} ACKed leases checked against the store after the restarts, 0 lost; {} ACKs checked for overlap, 0 overlaps",
        started.elapsed().as_secs_f64(),
        restarts.as_secs_f64(),
        c.discovers,
        c.requests,
        c.renewals,
        c.releases,
        c.acks,
        c.acks - c.renewal_acks,
        c.renewal_acks,
        c.naks,
        c.timeouts,
        distinct.len(),
        load.acked.len(),
    );
    assert!(c.renewal_acks > 0 && c.releases > 0 && c.acks > c.renewal_acks);
    assert!(kernel > 0, "no renewal was answered by the XDP program");
}
