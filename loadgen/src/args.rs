//! The command line: phases, engines and every flag.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// DISCOVER, OFFER, REQUEST, ACK for every client; addresses checked
    /// unique. Later phases use the leases it obtained.
    Dora,
    /// DHCPREQUEST in RENEWING: unicast to the server, ciaddr set.
    Renew,
    /// DHCPREQUEST in REBINDING: broadcast, ciaddr set.
    Rebind,
    /// DHCPREQUEST in INIT-REBOOT: broadcast, requested address option.
    InitReboot,
    /// DISCOVERs from clients that never request (OFFERs counted).
    Discover,
    /// Every leased client releases its address (no reply expected).
    /// Later phases still use it: a server must then refuse them.
    Release,
    /// Every leased client declines its address (no reply expected).
    Decline,
    /// Every leased client comes back at once, as after an outage: even
    /// clients DISCOVER then REQUEST, odd ones INIT-REBOOT. Each must get
    /// its own address back (another one counts wrong). Sent as fast as
    /// the engine goes (`--rate` does not apply); clients still
    /// unanswered after `--timeout-ms` ask again until `--duration` has
    /// passed after the last first request.
    Reconnect,
    /// SELECTING REQUESTs and DISCOVERs from random MACs, relayed through
    /// one line (--flood-giaddr, --flood-circuit), by the xdp engine; no
    /// reply expected. Requested addresses are the clients' (--synthetic).
    Flood,
    /// DISCOVERs from bound clients, by the xdp engine: each must be
    /// offered its own address (the kernel answers them).
    DiscoverKnown,
    /// SELECTING REQUESTs from bound clients (54 = the server, 50 = the
    /// bound address, ciaddr 0), by the xdp engine; ACKs expected.
    Selecting,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Dora => "dora",
            Phase::Renew => "renew",
            Phase::Rebind => "rebind",
            Phase::InitReboot => "init-reboot",
            Phase::Discover => "discover",
            Phase::Release => "release",
            Phase::Decline => "decline",
            Phase::Reconnect => "reconnect",
            Phase::Flood => "flood",
            Phase::DiscoverKnown => "discover-known",
            Phase::Selecting => "selecting",
        }
    }

    pub(crate) fn is_renewal(self) -> bool {
        matches!(self, Phase::Renew | Phase::Rebind | Phase::InitReboot)
    }

    /// Phases only the xdp engine sends, whatever --engine says.
    pub(crate) fn xdp_only(self) -> bool {
        matches!(self, Phase::Flood | Phase::DiscoverKnown | Phase::Selecting)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Packet,
    Xdp,
}

