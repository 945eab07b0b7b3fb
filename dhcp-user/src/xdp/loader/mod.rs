//! The XDP side seen from userspace: loading the embedded object, attaching
//! it, reading its counters, and running it on crafted frames through
//! `BPF_PROG_TEST_RUN` (the harness the fixture tests build on).

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::PerCpuArray,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use dhcp_common::{stat, MAP_LEASES, MAP_STATS, PROGRAM_NAME, STAT_NAMES};

use crate::xdp::pins::PINNED_MAPS;

use crate::config::XdpSetting;

mod attach;
mod stats;
mod test_run;

pub use attach::{AttachedMode, Attachment};
pub use stats::XdpStats;
pub use test_run::{TestRunOutcome, XdpMd, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX};

/// The server's XDP object, built by build.rs from `dhcp-ebpf/` (its
/// `server` binary: the daemon carries no other role's programs).
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf.o"));

enum LinkHold {
    /// Detached when the program (or `detach_all`) lets go of it.
    Owned(XdpLinkId),
    /// Pinned in bpffs: stays attached without any process holding it,
    /// until the pin is removed.
    Pinned { fd: FdLink, path: PathBuf },
}

/// Where map `name` of a pin directory is pinned.
type MapPin = fn(&Path, &str) -> PathBuf;

fn map_pin(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Mounts bpffs on /sys/fs/bpf when `dir` lies under it and it is not;
/// says whether it did (in a private mount namespace, what this process
/// mounted goes with it: `crate::xdp::pins::survival`).
pub fn ensure_bpffs(dir: &Path) -> Result<bool> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        // Elsewhere the operator mounts it; pins on another filesystem fail.
        let parent = dir.parent().unwrap_or(dir);
        let c = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes())?;
        // SAFETY: statfs on a valid path into a zeroed struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != BPF_FS_MAGIC {
            bail!(
                "pin_dir {}: {} is not on a bpffs mount",
                dir.display(),
                parent.display()
            );
        }
        return Ok(false);
    }
    let c = std::ffi::CString::new("/sys/fs/bpf")?;
    // SAFETY: statfs on a valid path into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(false);
    }
    let fstype = std::ffi::CString::new("bpf")?;
    // SAFETY: plain mount(2) with valid strings.
    if unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    } != 0
    {
        bail!(
            "mounting bpffs on /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(true)
}

/// Instructions the verifier walks at most before it refuses a program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// The loaded XDP program and its maps.
pub struct Fastpath {
    // Drop order matters: attachments go first (links hold the program).
    attachments: Vec<Attachment>,
    /// Where maps and links are pinned (hitless restart), if anywhere.
    pin_dir: Option<PathBuf>,
    /// Set by `keep_attached`: leave everything pinned on drop.
    kept: bool,
    /// `ensure_bpffs` mounted the bpffs of `pin_dir` (for `hitless_stop`).
    mounted_bpffs: bool,
    // Holds the log ring buffer's fd; dropping it would close the map under
    // the program's feet.
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    ebpf: Ebpf,
}

impl Fastpath {
    /// Loads the embedded program (verifier included). `debug_logs` turns
    /// the program's aya-log debug messages on; they cost a ring buffer
    /// write per DHCP frame, so they are off unless asked for.
    pub fn load(debug_logs: bool) -> Result<Fastpath> {
        Self::load_sized(debug_logs, 1024)
    }

    /// `load` with a lease map of `lease_entries` bindings.
    pub fn load_sized(debug_logs: bool, lease_entries: u32) -> Result<Fastpath> {
        Self::load_with(debug_logs, lease_entries, &[], None)
    }

    /// `load_sized` with the maps pinned in `pin_dir`: maps a previous
    /// daemon left there are adopted, contents included (the renewal
    /// events it could not read, the kernel's bindings).
    /// Pinned maps of another layout are refused before anything is
    /// loaded or detached.
    pub fn load_pinned(debug_logs: bool, lease_entries: u32, pin_dir: &Path) -> Result<Fastpath> {
        let mounted = ensure_bpffs(pin_dir)?;
        std::fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating {}", pin_dir.display()))?;
        let layout = crate::xdp::pins::check_layout(pin_dir)?;
        if layout.converted() {
            bail!(
                "the fast path pinned in {} has another layout: it is converted by serve (crate::xdp::upgrade), not adopted",
                pin_dir.display()
            );
        }
        let mut fp = Self::load_with(debug_logs, lease_entries, &[], Some((pin_dir, map_pin)))?;
        fp.mounted_bpffs = mounted;
        if layout != crate::xdp::pins::PinnedLayout::Recorded {
            crate::xdp::pins::record_layout(pin_dir, &dhcp_common::Layout::CURRENT)?;
        }
        Ok(fp)
    }

    /// For a conversion from the previous layout (`crate::xdp::upgrade`): this
    /// build's program with new maps, pinned beside the old ones under
    /// staging names (`pins::staging_pin`) until the old ones are
    /// drained; the links pinned in `pin_dir` are swapped by `attach`.
    pub fn load_converting(
        debug_logs: bool,
        lease_entries: u32,
        pin_dir: &Path,
    ) -> Result<Fastpath> {
        let mounted = ensure_bpffs(pin_dir)?;
        // Left by a conversion that died halfway: never reused, they may
        // hold entries the store no longer backs.
        for m in PINNED_MAPS {
            let p = crate::xdp::pins::staging_pin(pin_dir, m);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
            }
        }
        let mut fp = Self::load_with(
            debug_logs,
            lease_entries,
            &[],
            Some((pin_dir, crate::xdp::pins::staging_pin)),
        )?;
        fp.mounted_bpffs = mounted;
        Ok(fp)
    }

    /// Another object carrying the server's programs and maps beside its
    /// own (the benchmark's, `xdhcp_loadgen::programs::load_bench`): the
    /// `extra` programs are loaded too and `sized` maps get their sizes.
    pub fn load_object(
        object: &[u8],
        lease_entries: u32,
        extra: &[&str],
        sized: &[(&str, u32)],
    ) -> Result<Fastpath> {
        Self::load_from(object, false, lease_entries, extra, sized, None)
    }

    fn load_with(
        debug_logs: bool,
        lease_entries: u32,
        extra: &[&str],
        pins: Option<(&Path, MapPin)>,
    ) -> Result<Fastpath> {
        Self::load_from(XDP_OBJECT, debug_logs, lease_entries, extra, &[], pins)
    }

    fn load_from(
        object: &[u8],
        debug_logs: bool,
        lease_entries: u32,
        extra: &[&str],
        sized: &[(&str, u32)],
        pins: Option<(&Path, MapPin)>,
    ) -> Result<Fastpath> {
        raise_memlock_limit();
        let level: u8 = if debug_logs {
            aya_log::Level::Debug as u8
        } else {
            aya_log::Level::Info as u8
        };
        let mut loader = EbpfLoader::new();
        if let Some((dir, pin)) = pins {
            for m in PINNED_MAPS {
                loader.map_pin_path(m, pin(dir, m));
            }
        }
        for &(name, entries) in sized {
            loader.map_max_entries(name, entries);
        }
        let mut ebpf = loader
            .override_global(aya_log::LEVEL, &level, true)
            .map_max_entries(MAP_LEASES, lease_entries.max(1))
            .load(object)
            .context("loading the XDP object (is this root, with BPF support?)")?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("XDP log messages unavailable: {e}");
                None
            }
        };
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the XDP object"))?
            .try_into()?;
        prog.load().map_err(verifier_error)?;
        load_limits(&mut ebpf)?;
        for name in extra {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the XDP object"))?
                .try_into()?;
            prog.load().map_err(verifier_error)?;
        }
        Ok(Fastpath {
            attachments: Vec::new(),
            pin_dir: pins.map(|(d, _)| d.to_path_buf()),
            kept: false,
            mounted_bpffs: false,
            logger,
            ebpf,
        })
    }

    /// Instructions the verifier walked to accept the fast path, as the
    /// kernel reports them. The program is shaped to stay far below
    /// [`VERIFIER_LIMIT`]: a kernel that prunes states a little
    /// differently would refuse a program near it, so headroom is tested
    /// (`xdp_fixtures`), not assumed.
    pub fn verified_instructions(&self) -> Result<u32> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .context("the XDP program is missing")?
            .try_into()?;
        let info = prog.info()?;
        info.verified_instruction_count()
            .context("the kernel does not report the verifier's instruction count")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Takes a map out of the program (it stays attached to the program).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the XDP object (or taken already)"))
    }

    /// Puts loaded program `program` in slot `slot` of the program array
    /// `map` (what a harness of another object tail-calls).
    pub fn set_tail_call(&mut self, map: &str, slot: u32, program: &str) -> Result<()> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or_else(|| anyhow!("program {program} not loaded"))?
            .try_into()?;
        let fd = prog.fd()?.try_clone()?;
        let mut progs = aya::maps::ProgramArray::try_from(
            self.ebpf
                .map_mut(map)
                .ok_or_else(|| anyhow!("map {map} missing"))?,
        )?;
        progs
            .set(slot, &fd, 0)
            .with_context(|| format!("{program} into {map}[{slot}]"))
    }

    /// Map access for the benchmark harness.
    pub fn map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.ebpf.map_mut(name)
    }

    /// File descriptor that becomes readable when the program logged.
    pub fn log_fd(&self) -> Option<i32> {
        self.logger.as_ref().map(|l| l.as_raw_fd())
    }

    /// Moves pending XDP log records to the `log` facade (and so to tracing).
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

