//! Connecting: the settings from `[database]`, and the one connection the
//! store's thread keeps, made again after it is lost.

use std::{str::FromStr, sync::atomic::Ordering, sync::Arc, time::Duration};

use anyhow::{anyhow, Context, Result};
use postgres::{Client, Statement};
use postgres_openssl::MakeTlsConnector;

use super::schema as pg_schema;
use super::{apply::APPLY, PgStats, URL_ENV};
use crate::config::DatabaseConfig;

impl DatabaseConfig {
    /// The connection settings: the URL from the file or the environment,
    /// with the timeouts that keep a lost database from hanging a batch.
    pub fn pg_config(&self) -> Result<postgres::Config> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => std::env::var(URL_ENV).map_err(|_| {
                anyhow!("database.url is not set and neither is ${URL_ENV}: no PostgreSQL to connect to")
            })?,
        };
        // The parse error never echoes the URL (it may hold a password).
        let mut c = postgres::Config::from_str(&url).map_err(|e| anyhow!("database URL: {e}"))?;
        let t = Duration::from_secs(u64::from(self.timeout_secs.max(1)));
        c.connect_timeout(t)
            .keepalives(true)
            .keepalives_idle(t)
            .tcp_user_timeout(t)
            .options(&format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                t.as_millis(),
                t.as_millis()
            ));
        if c.get_application_name().is_none() {
            c.application_name("xdhcp");
        }
        Ok(c)
    }

    pub fn tls(&self) -> Result<MakeTlsConnector> {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
        if let Some(ca) = &self.tls_ca_file {
            b.set_ca_file(ca)
                .with_context(|| format!("database.tls_ca_file {}", ca.display()))?;
        }
        Ok(MakeTlsConnector::new(b.build()))
    }

    /// A connection, for the `xdhcp db` commands.
    pub fn connect(&self) -> Result<Client> {
        let c = self.pg_config()?;
        c.connect(self.tls()?).map_err(|e| connect_error(&c, &e))
    }
}

/// A failed connection's error: where it went (without the password) and
/// why.
fn connect_error(c: &postgres::Config, e: &postgres::Error) -> anyhow::Error {
    anyhow!("connecting to PostgreSQL ({}): {}", describe(c), explain(e))
}

/// A client error with what the server or the TLS layer said (the
/// error's own text is often only "db error" or "error performing TLS
/// handshake").
pub fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Where a connection goes, without its password.
pub(super) fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(n) => n.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "host {} dbname {}",
        hosts.join(","),
        c.get_dbname().unwrap_or("(default)")
    )
}

/// The store thread's connection, made at the first call and again at the
/// call after one was lost.
pub(super) struct Conn {
    pub(super) config: postgres::Config,
    tls: MakeTlsConnector,
    pub(super) node: String,
    mclt: i64,
    client: Option<(Client, Statement)>,
    stats: Arc<PgStats>,
}

/// What every statement may need besides its own arguments.
pub(super) struct Ctx {
    pub(super) node: String,
    pub(super) mclt: i64,
}

impl Conn {
    /// The settings only: nothing is connected until `client`.
    pub(super) fn new(cfg: &DatabaseConfig, stats: Arc<PgStats>) -> Result<Conn> {
        Ok(Conn {
            config: cfg.pg_config()?,
            tls: cfg.tls()?,
            node: cfg.node_name(),
            mclt: i64::from(cfg.mclt_secs),
            client: None,
            stats,
        })
    }

    pub(super) fn client(&mut self) -> Result<&mut (Client, Statement)> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut c = self
                .config
                .connect(self.tls.clone())
                .map_err(|e| connect_error(&self.config, &e))?;
            pg_schema::check(pg_schema::version(&mut c)?)?;
            let st = c.prepare(APPLY)?;
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            self.client = Some((c, st));
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `f` on a live connection; a connection an error left broken
    /// is dropped, so the next call makes a new one.
    pub(super) fn with<R>(
        &mut self,
        f: impl FnOnce(&mut Client, &Statement, &Ctx) -> Result<R>,
    ) -> Result<R> {
        let ctx = Ctx {
            node: self.node.clone(),
            mclt: self.mclt,
        };
        let (c, st) = self.client()?;
        let r = f(c, st, &ctx);
        if r.is_err() && self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        r
    }
}
