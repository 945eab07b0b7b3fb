//! The MCLT cap end to end on the real program (BPF_PROG_TEST_RUN), its
//! entries written by the control plane's own map sync: a renewal past
//! the cap passes; once the store acknowledges a later end (the committer
//! after a durable batch of kernel renewals) the cap moves and the kernel
//! answers it. With one node (no MCLT) nothing is capped.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use dhcp_common::{stat, NO_CAP};
use xdhcp::{
    store::StoreOp,
    xdp::{
        loader::{XDP_PASS, XDP_TX},
        map_sync::{unix_to_mono_ns, FastMaps, MapReport},
    },
};
use xdhcp_lab::{
    daemon::{wait_until, DaemonLab},
    fixture::{self, Group},
    postgres::PgCluster,
};

const SIGUSR1: i32 = 10;

const BEHIND: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 111);

fn group() -> Group {
    xdhcp_lab::require_lab();
    fixture::load_file(&fixture::fixtures_dir().join("mclt_cap.toml")).unwrap()
}

fn cap_of(maps: &FastMaps, ip: Ipv4Addr) -> u64 {
    maps.entries()
        .iter()
        .find(|(_, v)| v.ip == u32::from_ne_bytes(ip.octets()))
        .map(|(_, v)| v.cap_mono_ns)
        .expect("an entry for the address")
}

#[test]
fn a_stored_kernel_renewal_moves_the_cap_and_the_kernel_answers_again() {
    let g = group();
    let past = g
        .cases
        .iter()
        .find(|c| c.name == "a renewal past the cap")
        .unwrap();
    let (fp, mut maps) = g.state.load().unwrap();
    let out = fixture::run_case(&fp, g.state.ifindex, past).unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.verdict, XDP_PASS);

    // The store now holds that binding until now + its lease (what the
    // control plane stores when it answers it, or a kernel renewal the
    // ring reported): the committer moves the cap after the write.
    let b = g.state.bindings.iter().find(|b| b.ip == BEHIND).unwrap();
    let now = fixture::unix_now();
    let mut l = b.lease(now);
    l.expires = now + u64::from(b.lease_secs);
    let before = cap_of(&maps, BEHIND);
    maps.after_commit(&[StoreOp::Renewed(l.clone())], &mut MapReport::default());
    let cap = cap_of(&maps, BEHIND);
    // The clock offset is measured again between the two readings.
    let want = unix_to_mono_ns(l.expires) + 60_000_000_000;
    assert!(cap.abs_diff(want) < 1_000_000, "cap {cap}, want {want}");
    assert!(cap > before);
    assert_eq!(maps.stats.caps_raised, 1);

    let before = fp.stats().unwrap();
    let out = fp.test_run_on(&past.input, g.state.ifindex, 1).unwrap();
    let delta = fp.stats().unwrap().since(&before);
    assert_eq!(out.verdict, XDP_TX, "answered once the store caught up");
    assert_eq!(delta.get(stat::FP_ACK_RENEWING), 1);
    assert_eq!(delta.get(stat::PASS_MCLT_CAP), 0);
}

#[test]
fn one_node_caps_nothing() {
    let mut g = group();
    g.state.mclt_secs = None;
    let (fp, maps) = g.state.load().unwrap();
    assert!(maps.entries().iter().all(|(_, v)| v.cap_mono_ns == NO_CAP));
    let past = g
        .cases
        .iter()
        .find(|c| c.name == "a renewal past the cap")
        .unwrap();
    let out = fp.test_run_on(&past.input, g.state.ifindex, 1).unwrap();
    assert_eq!(out.verdict, XDP_TX, "no cap, as before the cap was built");
}

const PG_CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"

[[interface]]
name = "srv0"

[options]
lease_time = 30

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.10"
end = "198.18.0.20"

[database]
url = "@URL@"
node = "lab-node"
mclt_secs = 40
"#;

fn xdp_counter(lab: &DaemonLab, name: &str) -> u64 {
    let (_, out) = lab.cli(&["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["arguments"]["xdp"][name].as_u64().unwrap_or(0)
}

/// PostgreSQL stopped right after a client bound (lease 30 s, MCLT 40 s,
/// so its cap is its bind + 70 s): the kernel answers its renewals while
/// now + 30 s stays under the cap (at bind + 5 s and + 25 s), then passes
/// the next (bind + 44 s) as `pass_mclt_cap`; the control plane cannot
/// store it, so it goes unanswered while the database is down.
#[test]
fn in_a_database_outage_the_kernel_renews_only_up_to_the_cap() {
    let pg = PgCluster::start(None).unwrap();
    let out = std::process::Command::new(xdhcp_lab::proc::xdhcp_bin())
        .args(["db", "init"])
        .env("XDHCP_DATABASE_URL", pg.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pg = pg;
    let mut lab = DaemonLab::new("mcltcap", &PG_CONFIG.replace("@URL@", &pg.url()), None).unwrap();
    lab.start().unwrap();
    let client = lab.udhcpc("").unwrap();
    lab.wait_event("bound ", 0, Duration::from_secs(30));
    let bound = Instant::now();
    pg.stop().unwrap();
    let at =
        |secs: u64| std::thread::sleep(Duration::from_secs(secs).saturating_sub(bound.elapsed()));
    for secs in [5, 25] {
        at(secs);
        let n = lab.events().len();
        client.signal(SIGUSR1);
        let renew = lab.wait_event("renew ", n, Duration::from_secs(5));
        assert!(!renew.is_empty(), "renewal at bind + {secs} s answered");
    }
    let answered = xdp_counter(&lab, "fp_ack_renewing");
    assert!(answered >= 2, "both renewals in the kernel: {answered}");
    assert_eq!(xdp_counter(&lab, "pass_mclt_cap"), 0);
    at(44);
    assert!(
        bound.elapsed() < Duration::from_secs(50),
        "the binding must still be live"
    );
    client.signal(SIGUSR1);
    let capped = wait_until(Duration::from_secs(5), || {
        let n = xdp_counter(&lab, "pass_mclt_cap");
        (n >= 1).then_some(n)
    });
    assert!(
        capped.is_some(),
        "the renewal past the cap went to the control plane"
    );
    assert_eq!(
        xdp_counter(&lab, "fp_ack_renewing"),
        answered,
        "and was not answered in the kernel"
    );
}
