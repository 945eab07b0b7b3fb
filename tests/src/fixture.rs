//! XDP fixtures as data (`tests/fixtures/*.toml`, described in
//! `tests/fixtures/README.md`), Katran-style: a frame in, the map state it
//! meets, the verdict and the exact frame out expected, and how much each
//! counter must move (every counter not named must stay put). Every case
//! runs through `BPF_PROG_TEST_RUN`, no interface involved.
//!
//! A failing case is reported with everything that differs, and its
//! frames (input, expected, actual) are written to a pcap named in the
//! report; a run reports every failing case, not the first.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use dhcp_common::{shape_hash, stat, STAT_NAMES};
use serde::Deserialize;
use xdhcp::{
    fastmap::{FastIface, FastMaps},
    fastpath::{Fastpath, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    leases::{client_id_key, hw_key, FastReply, Lease, LeaseState},
};

use crate::frame::{checksum, FrameSpec};

/// Where the fixture files are.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Where failing cases' pcaps go: `target/fixture-failures`.
pub fn failures_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("fixture-failures")
}

pub const XDP_REDIRECT: u32 = 4;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn verdict_of(name: &str) -> Result<u32> {
    [XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT]
        .into_iter()
        .find(|v| verdict_name(*v) == name)
        .ok_or_else(|| anyhow!("unknown verdict {name:?}"))
}

fn stat_of(name: &str) -> Result<u32> {
    STAT_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
        .ok_or_else(|| anyhow!("unknown counter {name:?} (see dhcp_common::STAT_NAMES)"))
}

/// One fixture file: the map state its cases run against, and the cases.
#[derive(Debug, Clone)]
pub struct Group {
    /// The file's stem.
    pub name: String,
    pub state: State,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub input: Vec<u8>,
    pub verdict: u32,
    /// The frame the program must leave; `None`: the input, unchanged.
    pub output: Option<Vec<u8>>,
    /// Counter index and delta, for every counter that must move.
    pub counters: Vec<(u32, u64)>,
}

impl Case {
    pub fn expected_frame(&self) -> &[u8] {
        self.output.as_deref().unwrap_or(&self.input)
    }
}

/// What the maps hold when a group's cases run: the interfaces the fast
/// path answers on and the bindings, written by the control plane's own
/// map sync (`FastMaps`) as it writes the store's leases.
#[derive(Debug, Clone)]
pub struct State {
    pub server_id: Ipv4Addr,
    /// Ingress interface of every run (1: loopback, which
    /// `BPF_PROG_TEST_RUN` needs a real device for).
    pub ifindex: u32,
    pub lease_entries: u32,
    pub ifaces: Vec<FastIface>,
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Clone)]
pub struct Binding {
    /// The control plane's client key (`leases::hw_key`/`client_id_key`).
    pub client: Box<[u8]>,
    pub hw: Box<[u8]>,
    pub ip: Ipv4Addr,
    pub subnet_id: u32,
    pub lease_secs: u32,
    /// The binding ends this long after the state is written.
    pub expires_in: u64,
    pub fast: FastReply,
}

impl Binding {
    /// The lease-store lease this binding is, ending `expires_in` after `now`.
    pub fn lease(&self, now_unix: u64) -> Lease {
        Lease {
            ip: self.ip,
            client: Some(self.client.clone()),
            hw: self.hw.clone(),
            subnet_id: self.subnet_id,
            state: LeaseState::Bound,
            expires: now_unix + self.expires_in,
            lease_secs: self.lease_secs,
            fast: Some(Arc::new(self.fast.clone())),
            relay: None,
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

impl State {
    /// Loads the program and writes this state into its maps.
    pub fn load(&self) -> Result<(Fastpath, FastMaps)> {
        let mut fp = Fastpath::load_sized(false, self.lease_entries)
            .context("loading the XDP program (needs root and BPF)")?;
        let mut maps = FastMaps::new(&mut fp, &self.ifaces, self.server_id)?;
        let now = unix_now();
        let leases: Vec<Lease> = self.bindings.iter().map(|b| b.lease(now)).collect();
        let loaded = maps.load(leases.iter());
        ensure!(
            loaded == leases.len(),
            "the map sync wrote {loaded} of {} bindings (one it would not map?)",
            leases.len()
        );
        Ok((fp, maps))
    }
}

/// What one case did differently from its fixture.
#[derive(Debug, Clone)]
pub struct Failure {
    pub group: String,
    pub case: String,
    pub errors: Vec<String>,
    /// Input, expected and actual frame, in that order.
    pub pcap: Option<PathBuf>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {:?}:", self.group, self.case)?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        match &self.pcap {
            Some(p) => write!(f, "  frames (input, expected, actual): {}", p.display()),
            None => write!(f, "  (no pcap)"),
        }
    }
}

/// What one run of a case did, and how that differs from its fixture.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: u32,
    pub frame: Vec<u8>,
    /// Empty when the case holds.
    pub errors: Vec<String>,
}