/// How every request of a run is shaped (DORA and renewals alike: the
/// fast path answers a client in the shape its binding was made in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Untagged, padded to a 300-byte BOOTP payload, no client id.
    #[default]
    Plain,
    /// Under one 802.1Q tag (VLAN 100).
    Dot1q,
    /// Under two tags: 802.1ad outer VLAN 100, 802.1Q inner VLAN 200.
    Qinq,
    /// With a client identifier (option 61, type 0, carrying the MAC).
    ClientId,
    /// The BOOTP payload ends at its END option (no padding to 300).
    Unpadded,
    /// Relayed: from `--giaddr` (IPv4 source and giaddr) to `--server`,
    /// UDP 67 to 67, one hop, option 82 last with a circuit-id per client
    /// (laid out as the client-id shape's option 61).
    Relayed,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Plain,
        Shape::Dot1q,
        Shape::Qinq,
        Shape::ClientId,
        Shape::Unpadded,
        Shape::Relayed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Plain => "plain",
            Shape::Dot1q => "dot1q",
            Shape::Qinq => "qinq",
            Shape::ClientId => "client-id",
            Shape::Unpadded => "unpadded",
            Shape::Relayed => "relayed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    /// A DHCPACK for the client's address.
    Ack,
    /// The request bounced back unchanged but for addresses (the
    /// benchmark's bare ceiling program).
    Bounce,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Interface the clients sit on (in the current network namespace).
    #[arg(long)]
    pub iface: String,
    /// Number of emulated clients (at most 16,777,216).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Phases, in order (repeat the flag).
    #[arg(long = "phase", value_enum, default_values_t = [Phase::Dora, Phase::Renew])]
    pub phases: Vec<Phase>,
    /// Engine for renewal phases (DORA and the others always use packet).
    #[arg(long, value_enum, default_value_t = Engine::Packet)]
    pub engine: Engine,
    /// Shape of every request (tags, client id, padding); the server's
    /// configuration must place the tagged shapes (VLAN 100, 100/200).
    #[arg(long, value_enum, default_value_t = Shape::Plain)]
    pub shape: Shape,
    /// Requests per second to offer; 0 = as fast as the engine goes.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Ramp: run each renewal or discover phase once per rate (requests/s,
    /// comma-separated, ascending), stopping after the first step whose
    /// loss exceeds --max-loss or when the achieved offered rate stops
    /// rising (see --ramp-from). Overrides --rate for those phases.
    #[arg(long, value_delimiter = ',', conflicts_with = "ramp_from")]
    pub rates: Vec<u64>,
    /// Adaptive ramp from this rate for renewal and discover phases: each
    /// step --ramp-factor times the last until a step loses more than
    /// --max-loss (then --ramp-refine bisections between the last step
    /// within it and the first beyond) or the achieved offered rate stops
    /// rising (a plateau: under 3% gain twice in a row). Bounded by
    /// --ramp-max-steps, --ramp-max-secs and --ramp-max-rate; the last
    /// step's report says how the ramp ended: loss, plateau or capped.
    #[arg(long)]
    pub ramp_from: Option<u64>,
    /// Each probing step's rate over the last's (1.1..=10).
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Bisections between the last step within --max-loss and the first
    /// beyond it.
    #[arg(long, default_value_t = 4)]
    pub ramp_refine: u32,
    /// Steps of a ramp in all (--rates and --ramp-from).
    #[arg(long, default_value_t = 20)]
    pub ramp_max_steps: u32,
    /// Wall time (seconds) after which no ramp step starts.
    #[arg(long, default_value_t = 300.0)]
    pub ramp_max_secs: f64,
    /// Highest rate a --ramp-from ramp offers.
    #[arg(long, default_value_t = 50_000_000)]
    pub ramp_max_rate: u64,
    /// Sending time of each ramp step, in seconds (default: --duration).
    #[arg(long)]
    pub step_duration: Option<f64>,
    /// Loss (percent) that ends a ramp.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss: f64,
    /// Requests per renewal or discover phase (default: one per client).
    #[arg(long)]
    pub count: Option<u64>,
    /// Upper bound on each phase's sending time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// A reply later than this is counted late; the run waits twice this
    /// after the last request for stragglers, then counts the rest lost.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Sending threads of the xdp engine (one per CPU, each pinned).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// The server's control socket: its counters before and after each
    /// phase tell which path answered (XDP or control plane).
    #[arg(long)]
    pub server_socket: Option<PathBuf>,
    /// Skip DORA: client i holds this address + i (with --server).
    #[arg(long)]
    pub synthetic: Option<Ipv4Addr>,
    /// Server identifier, when no DORA phase learns it.
    #[arg(long)]
    pub server: Option<Ipv4Addr>,
    /// The server's MAC, when no DORA phase learns it (default broadcast).
    #[arg(long)]
    pub server_mac: Option<String>,
    /// What a reply must be.
    #[arg(long, value_enum, default_value_t = Expect::Ack)]
    pub expect: Expect,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Client i's MAC is that of client i + this (both engines; xids
    /// still carry i): a second generator on the same link, or on the
    /// same shared store, emulates other clients.
    #[arg(long, default_value_t = 0)]
    pub mac_offset: u32,
    /// After the last phase, write the clients' leases and their server
    /// here (for --bindings-in).
    #[arg(long)]
    pub bindings_out: Option<PathBuf>,
    /// Skip DORA: the clients hold the leases an earlier run with the
    /// same --clients and --mac-offset wrote (--bindings-out).
    #[arg(long, conflicts_with_all = ["synthetic", "server"])]
    pub bindings_in: Option<PathBuf>,
    /// `--shape relayed`: the relay's address (giaddr and IPv4 source);
    /// the server must trust it and route replies to it over --iface.
    #[arg(long)]
    pub giaddr: Option<Ipv4Addr>,
    /// The flood's relay address (giaddr and IPv4 source).
    #[arg(long)]
    pub flood_giaddr: Option<Ipv4Addr>,
    /// The flood's option 82 circuit-id.
    #[arg(long, default_value = "flood")]
    pub flood_circuit: String,
}
