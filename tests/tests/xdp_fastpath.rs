//! The fast path against its oracle, through BPF_PROG_TEST_RUN: the
//! control plane (state machine, map sync) grants leases to simulated
//! clients, then every renewal frame runs through the XDP program and the
//! control plane alike. The XDP_TX frame must be exactly the control
//! plane's reply, whole (Ethernet, tags, IPv4 and UDP headers, payload),
//! for every shape, relayed ones included. Nothing is masked: both planes
//! write the IP header `dhcp_common::reply_ip` defines, id included.
//! Every request it must not answer must pass, counted with its reason,
//! unchanged.

use std::net::Ipv4Addr;

use dhcp_common::{
    layout::{bootp, eth, ipv4, msg, opt, udp},
    stat,
};
use xdhcp::{
    config::Config,
    daemon::serve::unix_now,
    daemon::transmit::{Egress, Wire},
    dhcp::server::{Arrival, Server},
    proto,
    xdp::loader::{Fastpath, XdpStats, XDP_PASS, XDP_TX},
    xdp::map_sync::{lease_key, unix_to_mono_ns, FastIface, FastMaps},
};
use xdhcp_lab::{
    fixture::verdict_name,
    frame::{FrameSpec, TPID_8021AD, TPID_8021Q},
};

const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const RELAY_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe];
const SERVER_ID: [u8; 4] = [198, 18, 0, 1];
const GIADDR: [u8; 4] = [198, 19, 10, 1];
/// BPF_PROG_TEST_RUN needs a real device for the ingress ifindex: loopback.
const IFINDEX: u32 = 1;

/// Where option `code` starts (its code byte) in a BOOTP message, if it
/// is there before END.
fn option_at(p: &[u8], code: u8) -> Option<usize> {
    let mut i = bootp::OPTIONS;
    while i < p.len() && p[i] != opt::END {
        if p[i] == code {
            return Some(i);
        }
        if p[i] == opt::PAD {
            i += 1;
        } else {
            i += 2 + usize::from(*p.get(i + 1)?);
        }
    }
    None
}

/// The address a reply gives the client.
fn yiaddr(payload: &[u8]) -> Ipv4Addr {
    <[u8; 4]>::try_from(&payload[bootp::YIADDR]).unwrap().into()
}

const CONFIG: &str = r#"
[server]
server_id = "198.18.0.1"
lease_db = "/nonexistent/unused.db"

[[interface]]
name = "lo"

[options]
lease_time = 600
dns_servers = ["198.18.0.53", "198.18.0.54"]
domain_name = "lab.xdhcp.test"

[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "lo"
rapid_commit = true
options = { routers = ["198.18.0.1"] }
[[subnet.pool]]
start = "198.18.0.100"
end = "198.18.0.199"

[[subnet]]
id = 100
subnet = "198.18.100.0/24"
interface = "lo"
vlan = 100
options = { routers = ["198.18.100.1"], lease_time = 1200 }
[[subnet.pool]]
start = "198.18.100.10"
end = "198.18.100.250"

[[subnet]]
id = 200
subnet = "198.18.101.0/24"
interface = "lo"
rapid_commit = true
vlan = 100
inner_vlan = 200
[[subnet.pool]]
start = "198.18.101.10"
end = "198.18.101.250"

[[subnet]]
id = 300
subnet = "198.19.10.0/24"
rapid_commit = true
options = { routers = ["198.19.10.1"], domain_name = "relayed.xdhcp.test" }
[[subnet.pool]]
start = "198.19.10.20"
end = "198.19.10.220"
"#;

/// CONFIG with client classes on what the kernel compares (option 82,
/// the arrival's VLANs), relay-identity reservations and a boot class
/// (whose bindings the kernel must leave to the control plane).
const SUBSCRIBER: &str = r#"
[[subnet.reservation]]
circuit_id = "eth0/7"
ip = "198.19.10.7"
options = { hostname = "line-7" }
[[subnet.reservation]]
circuit_id = "eth0/8"
giaddr = "198.19.10.1"
ip = "198.19.10.8"

[[class]]
name = "gold"
match = 'agent.circuit_id starts_with "eth0/1"'
options = { domain_name = "gold.xdhcp.test", hostname = "gold", domain_search = ["gold.xdhcp.test", "xdhcp.test"] }

[[class]]
name = "tagged"
match = "vlan == 100 and not inner_vlan == 200"
options = { dns_servers = ["198.18.100.53"] }

[[class]]
name = "boot"
match = 'agent.circuit_id == "eth0/4" or inner_vlan == 200 and agent.circuit_id == "none"'
options = { next_server = "198.18.0.1", boot_file_name = "pxelinux.0" }
"#;

fn subscriber_config() -> String {
    format!("{CONFIG}{SUBSCRIBER}")
}

/// The control plane and the XDP program side by side, the maps synced
/// as serve's committer does.
struct Rig {
    fp: Fastpath,
    maps: FastMaps,
    server: Server,
    egress: Egress,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_config(CONFIG)
    }

    fn with_config(text: &str) -> Rig {
        xdhcp_lab::require_lab();
        let config = Config::parse(text, "test config").unwrap();
        let mut fp = Fastpath::load_sized(false, 4096)
            .expect("loading the XDP program (needs root and BPF)");
        let maps = FastMaps::new(
            &mut fp,
            &[FastIface {
                name: "lo".into(),
                ifindex: IFINDEX,
                mac: SERVER_MAC,
            }],
            Ipv4Addr::from(SERVER_ID),
        )
        .unwrap();
        Rig {
            fp,
            maps,
            server: Server::new(&config, Vec::new()),
            // This process's addresses are not the lab's: requests to the
            // server identifier need none, others are not local here.
            egress: Egress::with_locality(Ipv4Addr::from(SERVER_ID), |_| false),
        }
    }

    /// The control plane's reply to `frame`, its store changes applied to
    /// the maps around a (virtual) commit.
    fn control(&mut self, frame: &[u8]) -> Option<Wire> {
        self.try_control(frame, true).expect("test frames parse")
    }

    /// `control` for frames that may not parse: why, when one does not.
    fn try_control(&mut self, frame: &[u8], check_udp: bool) -> Result<Option<Wire>, String> {
        let f = proto::parse_frame(frame, None, check_udp).map_err(|e| e.name().to_string())?;
        let req = proto::parse_dhcp(f.payload).map_err(|e| e.name().to_string())?;
        let arrival = Arrival {
            iface: "lo",
            tags: &f.tags,
            src_mac: f.src_mac,
            src_ip: f.src_ip,
        };
        let out = self.server.handle(&req, &arrival, unix_now());
        let mut report = xdhcp::xdp::map_sync::MapReport::new(0);
        self.maps.before_commit(&out.store, &mut report);
        self.maps.after_commit(&out.store, &mut report);
        Ok(out
            .reply
            .map(|r| self.egress.frame_for(&r.dest, &f, SERVER_MAC, r.payload, 0)))
    }

    fn xdp(&self, frame: &[u8]) -> (u32, Vec<u8>, XdpStats) {
        let before = self.fp.stats().unwrap();
        let out = self.fp.test_run_on(frame, IFINDEX, 1).unwrap();
        let delta = self.fp.stats().unwrap().since(&before);
        (out.verdict, out.frame, delta)
    }
}

