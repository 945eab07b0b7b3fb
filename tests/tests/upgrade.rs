//! A layout upgrade under renewal load: a fast path pinned with the
//! previous layout (`dhcp_common::prev`: layout version 1, lease values
//! without the MCLT cap; the XDP object built with
//! dhcp-ebpf's `layout-prev` feature by tests/build.rs) is converted by
//! the current daemon while clients renew. Every renewal is answered (by
//! the old program, then the new one), every binding is carried over, and
//! the store holds every renewal either program granted. Pins of a layout
//! it cannot convert are pins.rs's
//! `pins_of_another_layout_are_refused_before_anything_is_detached`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapInfo, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp,
    },
    EbpfLoader,
};
use dhcp_common::{
    prev, stat, IfaceInfo, Layout, LeaseKey, LeaseValue, ReplyTemplate, Stats, IFACE_SLOTS,
    MAP_IFACES, MAP_LAYOUT, MAP_LEASES, MAP_STATS, MAP_TEMPLATES, PROGRAM_NAME, TEMPLATE_SLOTS,
};
use serde_json::Value;
use xdhcp::xdp::pins::PINNED_MAPS;
use xdhcp_lab::{daemon::DaemonLab, proc::loadgen_bin};

static PREV_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf-layout-prev.o"));

const CLIENTS: u32 = 40;
const LEASE_SECS: u64 = 40;

/// Client i (loadgen's `client_mac(i)`) is reserved 198.18.0.(100 + i), so
/// renewals need no DORA in the same run (`--synthetic`).
/// The previous-layout object, or a failure naming the fix where the
/// build found no eBPF toolchain (tests/build.rs leaves it empty then).
fn prev_object() -> &'static [u8] {
    assert!(
        !PREV_OBJECT.is_empty(),
        "the previous-layout XDP object is empty: the eBPF toolchain was missing when \
         xdhcp-tests was built; run `cargo xtask setup`"
    );
    PREV_OBJECT
}