/// Runs one case once on a loaded program and compares everything.
pub fn run_case(fp: &Fastpath, ifindex: u32, case: &Case) -> Result<Outcome> {
    let before = fp.stats()?;
    let out = fp.test_run_on(&case.input, ifindex, 1)?;
    let delta = fp.stats()?.since(&before);
    let mut errors = Vec::new();
    if out.verdict != case.verdict {
        errors.push(format!(
            "verdict: want {} got {}",
            verdict_name(case.verdict),
            verdict_name(out.verdict)
        ));
    }
    let want = case.expected_frame();
    if out.frame != want {
        let how = if case.output.is_none() {
            " (want it unchanged)"
        } else {
            ""
        };
        errors.push(format!(
            "frame out differs{how}: {}",
            byte_diff(want, &out.frame)
        ));
    }
    for i in 0..stat::COUNT {
        let want: u64 = case
            .counters
            .iter()
            .filter(|(idx, _)| *idx == i)
            .map(|(_, d)| d)
            .sum();
        if delta.get(i) != want {
            errors.push(format!(
                "counter {}: want +{want} got +{}",
                STAT_NAMES[i as usize],
                delta.get(i)
            ));
        }
    }
    Ok(Outcome {
        verdict: out.verdict,
        frame: out.frame,
        errors,
    })
}

/// Where a difference starts, and the bytes that differ (the pcap has
/// the frames whole).
fn byte_diff(want: &[u8], got: &[u8]) -> String {
    let mut s = format!("length want {} got {}", want.len(), got.len());
    let mut shown = 0;
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i), got.get(i));
        if w != g {
            if shown == 16 {
                s.push_str("; ...");
                break;
            }
            let _ = write!(s, "; byte {i}: want {w:02x?} got {g:02x?}");
            shown += 1;
        }
    }
    s
}

/// Runs every case of `group` on a program loaded with its state; the
/// failures, each with its pcap written under `pcap_dir`.
pub fn run_group(group: &Group, pcap_dir: &Path) -> Result<Vec<Failure>> {
    let (fp, _maps) = group
        .state
        .load()
        .with_context(|| format!("fixture file {}: its state", group.name))?;
    let mut failures = Vec::new();
    for case in &group.cases {
        let (errors, actual) = match run_case(&fp, group.state.ifindex, case) {
            Ok(o) => (o.errors, Some(o.frame)),
            Err(e) => (vec![format!("BPF_PROG_TEST_RUN: {e:#}")], None),
        };
        if errors.is_empty() {
            continue;
        }
        let mut frames = vec![case.input.clone(), case.expected_frame().to_vec()];
        frames.extend(actual);
        let path = pcap_dir.join(format!("{}-{}.pcap", group.name, slug(&case.name)));
        let (errors, pcap) = match write_pcap(&path, &frames) {
            Ok(()) => (errors, Some(path)),
            Err(e) => {
                let mut errors = errors;
                errors.push(format!("writing {}: {e:#}", path.display()));
                (errors, None)
            }
        };
        failures.push(Failure {
            group: group.name.clone(),
            case: case.name.clone(),
            errors,
            pcap,
        });
    }
    Ok(failures)
}

