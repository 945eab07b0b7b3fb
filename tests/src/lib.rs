//! The test lab: hosts made of network namespaces joined by veth pairs,
//! used by the integration tests, `cargo xtask demo` and the benchmarks.
//!
//! Everything a [`Lab`] creates is named with a per-lab unique prefix (so
//! tests run in parallel) and removed when the lab is dropped, including
//! while a test panics. Addresses come from 198.18.0.0/15 only.

pub mod churn;
pub mod daemon;
pub mod dhcp;
pub mod faultfs;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod frame;
pub mod mounts;
pub mod multinode;
pub mod mutate;
pub mod postgres;
pub mod proc;
pub mod raw;
pub mod relay;

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd,
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
};

use anyhow::{anyhow, bail, Context, Result};

/// Prefix of every namespace a lab creates; `cleanup_stale` looks for it.
pub const NS_PREFIX: &str = "xdl";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Fails loudly (never skips) when the lab cannot run here.
pub fn require_lab() {
    if let Err(e) = check_lab() {
        panic!("this test needs the netns lab and cannot run here: {e:#}");
    }
}

/// Root, `ip`, and network namespaces: what every lab needs.
pub fn check_lab() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("not root (network namespaces, veth and XDP need root)");
    }
    let out = Command::new("ip")
        .arg("-V")
        .output()
        .context("`ip` (iproute2) not found")?;
    if !out.status.success() {
        bail!("`ip -V` failed");
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        bail!("kernel without network namespaces");
    }
    Ok(())
}

fn run_checked<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A set of namespaces that live and die together.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Mutex<Vec<Child>>,
}

/// One host of the lab.
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Lab {
    /// `tag` only helps a human reading `ip netns list`; uniqueness comes
    /// from the pid and a counter.
    pub fn new(tag: &str) -> Result<Lab> {
        check_lab()?;
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        Ok(Lab {
            prefix: format!("{NS_PREFIX}-{}-{n}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates a namespace with loopback up and IPv6 off (no router
    /// solicitations or MLD reports to pollute counters).
    pub fn netns(&mut self, name: &str) -> Result<Netns> {
        let full = format!("{}-{name}", self.prefix);
        run_checked(["ip", "netns", "add", &full])?;
        self.namespaces.push(full.clone());
        let ns = Netns { name: full };
        ns.run(["ip", "link", "set", "lo", "up"])?;
        for key in ["all", "default"] {
            ns.run([
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ])?;
        }
        Ok(ns)
    }

    /// A veth pair between two namespaces, both ends up, with optional
    /// addresses ("198.18.0.1/24"). Interface names are per namespace, so
    /// they need not be unique across labs.
    pub fn veth(
        &self,
        a: &Netns,
        a_if: &str,
        a_addr: Option<&str>,
        b: &Netns,
        b_if: &str,
        b_addr: Option<&str>,
    ) -> Result<()> {
        self.veth_with_queues(a, a_if, a_addr, b, b_if, b_addr, 1)
    }

    /// As [`Lab::veth`], with `queues` rx/tx queues on each end (one per
    /// generator thread).
    #[allow(clippy::too_many_arguments)]
    pub fn veth_with_queues(
        &self,
        a: &Netns,
        a_if: &str,
        a_addr: Option<&str>,
        b: &Netns,
        b_if: &str,
        b_addr: Option<&str>,
        queues: u32,
    ) -> Result<()> {
        for addr in [a_addr, b_addr].into_iter().flatten() {
            check_bench_range(addr)?;
        }
        let q = queues.max(1).to_string();
        run_checked([
            "ip",
            "link",
            "add",
            "name",
            a_if,
            "netns",
            &a.name,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            &b.name,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ])?;
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            if let Some(addr) = addr {
                ns.run(["ip", "addr", "add", addr, "dev", ifname])?;
            }
            ns.run(["ip", "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Starts a long-running process in `ns`; it is killed when the lab drops
    /// (if the caller has not waited for it already).
    pub fn spawn(&self, ns: &Netns, cmd: &mut Command) -> Result<u32> {
        let child = ns
            .command_from(cmd)
            .spawn()
            .context("spawning in lab namespace")?;
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        Ok(pid)
    }

    /// Takes a spawned child back, e.g. to signal it and wait for its exit.
    pub fn take_child(&self, pid: u32) -> Option<Child> {
        let mut children = self.children.lock().unwrap();
        let i = children.iter().position(|c| c.id() == pid)?;
        Some(children.swap_remove(i))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.drain(..).rev() {
            destroy_netns(&ns);
        }
    }
}

fn destroy_netns(name: &str) {
    // Anything still running inside keeps the namespace (and its XDP
    // programs) alive: kill it first.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces left by labs whose process is gone (a crashed or
/// SIGKILLed test run). Returns what it removed.
pub fn cleanup_stale() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{NS_PREFIX}-")) else {
            continue;
        };
        let pid: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks existence.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            destroy_netns(name);
            removed.push(name.to_string());
        }
    }
    removed
}

/// Addresses used in the lab must be in the benchmarking range.
pub fn check_bench_range(cidr: &str) -> Result<()> {
    let ip = cidr.split('/').next().unwrap_or("");
    let ip: std::net::Ipv4Addr = ip.parse().with_context(|| format!("bad address {cidr}"))?;
    let o = ip.octets();
    if o[0] != 198 || (o[1] != 18 && o[1] != 19) {
        bail!("{cidr} is outside 198.18.0.0/15, the only range the lab may use");
    }
    Ok(())
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME <cmd>` with the command's program and arguments.
    pub fn command_from(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            c.current_dir(dir);
        }
        c
    }

    /// Runs a command inside and returns its stdout; fails on non-zero exit.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<std::ffi::OsString> = ["ip", "netns", "exec", &self.name]
            .iter()
            .map(Into::into)
            .collect();
        full.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        let out = run_checked(full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// opens, interface names it resolves and XDP links it creates belong
    /// to the namespace, and stay usable from any thread afterwards.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid namespace fd affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow!(
                        "setns({path}): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Interface counters (`/sys/class/net/IF/statistics/NAME`).
    pub fn if_stat(&self, ifname: &str, stat: &str) -> Result<u64> {
        let s = self.run(["cat", &format!("/sys/class/net/{ifname}/statistics/{stat}")])?;
        s.trim().parse().context("interface statistic")
    }

    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let s = self.run(["cat", &format!("/sys/class/net/{ifname}/address")])?;
        frame::parse_mac(s.trim())
    }

    /// The XDP attachment of an interface as `ip link` shows it
    /// ("xdp", "xdpgeneric", or None).
    pub fn xdp_mode(&self, ifname: &str) -> Result<Option<String>> {
        let s = self.run(["ip", "-d", "link", "show", "dev", ifname])?;
        for word in s.split_whitespace() {
            if word == "xdp" || word == "xdpgeneric" || word == "xdpdrv" || word == "xdpoffload" {
                return Ok(Some(word.to_string()));
            }
        }
        Ok(None)
    }
}
