//! A throw-away PostgreSQL 15 cluster (Debian's packages, installed by
//! `cargo xtask setup`): `initdb` in a temporary directory, the server
//! started with `pg_ctl` on a Unix socket in that directory and, when
//! given a lab namespace and address, on TCP there too. Stopped and
//! removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Lab clients over TCP (`enable_tls` makes it TLS only).
const HBA_LAB: &str = "host all all 198.18.0.0/15 trust\n";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct PgCluster {
    pub dir: PathBuf,
    ns: Option<String>,
    listen: Option<String>,
    /// More server options (`-c name=value ...`), from the next start.
    pub extra: String,
    running: bool,
}

/// Fails loudly (never skips) without PostgreSQL 15.
pub fn require_postgres() {
    let initdb = Path::new(PG_BIN).join("initdb");
    if !initdb.exists() {
        panic!(
            "this test needs PostgreSQL 15 ({} missing): run `cargo xtask setup`",
            initdb.display()
        );
    }
}

impl PgCluster {
    /// A new cluster, running. `at`: a namespace and an address of it
    /// (in 198.18.0.0/15) to listen on as well.
    pub fn start(at: Option<(&Netns, &str)>) -> Result<PgCluster> {
        require_postgres();
        if let Some((_, addr)) = at {
            crate::check_bench_range(addr)?;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xdl-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock"))?;
        // initdb refuses root: the postgres user owns the whole directory.
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir))?;
        let mut c = PgCluster {
            dir,
            ns: at.map(|(ns, _)| ns.name().to_string()),
            listen: at.map(|(_, a)| a.to_string()),
            extra: String::new(),
            running: false,
        };
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-instructions", "-D"])
            .arg(c.data()))
        .context("initdb")?;
        if c.listen.is_some() {
            // initdb trusts only loopback over TCP.
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(c.data().join("pg_hba.conf"))?
                .write_all(HBA_LAB.as_bytes())?;
        }
        c.start_again()?;
        Ok(c)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Connection string over the Unix socket (works from any namespace).
    pub fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.socket_dir().display()
        )
    }

    /// Connection string over TCP to the lab address.
    pub fn tcp_url(&self) -> Option<String> {
        self.listen
            .as_ref()
            .map(|a| format!("host={a} port=5432 user=postgres dbname=postgres"))
    }

    /// `pg_ctl` as the postgres user, inside the namespace if any (the
    /// server it starts stays there).
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "runuser"]);
                c
            }
            None => Command::new("runuser"),
        };
        cmd.args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(args);
        cmd
    }

    /// Starts the (stopped) server and waits until it takes connections.
    pub fn start_again(&mut self) -> Result<()> {
        let opts = format!(
            "-k {} -c listen_addresses='{}' {}",
            self.socket_dir().display(),
            self.listen.as_deref().unwrap_or(""),
            self.extra
        );
        let log = self.dir.join("postgres.log");
        run(&mut self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "-l",
            &log.display().to_string(),
            "start",
        ]))
        .with_context(|| format!("pg_ctl start (log: {})", log.display()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (`fast`: disconnects clients, checkpoints).
    pub fn stop(&mut self) -> Result<()> {
        run(&mut self.pg_ctl(&["-w", "-m", "fast", "stop"]))?;
        self.running = false;
        Ok(())
    }

    /// A self-signed certificate for the listen address (IP name), the
    /// server switched to TLS with it at its next start; returns the
    /// certificate's path, the CA file for clients.
    pub fn enable_tls(&mut self) -> Result<PathBuf> {
        let addr = self
            .listen
            .clone()
            .ok_or_else(|| anyhow::anyhow!("TLS needs a TCP listen address"))?;
        let (crt, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", &format!("/CN={addr}")])
            .args(["-addext", &format!("subjectAltName=IP:{addr}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt))?;
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(&crt)
            .arg(&key))?;
        run(Command::new("chmod").arg("600").arg(&key))?;
        let hba = self.data().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            text.replace(HBA_LAB, &format!("hostssl{}", &HBA_LAB[4..])),
        )?;
        self.extra = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            crt.display(),
            key.display()
        );
        Ok(crt)
    }

    /// Runs SQL with psql, returning unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = run(Command::new("psql").arg("-h").arg(self.socket_dir()).args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ]))?;
        Ok(out.trim().to_string())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .pg_ctl(&["-w", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
