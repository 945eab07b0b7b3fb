//! A server namespace running the real `xdhcp serve` and a client namespace
//! joined to it by veth, with a private directory for the configuration,
//! the lease database and client scripts. Everything goes on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{bail, Result};

use crate::{
    proc::{loadgen_bin, xdhcp_bin, Logged},
    Lab, Netns,
};

pub struct DaemonLab {
    pub srv: Netns,
    pub cli: Netns,
    pub dir: PathBuf,
    pub config: PathBuf,
    daemon: Option<Logged>,
    /// bpffs directory for a pinned fast path (`--pin-dir`), if any.
    pub pin_dir: Option<PathBuf>,
    /// XDP_PASS on `cli0`, so XDP_TX replies cross the veth.
    peer: Option<Logged>,
    /// Last lines of stopped daemons, for diagnostics.
    pub history: Vec<String>,
    /// Descriptor limit the daemon starts with (`prlimit --nofile`), as a
    /// unit without LimitNOFILE would give it (1,024).
    pub nofile: Option<u32>,
    /// RUST_LOG of the daemon (default `info,xdhcp=debug`): a flood test
    /// wants no per-frame lines.
    pub rust_log: Option<String>,
    // Dropped last: namespaces outlive the processes inside them.
    pub lab: Lab,
}

impl DaemonLab {
    /// Server `srv0` 198.18.0.1/24; client `cli0` with no address (DHCP
    /// clients configure it) unless `client_addr` is given. In the config
    /// text, `@DB@` stands for this lab's lease database path.
    pub fn new(tag: &str, config: &str, client_addr: Option<&str>) -> Result<DaemonLab> {
        crate::require_lab();
        let mut lab = Lab::new(tag)?;
        let srv = lab.netns("srv")?;
        let cli = lab.netns("cli")?;
        lab.veth(
            &srv,
            "srv0",
            Some("198.18.0.1/24"),
            &cli,
            "cli0",
            client_addr,
        )?;
        let dir = std::env::temp_dir().join(lab.prefix());
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("leases.db");
        let config_path = dir.join("xdhcp.toml");
        std::fs::write(
            &config_path,
            config.replace("@DB@", &db.display().to_string()),
        )?;
        let mut peer = Command::new(loadgen_bin());
        peer.args(["lab-peer", "cli0"]);
        let peer = Logged::spawn(&cli, &peer, None)?;
        peer.wait_for("peer program attached", Duration::from_secs(20))?;
        Ok(DaemonLab {
            srv,
            cli,
            dir,
            config: config_path,
            daemon: None,
            pin_dir: None,
            peer: Some(peer),
            history: Vec::new(),
            nofile: None,
            rust_log: None,
            lab,
        })
    }

