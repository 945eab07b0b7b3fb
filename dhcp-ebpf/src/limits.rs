//! Rate limits (`dhcp_common::rate`): a DHCP frame the fast path did not
//! answer is dropped here when its client MAC's or its line's bucket is
//! empty, before the kernel's stack or the control plane spend anything
//! on it.
//!
//! Exempt: frames the fast path answered (they never get here), and any
//! whose client the lease map holds a binding for (`Scratch::known`), so a
//! bound client's renewals, rebinds and reboots reach the control plane
//! whatever its line is doing. Their volume is the store's own bindings'
//! (a renewal loop is answered in the kernel, at its cost), and a
//! rate that suits new clients could fall below what a busy line's
//! renewal timers need. Everything else (DISCOVERs, SELECTING REQUESTs,
//! unknown clients, RELEASE, DECLINE, INFORM, malformed frames) pays.
//! When anything needed is missing (scratch, configuration, a readable
//! payload for a relayed frame's line) the frame passes.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap},
    programs::XdpContext,
};
use dhcp_common::{
    layout::{bootp, eth, opt},
    rate::{admit, line_kind, Bucket, LineKey, MacKey, RateConf, ScopeKey, BUCKETS, SCOPES},
    stat, SHAPE_OFFSET,
};

use crate::fast::{fits, hash_more, pk8, set, vol, Scratch};

#[map(name = "XDHCP_RATE_GLOBAL")]
static XDHCP_RATE_GLOBAL: Array<RateConf> = Array::with_max_entries(1, 0);

#[map(name = "XDHCP_RATE_DIRECT")]
static XDHCP_RATE_DIRECT: HashMap<ScopeKey, RateConf> = HashMap::with_max_entries(SCOPES, 0);

#[map(name = "XDHCP_RATE_RELAYED")]
static XDHCP_RATE_RELAYED: LpmTrie<u32, RateConf> = LpmTrie::with_max_entries(SCOPES, 0);

#[map(name = "XDHCP_RATE_MACS")]
static XDHCP_RATE_MACS: LruHashMap<MacKey, Bucket> = LruHashMap::with_max_entries(BUCKETS, 0);

#[map(name = "XDHCP_RATE_LINES")]
static XDHCP_RATE_LINES: LruHashMap<LineKey, Bucket> = LruHashMap::with_max_entries(BUCKETS, 0);

/// Max sub-options of option 82 looked at for the circuit and remote ids.
const MAX_SUBOPTIONS: usize = 16;

/// This program's slot in `XDHCP_PROGS` (`dhcp_common::rate::PROGRAM`).
pub const SLOT: u32 = 0;