/// Removes everything pinned in `dir` (links first: that detaches them),
/// then `dir`. What `xdhcp detach` does, with no daemon running.
pub fn remove_pins(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for f in files {
        std::fs::remove_file(&f).with_context(|| format!("unpinning {}", f.display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

impl Drop for Fastpath {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = self.detach_all() {
            tracing::error!("{e:#}");
        }
    }
}

/// The rate-limits program, in the slot the main one tail-calls
/// (`dhcp_common::rate`). Without it frames the fast path passes go on
/// unlimited, so a failure here is an error, not a warning.
fn load_limits(ebpf: &mut Ebpf) -> Result<()> {
    use dhcp_common::rate::{MAP_PROGRAMS, PROGRAM};
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("program {PROGRAM} missing from the XDP object"))?
        .try_into()?;
    prog.load().map_err(verifier_error)?;
    let fd = prog.fd()?.try_clone()?;
    let mut progs = aya::maps::ProgramArray::try_from(
        ebpf.map_mut(MAP_PROGRAMS)
            .ok_or_else(|| anyhow!("map {MAP_PROGRAMS} missing"))?,
    )?;
    progs
        .set(0, &fd, 0)
        .context("installing the rate-limits program")?;
    Ok(())
}

pub fn verifier_error(e: ProgramError) -> anyhow::Error {
    // The verifier log is the only useful part of a load failure.
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            anyhow!("the kernel rejected the XDP program ({io_error}):\n{verifier_log}")
        }
        other => anyhow!(other).context("loading the XDP program"),
    }
}

pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname).context("interface name")?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "no interface named {ifname:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(idx)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use
/// memcg. Raising it costs nothing and keeps old kernels working.
pub fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::trace!(
            "setrlimit(RLIMIT_MEMLOCK): {}",
            std::io::Error::last_os_error()
        );
    }
}
