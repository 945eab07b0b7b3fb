//! A child process whose stderr is collected line by line, so a test can
//! wait for a log line and later read everything the process said.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// The `xdhcp` binary next to the running test or task (target/<profile>/),
/// or `XDHCP_BIN`.
pub fn xdhcp_bin() -> PathBuf {
    built_bin("XDHCP_BIN", "xdhcp", "xdhcp")
}

/// The `xdhcp-loadgen` binary (the load generator and the lab's XDP
/// programs), found like `xdhcp_bin`, or `XDHCP_LOADGEN_BIN`.
pub fn loadgen_bin() -> PathBuf {
    built_bin("XDHCP_LOADGEN_BIN", "xdhcp-loadgen", "xdhcp-loadgen")
}

fn built_bin(var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p {package} --bins` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// What the process printed, and whether its stderr has closed (it
/// exited, or will have in a moment).
type Lines = Arc<(Mutex<(Vec<String>, bool)>, Condvar)>;

pub struct Logged {
    child: Option<Child>,
    lines: Lines,
    reader: Option<JoinHandle<()>>,
}

impl Logged {
    /// Spawns `cmd` inside `ns`; with `echo_prefix`, each line is also
    /// printed as it arrives.
    pub fn spawn(ns: &Netns, cmd: &Command, echo_prefix: Option<&str>) -> Result<Logged> {
        let mut child = ns
            .command_from(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let lines: Lines = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let echo = echo_prefix.map(str::to_string);
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(p) = &echo {
                        println!("{p}{line}");
                    }
                    let (m, cv) = &*lines;
                    m.lock().unwrap().0.push(line);
                    cv.notify_all();
                }
                let (m, cv) = &*lines;
                m.lock().unwrap().1 = true;
                cv.notify_all();
            })
        };
        Ok(Logged {
            child: Some(child),
            lines,
            reader: Some(reader),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until a line containing `needle` has been printed (failing
    /// at once if the process has closed its stderr without it).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(l) = lines.0.iter().find(|l| l.contains(needle)) {
                return Ok(l.clone());
            }
            if lines.1 {
                bail!(
                    "no line containing {needle:?}: the process closed its output; got:\n{}",
                    lines.0.join("\n")
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no line containing {needle:?} within {timeout:?}; got:\n{}",
                    lines.0.join("\n")
                );
            }
            lines = cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits until `needle` has appeared on at least `n` lines.
    pub fn wait_for_count(&self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut lines = m.lock().unwrap();
        loop {
            if lines.0.iter().filter(|l| l.contains(needle)).count() >= n {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "fewer than {n} lines containing {needle:?} within {timeout:?}; got:\n{}",
                    lines.0.join("\n")
                );
            }
            lines = cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().0.clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .0
            .lock()
            .unwrap()
            .0
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits for exit (killing it past `timeout`) and for its last lines.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already waited")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("process did not exit within {timeout:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(status)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
