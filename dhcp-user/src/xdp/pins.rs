//! What a pinned fast path needs to be of use to the next daemon: pins
//! that outlive this one (`stop --keep-fast-path`), and maps the next one
//! reads as they were written (the layout record).
//!
//! Pins live in a bpffs instance (a superblock), which lives as long as
//! some mount namespace holds a mount of it. `ip netns exec` gives its
//! process a private mount namespace with a fresh /sys: a bpffs the daemon
//! mounts on /sys/fs/bpf there is held by that namespace only, and goes,
//! pins, links and all, when the daemon exits. A bpffs that PID 1's mount
//! namespace also holds stays.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, Map, MapData, MapInfo};
use dhcp_common::{
    prev, Layout, MAP_EVENTS, MAP_IFACES, MAP_LAYOUT, MAP_LEASES, MAP_STATS, MAP_TEMPLATES,
};

/// Maps kept in bpffs across daemon restarts (the scratch map is not:
/// per-CPU working memory).
pub const PINNED_MAPS: &[&str] = &[MAP_LEASES, MAP_TEMPLATES, MAP_IFACES, MAP_EVENTS, MAP_STATS];

/// Where a converting daemon pins its new map `name` until the old one is
/// gone (bpffs names take no dots).
pub fn staging_pin(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("staging_{name}"))
}

/// How to get pins that outlive the daemon.
pub const SURVIVAL_FIX: &str = "mount a bpffs in the host's mount namespace (e.g. `mkdir -p /run/xdhcp-bpf && mount -t bpf bpf /run/xdhcp-bpf`, outside any `ip netns exec`) and point pin_dir (or --pin-dir) under it, or run xdhcp under its systemd unit (dist/xdhcp.service), which pins in the host's /sys/fs/bpf";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether what is pinned in `dir` outlives this process: `Ok` says who
/// holds its bpffs, `Err` why nobody will once this process is gone.
/// `mounted_here`: this process mounted that bpffs (`ensure_bpffs`).
pub fn survival(dir: &Path, mounted_here: bool) -> std::result::Result<String, String> {
    let md = std::fs::metadata(dir).map_err(|e| format!("pin_dir {}: {e}", dir.display()))?;
    if !on_bpffs(dir) {
        return Err(format!("pin_dir {} is not on a bpffs", dir.display()));
    }
    let dev = format!("{}:{}", libc::major(md.dev()), libc::minor(md.dev()));
    if std::process::id() == 1 {
        return Err(format!(
            "this daemon is PID 1 of its PID namespace (a container?): whether the bpffs holding pin_dir {} is also mounted outside, where it would outlive the daemon, cannot be told from here",
            dir.display()
        ));
    }
    match std::fs::read_to_string("/proc/1/mountinfo") {
        Ok(init) => match mount_of_dev(&init, &dev) {
            Some(mount_point) => Ok(format!(
                "pin_dir {} is on a bpffs PID 1's mount namespace holds (at {mount_point})",
                dir.display()
            )),
            None if mounted_here => Err(format!(
                "pin_dir {} is on a bpffs this daemon mounted itself, in a mount namespace that is not PID 1's (`ip netns exec` gives its process a private one, with a fresh /sys): that bpffs, pins and all, goes when the daemon exits",
                dir.display()
            )),
            None => Err(format!(
                "pin_dir {} is on a bpffs (device {dev}) that PID 1's mount namespace does not hold: only this daemon's mount namespace does, and it goes, pins and all, when its last process exits",
                dir.display()
            )),
        },
        Err(e) => {
            // Without PID 1's mount table, the namespaces themselves.
            let ours = std::fs::read_link("/proc/self/ns/mnt");
            let init = std::fs::read_link("/proc/1/ns/mnt");
            match (ours, init) {
                (Ok(a), Ok(b)) if a == b => Ok(format!(
                    "this daemon runs in PID 1's mount namespace, which holds the bpffs of pin_dir {}",
                    dir.display()
                )),
                (Ok(_), Ok(_)) => Err(format!(
                    "this daemon runs in a mount namespace that is not PID 1's and PID 1's mount table is unreadable (/proc/1/mountinfo: {e}): nothing shows that the bpffs of pin_dir {} outlives the daemon",
                    dir.display()
                )),
                (_, Err(e2)) | (Err(e2), _) => Err(format!(
                    "cannot tell whether the bpffs of pin_dir {} outlives this daemon (/proc/1/mountinfo: {e}; /proc/1/ns/mnt: {e2})",
                    dir.display()
                )),
            }
        }
    }
}

/// The mount point of the mount of device `dev` ("major:minor") in a
/// /proc/PID/mountinfo text, if it is a bpffs.
fn mount_of_dev(mountinfo: &str, dev: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        let f: Vec<&str> = mount.split_whitespace().collect();
        let fstype = fs.split_whitespace().next()?;
        (f.get(2) == Some(&dev) && fstype == "bpf").then(|| f.get(4).unwrap_or(&"?").to_string())
    })
}

pub fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs on a valid path into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// What `check_layout` found in a pin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinnedLayout {
    /// No pinned maps: this daemon's will be new.
    Empty,
    /// A record equal to this build's.
    Recorded,
    /// The previous layout's record (`dhcp_common::prev`: version 1, a
    /// lease value without the MCLT cap): converted
    /// (`crate::xdp::upgrade`).
    Previous,
    /// A record that differs from this build's in the counters' size
    /// only (counters added or removed): converted like `Previous`, with
    /// this build's key and event types (counters start again at zero).
    OtherCounters,
}

impl PinnedLayout {
    /// Taken over by `crate::xdp::upgrade` (new maps, link swap, drain).
    pub fn converted(self) -> bool {
        matches!(self, PinnedLayout::Previous | PinnedLayout::OtherCounters)
    }
}

