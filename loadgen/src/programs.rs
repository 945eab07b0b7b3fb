//! The XDP objects of the load generator (`dhcp-ebpf/src/bin/gen.rs`) and
//! of the benchmark (`dhcp-ebpf/src/bin/bench.rs`), and what loads them:
//! the lab's programs held on an interface and the benchmark's loader.
//! The daemon embeds only the server's object.

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dhcp_common::{bench, BARE_PROGRAM_NAME, MAP_BARE_LEASES, PEER_PROGRAM_NAME, PROGRAM_NAME};
use xdhcp::xdp::loader::{ifindex, raise_memlock_limit, verifier_error, Fastpath};

/// The generator's sender and reply matcher, and the peer program.
pub static GEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf-gen.o"));

/// The server's programs and maps beside the yardstick and the harnesses.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf-bench.o"));

/// What `load_bench` loads besides the fast path.
pub const BENCH_PROGRAMS: &[&str] = &[
    BARE_PROGRAM_NAME,
    "xdhcp_bench_fast",
    "xdhcp_bench_bare",
    "xdhcp_bench_restore",
    bench::NOOP_PROGRAM,
];

/// For `fastpath_cost`: the fast path, the yardstick (its map sized like
/// the lease map) and the benchmark harnesses, all sharing these maps.
pub fn load_bench(lease_entries: u32) -> Result<Fastpath> {
    let mut fp = Fastpath::load_object(
        BENCH_OBJECT,
        lease_entries,
        BENCH_PROGRAMS,
        &[(MAP_BARE_LEASES, lease_entries.max(1))],
    )?;
    for (slot, program) in [
        (bench::NEXT_FAST, PROGRAM_NAME),
        (bench::NEXT_BARE, BARE_PROGRAM_NAME),
        (bench::NEXT_NOOP, bench::NOOP_PROGRAM),
    ] {
        fp.set_tail_call(bench::MAP_NEXT, slot, program)?;
    }
    Ok(fp)
}

/// An XDP program attached to an interface, detached on drop.
pub struct PeerProgram {
    _ebpf: Ebpf,
}

/// Attaches the generator's XDP_PASS program to `ifname` (native mode):
/// on the client end of a veth it lets XDP_TX replies through, as a real
/// NIC would.
pub fn attach_peer(ifname: &str) -> Result<PeerProgram> {
    raise_memlock_limit();
    let ebpf = Ebpf::load(GEN_OBJECT).context("loading the generator's XDP object")?;
    attach_held(ebpf, PEER_PROGRAM_NAME, ifname, "peer")
}

/// Attaches the yardstick `xdhcp_bare` to `ifname` with its map holding
/// loadgen clients `0..clients` (keyed by hardware address, like the
/// lease map): the benchmark's ceiling.
pub fn attach_bare(ifname: &str, clients: u32) -> Result<PeerProgram> {
    use dhcp_common::{id_kind, LeaseKey, LeaseValue};
    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_BARE_LEASES, clients.max(1))
        .load(BENCH_OBJECT)
        .context("loading the benchmark's XDP object")?;
    {
        let mut map: aya::maps::HashMap<_, LeaseKey, LeaseValue> = aya::maps::HashMap::try_from(
            ebpf.map_mut(MAP_BARE_LEASES)
                .ok_or_else(|| anyhow!("{MAP_BARE_LEASES} missing"))?,
        )?;
        let value: LeaseValue = bytemuck::Zeroable::zeroed();
        for i in 0..clients {
            let mut key = LeaseKey::zeroed();
            key.kind = id_kind::HWADDR;
            key.len = 7;
            key.id[0] = 1;
            key.id[1..7].copy_from_slice(&crate::client_mac(i));
            map.insert(key, value, 0)?;
        }
    }
    attach_held(ebpf, BARE_PROGRAM_NAME, ifname, "bounce")
}

/// Loads `program` of `ebpf` and attaches it to `ifname` in native mode,
/// held there for as long as the returned value lives; `role` names it
/// in the error.
fn attach_held(mut ebpf: Ebpf, program: &str, ifname: &str, role: &str) -> Result<PeerProgram> {
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the XDP object"))?
        .try_into()?;
    prog.load().map_err(verifier_error)?;
    prog.attach_to_if_index(ifindex(ifname)?, XdpMode::Driver)
        .with_context(|| format!("attaching the {role} program to {ifname}"))?;
    Ok(PeerProgram { _ebpf: ebpf })
}