/// Some(the drop counter) when the frame is over a limit. `s` holds what
/// the fast path found in it.
#[inline(always)]
pub fn over(ctx: &XdpContext, s: &mut Scratch) -> Option<u32> {
    if vol(&s.known) != 0 {
        return None;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let (outer_vlan, inner_vlan) = (vol(&s.outer_vlan) as u16, vol(&s.inner_vlan) as u16);
    let p = data + (vol(&s.b) & 0x3f);
    // giaddr and chaddr; a frame too short for them is malformed and
    // counted as a direct client's (its Ethernet source).
    let (giaddr, chaddr) = if fits(p, bootp::CHADDR.start + 6, end) {
        let g = unsafe { ((p + bootp::GIADDR.start) as *const u32).read_unaligned() };
        (g, p + bootp::CHADDR.start)
    } else {
        (0, data + eth::SRC.start)
    };
    if !fits(data, eth::SRC.end, end) {
        return None;
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let conf = if giaddr != 0 {
        XDHCP_RATE_RELAYED.get(&Key::new(32, giaddr))
    } else {
        let key = ScopeKey {
            ifindex,
            outer_vlan,
            inner_vlan,
        };
        unsafe { XDHCP_RATE_DIRECT.get(&key) }
    };
    let conf = match conf {
        Some(c) => c,
        None => XDHCP_RATE_GLOBAL.get(0)?,
    };
    let (mac_i, mac_b) = (conf.mac_interval_ns, conf.mac_burst_ns);
    let (line_i, line_b) = (conf.line_interval_ns, conf.line_burst_ns);
    if mac_i == 0 && line_i == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if mac_i != 0 {
        // The relay's own MAC is the Ethernet source of a relayed frame.
        let src = if giaddr != 0 {
            chaddr
        } else {
            data + eth::SRC.start
        };
        if !fits(src, 6, end) {
            return None;
        }
        let mut key = MacKey {
            mac: [0; 6],
            _pad: [0; 2],
        };
        key.mac = unsafe { *(src as *const [u8; 6]) };
        if !take(&XDHCP_RATE_MACS, &key, now, mac_i, mac_b) {
            return Some(stat::RATE_LIMITED_MAC);
        }
    }
    if line_i != 0 {
        let key = if giaddr != 0 {
            // A relay that names no line is not one line: its clients
            // would all share a bucket. Only the MAC limit applies then.
            LineKey {
                kind: line_kind::CIRCUIT,
                ifindex: 0,
                giaddr,
                outer_vlan: 0,
                inner_vlan: 0,
                circuit: circuit(ctx, s)?,
            }
        } else {
            LineKey {
                kind: line_kind::DIRECT,
                ifindex,
                giaddr: 0,
                outer_vlan,
                inner_vlan,
                circuit: 0,
            }
        };
        if !take(&XDHCP_RATE_LINES, &key, now, line_i, line_b) {
            return Some(stat::RATE_LIMITED_LINE);
        }
    }
    None
}

/// Spends a token of `key`'s bucket; false when there is none. Buckets of
/// several CPUs race unlocked: a lost update lets a frame through, which
/// only loosens the limit by as much.
#[inline(always)]
fn take<K>(map: &LruHashMap<K, Bucket>, key: &K, now: u64, interval: u64, burst: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(b) => {
            let b = unsafe { &mut *b };
            match admit(b.tat_ns, now, interval, burst) {
                Some(next) => {
                    b.tat_ns = next;
                    true
                }
                None => false,
            }
        }
        None => {
            let _ = map.insert(
                key,
                &Bucket {
                    tat_ns: now + interval,
                },
                0,
            );
            true
        }
    }
}

/// `dhcp_common::rate::circuit_hash` of the request's option 82 (as the
/// options walk found it); None when it names neither a circuit nor a
/// remote id, or is unreadable.
#[inline(always)]
fn circuit(ctx: &XdpContext, s: &mut Scratch) -> Option<u64> {
    let rai_len = vol(&s.rai_len);
    if rai_len == 0 {
        return None;
    }
    let from = vol(&s.rai_off);
    set(&mut s.sub_off, from);
    set(&mut s.sub_end, from + rai_len);
    set(&mut s.cir_len, 0);
    set(&mut s.rem_len, 0);
    let mut i = 0;
    while i < MAX_SUBOPTIONS {
        i += 1;
        let off = vol(&s.sub_off) & 0x7ff;
        let end = vol(&s.sub_end);
        if off + 2 > end {
            break;
        }
        let code = pk8(ctx, off).ok()?;
        let len = pk8(ctx, off + 1).ok()? as usize;
        if off + 2 + len > end {
            return None;
        }
        if code == opt::RAI_CIRCUIT_ID && vol(&s.cir_len) == 0 {
            set(&mut s.cir_off, off + 2);
            set(&mut s.cir_len, len);
        } else if code == opt::RAI_REMOTE_ID && vol(&s.rem_len) == 0 {
            set(&mut s.rem_off, off + 2);
            set(&mut s.rem_len, len);
        }
        set(&mut s.sub_off, off + 2 + len);
    }
    let (cl, rl) = (vol(&s.cir_len), vol(&s.rem_len));
    if cl == 0 && rl == 0 {
        return None;
    }
    s.hash = SHAPE_OFFSET ^ ((cl as u64) << 8 | rl as u64);
    hash_more(ctx, s, vol(&s.cir_off), vol(&s.cir_len)).ok()?;
    hash_more(ctx, s, vol(&s.rem_off), vol(&s.rem_len)).ok()?;
    Some(unsafe { core::ptr::read_volatile(&s.hash) })
}