fn config() -> String {
    let mut c = String::from(
        r#"
[server]
server_id = "198.18.0.1"
lease_db = "@DB@"

[[interface]]
name = "srv0"

[options]
lease_time = @LEASE@

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.150"
"#,
    );
    for i in 0..CLIENTS {
        let m = dhcp_common::gen::client_mac(i);
        c.push_str(&format!(
            "[[subnet.reservation]]\nhw_address = \"{}\"\nip = \"198.18.0.{}\"\n",
            m.map(|b| format!("{b:02x}")).join(":"),
            100 + i
        ));
    }
    c.replace("@LEASE@", &LEASE_SECS.to_string())
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Turns the fast path a current daemon left pinned in `dir` into what a
/// daemon of the previous layout leaves: the previous-layout program
/// swapped onto the pinned link, its maps (every binding, template and
/// interface carried over, values without their cap) pinned in place of
/// the current ones, and its layout record.
fn plant_previous_layout(dir: &Path) {
    let cur: BpfHashMap<MapData, LeaseKey, LeaseValue> = BpfHashMap::try_from(Map::HashMap(
        MapData::from_pin(dir.join(MAP_LEASES)).unwrap(),
    ))
    .unwrap();
    let entries: Vec<(LeaseKey, LeaseValue)> = cur.iter().map(|r| r.unwrap()).collect();
    let max_entries = MapInfo::from_pin(dir.join(MAP_LEASES))
        .unwrap()
        .max_entries();
    let templates: Array<MapData, ReplyTemplate> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(MAP_TEMPLATES)).unwrap(),
    ))
    .unwrap();
    let templates: Vec<(u32, ReplyTemplate)> = (0..TEMPLATE_SLOTS)
        .map(|i| (i, templates.get(&i, 0).unwrap()))
        .filter(|(_, t)| t.options_len != 0)
        .collect();
    let ifaces: Array<MapData, IfaceInfo> =
        Array::try_from(Map::Array(MapData::from_pin(dir.join(MAP_IFACES)).unwrap())).unwrap();
    let ifaces: Vec<(u32, IfaceInfo)> = (0..IFACE_SLOTS)
        .map(|i| (i, ifaces.get(&i, 0).unwrap()))
        .filter(|(_, f)| f.server_ip != 0)
        .collect();
    assert!(!entries.is_empty() && !templates.is_empty() && !ifaces.is_empty());
    drop(cur);
    // The current program keeps its maps while it runs; the names go to
    // the old program's.
    for m in PINNED_MAPS.iter().chain([&MAP_LAYOUT]) {
        std::fs::remove_file(dir.join(m)).unwrap();
    }
    let mut loader = EbpfLoader::new();
    for m in PINNED_MAPS {
        loader.map_pin_path(m, dir.join(m));
    }
    let info = 3u8; // aya-log's Level::Info
    let mut ebpf = loader
        .override_global("AYA_LOG_LEVEL", &info, false)
        .map_max_entries(MAP_LEASES, max_entries)
        .load(prev_object())
        .unwrap();
    {
        let mut leases: BpfHashMap<_, prev::LeaseKey, prev::LeaseValue> =
            BpfHashMap::try_from(ebpf.map_mut(MAP_LEASES).unwrap()).unwrap();
        for (k, v) in &entries {
            leases.insert(k, old_value(v), 0).unwrap();
        }
    }
    {
        let mut t: Array<_, ReplyTemplate> =
            Array::try_from(ebpf.map_mut(MAP_TEMPLATES).unwrap()).unwrap();
        for (i, v) in &templates {
            t.set(*i, v, 0).unwrap();
        }
    }
    {
        let mut f: Array<_, IfaceInfo> =
            Array::try_from(ebpf.map_mut(MAP_IFACES).unwrap()).unwrap();
        for (i, v) in &ifaces {
            f.set(*i, v, 0).unwrap();
        }
    }
    let prog: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).unwrap().try_into().unwrap();
    prog.load().unwrap();
    let fd: FdLink = PinnedLink::from_pin(dir.join("link_srv0")).unwrap().into();
    let id = prog.attach_to_link(XdpLink::try_from(fd).unwrap()).unwrap();
    // The pin holds the link (and so the program) from here on.
    drop(FdLink::try_from(prog.take_link(id).unwrap()).unwrap());
    let stats = MapInfo::from_pin(dir.join(MAP_STATS)).unwrap().value_size();
    xdhcp::xdp::pins::record_layout(
        dir,
        &Layout {
            stats,
            ..prev::LAYOUT
        },
    )
    .unwrap();
}

/// `v` as the previous layout held it: everything but the cap.
fn old_value(v: &LeaseValue) -> prev::LeaseValue {
    prev::LeaseValue {
        expires_mono_ns: v.expires_mono_ns,
        reported_mono_ns: v.reported_mono_ns,
        ip: v.ip,
        subnet_id: v.subnet_id,
        template_id: v.template_id,
        lease_secs: v.lease_secs,
        ifindex: v.ifindex,
        outer_vlan: v.outer_vlan,
        inner_vlan: v.inner_vlan,
        giaddr: v.giaddr,
        shape_hash: v.shape_hash,
        prl_len: v.prl_len,
        max_message_size: v.max_message_size,
        client_id_len: v.client_id_len,
        relay_info_len: v.relay_info_len,
        flags: v.flags,
    }
}

fn fast_acks(stats: &PerCpuArray<MapData, Stats>) -> u64 {
    stats
        .get(&0, 0)
        .unwrap()
        .iter()
        .map(|c| {
            c[stat::FP_ACK_RENEWING as usize]
                + c[stat::FP_ACK_REBINDING as usize]
                + c[stat::FP_ACK_INIT_REBOOT as usize]
        })
        .sum()
}