/// Checks that the maps pinned in `dir` are this build's layout or the
/// one before it (`dhcp_common::prev`, converted); refuses any other,
/// naming it and what to do. Reads only: nothing is changed, the program
/// pinned there keeps answering. `serve` asks before it opens the store.
pub fn check_layout(dir: &Path) -> Result<PinnedLayout> {
    let record = dir.join(MAP_LAYOUT);
    let found = if record.exists() {
        let data = MapData::from_pin(&record)
            .with_context(|| format!("opening the layout record {}", record.display()))?;
        let array = Array::<_, Layout>::try_from(Map::Array(data))
            .with_context(|| format!("reading the layout record {}", record.display()))?;
        let found = array
            .get(&0, 0)
            .with_context(|| format!("reading the layout record {}", record.display()))?;
        if let Some(layout) = recorded_layout(&found) {
            return Ok(layout);
        }
        found.to_string()
    } else {
        if !PINNED_MAPS.iter().any(|m| dir.join(m).exists()) {
            return Ok(PinnedLayout::Empty);
        }
        // Records began with layout version 1, the one before this: pins
        // without one are older still, whatever their sizes say.
        format!(
            "no layout record (a daemon from before layout versions; its sizes: {})",
            unrecorded_sizes(dir)?
        )
    };
    bail!(
        "the fast path pinned in {dir} was left by a daemon with {found}; this xdhcp has {current}, and converts pinned maps only from the layout before it (layout version {prev_version}, lease value {prev_value} B) and from this layout with other counters: nothing was changed (the old program keeps answering renewals). Run `xdhcp detach --pin-dir {dir}` (renewals go to the control plane from then on) and start again",
        dir = dir.display(),
        current = Layout::CURRENT,
        prev_version = prev::LAYOUT.version,
        prev_value = prev::LAYOUT.lease_value,
    )
}

/// What a pinned record says this build can do with the pins, if
/// anything. Counters are not carried over, so only this layout's are
/// compared, to tell a conversion from an adoption.
fn recorded_layout(found: &Layout) -> Option<PinnedLayout> {
    if *found == Layout::CURRENT {
        return Some(PinnedLayout::Recorded);
    }
    let but_counters = |want: &Layout| {
        Layout {
            stats: want.stats,
            ..*found
        } == *want
    };
    if but_counters(&Layout::CURRENT) {
        return Some(PinnedLayout::OtherCounters);
    }
    but_counters(&prev::LAYOUT).then_some(PinnedLayout::Previous)
}

/// The sizes a record would hold, read from the pinned maps themselves
/// (version 0: unknown). Maps not pinned count as 0.
fn unrecorded_sizes(dir: &Path) -> Result<Layout> {
    let info = |name: &str| -> Result<Option<MapInfo>> {
        let p = dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        MapInfo::from_pin(&p)
            .map(Some)
            .map_err(|e| anyhow!("reading {}: {e}", p.display()))
    };
    let leases = info(MAP_LEASES)?;
    Ok(Layout {
        version: 0,
        lease_key: leases.as_ref().map_or(0, MapInfo::key_size),
        lease_value: leases.as_ref().map_or(0, MapInfo::value_size),
        template: info(MAP_TEMPLATES)?.map_or(0, |i| i.value_size()),
        iface: info(dhcp_common::MAP_IFACES)?.map_or(0, |i| i.value_size()),
        renew_event: 0,
        stats: info(MAP_STATS)?.map_or(0, |i| i.value_size()),
        _reserved: 0,
    })
}

/// Pins `layout` as the record of `dir` (replacing any).
pub fn record_layout(dir: &Path, layout: &Layout) -> Result<()> {
    let path = dir.join(MAP_LAYOUT);
    if path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    }
    let mut array = Array::<MapData, Layout>::create(1, 0).context("creating the layout record")?;
    array.set(0, layout, 0)?;
    array
        .pin(&path)
        .with_context(|| format!("pinning the layout record at {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
64 27 0:42 / /run/xdhcp-lab-bpffs rw,relatime shared:5 - bpf bpf rw
";

    #[test]
    fn a_bpffs_is_found_in_pid_1s_mount_table_by_its_device() {
        assert_eq!(
            mount_of_dev(INIT, "0:42").as_deref(),
            Some("/run/xdhcp-lab-bpffs")
        );
        // Another bpffs (mounted in a private namespace) has another device.
        assert_eq!(mount_of_dev(INIT, "0:43"), None);
        // The device of something that is not a bpffs does not count.
        assert_eq!(mount_of_dev(INIT, "0:22"), None);
    }

    #[test]
    fn records_are_adopted_converted_or_refused() {
        use PinnedLayout::*;
        assert_eq!(recorded_layout(&Layout::CURRENT), Some(Recorded));
        let counters = |l: Layout, stats| Layout { stats, ..l };
        assert_eq!(
            recorded_layout(&counters(Layout::CURRENT, 8)),
            Some(OtherCounters)
        );
        // The release before the MCLT cap, whatever counters it had.
        for stats in [0, 35 * 8, Layout::CURRENT.stats] {
            assert_eq!(
                recorded_layout(&counters(prev::LAYOUT, stats)),
                Some(Previous)
            );
        }
        // Its sizes with this version, or its version with other sizes:
        // neither layout.
        let odd = [
            Layout {
                version: Layout::CURRENT.version,
                ..prev::LAYOUT
            },
            Layout {
                lease_value: Layout::CURRENT.lease_value,
                ..prev::LAYOUT
            },
            Layout {
                version: Layout::CURRENT.version + 1,
                ..Layout::CURRENT
            },
        ];
        for l in odd {
            assert_eq!(recorded_layout(&l), None, "{l}");
        }
    }
}
