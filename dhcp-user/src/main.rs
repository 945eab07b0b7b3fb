use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

use serde_json::{json, Value};
use xdhcp::api::{cli, control::Response, lease_table};
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
        /// Control socket path, overriding the configuration's.
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// bpffs directory for the pinned fast path (hitless restart),
        /// overriding the configuration's.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Stops the daemon. With --keep-fast-path (needs server.pin_dir) the
    /// XDP program stays attached and keeps answering renewals until the
    /// next `xdhcp serve` adopts it: an upgrade without a gap.
    Stop {
        #[arg(long)]
        keep_fast_path: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Removes a fast path left pinned by `stop --keep-fast-path`: detaches
    /// the program from every interface and unpins its maps. Run it with
    /// no daemon using that directory.
    Detach {
        #[arg(long, default_value = "/sys/fs/bpf/xdhcp")]
        pin_dir: PathBuf,
    },
    /// Daemon status: version, uptime, interfaces and XDP mode, lease map fill.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Counters: messages by type, drops, pool use per subnet, fast path vs
    /// control plane, XDP pass reasons (per-CPU counters summed).
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Refresh every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Re-reads the daemon's configuration file (as SIGHUP does); a bad
    /// one is refused with its line and the running one stays.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reservations: the configuration file's and those added here (kept
    /// in the lease store, applied at once, kept across restarts).
    Reservations {
        #[command(subcommand)]
        command: ReservationsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Leases in the running daemon.
    Leases {
        #[command(subcommand)]
        command: LeasesCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prints a shell completion script, e.g.
    /// `xdhcp completions bash > /etc/bash_completion.d/xdhcp`.
    Completions { shell: clap_complete::Shell },
    /// The PostgreSQL lease database (`[database]`): make its schema,
    /// upgrade it, or show its version. Run once, not on every node.
    Db {
        #[command(subcommand)]
        command: DbCommand,
        /// Configuration file with the `[database]` table; without it,
        /// $XDHCP_DATABASE_URL.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value = xdhcp::api::control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// All leases, optionally of one subnet and/or state.
    List {
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// bound, offered, released, expired or declined.
        #[arg(long)]
        state: Option<String>,
    },
    /// One lease, by address, hardware address or client identifier (hex).
    Show { who: String },
    /// Removes a lease from the store and the XDP lease map: the client's
    /// next renewal is NAKed.
    Delete { who: String },
    /// Marks a bound lease released (as a DHCPRELEASE would): out of the
    /// XDP map, the address free for others.
    Release { who: String },
    /// Checks the XDP lease map against the lease store, entry by entry
    /// and lease by lease (the daemon's own auditor, one pass now at full
    /// speed): map entries with no Bound lease behind them or one for
    /// another client or subnet, kernel ends beyond what a crash-recovered
    /// store would grant, Bound fast-path leases missing from the map.
    /// Exit 0: they agree; 4: disagreements (listed); 1: error or
    /// inconclusive (e.g. the lease store not taking writes).
    Audit {
        /// Remove the stray entries found even if server.audit_repair is
        /// off (their clients' next requests go to the control plane).
        #[arg(long)]
        repair: bool,
    },
    /// Records a bound lease for a client (MAC or client identifier in hex).
    Add {
        ip: String,
        client: String,
        /// Lease time in seconds.
        #[arg(long, default_value_t = 3600)]
        lease_time: u64,
    },
}

#[derive(Subcommand)]
enum ReservationsCommand {
    /// Every reservation, with where it comes from (config or api).
    List,
    /// Reserves IP for a client (MAC or client identifier in hex) or a
    /// relayed line (circuit-id=TEXT, remote-id=TEXT, subscriber-id=TEXT;
    /// hex after 0x); the subnet is the one holding IP. Refused if another
    /// client holds IP.
    Add {
        ip: String,
        client: String,
        /// With circuit-id: that relay's circuit only.
        #[arg(long)]
        giaddr: Option<String>,
    },
    /// Deletes a reservation added here (file ones: edit the file, reload).
    Delete { ip: String },
}

#[derive(Subcommand, Clone, Copy)]
enum DbCommand {
    /// Makes the xdhcp schema in an empty database.
    Init,
    /// Applies the schema steps this xdhcp has and the database lacks.
    Upgrade,
    /// The schema version and the number of leases.
    Status,
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
        Command::Serve {
            config,
            lease_db,
            control_socket,
            pin_dir,
        } => serve(
            config,
            xdhcp::daemon::serve::Overrides {
                lease_db,
                control_socket,
                pin_dir,
            },
        ),
        Command::Status { client } => client.call("status", Value::Null, cli::print_status),
        Command::Stats { client, watch } => stats(&client, watch),
        Command::Stop {
            keep_fast_path,
            client,
        } => client.call(
            "shutdown",
            json!({ "keep-fast-path": keep_fast_path }),
            cli::print_text,
        ),
        Command::Detach { pin_dir } => detach(&pin_dir),
        Command::Reservations { command, client } => reservations(command, &client),
        Command::Reload { client } => client.call("config-reload", Value::Null, cli::print_text),
        Command::Leases { command, client } => leases(command, &client),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "xdhcp", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Db { command, config } => db(command, config.as_deref()),
        Command::Config { command } => config_command(command),
    }
}

impl ClientArgs {
    /// One control-API call, its answer rendered by `render` (or printed
    /// as JSON with --json).
    fn call(&self, command: &str, args: Value, render: fn(&Response)) -> ExitCode {
        cli::run(&self.socket, self.json, command, args, render)
    }
}

/// `xdhcp serve`: exit 2 on a configuration that does not load, 1 when
/// the daemon fails.
fn serve(config_path: Option<PathBuf>, overrides: xdhcp::daemon::serve::Overrides) -> ExitCode {
    let config = match &config_path {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default_config()),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xdhcp: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    overrides.apply(&mut config);
    xdhcp::daemon::logging::init(config.logging.format, config.logging.level.as_deref());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xdhcp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let debug = xdhcp::daemon::logging::debug_enabled();
    match rt.block_on(xdhcp::daemon::serve::run(
        config,
        config_path,
        overrides,
        debug,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("xdhcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `xdhcp stats`, once or, with --watch, again every SECS seconds until a
/// call fails.
fn stats(client: &ClientArgs, watch: Option<u64>) -> ExitCode {
    loop {
        let code = client.call("statistic-get-all", Value::Null, cli::print_stats);
        match watch {
            Some(secs) if code == ExitCode::SUCCESS => {
                std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
                if !client.json {
                    print!("\x1b[2J\x1b[H");
                }
            }
            _ => break code,
        }
    }
}

fn detach(pin_dir: &Path) -> ExitCode {
    match xdhcp::xdp::loader::remove_pins(pin_dir) {
        Ok(()) => {
            println!("{}: unpinned; the fast path is detached", pin_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdhcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn reservations(command: ReservationsCommand, client: &ClientArgs) -> ExitCode {
    match command {
        ReservationsCommand::List => {
            client.call("reservation-get-all", Value::Null, cli::print_reservations)
        }
        ReservationsCommand::Add {
            ip,
            client: id,
            giaddr,
        } => {
            let mut a = client_at(&id, ip);
            if let Some(g) = giaddr {
                a["giaddr"] = g.into();
            }
            client.call("reservation-add", a, cli::print_text)
        }
        ReservationsCommand::Delete { ip } => client.call(
            "reservation-del",
            json!({ "ip-address": ip }),
            cli::print_text,
        ),
    }
}

fn leases(command: LeasesCommand, client: &ClientArgs) -> ExitCode {
    match command {
        LeasesCommand::List { subnet, state } => {
            let mut a = serde_json::Map::new();
            if let Some(s) = subnet {
                a.insert("subnet".into(), s.into());
            }
            if let Some(s) = state {
                a.insert("state".into(), s.into());
            }
            client.call("lease4-get-all", a.into(), lease_table::print_leases)
        }
        LeasesCommand::Show { who } => {
            client.call("lease4-get", cli::who(&who), lease_table::print_lease)
        }
        LeasesCommand::Audit { repair } => client.call(
            "lease4-audit",
            json!({ "repair": repair }),
            cli::print_audit,
        ),
        LeasesCommand::Delete { who } => client.call("lease4-del", cli::who(&who), cli::print_text),
        LeasesCommand::Release { who } => {
            client.call("lease4-release", cli::who(&who), cli::print_text)
        }
        LeasesCommand::Add {
            ip,
            client: id,
            lease_time,
        } => {
            let mut a = client_at(&id, ip);
            a["valid-lft"] = lease_time.into();
            client.call("lease4-add", a, lease_table::print_lease)
        }
    }
}

/// The arguments naming a client (MAC or client identifier) and an
/// address.
fn client_at(id: &str, ip: String) -> Value {
    let mut a = cli::client_arg(id);
    a["ip-address"] = ip.into();
    a
}

fn db(command: DbCommand, config: Option<&Path>) -> ExitCode {
    let cmd = match command {
        DbCommand::Init => "init",
        DbCommand::Upgrade => "upgrade",
        DbCommand::Status => "status",
    };
    match xdhcp::store::postgres::schema::command(cmd, config) {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdhcp db {cmd}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_command(command: ConfigCommand) -> ExitCode {
    match command {
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
    }
}
