//! Keeps the XDP program's maps in step with the lease store.
//!
//! The lease map follows the store's own changes (`StoreOp`s), in the
//! committer thread, around each commit: entries that must go are removed
//! *before* the batch is written, entries that may answer are written only
//! *after* it is durable. So the kernel never answers for a binding the
//! store does not hold, and never answers from one it is about to lose.
//!
//! An entry leaves the map only through `before_commit`, which reads it
//! first: what the kernel granted there that the control plane has not
//! heard of (renewals it did not report, `expires > reported`) comes back
//! in the batch's [`MapReport`], with every address the map no longer
//! answers for, so the control plane can honour the one and release the
//! other. Clocks: see `crate::xdp::clock`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use dhcp_common::{
    id_kind, lease_flags, IfaceInfo, LeaseKey, LeaseValue, ReplyTemplate, IFACE_SLOTS, MAP_IFACES,
    MAP_LEASES, MAP_TEMPLATES, MAX_ID_LEN, TEMPLATE_OPTIONS_MAX, TEMPLATE_SLOTS,
};

use crate::{
    dhcp::leases::{FastReply, Lease, LeaseState, KIND_CLIENT_ID, KIND_HW},
    store::StoreOp,
    xdp::loader::Fastpath,
};

pub use crate::xdp::clock::{mono_ns_now, mono_ns_to_unix, unix_to_mono_ns};

/// The lease-map key of a control-plane client key, if it fits.
pub fn lease_key(client: &[u8]) -> Option<LeaseKey> {
    let (&kind, id) = client.split_first()?;
    if id.len() > MAX_ID_LEN {
        return None;
    }
    let mut k = LeaseKey::zeroed();
    k.kind = match kind {
        KIND_HW => id_kind::HWADDR,
        KIND_CLIENT_ID => id_kind::CLIENT_ID,
        _ => return None,
    };
    k.len = id.len() as u8;
    k.id[..id.len()].copy_from_slice(id);
    Some(k)
}

/// A control-plane client key from a lease-map key.
pub fn client_key(k: &LeaseKey) -> Option<Box<[u8]>> {
    let kind = match k.kind {
        id_kind::HWADDR => KIND_HW,
        id_kind::CLIENT_ID => KIND_CLIENT_ID,
        _ => return None,
    };
    let id = k.id.get(..usize::from(k.len))?;
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(kind);
    v.extend_from_slice(id);
    Some(v.into_boxed_slice())
}

/// `client_key(k).as_deref() == client`, without building the key.
pub fn is_client_key(client: Option<&[u8]>, k: &LeaseKey) -> bool {
    let kind = match k.kind {
        id_kind::HWADDR => Some(KIND_HW),
        id_kind::CLIENT_ID => Some(KIND_CLIENT_ID),
        _ => None,
    };
    let id = k.id.get(..usize::from(k.len));
    match (kind.zip(id), client) {
        (None, c) => c.is_none(),
        (Some((kind, id)), Some([c, rest @ ..])) => *c == kind && rest == id,
        (Some(_), _) => false,
    }
}

/// A lease-map key for people: `hw 01:02:00:5e:10:00:07` (htype, then
/// chaddr) or `id ff:00:01` (option 61).
pub fn key_text(k: &LeaseKey) -> String {
    let kind = match k.kind {
        id_kind::HWADDR => "hw".to_string(),
        id_kind::CLIENT_ID => "id".to_string(),
        other => format!("kind{other}"),
    };
    let id = &k.id[..usize::from(k.len).min(MAX_ID_LEN)];
    let hex: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind} {}", hex.join(":"))
}

/// A renewal the kernel answered that the control plane had not been
/// told of, found in an entry as it was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelGrant {
    pub client: Box<[u8]>,
    pub ip: Ipv4Addr,
    /// Unix seconds, rounded up.
    pub expires: u64,
    /// The same end in Unix nanoseconds, unrounded: whether the kernel
    /// granted it before or after the control plane ended the binding is
    /// decided on this (seconds cannot order a renewal and a RELEASE sent
    /// a moment later).
    pub expires_ns: u64,
    pub lease_secs: u32,
}

