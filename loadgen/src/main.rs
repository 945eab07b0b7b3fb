use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator: emulates up to 16M DHCP clients on an interface
/// (DORA, renewals, rebinding, INIT-REBOOT, DISCOVER storms, RELEASE,
/// DECLINE), bounded in count and time, and reports rates, loss and
/// latency, and which path of the server answered.
#[derive(Parser)]
#[command(name = "xdhcp-loadgen", version)]
struct Cli {
    #[command(flatten)]
    args: xdhcp_loadgen::Args,
}

/// The lab's helpers, parsed on their own: the generator's flags are
/// required when it runs, and clap's derive would ask for them beside a
/// subcommand too.
#[derive(Parser)]
#[command(name = "xdhcp-loadgen", version)]
struct LabCli {
    #[command(subcommand)]
    lab: Lab,
}

#[derive(Subcommand)]
enum Lab {
    /// Lab helper: hold the benchmark's bare bounce program (parse, one
    /// lookup in a map of the loadgen's CLIENTS clients, swap, XDP_TX) on
    /// IFACE until SIGINT/SIGTERM.
    LabBounce {
        iface: String,
        #[arg(long)]
        clients: u32,
    },
    /// Lab helper: hold an XDP_PASS program on IFACE until SIGINT/SIGTERM
    /// (a veth delivers XDP_TX replies only to a peer running XDP).
    LabPeer { iface: String },
}

fn main() -> ExitCode {
    let first = std::env::args().nth(1);
    if matches!(first.as_deref(), Some("lab-bounce" | "lab-peer")) {
        return match LabCli::parse().lab {
            Lab::LabBounce { iface, clients } => hold(
                xdhcp_loadgen::programs::attach_bare(&iface, clients),
                "bounce",
                &iface,
            ),
            Lab::LabPeer { iface } => {
                hold(xdhcp_loadgen::programs::attach_peer(&iface), "peer", &iface)
            }
        };
    }
    let args = Cli::parse().args;
    match xdhcp_loadgen::run(&args) {
        Ok(reports) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reports).unwrap_or_default()
                );
            } else {
                print!("{}", xdhcp_loadgen::render(&reports));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdhcp-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the attached program until SIGINT/SIGTERM.
fn hold(
    attached: anyhow::Result<xdhcp_loadgen::programs::PeerProgram>,
    what: &str,
    iface: &str,
) -> ExitCode {
    let _program = match attached {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xdhcp-loadgen: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("{what} program attached to {iface}");
    wait_for_signal();
    ExitCode::SUCCESS
}

fn wait_for_signal() {
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
}