/// Runs every group and fails with every failing case of all of them.
pub fn check_groups(groups: &[Group], pcap_dir: &Path) -> Result<usize> {
    let mut failures = Vec::new();
    let mut cases = 0;
    for g in groups {
        failures.extend(run_group(g, pcap_dir)?);
        cases += g.cases.len();
    }
    if !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
        bail!(
            "{} of {cases} fixtures failed:\n{}",
            failures.len(),
            list.join("\n")
        );
    }
    Ok(cases)
}

fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.truncate(80);
    s
}

/// A classic pcap (microsecond timestamps, Ethernet): one packet a
/// second, so a viewer shows input, expected and actual in that order.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65_535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(i as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, b).with_context(|| format!("writing {}", path.display()))
}

/// Reads a pcap `write_pcap` wrote back into its frames.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        b.len() >= 24 && b[..4] == 0xa1b2_c3d4u32.to_le_bytes(),
        "{}: not a pcap",
        path.display()
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        ensure!(at + len <= b.len(), "{}: truncated", path.display());
        frames.push(b[at..at + len].to_vec());
        at += len;
    }
    Ok(frames)
}

// ---- The file format (tests/fixtures/README.md) ----

/// Every fixture file in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Group>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    ensure!(!paths.is_empty(), "no fixture files in {}", dir.display());
    paths.iter().map(|p| load_file(p)).collect()
}

pub fn load_file(path: &Path) -> Result<Group> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, &name).with_context(|| format!("fixture file {}", path.display()))
}