/// What a batch did to the lease map, for the control plane.
#[derive(Debug, Default, Clone)]
pub struct MapReport {
    /// The last commit (`Commit::seq`) of the batch.
    pub seq: u64,
    /// Addresses the batch touched that the map holds no entry for now.
    pub gone: Vec<Ipv4Addr>,
    pub grants: Vec<KernelGrant>,
    /// What every entry this batch removed had granted, reported or not:
    /// the committer writes a grant that outlives the batch's end of the
    /// binding in the same write (`commit::keep_kernel_grants`), since a
    /// reported renewal may still wait unread in the ring.
    pub removed: Vec<KernelGrant>,
    /// Claims the shared store refused (another node's client holds the
    /// address): the holder's lease, as the store has it.
    pub lost: Vec<Lease>,
    touched: HashSet<Ipv4Addr>,
}

impl MapReport {
    pub fn new(seq: u64) -> MapReport {
        MapReport {
            seq,
            ..Default::default()
        }
    }

    fn finish(&mut self, in_map: &HashMap<Ipv4Addr, (LeaseKey, Arc<[u8]>)>) {
        self.gone = self
            .touched
            .drain()
            .filter(|ip| !in_map.contains_key(ip))
            .collect();
        self.gone.sort_unstable();
    }

    /// For a batch whose write failed: only what was removed.
    pub fn finish_failed(&mut self, maps: &FastMaps) {
        self.finish(&maps.by_ip);
    }
}

fn grant_of(k: &LeaseKey, v: &LeaseValue) -> Option<KernelGrant> {
    Some(KernelGrant {
        client: client_key(k)?,
        ip: Ipv4Addr::from(v.ip.to_ne_bytes()),
        expires: crate::xdp::clock::mono_ns_to_unix_ceil(v.expires_mono_ns),
        expires_ns: crate::xdp::clock::mono_ns_to_unix_ns(v.expires_mono_ns),
        lease_secs: v.lease_secs,
    })
}

/// What `v` granted beyond what the kernel reported, if anything.
fn unreported_grant(k: &LeaseKey, v: &LeaseValue) -> Option<KernelGrant> {
    (v.expires_mono_ns > v.reported_mono_ns)
        .then(|| grant_of(k, v))
        .flatten()
}

/// Whether two values of one key are the same binding: everything but
/// the times the kernel moves when it renews.
fn same_binding(a: &LeaseValue, b: &LeaseValue) -> bool {
    let strip = |v: &LeaseValue| LeaseValue {
        expires_mono_ns: 0,
        reported_mono_ns: 0,
        ..*v
    };
    strip(a) == strip(b)
}

/// The sync's eligibility rule: the key, fast-path data and interface
/// index of the entry it writes for `l`, if it writes one.
fn eligible<'l>(
    l: &'l Lease,
    ifindex: &HashMap<String, u32>,
) -> Option<(LeaseKey, &'l FastReply, Option<u32>)> {
    if l.state != LeaseState::Bound {
        return None;
    }
    let f = l.fast.as_deref()?;
    let key = lease_key(l.client.as_deref()?)?;
    if f.template.len() > TEMPLATE_OPTIONS_MAX || f.template.is_empty() {
        return None;
    }
    let ifindex = ifindex.get(&*f.iface).copied();
    // Directly connected clients only on fast-path interfaces.
    if f.giaddr.is_unspecified() && ifindex.is_none() {
        return None;
    }
    Some((key, f, ifindex))
}

/// `FastMaps::would_map` for other threads, and which bindings the map
/// refused (full, no template slot): those are the control plane's by
/// design, not missing.
#[derive(Clone, Default)]
pub struct Eligibility {
    ifindex: Arc<HashMap<String, u32>>,
    refused: Arc<Mutex<HashSet<Ipv4Addr>>>,
}