/// Small deterministic generator: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Debug)]
struct Client {
    mac: [u8; 6],
    client_id: Option<Vec<u8>>,
    tags: Vec<(u16, u16)>,
    /// Option 82 payload when behind the relay.
    relay_info: Option<Vec<u8>>,
    /// The relay also relays unicast renewals (a BNG-style relay that
    /// sees every DHCP frame), option 82 and giaddr included.
    relays_renewals: bool,
    prl: Option<Vec<u8>>,
    max_message_size: Option<u16>,
    hostname: Option<Vec<u8>>,
    broadcast: bool,
    /// Payload padded to this length (0 = no padding).
    pad_to: usize,
    /// Order of the client's own options.
    order_seed: u64,
    ip: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Discover,
    Selecting,
    Renewing,
    Rebinding,
    InitReboot,
    /// A DISCOVER with rapid commit (80).
    Rapid,
}

impl Client {
    fn random(rng: &mut Rng, n: u32) -> Client {
        let mac = [0x02, 0x10, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0x01];
        let tags = match rng.below(4) {
            0 => vec![(TPID_8021Q, 100)],
            1 => vec![
                (
                    if rng.chance(50) {
                        TPID_8021AD
                    } else {
                        TPID_8021Q
                    },
                    100,
                ),
                (TPID_8021Q, 200),
            ],
            _ => vec![],
        };
        let relayed = tags.is_empty() && rng.chance(35);
        let mut prl: Vec<u8> = [1u8, 3, 6, 15, 28, 42, 119, 121, 252, 51, 58, 59]
            .into_iter()
            .filter(|_| rng.chance(60))
            .collect();
        if rng.chance(30) {
            prl.reverse();
        }
        Client {
            mac,
            client_id: rng.chance(50).then(|| {
                let mut id = vec![1];
                id.extend_from_slice(&mac);
                match rng.below(10) {
                    0..=2 => id = vec![0xff, 0, 0, 0, n as u8, 0, 1, 0, 1, 0x2c, 0x1d],
                    // RFC 4361 with a DUID-LLT (19 bytes), and the longest
                    // identifier a map key holds (20).
                    3 | 4 => {
                        id = vec![0xff, 0, 0, 0, n as u8, 0, 1, 0, 1, 0x2c, 0x1d, 0x55, 0xaa];
                        id.extend_from_slice(&mac);
                    }
                    5 => {
                        id = vec![0xff, 0, 0, 0, n as u8, 0, 2, 0, 0, 0x9c, 0x6b];
                        id.extend_from_slice(&mac);
                        id.extend_from_slice(&[n as u8, 7, 9]);
                    }
                    _ => {}
                }
                id
            }),
            tags,
            relays_renewals: relayed && rng.chance(50),
            relay_info: relayed.then(|| {
                let circuit = format!("eth0/{}", rng.below(48));
                let mut v = vec![1, circuit.len() as u8];
                v.extend_from_slice(circuit.as_bytes());
                v.extend_from_slice(&[2, 6]);
                v.extend_from_slice(&mac);
                v
            }),
            prl: rng.chance(85).then_some(prl),
            max_message_size: rng
                .chance(50)
                .then(|| [576u16, 1200, 1500][rng.below(3) as usize]),
            hostname: rng.chance(40).then(|| format!("host-{n}").into_bytes()),
            broadcast: rng.chance(40),
            pad_to: [0usize, 300, 300, 548, 1000][rng.below(5) as usize],
            order_seed: rng.next(),
            ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// Whether this request goes through the relay: all but RENEWING, which
    /// goes straight to the server (RFC 2131 §4.4.5) unless the relay
    /// relays renewals too.
    fn relayed(&self, kind: Kind) -> bool {
        self.relay_info.is_some() && (kind != Kind::Renewing || self.relays_renewals)
    }

    /// `CONFIG` enables rapid commit on every subnet but the single-tagged
    /// one (100).
    fn on_rapid_subnet(&self) -> bool {
        self.relay_info.is_some() || self.tags.len() != 1
    }

    fn payload(&self, kind: Kind, xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; bootp::FIXED_LEN];
        p[bootp::OP] = bootp::BOOTREQUEST;
        p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
        p[bootp::HLEN] = 6;
        p[bootp::XID].copy_from_slice(&xid.to_be_bytes());
        p[bootp::SECS].copy_from_slice(&(xid as u16 & 0xff).to_be_bytes());
        if self.broadcast {
            p[bootp::FLAGS].copy_from_slice(&bootp::FLAG_BROADCAST.to_be_bytes());
        }
        if matches!(kind, Kind::Renewing | Kind::Rebinding) {
            p[bootp::CIADDR].copy_from_slice(&self.ip.octets());
        }
        if self.relayed(kind) {
            p[bootp::HOPS] = 1;
            p[bootp::GIADDR].copy_from_slice(&GIADDR);
        }
        p[bootp::CHADDR][..6].copy_from_slice(&self.mac);
        p.extend_from_slice(&bootp::MAGIC_COOKIE);
        let msg_type = if matches!(kind, Kind::Discover | Kind::Rapid) {
            msg::DISCOVER
        } else {
            msg::REQUEST
        };
        let mut opts: Vec<Vec<u8>> = Vec::new();
        let mut push = |code: u8, v: &[u8]| {
            let mut o = vec![code, v.len() as u8];
            o.extend_from_slice(v);
            opts.push(o);
        };
        if let Some(id) = &self.client_id {
            push(opt::CLIENT_ID, id);
        }
        if matches!(kind, Kind::Selecting | Kind::InitReboot) {
            push(opt::REQUESTED_IP, &self.ip.octets());
        }
        if kind == Kind::Selecting {
            push(opt::SERVER_ID, &SERVER_ID);
        }
        if let Some(m) = self.max_message_size {
            push(opt::MAX_MESSAGE_SIZE, &m.to_be_bytes());
        }
        if let Some(prl) = &self.prl {
            push(opt::PARAMETER_REQUEST_LIST, prl);
        }
        if let Some(h) = &self.hostname {
            push(opt::HOSTNAME, h);
        }
        if kind == Kind::Rapid {
            push(opt::RAPID_COMMIT, &[]);
        }
        // Clients order their options freely; the message type need not come
        // first.
        let mut seed = Rng(self.order_seed | 1);
        for i in (1..opts.len()).rev() {
            let j = seed.below(i as u64 + 1) as usize;
            opts.swap(i, j);
        }
        opts.insert(
            seed.below(opts.len() as u64 + 1) as usize,
            vec![opt::MESSAGE_TYPE, 1, msg_type],
        );
        for o in opts {
            p.extend_from_slice(&o);
        }
        // Relays append option 82 last.
        if let (Some(rai), true) = (&self.relay_info, self.relayed(kind)) {
            p.push(opt::RELAY_AGENT_INFO);
            p.push(rai.len() as u8);
            p.extend_from_slice(rai);
        }
        p.push(opt::END);
        if p.len() < self.pad_to {
            p.resize(self.pad_to, 0);
        }
        p
    }

    fn frame(&self, kind: Kind, xid: u32) -> Vec<u8> {
        self.spec(kind, xid).build()
    }

    fn spec(&self, kind: Kind, xid: u32) -> FrameSpec {
        let payload = self.payload(kind, xid);
        let relayed = self.relayed(kind);
        let unicast = kind == Kind::Renewing;
        FrameSpec {
            dst_mac: if unicast || relayed {
                SERVER_MAC
            } else {
                [0xff; 6]
            },
            src_mac: if relayed || (unicast && self.relay_info.is_some()) {
                RELAY_MAC
            } else {
                self.mac
            },
            tags: self.tags.clone(),
            src_ip: if relayed {
                GIADDR
            } else if unicast {
                self.ip.octets()
            } else {
                [0, 0, 0, 0]
            },
            dst_ip: if unicast || relayed {
                SERVER_ID
            } else {
                [255; 4]
            },
            src_port: if relayed { 67 } else { 68 },
            dst_port: 67,
            payload,
            ..Default::default()
        }
    }
}

fn wire_bytes(w: &Wire) -> &[u8] {
    let Wire::Frame { bytes, .. } = w;
    bytes
}

/// Obtains a lease through the control plane (DISCOVER, REQUEST).
fn obtain(rig: &mut Rig, c: &mut Client, xid: u32) {
    let offer = rig
        .control(&c.frame(Kind::Discover, xid))
        .expect("an OFFER");
    let f = proto::parse_frame(wire_bytes(&offer), None, true).unwrap();
    let payload = f.payload.to_vec();
    c.ip = yiaddr(&payload);
    assert!(!c.ip.is_unspecified());
    rig.control(&c.frame(Kind::Selecting, xid + 1))
        .expect("an ACK");
}

/// The XDP program's reply must be the control plane's, byte for byte,
/// whatever the shape (direct, tagged, relayed): nothing is masked.
fn compare(name: &str, xdp: &[u8], cp: &Wire) -> Result<(), String> {
    let bytes = wire_bytes(cp);
    if xdp != bytes {
        let first = xdp.iter().zip(bytes.iter()).position(|(a, b)| a != b);
        return Err(format!(
            "{name}: frames differ (len xdp {} cp {}, first difference at {first:?})\nxdp {xdp:02x?}\ncp  {bytes:02x?}",
            xdp.len(),
            bytes.len()
        ));
    }
    Ok(())
}

/// The reply's IPv4 header is the shared definition's, independently of
/// either plane's code: TOS 0, DF clear, TTL 64, id from the xid.
fn check_ip_header(name: &str, frame: &[u8]) -> Result<(), String> {
    let f = proto::parse_frame(frame, None, true).map_err(|e| format!("{name}: {e:?}"))?;
    let l3 = frame.len() - f.payload.len() - 28;
    let ip = &frame[l3..l3 + 20];
    let xid = u32::from_be_bytes(f.payload[bootp::XID].try_into().unwrap());
    let id = ((xid >> 16) as u16 ^ xid as u16).to_be_bytes();
    if ip[0] != 0x45 || ip[1] != 0 || ip[4..6] != id || ip[6..8] != [0, 0] || ip[8] != 64 {
        return Err(format!("{name}: IP header {ip:02x?}"));
    }
    Ok(())
}

#[test]
fn renewals_answered_in_the_kernel_equal_the_control_planes_acks() {
    let mut rig = Rig::new();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut failures = Vec::new();
    let mut answered = std::collections::BTreeMap::<u32, u64>::new();
    let mut path_passes = 0;
    let (mut answered_relayed, mut relayed_renewing) = (0, 0);
    let mut rapid_seen = std::collections::BTreeMap::<bool, u32>::new();
    let cases = 300;
    for n in 0..cases {
        let mut c = Client::random(&mut rng, n);
        obtain(&mut rig, &mut c, n * 16);
        let mut last_relayed = c.relayed(Kind::Selecting);
        // A known client that DISCOVERs (it lost its lease, or rebooted
        // without a memory) is offered its binding and ACKed in the kernel;
        // with rapid commit on its subnet the control plane ACKs it at
        // once, and the binding that ACK makes is renewed in the kernel.
        for (i, kind) in [
            Kind::Renewing,
            Kind::Rebinding,
            Kind::InitReboot,
            Kind::Discover,
            Kind::Selecting,
            Kind::Renewing,
            Kind::Rapid,
            Kind::Renewing,
            Kind::Rapid,
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("client {n} {kind:?} #{i} {c:?}");
            let req = c.frame(kind, n * 16 + 2 + i as u32);
            let (verdict, out, delta) = rig.xdp(&req);
            let cp = rig.control(&req);
            // A relayed client renews directly (RFC 2131 §4.4.5): not from
            // where, nor in the shape, its binding was made. The control
            // plane answers and rebinds; the next request on the same path
            // is the kernel's.
            let relayed = c.relayed(kind);
            if relayed != last_relayed {
                last_relayed = relayed;
                let reason =
                    delta.get(stat::PASS_WRONG_SCOPE) + delta.get(stat::PASS_SHAPE_CHANGED);
                if verdict != XDP_PASS || reason != 1 || cp.is_none() {
                    failures.push(format!(
                        "{name}: path changed, want a pass and a control-plane ACK: {} {delta}",
                        verdict_name(verdict)
                    ));
                }
                path_passes += 1;
                continue;
            }
            let rapid = c.on_rapid_subnet();
            if kind == Kind::Rapid {
                // The control plane ACKs with the 80 echo where the subnet
                // enables rapid commit, else OFFERs; the kernel answers as
                // it does (compared below, byte for byte). The binding a
                // rapid ACK extends is the kernel's to renew after it.
                let answered_as = cp.as_ref().is_some_and(|w| {
                    let f = proto::parse_frame(wire_bytes(w), None, true).unwrap();
                    let p = f.payload;
                    let want = if rapid { msg::ACK } else { msg::OFFER };
                    option_at(p, opt::MESSAGE_TYPE).is_some_and(|i| p[i + 2] == want)
                        && option_at(p, opt::RAPID_COMMIT).is_some() == rapid
                });
                if !answered_as {
                    failures.push(format!(
                        "{name}: rapid DISCOVER, want the control plane's {}: {cp:?}",
                        if rapid { "rapid ACK" } else { "OFFER" },
                    ));
                }
                *rapid_seen.entry(rapid).or_default() += 1;
            }
            if verdict != XDP_TX {
                failures.push(format!(
                    "{name}: verdict {} counters {delta}",
                    verdict_name(verdict)
                ));
                continue;
            }
            // Through a relay, REBINDING (broadcast by the client) reaches
            // the server unicast like RENEWING: the two are told apart by
            // the IP destination only (RFC 2131 §4.3.2).
            let state = match kind {
                Kind::Rebinding if relayed => stat::FP_ACK_RENEWING,
                Kind::Renewing => stat::FP_ACK_RENEWING,
                Kind::Rebinding => stat::FP_ACK_REBINDING,
                Kind::Discover => stat::FP_OFFER,
                Kind::Selecting => stat::FP_ACK_SELECTING,
                Kind::InitReboot => stat::FP_ACK_INIT_REBOOT,
                Kind::Rapid if rapid => stat::FP_ACK_RAPID,
                Kind::Rapid => stat::FP_OFFER,
            };
            if delta.get(state) != 1 {
                failures.push(format!("{name}: counters {delta}"));
            }
            *answered.entry(state).or_default() += 1;
            match cp {
                Some(cp) => {
                    if let Err(e) = compare(&name, &out, &cp) {
                        failures.push(e);
                    }
                    if relayed {
                        answered_relayed += 1;
                        // From the server identifier, to the relay through
                        // the neighbour that sent the request.
                        let f = proto::parse_frame(&out, None, true).unwrap();
                        if f.src_ip != Ipv4Addr::from(SERVER_ID)
                            || f.dst_ip != Ipv4Addr::from(GIADDR)
                            || (f.src_port, f.dst_port) != (67, 67)
                            || f.dst_mac[..] != req[6..12]
                        {
                            failures.push(format!("{name}: relay reply addressed wrongly: {f:?}"));
                        }
                        if kind == Kind::Renewing {
                            relayed_renewing += 1;
                        }
                    }
                    if let Err(e) = check_ip_header(&name, &out) {
                        failures.push(e);
                    }
                }
                None => failures.push(format!("{name}: XDP answered, the control plane did not")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renewals differ:\n{}",
        failures.len(),
        cases * 9,
        failures[..failures.len().min(5)].join("\n\n")
    );
    assert!(
        rapid_seen.len() == 2 && rapid_seen.values().all(|n| *n > 50),
        "rapid DISCOVERs (on a rapid-commit subnet: count): {rapid_seen:?}"
    );
    assert!(path_passes > 0, "the generator made no relayed client");
    assert!(
        answered_relayed > 50 && relayed_renewing > 10,
        "relayed answers {answered_relayed}, relayed RENEWING {relayed_renewing}"
    );
    assert!(
        answered.len() == 6 && answered.values().all(|n| *n > 100),
        "{answered:?}"
    );
    eprintln!("answered in the kernel (by state counter): {answered:?}, relayed {answered_relayed} (RENEWING {relayed_renewing}); relayed clients changing path, passed: {path_passes}");
}

/// Classes on relay information and VLANs, relay-identity reservations,
/// boot fields and stashed option 82 on both planes: every renewal the
/// kernel answers is the control plane's ACK byte for byte; a boot-class
/// binding is never the kernel's; a unicast renewal without option 82 is
/// ACKed by the control plane with the options of its relayed ACK.
#[test]
fn classes_relay_reservations_boot_fields_and_stashed_relay_information_on_both_planes() {
    let mut rig = Rig::with_config(&subscriber_config());
    let mut rng = Rng(0x5eed_0016_abcd_ef01);
    let mut failures = Vec::new();
    let (mut gold_tx, mut reserved_tx, mut tagged_tx, mut boot, mut stashed) = (0, 0, 0, 0, 0);
    let cases = 240;
    let option = |w: &Wire, code: u8| {
        let f = proto::parse_frame(wire_bytes(w), None, true).unwrap();
        let i = option_at(f.payload, code)?;
        let n = usize::from(f.payload[i + 1]);
        Some(f.payload[i + 2..i + 2 + n].to_vec())
    };
    let siaddr = |w: &Wire| {
        let f = proto::parse_frame(wire_bytes(w), None, true).unwrap();
        f.payload[bootp::SIADDR].to_vec()
    };
    for n in 0..cases {
        let mut c = Client::random(&mut rng, n);
        // Some relayed clients on the reserved lines, in turn (each one
        // takes its line over from the one before).
        // And some on the boot line.
        if let Some(r) = c.relay_info.as_mut().filter(|_| n % 4 == 1 || n % 8 == 3) {
            let rest = r[2 + usize::from(r[1])..].to_vec();
            let line: &[u8] = match n % 8 {
                1 => b"eth0/7",
                3 => b"eth0/4",
                _ => b"eth0/8",
            };
            *r = [&[1, 6][..], line, &rest].concat();
        }
        let circuit = c
            .relay_info
            .as_ref()
            .map(|r| r[2..2 + usize::from(r[1])].to_vec());
        let is = |p: &str| {
            circuit
                .as_deref()
                .is_some_and(|x| x.starts_with(p.as_bytes()))
        };
        let gold = is("eth0/1");
        let booting = circuit.as_deref() == Some(b"eth0/4");
        let reserved =
            circuit.as_deref() == Some(b"eth0/7") || circuit.as_deref() == Some(b"eth0/8");
        let tagged = c.tags.len() == 1;
        let offer = rig
            .control(&c.frame(Kind::Discover, n * 16))
            .unwrap_or_else(|| {
                panic!(
                    "client {n} {c:?}: no OFFER: {:?}",
                    rig.server.counters.dropped
                )
            });
        let f = proto::parse_frame(wire_bytes(&offer), None, true).unwrap();
        c.ip = yiaddr(f.payload);
        let ack = rig
            .control(&c.frame(Kind::Selecting, n * 16 + 1))
            .expect("an ACK");
        let domain = option(&ack, opt::DOMAIN_NAME);
        if reserved && !c.ip.octets().starts_with(&[198, 19, 10]) {
            failures.push(format!("client {n}: reserved line got {}", c.ip));
        }
        if booting {
            boot += 1;
            if siaddr(&ack) != [198, 18, 0, 1] {
                failures.push(format!("client {n}: boot class ACK without next-server"));
            }
        }
        for (i, kind) in [
            Kind::Renewing,
            Kind::Rebinding,
            Kind::Renewing,
            Kind::Renewing,
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("client {n} {kind:?} #{i} {c:?}");
            let req = c.frame(kind, n * 16 + 2 + i as u32);
            let (verdict, out, delta) = rig.xdp(&req);
            let cp = rig.control(&req);
            let Some(cp) = cp else {
                failures.push(format!("{name}: no control-plane reply"));
                continue;
            };
            if c.relay_info.is_some() && !c.relayed(kind) {
                // Unicast, no option 82: the stash classifies it.
                stashed += 1;
                if option(&cp, opt::MESSAGE_TYPE) != Some(vec![msg::ACK])
                    || option(&cp, opt::DOMAIN_NAME) != domain
                {
                    failures.push(format!(
                        "{name}: stashed renewal got {:?} domain {:?}, want ACK with {domain:?}",
                        option(&cp, opt::MESSAGE_TYPE),
                        option(&cp, opt::DOMAIN_NAME)
                    ));
                }
            }
            if verdict == XDP_TX {
                if booting {
                    failures.push(format!("{name}: the kernel answered a boot binding"));
                }
                if let Err(e) = compare(&name, &out, &cp) {
                    failures.push(e);
                }
                gold_tx += u32::from(gold);
                reserved_tx += u32::from(reserved);
                tagged_tx += u32::from(tagged);
            } else if verdict != XDP_PASS {
                failures.push(format!("{name}: verdict {} {delta}", verdict_name(verdict)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n\n")
    );
    eprintln!("kernel ACKs: gold class {gold_tx}, reserved lines {reserved_tx}, tagged class {tagged_tx}; boot bindings {boot}; stashed renewals {stashed}");
    assert!(
        gold_tx > 10 && tagged_tx > 10 && reserved_tx > 0,
        "coverage"
    );
    assert!(boot > 0 && stashed > 20, "coverage");
}

/// What the kernel must leave to the control plane once the map changes
/// under a bound client (expiring, released), and the control plane's
/// answers to the relayed requests the kernel passes for their address.
/// The single requests it must not answer, each passed unchanged with its
/// reason, are fixtures (tests/fixtures/bound_clients.toml, run by
/// tests/xdp_fixtures.rs).
#[test]
fn requests_it_must_not_answer_once_the_map_changes_pass_with_their_reason() {
    let mut rig = Rig::new();
    let mut rng = Rng(42);
    let mut c = Client::random(&mut rng, 1);
    c.tags.clear();
    c.relay_info = None;
    c.client_id = None;
    c.prl = Some(vec![1, 3, 6]);
    c.max_message_size = None;
    c.pad_to = 300;
    obtain(&mut rig, &mut c, 100);
    let renew = c.frame(Kind::Renewing, 7);
    // Sanity: this exact client is answered.
    assert_eq!(rig.xdp(&renew).0, XDP_TX);

    let payload_at = eth::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;
    // Behind a relay that relays renewals: answered when the relay sends
    // to the server identifier, passed when it sends elsewhere (another
    // address of the server, or a broadcast), whose replies must leave
    // from that address (the control plane knows which are local).
    let mut behind_relay = c.clone();
    behind_relay.mac[5] ^= 0x20;
    behind_relay.relay_info = Some(vec![1, 4, b'p', b'o', b'r', b't']);
    behind_relay.relays_renewals = true;
    obtain(&mut rig, &mut behind_relay, 300);
    assert_eq!(rig.xdp(&behind_relay.frame(Kind::Renewing, 8)).0, XDP_TX);
    let to = |kind: Kind, dst: [u8; 4]| {
        let mut spec = behind_relay.spec(kind, 8);
        spec.dst_ip = dst;
        spec.build()
    };
    let mut failures = Vec::new();
    // The control plane answers those; not local here, so from the server
    // identifier (the lab test covers another local address).
    for dst in [[198, 18, 0, 2], [255; 4]] {
        let cp = rig.control(&to(Kind::Renewing, dst)).expect("an ACK");
        let f = proto::parse_frame(wire_bytes(&cp), None, true).unwrap();
        assert_eq!(f.src_ip, Ipv4Addr::from(SERVER_ID), "{dst:?}");
        assert_eq!(f.dst_ip, Ipv4Addr::from(GIADDR), "{dst:?}");
    }
    // Truncated frames never reach the fast path.
    let mut short = renew.clone();
    short.truncate(payload_at + 250);
    let (verdict, out, delta) = rig.xdp(&short);
    if verdict != XDP_PASS || out != short || delta.get(stat::TRUNCATED) != 1 {
        failures.push(format!("truncated: {} {delta}", verdict_name(verdict)));
    }
    // An expiring binding is the control plane's.
    let key = lease_key(&[&[1u8, 1][..], &c.mac[..]].concat()).unwrap();
    let mut lease = rig.server.leases.get(c.ip).unwrap().clone();
    lease.expires = unix_now() + 3;
    // A rewrite keeps the kernel's later grant (the client holds it), so
    // the entry goes first, as when the binding ends and is made again.
    let mut report = xdhcp::xdp::map_sync::MapReport::new(0);
    rig.maps
        .before_commit(&[xdhcp::store::StoreOp::delete_of(&lease)], &mut report);
    rig.maps.load(std::iter::once(&lease));
    let entry = rig.maps.get(&key).expect("the binding is in the map");
    assert!(entry.expires_mono_ns < unix_to_mono_ns(unix_now() + 5));
    let (verdict, _, delta) = rig.xdp(&renew);
    if verdict != XDP_PASS || delta.get(stat::PASS_EXPIRED) != 1 {
        failures.push(format!("expiring: {} {delta}", verdict_name(verdict)));
    }
    // Released: gone from the map.
    lease.expires = unix_now() + 600;
    rig.maps.load(std::iter::once(&lease));
    assert_eq!(rig.xdp(&renew).0, XDP_TX);
    let mut release = c.payload(Kind::Renewing, 9);
    let at = option_at(&release, opt::MESSAGE_TYPE).expect("a message type");
    release[at + 2] = msg::RELEASE;
    let release = FrameSpec {
        dst_mac: SERVER_MAC,
        src_mac: c.mac,
        src_ip: c.ip.octets(),
        dst_ip: SERVER_ID,
        payload: release,
        ..Default::default()
    }
    .build();
    rig.control(&release);
    assert!(
        rig.maps.get(&key).is_none(),
        "RELEASE must remove the binding"
    );
    let (verdict, _, delta) = rig.xdp(&renew);
    if verdict != XDP_PASS || delta.get(stat::PASS_UNKNOWN_CLIENT) != 1 {
        failures.push(format!("after RELEASE: {} {delta}", verdict_name(verdict)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A renewal is reported (ring event) only when it moves the stored end by
/// at least lease/8; renewals in between still extend the map's end. So a
/// client renewing in a loop costs one event per lease/8, and a client on
/// RFC 2131 timers (T1 = lease/2) is reported at every renewal.
#[test]
fn renewals_are_reported_when_they_move_the_stored_end_by_an_eighth_of_the_lease() {
    use aya::maps::{MapData, RingBuf};
    use dhcp_common::{RenewEvent, MAP_EVENTS};
    let mut rig = Rig::new();
    let mut rng = Rng(7);
    let mut c = Client::random(&mut rng, 3);
    c.tags.clear();
    c.relay_info = None;
    c.client_id = None;
    obtain(&mut rig, &mut c, 100);
    let key = lease_key(&[&[1u8, 1][..], &c.mac[..]].concat()).unwrap();
    let mut events: RingBuf<MapData> =
        RingBuf::try_from(rig.fp.take_map(MAP_EVENTS).unwrap()).unwrap();
    let drain = |events: &mut RingBuf<MapData>| {
        let mut n = Vec::new();
        while let Some(e) = events.next() {
            let ev: RenewEvent =
                bytemuck::pod_read_unaligned(&e[..std::mem::size_of::<RenewEvent>()]);
            n.push(ev);
        }
        n
    };
    let renew = c.frame(Kind::Renewing, 7);
    let stored = rig.maps.get(&key).unwrap();
    // Just bound: the stored end is now + lease, so a renewal now moves it
    // by less than lease/8: answered, end extended, no event.
    assert_eq!(rig.xdp(&renew).0, XDP_TX);
    let after = rig.maps.get(&key).unwrap();
    assert!(after.expires_mono_ns >= stored.expires_mono_ns);
    assert_eq!(after.reported_mono_ns, stored.reported_mono_ns);
    assert!(drain(&mut events).is_empty());
    // The store's end lags by more than lease/8 (as after half a lease):
    // the renewal is reported, and the map remembers what it reported.
    let mut lease = rig.server.leases.get(c.ip).unwrap().clone();
    let lease_secs = lease.lease_secs as i64;
    lease.expires = unix_now() + (lease_secs / 2) as u64;
    rig.maps.load(std::iter::once(&lease));
    for _ in 0..5 {
        assert_eq!(rig.xdp(&renew).0, XDP_TX);
    }
    let evs = drain(&mut events);
    assert_eq!(evs.len(), 1, "five renewals in a row are one event");
    let now = rig.maps.get(&key).unwrap();
    assert_eq!(evs[0].expires_mono_ns, now.reported_mono_ns);
    assert!(now.expires_mono_ns >= now.reported_mono_ns);
    assert!(now.reported_mono_ns > unix_to_mono_ns(unix_now() + lease_secs as u64 - 5));
}

/// Issue 12: the differential fuzz. Requests of bound clients (the
/// generators above) are mutated (`xdhcp_lab::mutate`: flipped bytes,
/// duplicated, injected, removed and swapped options, lying IPv4/UDP
/// lengths, odd htype/hlen, truncation, tags, relay fields and option 82,
/// trailers, IPv4 options, ports, message types) and run through
/// BPF_PROG_TEST_RUN. Whenever the kernel answers (XDP_TX), the control
/// plane must send the same reply, compared as `compare` does (a whole
/// frame; for a relay, the datagram's payload and addressing, whose
/// headers the kernel's stack would build). A frame passed must pass
/// unchanged; nothing may be dropped or aborted.
///
/// One difference is masked, and counted: the XDP program does not verify
/// UDP checksums (the control plane is told not to either where the
/// kernel verified or never computed them, PACKET_AUXDATA), so the control
/// plane parses with `check_udp` off here.
///
/// `XDHCP_FUZZ_FRAMES` (default 200,000) and `XDHCP_FUZZ_SEED` choose the
/// run; `XDHCP_FUZZ_WRITE_SEEDS=fuzz/corpus` also writes the libFuzzer
/// seed corpora (fuzz/README.md).
#[test]
fn mutated_frames_the_kernel_answers_get_the_same_reply_from_the_control_plane() {
    use aya::maps::{MapData, RingBuf};
    use dhcp_common::MAP_EVENTS;
    use std::collections::BTreeMap;
    use xdhcp_lab::mutate::{self, udp_checksum_ok};

    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let frames: u64 =
        env("XDHCP_FUZZ_FRAMES").map_or(200_000, |v| v.parse().expect("XDHCP_FUZZ_FRAMES"));
    let seed: u64 = env("XDHCP_FUZZ_SEED").map_or(0x0f0f_1234_5678_9abc, |v| {
        v.parse().expect("XDHCP_FUZZ_SEED")
    });
    // With classes, relay-identity reservations and a boot class: whatever
    // the kernel answers, the control plane answers alike.
    let mut rig = Rig::with_config(&subscriber_config());
    let mut events: RingBuf<MapData> =
        RingBuf::try_from(rig.fp.take_map(MAP_EVENTS).unwrap()).unwrap();
    let mut rng = Rng(seed | 1);
    let mut m = mutate::Rng(seed.rotate_left(17) | 1);
    let mut clients: Vec<Client> = (0..64)
        .map(|n| {
            let mut c = Client::random(&mut rng, 5000 + n);
            obtain(&mut rig, &mut c, n * 16);
            c
        })
        .collect();
    let kinds = [
        Kind::Renewing,
        Kind::Renewing,
        Kind::Renewing,
        Kind::Rebinding,
        Kind::Rebinding,
        Kind::InitReboot,
        Kind::InitReboot,
        Kind::Selecting,
        Kind::Discover,
    ];
    let mut failures: Vec<String> = Vec::new();
    let mut failed = 0u64;
    let (mut acked, mut passed, mut bad_udp_sum, mut unmutated_acks) = (0u64, 0u64, 0u64, 0u64);
    let mut acked_by: BTreeMap<&str, u64> = BTreeMap::new();
    let mut disagree: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked_frames = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..frames {
        if i % 4096 == 0 {
            while events.next().is_some() {}
        }
        let ci = m.below(clients.len() as u64) as usize;
        let kind = m.pick(&kinds);
        let xid = 0x4000_0000 | i as u32;
        let base = clients[ci].frame(kind, xid);
        // One in ten unmutated: the baseline, which the kernel answers
        // where the path and kind are its own.
        let mutated = if m.chance(10) {
            mutate::Mutated {
                frame: base,
                what: vec![],
            }
        } else {
            mutate::mutate(&mut m, &base)
        };
        let req = &mutated.frame;
        let out = rig.fp.test_run_on(req, IFINDEX, 1).unwrap();
        let name = || {
            format!(
                "frame {i} (seed {seed}, client {ci} {kind:?}, {:?})\nin  {req:02x?}",
                mutated.what
            )
        };
        match out.verdict {
            XDP_PASS => {
                passed += 1;
                if out.frame != *req {
                    failed += 1;
                    if failures.len() < 5 {
                        failures.push(format!("{}: passed, but changed", name()));
                    }
                }
            }
            XDP_TX => {
                acked += 1;
                if mutated.what.is_empty() {
                    unmutated_acks += 1;
                }
                for w in &mutated.what {
                    *acked_by.entry(w).or_default() += 1;
                }
                if !udp_checksum_ok(req) {
                    bad_udp_sum += 1;
                }
                if acked_frames.len() < 64 && !mutated.what.is_empty() {
                    acked_frames.push(req.clone());
                }
                let err = match rig.try_control(req, false) {
                    Ok(Some(cp)) => compare(&name(), &out.frame, &cp)
                        .err()
                        .map(|e| ("replies differ".to_string(), e)),
                    Ok(None) => Some((
                        "the control plane sent nothing".into(),
                        format!("{}: the control plane sent nothing", name()),
                    )),
                    Err(why) => Some((
                        format!("the control plane dropped it: {why}"),
                        format!("{}: the control plane dropped it: {why}", name()),
                    )),
                };
                if let Some((why, e)) = err {
                    failed += 1;
                    *disagree.entry(why).or_default() += 1;
                    if failures.len() < 5 {
                        failures.push(e);
                    }
                }
            }
            v => {
                failed += 1;
                if failures.len() < 5 {
                    failures.push(format!("{}: verdict {}", name(), verdict_name(v)));
                }
            }
        }
        // Now and then a client comes back through DORA (its binding may
        // have moved to another path by a relayed ACK).
        if m.chance(1) {
            let c = &mut clients[ci];
            obtain(&mut rig, c, xid);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "differential fuzz: {frames} frames in {secs:.1} s ({:.0}/s, seed {seed}): kernel ACKs {acked} \
         ({unmutated_acks} unmutated, {} mutated; {bad_udp_sum} with a UDP checksum that does not hold), passed {passed}, failures {failed}\n\
         kernel ACKs by mutation: {acked_by:?}",
        frames as f64 / secs,
        acked - unmutated_acks
    );
    if let Some(dir) = env("XDHCP_FUZZ_WRITE_SEEDS") {
        write_fuzz_seeds(std::path::Path::new(&dir), &acked_frames);
    }
    assert!(
        failed == 0,
        "{failed} of {frames} frames: the planes disagree ({disagree:?}):\n{}",
        failures.join("\n\n")
    );
    assert!(
        unmutated_acks > 0,
        "no unmutated renewal was answered in the kernel"
    );
    assert!(
        acked - unmutated_acks > 0,
        "no mutated frame was answered in the kernel"
    );
}

/// The libFuzzer seed corpora (fuzz/corpus/<target>/), from the same
/// generators: requests of every kind, mutated frames the kernel answered,
/// DORA-and-renew sequences for the `server` target (offers computed by a
/// fresh server on fuzz/server.toml, as the target runs them), the
/// configs, and control API lines.
fn write_fuzz_seeds(dir: &std::path::Path, acked: &[Vec<u8>]) {
    use xdhcp::config::DEFAULT_CONFIG;
    // fuzz/src/lib.rs: its START and record format.
    const START: u64 = 1_800_000_000;
    let record = |sel: u8, p: &[u8]| {
        let mut r = vec![sel];
        r.extend_from_slice(&(p.len() as u16).to_be_bytes());
        r.extend_from_slice(p);
        r
    };
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let fuzz_config = include_str!("../../fuzz/server.toml");
    let config = Config::parse(fuzz_config, "fuzz/server.toml").unwrap();
    let mut rng = Rng(0x5eed);
    for n in 0..24u32 {
        let mut c = Client::random(&mut rng, n);
        let sel = c.tags.len() as u8;
        let mut server = Server::new(&config, Vec::new());
        let mut seq = Vec::new();
        let mut now = START;
        let mut step = |c: &Client, kind: Kind, xid: u32, k: u8, mangle: &dyn Fn(&mut Vec<u8>)| {
            let mut p = c.payload(kind, xid);
            mangle(&mut p);
            now += u64::from(k) * u64::from(k) * 4;
            seq.extend(record(sel | k << 3, &p));
            let req = proto::parse_dhcp(&p).unwrap();
            let tags: Vec<proto::Tag> = c
                .tags
                .iter()
                .map(|&(tpid, tci)| proto::Tag { tpid, tci })
                .collect();
            let arrival = Arrival {
                iface: "lo",
                tags: &tags,
                src_mac: c.mac,
                src_ip: if req.giaddr.is_unspecified() {
                    req.ciaddr
                } else {
                    req.giaddr
                },
            };
            server.handle(&req, &arrival, now).reply
        };
        let offer = step(&c, Kind::Discover, n, 0, &|_| {});
        let Some(offer) = offer else { continue };
        c.ip = yiaddr(&offer.payload);
        step(&c, Kind::Selecting, n + 1, 0, &|_| {});
        step(&c, Kind::Renewing, n + 2, 10, &|_| {});
        step(&c, Kind::Rebinding, n + 3, 3, &|_| {});
        step(&c, Kind::InitReboot, n + 4, 0, &|_| {});
        let release = |p: &mut Vec<u8>| {
            let i = option_at(p, opt::MESSAGE_TYPE).expect("a message type");
            p[i + 2] = msg::RELEASE;
        };
        step(&c, Kind::Renewing, n + 5, 1, &release);
        step(&c, Kind::Discover, n + 6, 0, &|_| {});
        write("server", &format!("gen-{n:02}"), &seq);
        for kind in [
            Kind::Discover,
            Kind::Selecting,
            Kind::Renewing,
            Kind::Rebinding,
            Kind::InitReboot,
        ] {
            if n < 12 {
                write("frame", &format!("gen-{n:02}-{kind:?}"), &c.frame(kind, n));
            }
        }
    }
    for (i, f) in acked.iter().enumerate() {
        write("frame", &format!("kernel-acked-{i:02}"), f);
    }
    write("config", "default.toml", DEFAULT_CONFIG.as_bytes());
    write("config", "fuzz-server.toml", fuzz_config.as_bytes());
    write("config", "xdp-fastpath.toml", CONFIG.as_bytes());
    let lines = [
        r#"{"command":"status"}"#,
        r#"{"command":"status-get"}"#,
        r#"{"command":"statistic-get-all","arguments":{}}"#,
        r#"{"command":"lease4-get-all","arguments":{"subnet":"198.18.0.0/24","state":"bound"}}"#,
        r#"{"command":"lease4-get","arguments":{"ip-address":"198.18.0.100"}}"#,
        r#"{"command":"lease4-get","arguments":{"hw-address":"02:10:00:00:07:01"}}"#,
        r#"{"command":"lease4-get","arguments":{"client-id":"ff:00:00:00:08:00:01:00:01:2c:1d"}}"#,
        r#"{"command":"lease4-del","arguments":{"ip-address":"198.18.0.100"}}"#,
        r#"{"command":"lease4-release","arguments":{"ip-address":"198.18.0.100"}}"#,
        r#"{"command":"lease4-add","arguments":{"ip-address":"198.18.0.120","hw-address":"02-00-00-00-00-77","valid-lft":600}}"#,
        r#"{"command":"lease4-add","arguments":{"ip-address":"198.18.0.121","client-id":"01:02:00:00:00:00:78"}}"#,
        r#"{"command":"reservation-add","arguments":{"ip-address":"198.18.0.42","hw-address":"020000000042"}}"#,
        r#"{"command":"config-reload"}"#,
        r#"{"command":"shutdown","arguments":{"keep-fast-path":true}}"#,
    ];
    for (i, l) in lines.iter().enumerate() {
        write("control", &format!("line-{i:02}"), l.as_bytes());
    }
}
