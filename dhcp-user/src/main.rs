use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xdhcp::config::Config;

/// xdhcp: DHCPv4 server with an XDP fast path for renewals.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: attach the XDP program and answer DHCP.
    Serve {
        /// Configuration file (TOML). Without it, the embedded demo default.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Lease database path, overriding the configuration's.
        #[arg(long)]
        lease_db: Option<PathBuf>,
    },
    /// Lab helper: hold an XDP_PASS program on IFACE until SIGINT/SIGTERM
    /// (a veth delivers XDP_TX replies only to a peer running XDP).
    #[command(hide = true)]
    LabPeer { iface: String },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file; exit 1 with file:line:column: reason.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, lease_db } => {
            let config = match config {
                Some(path) => Config::from_file(&path),
                None => Ok(Config::default_config()),
            };
            let mut config = match config {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("xdhcp: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(db) = lease_db {
                config.server.lease_db = db;
            }
            xdhcp::logging::init(config.logging.format, config.logging.level.as_deref());
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("xdhcp: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let debug = xdhcp::logging::debug_enabled();
            match rt.block_on(xdhcp::serve::run(config, debug)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("xdhcp: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::LabPeer { iface } => {
            let _peer = match xdhcp::fastpath::attach_peer(&iface) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("xdhcp: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            eprintln!("peer program attached to {iface}");
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            let mut sig = 0;
            // SAFETY: plain signal-mask calls on a local set.
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGINT);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                libc::sigwait(&set, &mut sig);
            }
            ExitCode::SUCCESS
        }
        Command::Config { command } => match command {
            ConfigCommand::Check { file } => match Config::from_file(&file) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            },
            ConfigCommand::Default => {
                print!("{}", xdhcp::config::DEFAULT_CONFIG);
                ExitCode::SUCCESS
            }
        },
    }
}