impl Eligibility {
    /// The rule for a sync whose fast-path interfaces are `ifaces`
    /// (name, ifindex); tests.
    pub fn new(ifaces: impl IntoIterator<Item = (String, u32)>) -> Eligibility {
        Eligibility {
            ifindex: Arc::new(ifaces.into_iter().collect()),
            refused: Arc::default(),
        }
    }

    pub fn would_map(&self, l: &Lease) -> bool {
        eligible(l, &self.ifindex).is_some()
    }

    pub fn refused(&self, ip: Ipv4Addr) -> bool {
        self.refused.lock().unwrap().contains(&ip)
    }
}

/// A read-only handle on the lease map for threads other than the
/// committer's: the auditor and the control API's kernel view.
pub struct LeaseReader {
    map: BpfHashMap<MapData, LeaseKey, LeaseValue>,
    /// Whether the kernel takes BPF_MAP_LOOKUP_BATCH (5.6+).
    batch: std::sync::atomic::AtomicBool,
}

/// Entries read per BPF_MAP_LOOKUP_BATCH call.
pub const READ_CHUNK: usize = 4096;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a chunked read of the map stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadCursor {
    #[default]
    Start,
    /// The kernel's batch token (a bucket index for hash maps).
    Batch(u64),
    Done,
}

impl LeaseReader {
    fn from_map_data(data: MapData) -> Result<LeaseReader> {
        let map = BpfHashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
        Ok(LeaseReader {
            map,
            batch: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Opens the lease map a daemon pinned (`server.pin_dir`).
    pub fn from_pin(path: &Path) -> Result<LeaseReader> {
        Self::from_map_data(
            MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?,
        )
    }

    /// The kernel's entry for `key`.
    pub fn get(&self, key: &LeaseKey) -> Option<LeaseValue> {
        self.map.get(key, 0).ok()
    }

    /// Up to `max` entries from `cursor` on, advancing it; `Done` once the
    /// whole map has been read. Batch lookups walk the hash table bucket
    /// by bucket, so entries the committer adds or removes meanwhile never
    /// restart the walk (`get_next_key` from a deleted key starts over).
    pub fn read(&self, cursor: &mut ReadCursor, max: usize) -> Result<Vec<(LeaseKey, LeaseValue)>> {
        use std::sync::atomic::Ordering;
        if *cursor == ReadCursor::Done {
            return Ok(Vec::new());
        }
        if self.batch.load(Ordering::Relaxed) {
            match self.read_batch(cursor, max.max(1)) {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
                    if *cursor != ReadCursor::Start {
                        return Err(e).context("BPF_MAP_LOOKUP_BATCH");
                    }
                    // 524: ENOTSUPP, the kernel's own (no batch ops).
                    self.batch.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH"),
            }
        }
        // No batch lookups: the whole map at once (`get_next_key` restarts
        // from the first key when the one it continues from was deleted
        // meanwhile, so it cannot resume across chunks).
        let out = self.map.iter().filter_map(|r| r.ok()).collect();
        *cursor = ReadCursor::Done;
        Ok(out)
    }

    fn read_batch(
        &self,
        cursor: &mut ReadCursor,
        max: usize,
    ) -> std::io::Result<Vec<(LeaseKey, LeaseValue)>> {
        use aya::maps::IterableMap;
        let fd = self.map.map().fd().as_fd().as_raw_fd();
        let mut want = max;
        loop {
            let mut keys = vec![LeaseKey::zeroed(); want];
            let mut values: Vec<LeaseValue> = vec![bytemuck::Zeroable::zeroed(); want];
            let token_in = match *cursor {
                ReadCursor::Batch(t) => t,
                _ => 0,
            };
            let mut token_out = 0u64;
            let mut attr = BatchAttr {
                in_batch: match cursor {
                    ReadCursor::Batch(_) => &token_in as *const u64 as u64,
                    _ => 0,
                },
                out_batch: &mut token_out as *mut u64 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: want as u32,
                map_fd: fd as u32,
                ..Default::default()
            };
            // SAFETY: attr points at buffers of `count` keys and values of
            // the map's key and value sizes, and at two 8-byte tokens (the
            // kernel copies 4 for a hash map), all live across the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    std::mem::size_of::<BatchAttr>(),
                )
            };
            let err = (r < 0).then(std::io::Error::last_os_error);
            match err.as_ref().and_then(std::io::Error::raw_os_error) {
                None => *cursor = ReadCursor::Batch(token_out),
                Some(libc::ENOENT) => *cursor = ReadCursor::Done,
                // One bucket holds more than `want`: ask for more.
                Some(libc::ENOSPC) if want < 1 << 16 => {
                    want *= 4;
                    continue;
                }
                Some(_) => return Err(err.unwrap()),
            }
            let n = (attr.count as usize).min(want);
            keys.truncate(n);
            values.truncate(n);
            return Ok(keys.into_iter().zip(values).collect());
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(LeaseKey, LeaseValue)>> {
        let mut cursor = ReadCursor::Start;
        let mut out = Vec::new();
        while cursor != ReadCursor::Done {
            out.extend(self.read(&mut cursor, READ_CHUNK)?);
        }
        Ok(out)
    }
}

/// Index of the last `Put` or `Delete` of each address in `ops`.
fn last_lease_op(ops: &[StoreOp]) -> HashMap<Ipv4Addr, usize> {
    let mut last = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Put(l) => {
                last.insert(l.ip, i);
            }
            StoreOp::Delete(ip) => {
                last.insert(*ip, i);
            }
            _ => {}
        }
    }
    last
}

/// An interface the fast path answers on.
#[derive(Debug, Clone)]
pub struct FastIface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub entries: u64,
    pub templates: u64,
    pub upserts: u64,
    pub removals: u64,
    /// Bindings left to the control plane: map full, or no template slot.
    pub map_full: u64,
    pub no_template_slot: u64,
    /// Stray entries removed by the auditor's repairs.
    pub repairs: u64,
}