fn open_stats(dir: &Path) -> PerCpuArray<MapData, Stats> {
    PerCpuArray::try_from(Map::PerCpuArray(
        MapData::from_pin(dir.join(MAP_STATS)).unwrap(),
    ))
    .unwrap()
}

/// Renewals for every client at `rate`, for at most `secs`, from the
/// client namespace (no control socket: no daemon may run at its start).
fn renewals(lab: &DaemonLab, rate: u32, secs: u32) -> Command {
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(["--iface", "cli0", "--json", "--timeout-ms", "2000"])
        .args(["--clients", &CLIENTS.to_string(), "--phase", "renew"])
        .args(["--synthetic", "198.18.0.100", "--server", "198.18.0.1"])
        .args(["--rate", &rate.to_string(), "--duration", &secs.to_string()])
        .args(["--count", &(rate * secs).to_string()]);
    lab.cli.command_from(&cmd)
}

fn all_answered(out: std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let r = v[0].clone();
    assert!(n(&r, "sent") > 0, "{r}");
    // A client's requests share an xid: a reply later than its client's
    // next request is matched to that one, whose own reply then counts as
    // a duplicate (and the first request as lost). Every request had one
    // reply when replies (ok + duplicate) equal requests.
    assert_eq!(
        n(&r, "ok") + n(&r, "duplicate"),
        n(&r, "sent"),
        "every renewal answered: {r}"
    );
    for k in ["nak", "wrong"] {
        assert_eq!(n(&r, k), 0, "{k}: {r}");
    }
    r
}

