//! The bench's lab (one veth between a server and a client namespace) and
//! what it reads and sets on the host: CPUs, load, a daemon's RSS, the
//! socket receive buffer.

use std::path::PathBuf;

use anyhow::Result;
use xdhcp_lab::{Lab, Netns};

pub(super) struct BenchLab {
    _lab: Lab,
    pub srv: Netns,
    pub cli: Netns,
    pub dir: PathBuf,
}

impl BenchLab {
    /// A lab made elsewhere, `srv` its server's namespace and `cli` the
    /// client's (interfaces `srv0` and `cli0`), `dir` its folder.
    pub(super) fn from_parts(lab: Lab, srv: Netns, cli: Netns, dir: PathBuf) -> BenchLab {
        BenchLab {
            _lab: lab,
            srv,
            cli,
            dir,
        }
    }

    /// xdhcp's control socket, which loadgen asks for the server's counts.
    pub(super) fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
}

pub(super) fn lab() -> Result<BenchLab> {
    let mut lab = Lab::new("bench")?;
    let srv = lab.netns("srv")?;
    let cli = lab.netns("cli")?;
    // One queue per CPU: each loadgen thread sends on its own.
    let queues = cpus() as u32;
    lab.veth_with_queues(
        &srv,
        "srv0",
        Some("198.18.0.1/16"),
        &cli,
        "cli0",
        Some("198.18.0.2/16"),
        queues,
    )?;
    let dir = std::env::temp_dir().join(lab.prefix());
    std::fs::create_dir_all(&dir)?;
    Ok(BenchLab {
        _lab: lab,
        srv,
        cli,
        dir,
    })
}

/// The CPUs this process may use (1 if unknown).
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// perfdhcp takes the default socket receive buffer, which overflows at
/// ~10k replies/s on two cores: raised for the run (the knob is global,
/// namespaces read the host's value), restored on drop.
pub(super) struct RmemGuard(Option<String>);

impl RmemGuard {
    pub(super) fn raise() -> RmemGuard {
        let key = "/proc/sys/net/core/rmem_default";
        let old = std::fs::read_to_string(key).ok();
        if std::fs::write(key, "4194304").is_ok() {
            eprintln!(
                "xtask: net.core.rmem_default raised to 4 MiB for the benchmark (restored after)"
            );
        }
        RmemGuard(old)
    }
}

impl Drop for RmemGuard {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/net/core/rmem_default", old.trim());
        }
    }
}

/// Daemon RSS in KiB (from /proc).
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The host's 1-minute load average.
pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