struct Slot {
    id: u32,
    refs: usize,
}

/// The lease, template and interface maps, and what we wrote into them.
pub struct FastMaps {
    leases: BpfHashMap<MapData, LeaseKey, LeaseValue>,
    templates: Array<MapData, ReplyTemplate>,
    slots: HashMap<Arc<[u8]>, Slot>,
    /// Freed template slots, oldest first: a slot is reused as late as
    /// possible, so an XDP program that looked a binding up just before
    /// its removal still reads the template it was written with.
    free: VecDeque<u32>,
    /// address -> (key, template) of every entry we wrote.
    by_ip: HashMap<Ipv4Addr, (LeaseKey, Arc<[u8]>)>,
    by_key: HashMap<LeaseKey, Ipv4Addr>,
    ifindex: Arc<HashMap<String, u32>>,
    /// Addresses whose binding the map refused (full, or no template
    /// slot) and that no later change has written or ended since.
    refused: Arc<Mutex<HashSet<Ipv4Addr>>>,
    pub stats: SyncStats,
    warned_full: bool,
}

impl FastMaps {
    /// Takes the maps out of the loaded program and registers the
    /// interfaces the fast path answers on.
    pub fn new(
        fastpath: &mut Fastpath,
        ifaces: &[FastIface],
        server_ip: Ipv4Addr,
    ) -> Result<FastMaps> {
        let leases = BpfHashMap::try_from(fastpath.take_map(MAP_LEASES)?)?;
        let templates = Array::try_from(fastpath.take_map(MAP_TEMPLATES)?)?;
        let mut iface_map: Array<MapData, IfaceInfo> =
            Array::try_from(fastpath.take_map(MAP_IFACES)?)?;
        for i in ifaces {
            if i.ifindex >= IFACE_SLOTS {
                tracing::warn!(
                    interface = %i.name,
                    ifindex = i.ifindex,
                    "interface index too high for the fast path (limit {IFACE_SLOTS}); the control plane answers there"
                );
                continue;
            }
            let info = IfaceInfo {
                mac: i.mac,
                _pad: [0; 2],
                server_ip: u32::from_ne_bytes(server_ip.octets()),
            };
            iface_map
                .set(i.ifindex, info, 0)
                .with_context(|| format!("registering {} with the fast path", i.name))?;
        }
        Ok(FastMaps {
            leases,
            templates,
            slots: HashMap::new(),
            free: (0..TEMPLATE_SLOTS).collect(),
            by_ip: HashMap::new(),
            by_key: HashMap::new(),
            ifindex: Arc::new(ifaces.iter().map(|i| (i.name.clone(), i.ifindex)).collect()),
            refused: Arc::default(),
            stats: SyncStats::default(),
            warned_full: false,
        })
    }