    /// Detaches the XDP_PASS program from `cli0` (for a client side that
    /// brings its own XDP program, like loadgen's xdp engine).
    pub fn drop_peer(&mut self) -> Result<()> {
        if let Some(mut p) = self.peer.take() {
            p.signal(15);
            p.wait(Duration::from_secs(10))?;
        }
        Ok(())
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("leases.db")
    }

    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Runs `xdhcp ARGS --socket <this lab's socket>` (a management
    /// subcommand) and returns its exit code and stdout.
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String)> {
        let out = Command::new(xdhcp_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code().is_none() {
            bail!(
                "xdhcp {args:?} killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((
            out.status.code().unwrap_or(-1),
            stdout + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// Starts `xdhcp serve` (debug logs on, so tests can wait for a
    /// message's outcome) and waits until it serves.
    pub fn start(&mut self) -> Result<&Logged> {
        if self.daemon.is_some() {
            bail!("already running");
        }
        let d = Logged::spawn(&self.srv, &self.serve_command(), None)?;
        d.wait_for("xdhcp serving", Duration::from_secs(30))?;
        self.daemon = Some(d);
        Ok(self.daemon.as_ref().unwrap())
    }

    /// Starts `xdhcp serve` expecting it to give up before serving:
    /// returns its exit status and everything it logged.
    pub fn start_refused(&mut self) -> Result<(ExitStatus, Vec<String>)> {
        if self.daemon.is_some() {
            bail!("already running");
        }
        let mut d = Logged::spawn(&self.srv, &self.serve_command(), None)?;
        let status = d.wait(Duration::from_secs(30))?;
        let lines = d.lines();
        self.history.extend(lines.iter().cloned());
        Ok((status, lines))
    }

    fn serve_command(&self) -> Command {
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg("--").arg(xdhcp_bin());
                c
            }
            None => Command::new(xdhcp_bin()),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--control-socket")
            .arg(self.socket())
            .args(
                self.pin_dir
                    .iter()
                    .flat_map(|d| [std::ffi::OsStr::new("--pin-dir"), d.as_os_str()]),
            )
            .env(
                "RUST_LOG",
                self.rust_log.as_deref().unwrap_or("info,xdhcp=debug"),
            );
        cmd
    }

    /// Pins the fast path (`--pin-dir`) in a bpffs of the host's mount
    /// namespace: `ip netns exec` gives the daemon a private /sys, and a
    /// bpffs mounted there would vanish, pins and all, with the daemon.
    pub fn pin_in_host_bpffs(&mut self) -> Result<PathBuf> {
        let root = Path::new("/run/xdhcp-lab-bpffs");
        let mounted = std::fs::read_to_string("/proc/self/mounts")?
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/run/xdhcp-lab-bpffs"));
        if !mounted {
            std::fs::create_dir_all(root)?;
            let st = Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(root)
                .status()?;
            if !st.success() {
                bail!("mounting bpffs on {}", root.display());
            }
        }
        let dir = root.join(self.lab.prefix());
        self.pin_dir = Some(dir.clone());
        Ok(dir)
    }

    /// Waits for the daemon to exit by itself (e.g. after `xdhcp stop`).
    pub fn wait_stopped(&mut self) -> Result<(ExitStatus, Vec<String>)> {
        let mut d = self.daemon.take().expect("daemon running");
        let status = d.wait(Duration::from_secs(20))?;
        let lines = d.lines();
        self.history.extend(lines.iter().cloned());
        Ok((status, lines))
    }

    pub fn daemon(&self) -> &Logged {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Stops it with `sig` (SIGTERM = 15, SIGKILL = 9) and returns its exit
    /// status and everything it logged.
    pub fn stop(&mut self, sig: i32) -> Result<(ExitStatus, Vec<String>)> {
        let mut d = self.daemon.take().expect("daemon running");
        d.signal(sig);
        let status = d.wait(Duration::from_secs(20))?;
        let lines = d.lines();
        self.history.extend(lines.iter().cloned());
        Ok((status, lines))
    }

    /// Lines the client hook scripts appended to the lab's events file.
    pub fn events(&self) -> Vec<String> {
        read_lines(&self.dir.join("events"))
    }

    /// The first event after the first `after` starting with `prefix`;
    /// panics with the events and the daemon's log when none comes.
    pub fn wait_event(&self, prefix: &str, after: usize, timeout: Duration) -> String {
        wait_until(timeout, || {
            self.events()
                .into_iter()
                .skip(after)
                .find(|e| e.starts_with(prefix))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix:?} event within {timeout:?}; events: {:?}\nserver: {:?}",
                self.events(),
                self.daemon.as_ref().map(Logged::lines)
            )
        })
    }

    /// The daemon's `stats --json` answer (it must answer).
    pub fn stats(&self) -> serde_json::Value {
        let (code, out) = self.cli(&["stats", "--json"]).unwrap();
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// busybox udhcpc in the foreground on `cli0`. Its hook configures the
    /// address, then appends `$1 $ip FIELDS` (e.g. `$lease`, `$dns`) to the
    /// events file: an event seen means the address is in place.
    pub fn udhcpc(&self, fields: &str) -> Result<Logged> {
        let script = self.script(
            "udhcpc.sh",
            &format!(
                "#!/bin/sh\ncase \"$1\" in\n bound|renew) ip addr flush dev $interface; ip addr add $ip/$subnet dev $interface ;;\n deconfig) ip addr flush dev $interface ;;\nesac\necho \"$1 $ip {fields}\" >> {ev}\n",
                ev = self.dir.join("events").display()
            ),
        )?;
        Logged::spawn(
            &self.cli,
            Command::new("busybox")
                .args(["udhcpc", "-f", "-i", "cli0", "-t", "5", "-T", "1", "-s"])
                .arg(&script),
            None,
        )
    }

    /// Runs `xdhcp-loadgen` on `cli0` in the client namespace, with the
    /// daemon's control socket for its counters; its JSON report, by phase.
    pub fn loadgen(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut cmd = Command::new(loadgen_bin());
        cmd.args(["--iface", "cli0", "--json", "--timeout-ms", "500"])
            .arg("--server-socket")
            .arg(self.socket())
            .args(args);
        let out = self.cli.command_from(&cmd).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "loadgen {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        v.as_array().unwrap().clone()
    }

    /// Writes a client hook script into the lab directory.
    pub fn script(&self, name: &str, body: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }
}

impl Drop for DaemonLab {
    fn drop(&mut self) {
        drop(self.daemon.take());
        // A fast path left pinned (a failed test): unpin links first, which
        // detaches them, then maps.
        if let Some(dir) = &self.pin_dir {
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                files.sort_by_key(|p| !p.to_string_lossy().contains("link_"));
                for f in files {
                    let _ = std::fs::remove_file(f);
                }
                let _ = std::fs::remove_dir(dir);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads lines of a file that may not exist yet.
pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
