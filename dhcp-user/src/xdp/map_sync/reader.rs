//! Reading the lease map from threads other than the committer's.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use dhcp_common::{LeaseKey, LeaseValue};

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
    pub(super) fn from_map_data(data: MapData) -> Result<LeaseReader> {
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