    /// Before a batch is written: drop every entry the batch ends,
    /// reading what the kernel granted there first. Only each address's
    /// last op counts: an ACK followed by a RELEASE in one group commit
    /// must leave no entry. (`Renewed` ops come from the map and never
    /// change it.)
    pub fn before_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        let refused = self.refused.clone();
        let mut refused = refused.lock().unwrap();
        for (ip, i) in last_lease_op(ops) {
            report.touched.insert(ip);
            let keep = match &ops[i] {
                StoreOp::Put(l) => self
                    .entry_for(l)
                    .is_some_and(|(k, _)| self.by_ip.get(&ip).is_some_and(|(ek, _)| *ek == k)),
                _ => false,
            };
            if !keep {
                self.remove(ip, report);
            }
            // Its next write decides again.
            refused.remove(&ip);
        }
    }

    /// After a batch is durable: write the bindings it made.
    pub fn after_commit(&mut self, ops: &[StoreOp], report: &mut MapReport) {
        for (_, i) in last_lease_op(ops) {
            if let StoreOp::Put(l) = &ops[i] {
                if let Some(moved_from) = self.upsert(l) {
                    report.touched.insert(moved_from);
                }
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        report.finish(&self.by_ip);
    }

    /// Writes every renewable binding of `leases` (start-up); returns how
    /// many went in.
    pub fn load<'a>(&mut self, leases: impl Iterator<Item = &'a Lease>) -> usize {
        let mut n = 0;
        for l in leases {
            if self.entry_for(l).is_some() {
                self.upsert(l);
                n += usize::from(self.by_ip.contains_key(&l.ip));
            }
        }
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        n
    }

    /// Whether the sync writes an entry for `l` (the auditor's rule for a
    /// missing one).
    pub fn would_map(&self, l: &Lease) -> bool {
        self.entry_for(l).is_some()
    }

    /// The sync's rule, for readers on other threads (the auditor).
    pub fn eligibility(&self) -> Eligibility {
        Eligibility {
            ifindex: self.ifindex.clone(),
            refused: self.refused.clone(),
        }
    }

    /// A second handle on the lease map, for reading it from another
    /// thread (the auditor, the control API's kernel view): a dup of the
    /// map's fd. It never writes; the map is written only here.
    pub fn reader(&self) -> Result<LeaseReader> {
        use aya::maps::IterableMap;
        let fd = self
            .leases
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the lease map's fd")?;
        LeaseReader::from_map_data(MapData::from_fd(fd)?)
    }

    /// What the map should hold for `l`, if the kernel may renew it.
    fn entry_for(&self, l: &Lease) -> Option<(LeaseKey, LeaseValue)> {
        let (key, f, ifindex) = eligible(l, &self.ifindex)?;
        let value = LeaseValue {
            expires_mono_ns: unix_to_mono_ns(l.expires),
            reported_mono_ns: unix_to_mono_ns(l.expires),
            ip: u32::from_ne_bytes(l.ip.octets()),
            subnet_id: l.subnet_id,
            template_id: u32::MAX,
            lease_secs: l.lease_secs,
            ifindex: ifindex.unwrap_or(0),
            outer_vlan: f.outer_vlan,
            inner_vlan: f.inner_vlan,
            giaddr: u32::from_ne_bytes(f.giaddr.octets()),
            shape_hash: f.shape_hash,
            prl_len: f.prl_len,
            max_message_size: f.max_message_size,
            client_id_len: f.client_id_len,
            relay_info_len: f.relay_info_len,
            flags: lease_flags::FASTPATH
                | if f.offerable {
                    lease_flags::OFFERABLE
                } else {
                    0
                },
        };
        Some((key, value))
    }

    /// Writes `l`'s entry if the kernel may renew it; returns the address
    /// the client's key pointed at before, when it moved.
    fn upsert(&mut self, l: &Lease) -> Option<Ipv4Addr> {
        let (key, mut value) = self.entry_for(l)?;
        let template = l.fast.as_ref().expect("entry_for checked").template.clone();
        let Some(slot) = self.acquire(&template) else {
            self.stats.no_template_slot += 1;
            self.refused.lock().unwrap().insert(l.ip);
            return None;
        };
        value.template_id = slot;
        if let Err(e) = self.leases.insert(key, value, 0) {
            self.release(&template);
            self.stats.map_full += 1;
            self.refused.lock().unwrap().insert(l.ip);
            if !std::mem::replace(&mut self.warned_full, true) {
                tracing::warn!(
                    "XDP lease map refused an entry ({e}); further bindings are renewed by the control plane (raise server.lease_map_entries)"
                );
            }
            return None;
        }
        self.stats.upserts += 1;
        self.refused.lock().unwrap().remove(&l.ip);
        let mut moved = None;
        // The key moved to another address: forget the old record (the map
        // entry itself was just overwritten).
        if let Some(old_ip) = self.by_key.insert(key, l.ip) {
            if old_ip != l.ip {
                if let Some((_, t)) = self.by_ip.remove(&old_ip) {
                    self.release(&t);
                }
                moved = Some(old_ip);
            }
        }
        if let Some((_, t)) = self.by_ip.insert(l.ip, (key, template)) {
            self.release(&t);
        }
        moved
    }

    /// Removes the entry we wrote for `ip`, first reading what the kernel
    /// granted there beyond what it reported. (A renewal the program is
    /// answering in the very microsecond of the removal can still write
    /// its end into the element after this read: the one window left, see
    /// RELIABILITY.md.)
    fn remove(&mut self, ip: Ipv4Addr, report: &mut MapReport) {
        self.remove_reading(ip, report, None);
    }

    /// `remove`, with what the entry granted capped at `max_end` (Unix
    /// seconds) when given.
    fn remove_reading(&mut self, ip: Ipv4Addr, report: &mut MapReport, max_end: Option<u64>) {
        let Some((key, template)) = self.by_ip.remove(&ip) else {
            return;
        };
        if self.by_key.get(&key) == Some(&ip) {
            self.by_key.remove(&key);
            if let Ok(v) = self.leases.get(&key, 0) {
                if let Some(mut g) = grant_of(&key, &v) {
                    g.ip = ip;
                    if let Some(m) = max_end {
                        g.expires = g.expires.min(m);
                    }
                    if v.expires_mono_ns > v.reported_mono_ns {
                        report.grants.push(g.clone());
                    }
                    report.removed.push(g);
                }
            }
            if let Err(e) = self.leases.remove(&key) {
                tracing::warn!(%ip, "removing a binding from the XDP lease map: {e}");
            }
        }
        self.release(&template);
        self.stats.removals += 1;
    }

    /// The auditor's repair: removes the kernel's entry under `key` if it
    /// still holds the binding the auditor confirmed (`seen`, compared
    /// without its times, which the kernel moves on each renewal).
    /// Returns whether it removed one.
    ///
    /// Why here, on the committer thread, and not from the auditor's own
    /// handle: a removal is always safe for the invariant (without an
    /// entry the program passes the client to the control plane, which
    /// answers from the store), but this thread's bookkeeping must stay
    /// true. Removed behind its back, an entry it wrote would still be in
    /// `by_ip`/`by_key`: `holds_ip`, the fill it reports and the map
    /// reports' `gone` would claim a binding the kernel no longer has, so
    /// the control plane would keep a hold that never ends and never read
    /// what the entry had granted. And a removal racing an upsert of the
    /// same key could delete the fresh, legitimate entry. Done here, in
    /// commit order:
    /// - an entry this sync wrote (its key is in `by_key`) leaves the way
    ///   every removal does (`remove`): grants read first, template
    ///   released, the address reported gone so its hold ends after the
    ///   next ring read;
    /// - an entry it never wrote (planted, or left by someone else) has no
    ///   bookkeeping: the kernel's entry alone goes, its unreported grant
    ///   still read and reported;
    /// - nothing re-adds either: entries are written only after a commit
    ///   of a Bound lease the sync would map, i.e. from the store's truth.
    ///
    /// A grant read from a stray entry is capped at the kernel's now + the
    /// entry's lease time, the most any renewal from it told a client (a
    /// corrupted end is no grant); the control plane honours it only as
    /// `Server::kernel_granted` does any other.
    pub fn unmap(&mut self, key: &LeaseKey, seen: &LeaseValue, report: &mut MapReport) -> bool {
        let Ok(now_v) = self.leases.get(key, 0) else {
            return false;
        };
        if !same_binding(&now_v, seen) {
            return false;
        }
        let cap = crate::xdp::clock::mono_ns_to_unix_ceil(
            mono_ns_now() + u64::from(now_v.lease_secs) * 1_000_000_000,
        );
        if let Some(&ip) = self.by_key.get(key) {
            report.touched.insert(ip);
            self.remove_reading(ip, report, Some(cap));
            self.refused.lock().unwrap().remove(&ip);
        } else {
            if let Some(mut g) = unreported_grant(key, &now_v) {
                g.expires = g.expires.min(cap);
                report.grants.push(g);
            }
            if let Err(e) = self.leases.remove(key) {
                tracing::warn!("removing a stray entry from the XDP lease map: {e}");
                return false;
            }
        }
        self.stats.repairs += 1;
        self.stats.entries = self.by_ip.len() as u64;
        self.stats.templates = self.slots.len() as u64;
        true
    }

    fn acquire(&mut self, template: &Arc<[u8]>) -> Option<u32> {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs += 1;
            return Some(s.id);
        }
        let id = self.free.pop_front()?;
        let mut t = ReplyTemplate {
            sum: dhcp_common::options_sum(template),
            options_len: template.len() as u16,
            _pad: [0; 2],
            options: [0; TEMPLATE_OPTIONS_MAX],
        };
        t.options[..template.len()].copy_from_slice(template);
        if let Err(e) = self.templates.set(id, t, 0) {
            tracing::warn!("writing XDP reply template {id}: {e}");
            self.free.push_front(id);
            return None;
        }
        self.slots.insert(template.clone(), Slot { id, refs: 1 });
        Some(id)
    }

    fn release(&mut self, template: &Arc<[u8]>) {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs -= 1;
            if s.refs == 0 {
                let id = s.id;
                self.slots.remove(template);
                self.free.push_back(id);
            }
        }
    }

    /// Empties the lease map (an adopted one, before it is rebuilt);
    /// returns what every entry granted, for the store.
    pub fn clear(&mut self) -> Result<Vec<KernelGrant>> {
        let entries = self.entries();
        for (k, _) in &entries {
            let _ = self.leases.remove(k);
        }
        self.by_ip.clear();
        self.by_key.clear();
        self.refused.lock().unwrap().clear();
        self.slots.clear();
        self.free = (0..TEMPLATE_SLOTS).collect();
        Ok(entries.iter().filter_map(|(k, v)| grant_of(k, v)).collect())
    }

    /// What the kernel granted beyond what it reported, over the whole map
    /// (a clean stop stores it, so the store is exact without recovery).
    pub fn unreported(&self) -> Vec<KernelGrant> {
        self.entries()
            .iter()
            .filter(|(_, v)| v.expires_mono_ns > v.reported_mono_ns)
            .filter_map(|(k, v)| grant_of(k, v))
            .collect()
    }

    /// Every entry the kernel holds, read from the map itself.
    pub fn entries(&self) -> Vec<(LeaseKey, LeaseValue)> {
        self.leases.iter().filter_map(|r| r.ok()).collect()
    }

    /// Tests: the kernel's clock moves `secs` forward, as the model test's
    /// wall clock does (`crate::xdp::clock::advance_for_tests`).
    pub fn shift_clock_for_tests(&mut self, secs: u64) {
        let d = secs * 1_000_000_000;
        for (k, mut v) in self.entries() {
            v.expires_mono_ns = v.expires_mono_ns.saturating_sub(d);
            v.reported_mono_ns = v.reported_mono_ns.saturating_sub(d);
            let _ = self.leases.insert(k, v, 0);
        }
    }

    /// Tests and the auditor's repair: writes or removes an entry behind
    /// the sync's back.
    pub fn raw_insert(&mut self, key: LeaseKey, value: LeaseValue) -> Result<()> {
        self.leases.insert(key, value, 0)?;
        Ok(())
    }

    pub fn raw_remove(&mut self, key: &LeaseKey) -> Result<()> {
        self.leases.remove(key)?;
        Ok(())
    }

    /// The kernel's current entry for `key` (tests, status).
    pub fn get(&self, key: &LeaseKey) -> Option<LeaseValue> {
        self.leases.get(key, 0).ok()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether we wrote an entry for `ip` (and have not removed it).
    pub fn holds_ip(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    /// Kernel memory charged for the lease map (`memlock` in its fdinfo).
    pub fn lease_map_bytes(&self) -> Option<u64> {
        use aya::maps::IterableMap;
        let fd = self.leases.map().fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{client_id_key, hw_key};

    #[test]
    fn keys_round_trip_and_match_what_the_program_builds() {
        let hw = hw_key(1, &[2, 0, 0, 0, 0, 7]);
        let k = lease_key(&hw).unwrap();
        assert_eq!((k.kind, k.len), (id_kind::HWADDR, 7));
        assert_eq!(&k.id[..7], &[1, 2, 0, 0, 0, 0, 7]);
        assert!(k.id[7..].iter().all(|b| *b == 0));
        assert_eq!(client_key(&k).unwrap(), hw);
        let cid = client_id_key(&[0xff, 1, 2, 3]);
        let k = lease_key(&cid).unwrap();
        assert_eq!((k.kind, k.len), (id_kind::CLIENT_ID, 4));
        assert_eq!(client_key(&k).unwrap(), cid);
        assert!(lease_key(&client_id_key(&[7; 33])).is_none());
        for c in [hw.clone(), cid.clone(), client_id_key(&[1, 2])] {
            for key in [lease_key(&hw).unwrap(), lease_key(&cid).unwrap()] {
                assert_eq!(
                    is_client_key(Some(&c), &key),
                    client_key(&key).as_deref() == Some(&*c)
                );
            }
        }
        let mut odd = LeaseKey::zeroed();
        odd.kind = 9;
        assert!(is_client_key(None, &odd) && !is_client_key(Some(&hw), &odd));
        assert!(!is_client_key(None, &lease_key(&hw).unwrap()));
    }
}