/// Parses one fixture file's text; `name` names the group.
pub fn parse(text: &str, name: &str) -> Result<Group> {
    let file: FileDesc = toml::from_str(text)?;
    let state = file.state.unwrap_or_default().resolve()?;
    let mut cases = Vec::new();
    for c in &file.case {
        let case = (|| -> Result<Case> {
            let input = resolve_frame(&c.input, &file.frames, 0)?.build()?;
            let output = match &c.output {
                OutputDesc::Unchanged(s) if s == "unchanged" => None,
                OutputDesc::Unchanged(s) => bail!("output {s:?}: a frame, or \"unchanged\""),
                OutputDesc::Frame(f) => Some(resolve_frame(f, &file.frames, 0)?.build()?),
            };
            let counters = c
                .counters
                .iter()
                .map(|(n, d)| Ok((stat_of(n)?, *d)))
                .collect::<Result<_>>()?;
            Ok(Case {
                name: c.name.clone(),
                input,
                verdict: verdict_of(&c.verdict)?,
                output,
                counters,
            })
        })()
        .with_context(|| format!("case {:?}", c.name))?;
        cases.push(case);
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cases {
        ensure!(seen.insert(&c.name), "two cases named {:?}", c.name);
    }
    Ok(Group {
        name: name.to_string(),
        state,
        cases,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDesc {
    state: Option<StateDesc>,
    #[serde(default)]
    frames: BTreeMap<String, FrameDesc>,
    #[serde(default)]
    case: Vec<CaseDesc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDesc {
    name: String,
    input: FrameDesc,
    verdict: String,
    output: OutputDesc,
    #[serde(default)]
    counters: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OutputDesc {
    Unchanged(String),
    Frame(Box<FrameDesc>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateDesc {
    server_id: Option<Ipv4Addr>,
    ifindex: Option<u32>,
    lease_entries: Option<u32>,
    #[serde(default)]
    iface: Vec<IfaceDesc>,
    #[serde(default)]
    binding: Vec<BindingDesc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IfaceDesc {
    name: String,
    ifindex: u32,
    mac: Mac,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingDesc {
    /// The client's chaddr; its identity unless `client_id` is given.
    mac: Mac,
    #[serde(default = "one")]
    htype: u8,
    /// Option 61 as sent: the identity when present.
    client_id: Option<Hex>,
    ip: Ipv4Addr,
    subnet: u32,
    lease_secs: u32,
    /// Default: `lease_secs` (just bound).
    expires_in: Option<u64>,
    #[serde(default = "lo")]
    iface: String,
    /// Outer, then inner VLAN ID of the arrival.
    #[serde(default)]
    vlans: Vec<u16>,
    giaddr: Option<Ipv4Addr>,
    /// The parameter request list the template was built for.
    prl: Option<Vec<u8>>,
    /// Option 82's payload the template was built for.
    relay_info: Option<Hex>,
    #[serde(default)]
    max_message_size: u16,
    #[serde(default)]
    offerable: bool,
    /// The reply's options before the echoed 61 and 82.
    template: Vec<OptionDesc>,
}

fn one() -> u8 {
    1
}

fn lo() -> String {
    "lo".into()
}

impl StateDesc {
    fn resolve(self) -> Result<State> {
        let bindings = self
            .binding
            .into_iter()
            .map(|b| b.resolve())
            .collect::<Result<_>>()?;
        Ok(State {
            server_id: self.server_id.unwrap_or(Ipv4Addr::new(198, 18, 0, 1)),
            ifindex: self.ifindex.unwrap_or(1),
            lease_entries: self.lease_entries.unwrap_or(4096),
            ifaces: self
                .iface
                .into_iter()
                .map(|i| FastIface {
                    name: i.name,
                    ifindex: i.ifindex,
                    mac: i.mac.0,
                })
                .collect(),
            bindings,
        })
    }
}

impl BindingDesc {
    fn resolve(self) -> Result<Binding> {
        ensure!(
            self.vlans.len() <= 2,
            "binding {}: at most two VLANs",
            self.ip
        );
        let client_id = self.client_id.map(|h| h.0);
        let client = match &client_id {
            Some(id) => client_id_key(id),
            None => hw_key(self.htype, &self.mac.0),
        };
        let relay_info = self.relay_info.map(|h| h.0);
        let prl = self.prl;
        let mut template = Vec::new();
        for o in &self.template {
            template.extend(o.bytes()?);
        }
        let mut hw = vec![self.htype];
        hw.extend_from_slice(&self.mac.0);
        Ok(Binding {
            client,
            hw: hw.into(),
            ip: self.ip,
            subnet_id: self.subnet,
            lease_secs: self.lease_secs,
            expires_in: self.expires_in.unwrap_or(u64::from(self.lease_secs)),
            fast: FastReply {
                iface: self.iface.into(),
                outer_vlan: self.vlans.first().copied().unwrap_or(0),
                inner_vlan: self.vlans.get(1).copied().unwrap_or(0),
                giaddr: self.giaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prl_len: prl.as_ref().map_or(0, |p| p.len() as u16 + 1),
                shape_hash: shape_hash(
                    prl.as_deref().unwrap_or(&[]),
                    relay_info.as_deref().unwrap_or(&[]),
                ),
                max_message_size: self.max_message_size,
                client_id_len: client_id.as_ref().map_or(0, |c| c.len() as u8),
                relay_info_len: relay_info.as_ref().map_or(0, |r| r.len() as u8),
                offerable: self.offerable,
                template: template.into(),
            },
        })
    }
}

/// A frame: Ethernet, tags, IPv4 and UDP fields as `FrameSpec` has them
/// (its defaults for what is left out), a BOOTP payload or raw bytes, and
/// byte edits applied after it is built. `like` starts from a frame of the
/// file's `[frames]` table: what is given here overrides it, field by
/// field (BOOTP fields too), and these edits follow its edits.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct FrameDesc {
    like: Option<String>,
    dst_mac: Option<Mac>,
    src_mac: Option<Mac>,
    /// `[TPID, VLAN ID]` pairs, outermost first.
    tags: Option<Vec<(u16, u16)>>,
    ethertype: Option<u16>,
    src_ip: Option<Ipv4Addr>,
    dst_ip: Option<Ipv4Addr>,
    ip_options: Option<Hex>,
    /// The IPv4 identification (`FrameSpec` writes 1).
    ip_id: Option<u16>,
    frag: Option<u16>,
    proto: Option<u8>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    /// The payload as is (instead of `bootp`).
    raw: Option<Hex>,
    bootp: Option<BootpDesc>,
    #[serde(default)]
    edits: Vec<Edit>,
}

/// A BOOTP message. Defaults: a BOOTREQUEST (op 1) from Ethernet (htype
/// 1, hlen 6), every other field zero, the magic cookie, the options,
/// END, zero padding to 300 bytes (the BOOTP minimum).
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct BootpDesc {
    op: Option<u8>,
    htype: Option<u8>,
    hlen: Option<u8>,
    hops: Option<u8>,
    xid: Option<u32>,
    secs: Option<u16>,
    flags: Option<u16>,
    ciaddr: Option<Ipv4Addr>,
    yiaddr: Option<Ipv4Addr>,
    siaddr: Option<Ipv4Addr>,
    giaddr: Option<Ipv4Addr>,
    /// Written at the start of the 16-byte chaddr field.
    chaddr: Option<Hex>,
    cookie: Option<Hex>,
    /// Replaces the options of the frame this is `like`.
    options: Option<Vec<OptionDesc>>,
    /// Put before, or after, the options (of the frame this is `like`).
    prepend_options: Option<Vec<OptionDesc>>,
    append_options: Option<Vec<OptionDesc>>,
    /// Whether END follows the options (default true).
    end: Option<bool>,
    /// Zero-pad the payload to this length (default 300).
    pad_to: Option<usize>,
}

/// One option: `code` and a value in one of the readable forms (none: a
/// zero-length option), or `raw` bytes as they go in the payload.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct OptionDesc {
    code: Option<u8>,
    u8: Option<u8>,
    u16: Option<u16>,
    u32: Option<u32>,
    ip: Option<Ipv4Addr>,
    ips: Option<Vec<Ipv4Addr>>,
    bytes: Option<Vec<u8>>,
    hex: Option<Hex>,
    text: Option<String>,
    raw: Option<Hex>,
}

impl OptionDesc {
    fn bytes(&self) -> Result<Vec<u8>> {
        let mut values: Vec<Vec<u8>> = Vec::new();
        values.extend(self.u8.map(|v| vec![v]));
        values.extend(self.u16.map(|v| v.to_be_bytes().to_vec()));
        values.extend(self.u32.map(|v| v.to_be_bytes().to_vec()));
        values.extend(self.ip.map(|v| v.octets().to_vec()));
        values.extend(
            self.ips
                .as_ref()
                .map(|v| v.iter().flat_map(|a| a.octets()).collect()),
        );
        values.extend(self.bytes.clone());
        values.extend(self.hex.as_ref().map(|h| h.0.clone()));
        values.extend(self.text.as_ref().map(|t| t.as_bytes().to_vec()));
        ensure!(values.len() <= 1, "an option with two values");
        match (self.code, &self.raw) {
            (None, Some(raw)) if values.is_empty() => Ok(raw.0.clone()),
            (Some(code), None) => {
                let v = values.pop().unwrap_or_default();
                ensure!(v.len() <= 255, "option {code}: {} bytes", v.len());
                let mut o = vec![code, v.len() as u8];
                o.extend_from_slice(&v);
                Ok(o)
            }
            _ => bail!("an option is a code and a value, or raw bytes"),
        }
    }
}

/// A byte edit after the frame is built. Offsets are a number or
/// `"LAYER+N"`, LAYER one of `eth`, `ip`, `udp`, `bootp` (where that
/// header starts in this frame, tags and IPv4 options counted).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Edit {
    at: Option<Offset>,
    /// Bytes written at `at`.
    set: Option<Hex>,
    /// Bytes XORed into the frame at `at`.
    xor: Option<Hex>,
    /// A 16-bit big-endian value written at `at`.
    u16: Option<u16>,
    /// Cut the frame to this length.
    truncate: Option<Offset>,
    /// Bytes added at the end.
    append: Option<Hex>,
    /// `"udp_checksum"`: recomputed over the UDP length the header says.
    fix: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Offset {
    At(usize),
    Layer(String),
}

/// The resolved frame, every field known.
#[derive(Clone)]
struct Resolved {
    spec: FrameSpec,
    ip_id: Option<u16>,
    bootp: Option<Bootp>,
    edits: Vec<Edit>,
}

#[derive(Clone)]
struct Bootp {
    op: u8,
    htype: u8,
    hlen: u8,
    hops: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: Vec<u8>,
    cookie: Vec<u8>,
    options: Vec<u8>,
    end: bool,
    pad_to: usize,
}

impl Default for Bootp {
    fn default() -> Self {
        Bootp {
            op: 1,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid: 0,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: Vec::new(),
            cookie: vec![99, 130, 83, 99],
            options: Vec::new(),
            end: true,
            pad_to: 300,
        }
    }
}

impl Bootp {
    fn bytes(&self) -> Result<Vec<u8>> {
        ensure!(self.chaddr.len() <= 16, "chaddr over 16 bytes");
        let mut p = vec![0u8; 236];
        p[0] = self.op;
        p[1] = self.htype;
        p[2] = self.hlen;
        p[3] = self.hops;
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        p[8..10].copy_from_slice(&self.secs.to_be_bytes());
        p[10..12].copy_from_slice(&self.flags.to_be_bytes());
        p[12..16].copy_from_slice(&self.ciaddr.octets());
        p[16..20].copy_from_slice(&self.yiaddr.octets());
        p[20..24].copy_from_slice(&self.siaddr.octets());
        p[24..28].copy_from_slice(&self.giaddr.octets());
        p[28..28 + self.chaddr.len()].copy_from_slice(&self.chaddr);
        p.extend_from_slice(&self.cookie);
        p.extend_from_slice(&self.options);
        if self.end {
            p.push(255);
        }
        if p.len() < self.pad_to {
            p.resize(self.pad_to, 0);
        }
        Ok(p)
    }

    fn apply(&mut self, d: &BootpDesc) -> Result<()> {
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = d.$f { self.$f = v; } )* };
        }
        take!(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, end, pad_to);
        if let Some(c) = &d.chaddr {
            self.chaddr = c.0.clone();
        }
        if let Some(c) = &d.cookie {
            self.cookie = c.0.clone();
        }
        let encode = |opts: &[OptionDesc]| -> Result<Vec<u8>> {
            let mut v = Vec::new();
            for o in opts {
                v.extend(o.bytes()?);
            }
            Ok(v)
        };
        if let Some(o) = &d.options {
            self.options = encode(o)?;
        }
        if let Some(o) = &d.prepend_options {
            let mut v = encode(o)?;
            v.extend_from_slice(&self.options);
            self.options = v;
        }
        if let Some(o) = &d.append_options {
            self.options.extend(encode(o)?);
        }
        Ok(())
    }
}

fn resolve_frame(
    d: &FrameDesc,
    frames: &BTreeMap<String, FrameDesc>,
    depth: u32,
) -> Result<Resolved> {
    ensure!(depth < 16, "frames are `like` each other in a circle");
    let mut r = match &d.like {
        Some(name) => {
            let base = frames
                .get(name)
                .ok_or_else(|| anyhow!("no frame {name:?} in [frames]"))?;
            resolve_frame(base, frames, depth + 1).with_context(|| format!("frame {name:?}"))?
        }
        None => Resolved {
            spec: FrameSpec::default(),
            ip_id: None,
            bootp: None,
            edits: Vec::new(),
        },
    };
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = d.$f { r.spec.$f = v; } )* };
    }
    take!(ethertype, frag, proto, src_port, dst_port);
    if let Some(m) = &d.dst_mac {
        r.spec.dst_mac = m.0;
    }
    if let Some(m) = &d.src_mac {
        r.spec.src_mac = m.0;
    }
    if let Some(t) = &d.tags {
        r.spec.tags = t.clone();
    }
    if let Some(a) = d.src_ip {
        r.spec.src_ip = a.octets();
    }
    if let Some(a) = d.dst_ip {
        r.spec.dst_ip = a.octets();
    }
    if let Some(o) = &d.ip_options {
        r.spec.ip_options = o.0.clone();
    }
    if d.ip_id.is_some() {
        r.ip_id = d.ip_id;
    }
    match (&d.raw, &d.bootp) {
        (Some(_), Some(_)) => bail!("a payload is raw or BOOTP, not both"),
        (Some(raw), None) => {
            r.bootp = None;
            r.spec.payload = raw.0.clone();
        }
        (None, Some(b)) => {
            let mut bootp = r.bootp.take().unwrap_or_default();
            bootp.apply(b)?;
            r.bootp = Some(bootp);
        }
        (None, None) => {}
    }
    r.edits.extend(d.edits.iter().cloned());
    Ok(r)
}

impl Resolved {
    fn build(&self) -> Result<Vec<u8>> {
        let mut spec = self.spec.clone();
        if let Some(b) = &self.bootp {
            spec.payload = b.bytes()?;
        }
        let mut f = spec.build();
        let ip = 14 + 4 * spec.tags.len();
        if let Some(id) = self.ip_id {
            ensure!(
                spec.ethertype == crate::frame::ETH_P_IP,
                "ip_id on a frame that is not IPv4"
            );
            f[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
            f[ip + 10..ip + 12].fill(0);
            let ihl = usize::from(f[ip] & 0x0f) * 4;
            let c = checksum(&[&f[ip..ip + ihl]]);
            f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        }
        let udp = ip + 20 + spec.ip_options.len().next_multiple_of(4);
        let layer = |o: &Offset| -> Result<usize> {
            match o {
                Offset::At(n) => Ok(*n),
                Offset::Layer(s) => {
                    let (name, plus) = s.split_once('+').unwrap_or((s, "0"));
                    let base = match name.trim() {
                        "eth" => 0,
                        "ip" => ip,
                        "udp" => udp,
                        "bootp" => udp + 8,
                        other => bail!("offset {s:?}: no layer {other:?}"),
                    };
                    Ok(base
                        + plus
                            .trim()
                            .parse::<usize>()
                            .with_context(|| format!("offset {s:?}"))?)
                }
            }
        };
        for e in &self.edits {
            let mut done = 0;
            let mut write = |at: usize, bytes: &[u8], xor: bool| -> Result<()> {
                ensure!(at + bytes.len() <= f.len(), "an edit past the frame's end");
                for (i, b) in bytes.iter().enumerate() {
                    if xor {
                        f[at + i] ^= b;
                    } else {
                        f[at + i] = *b;
                    }
                }
                Ok(())
            };
            if let Some(h) = &e.set {
                write(
                    layer(e.at.as_ref().context("`set` needs `at`")?)?,
                    &h.0,
                    false,
                )?;
                done += 1;
            }
            if let Some(h) = &e.xor {
                write(
                    layer(e.at.as_ref().context("`xor` needs `at`")?)?,
                    &h.0,
                    true,
                )?;
                done += 1;
            }
            if let Some(v) = e.u16 {
                write(
                    layer(e.at.as_ref().context("`u16` needs `at`")?)?,
                    &v.to_be_bytes(),
                    false,
                )?;
                done += 1;
            }
            if let Some(t) = &e.truncate {
                let n = layer(t)?;
                ensure!(n <= f.len(), "truncate past the frame's end");
                f.truncate(n);
                done += 1;
            }
            if let Some(h) = &e.append {
                f.extend_from_slice(&h.0);
                done += 1;
            }
            match e.fix.as_deref() {
                None => {}
                Some("udp_checksum") => {
                    let len = usize::from(u16::from_be_bytes([f[udp + 4], f[udp + 5]]));
                    ensure!(udp + len <= f.len(), "the UDP length runs past the frame");
                    f[udp + 6..udp + 8].fill(0);
                    let pseudo = [&f[ip + 12..ip + 20], &[0, 17], &f[udp + 4..udp + 6]].concat();
                    let mut c = checksum(&[&pseudo, &f[udp..udp + len]]);
                    if c == 0 {
                        c = 0xffff;
                    }
                    f[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
                    done += 1;
                }
                Some(other) => bail!("fix {other:?}: only \"udp_checksum\""),
            }
            ensure!(done == 1, "an edit does one thing ({done} here)");
        }
        Ok(f)
    }
}

/// Hex bytes; spaces, colons and dashes between them are ignored.
#[derive(Clone, Debug)]
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hex, D::Error> {
        let s = String::deserialize(d)?;
        parse_hex(&s).map(Hex).map_err(serde::de::Error::custom)
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    ensure!(
        digits.len().is_multiple_of(2),
        "hex {s:?}: an odd number of digits"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).with_context(|| format!("hex {s:?}")))
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Mac([u8; 6]);

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        crate::frame::parse_mac(&s)
            .map(Mac)
            .map_err(serde::de::Error::custom)
    }
}