/// Store ends by address (after a clean stop).
fn stored_ends(db: &Path) -> std::collections::HashMap<u32, u64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c.prepare("SELECT ip, expires FROM leases").unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[test]
fn a_fast_path_of_the_previous_layout_is_converted_under_renewal_load() {
    let mut lab = DaemonLab::new("upgrade", &config(), None).unwrap();
    let dir = lab.pin_in_host_bpffs().unwrap();
    lab.start().unwrap();
    let r = lab.loadgen(&["--clients", &CLIENTS.to_string(), "--phase", "dora"]);
    assert_eq!(n(&r[0], "ok"), u64::from(CLIENTS), "{}", r[0]);
    // A kernel renewal is reported once it moves the end a report step
    // past the stored one: from here on, that long after the DORA.
    let bound = std::time::Instant::now();
    let (code, out) = lab.cli(&["stop", "--keep-fast-path"]).unwrap();
    assert_eq!(code, 0, "{out}");
    lab.wait_stopped().unwrap();

    plant_previous_layout(&dir);
    assert_eq!(
        xdhcp::xdp::pins::check_layout(&dir).unwrap(),
        xdhcp::xdp::pins::PinnedLayout::Previous
    );
    assert_eq!(
        MapInfo::from_pin(dir.join(MAP_LEASES))
            .unwrap()
            .value_size(),
        prev::LAYOUT.lease_value
    );
    // The old program answers with no daemon at all.
    let old_stats = open_stats(&dir);
    all_answered(renewals(&lab, 200, 1).output().unwrap());
    let before = fast_acks(&old_stats);
    assert!(before > 0, "the previous layout's program answers");
    // Handles on the old lease map outlive its pin: what it granted last.
    let old_leases: BpfHashMap<MapData, prev::LeaseKey, prev::LeaseValue> = BpfHashMap::try_from(
        Map::HashMap(MapData::from_pin(dir.join(MAP_LEASES)).unwrap()),
    )
    .unwrap();

    // Renewals all along; the current daemon starts in their midst.
    let load = renewals(&lab, 400, 10)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The old program must renew, and report, while the daemon starts:
    // its renewals are reported only past the report step (the test once
    // got there only because loading a program took seconds).
    let step = Duration::from_secs(LEASE_SECS / dhcp_common::REPORT_FRACTION);
    std::thread::sleep(
        Duration::from_millis(1500)
            .max((step + Duration::from_secs(1)).saturating_sub(bound.elapsed())),
    );
    lab.start().unwrap();
    let converted = lab
        .daemon()
        .wait_for(
            "converted the fast path pinned with the previous layout",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        converted.contains(&format!("old_bindings={CLIENTS}")),
        "{converted}"
    );
    // The old program renewed while the new daemon started (after its
    // recovery, which held each binding until then + lease time): those
    // grants reach the store only through the conversion's drain.
    let field = |k: &str| -> u64 {
        let v = converted.split(&format!("{k}=")).nth(1).unwrap_or("");
        v.split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0)
    };
    assert!(field("events") > 0, "the old ring drained: {converted}");
    assert!(field("extending") > 0, "old grants stored: {converted}");
    let r = all_answered(load.wait_with_output().unwrap());
    let old_acks = fast_acks(&old_stats) - before;
    let new_stats = open_stats(&dir);
    let new_acks = fast_acks(&new_stats);
    assert!(
        old_acks > 0,
        "the old program answered during the switch: {r}"
    );
    assert!(new_acks > 0, "then the new one: {r}");
    eprintln!("switch: {r}; old program {old_acks} ACKs, new program {new_acks}");

    // Every binding carried over, into maps of this layout.
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("staging_"))
            .count(),
        0
    );
    let record: Array<MapData, Layout> =
        Array::try_from(Map::Array(MapData::from_pin(dir.join(MAP_LAYOUT)).unwrap())).unwrap();
    assert_eq!(record.get(&0, 0).unwrap(), Layout::CURRENT);
    let new_leases: BpfHashMap<MapData, LeaseKey, LeaseValue> = BpfHashMap::try_from(Map::HashMap(
        MapData::from_pin(dir.join(MAP_LEASES)).unwrap(),
    ))
    .unwrap();
    let new_entries: Vec<(LeaseKey, LeaseValue)> = new_leases.iter().map(|r| r.unwrap()).collect();
    assert_eq!(new_entries.len(), CLIENTS as usize);
    let (code, st) = lab.cli(&["status", "--json"]).unwrap();
    assert_eq!(code, 0, "{st}");
    let st: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["arguments"]["lease-map"]["bindings"], CLIENTS, "{st}");

    // The store holds what either program granted: the old one's last
    // ends (read from its map, frozen since the swap) and the new one's.
    let old_entries: Vec<(prev::LeaseKey, prev::LeaseValue)> =
        old_leases.iter().map(|r| r.unwrap()).collect();
    assert_eq!(old_entries.len(), CLIENTS as usize);
    let (status, lines) = lab.stop(15).unwrap();
    assert!(status.success(), "{lines:?}");
    let stored = stored_ends(&lab.db());
    let ip_key = |ip: u32| u32::from(std::net::Ipv4Addr::from(ip.to_ne_bytes()));
    for (side, ends) in [
        (
            "old",
            old_entries
                .iter()
                .map(|(_, v)| (v.ip, v.expires_mono_ns))
                .collect::<Vec<_>>(),
        ),
        (
            "new",
            new_entries
                .iter()
                .map(|(_, v)| (v.ip, v.expires_mono_ns))
                .collect(),
        ),
    ] {
        for (ip, expires) in ends {
            let granted = xdhcp::xdp::clock::mono_ns_to_unix_ceil(expires);
            let held = stored.get(&ip_key(ip)).copied().unwrap_or(0);
            assert!(
                held >= granted,
                "{side} program granted {} until {granted}, the store holds {held}",
                std::net::Ipv4Addr::from(ip.to_ne_bytes())
            );
        }
    }
    // SQLite, one node: no cap, as before the cap was built.
    assert!(
        new_entries
            .iter()
            .all(|(_, v)| v.cap_mono_ns == dhcp_common::NO_CAP),
        "one node's entries are not capped"
    );
}
