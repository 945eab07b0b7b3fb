//! ISC's perfdhcp (relay mode) against either server: one step per rate,
//! each on a fresh server with an empty store, its statistics read from
//! perfdhcp's output.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use xdhcp_ramp::{Outcome, Stage};

use super::{
    lab::BenchLab,
    model::Pt,
    plan::RampCfg,
    ramps::drive,
    servers::{server_counts, start, System, MAX_NEW_CLIENTS},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Load {
    Dora,
    Renew,
}

#[derive(Debug, Default, Clone)]
struct Section {
    sent: u64,
    received: u64,
}

#[derive(Debug, Default, Clone)]
struct Report {
    discover: Section,
    request: Section,
    renew: Section,
}

fn parse_perfdhcp(out: &str) -> Report {
    let mut r = Report::default();
    let mut cur: Option<&mut Section> = None;
    for line in out.lines() {
        if line.starts_with("***Statistics for:") {
            cur = if line.contains("DISCOVER-OFFER") {
                Some(&mut r.discover)
            } else if line.contains("renewal") {
                Some(&mut r.renew)
            } else if line.contains("REQUEST-ACK") {
                Some(&mut r.request)
            } else {
                None
            };
            continue;
        }
        if let Some(s) = cur.as_deref_mut() {
            if let Some(v) = line.strip_prefix("sent packets: ") {
                s.sent = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("received packets: ") {
                s.received = v.trim().parse().unwrap_or(0);
            }
        }
    }
    r
}

/// One perfdhcp step.
struct Step {
    /// Requests sent per second (DISCOVERs for DORA, renewals for renew).
    offered_per_s: f64,
    answered_per_s: f64,
    loss: f64,
    /// xdhcp's own count: (requests received, replies sent).
    server: Option<(u64, u64)>,
}

/// perfdhcp's test period at `rate`: `secs`, shortened so that the step's
/// new clients fit the pool (whole seconds, at least 1).
fn perfdhcp_secs(rate: u64, secs: u64) -> u64 {
    secs.min((MAX_NEW_CLIENTS / rate.max(1)).max(1))
}

/// perfdhcp offering `rate`/s for `secs`, as a relay at 198.18.0.2.
fn perfdhcp_command(load: Load, rate: u64, secs: u64) -> Command {
    let mut cmd = Command::new("perfdhcp");
    cmd.args([
        "-4",
        "-l",
        "198.18.0.2",
        "-r",
        &rate.to_string(),
        "-R",
        "1000000",
    ]);
    if load == Load::Renew {
        cmd.args(["-f", &rate.to_string()]);
    }
    cmd.args(["-p", &secs.to_string(), "-W", "1000000", "198.18.0.1"]);
    cmd
}

fn step(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    load: Load,
    rate: u64,
    secs: u64,
) -> Result<Step> {
    let mut d = start(lab, system, bin)?;
    let cmd = perfdhcp_command(load, rate, secs);
    let out = lab.cli.command_from(&cmd).output().context("perfdhcp")?;
    d.signal(15);
    let _ = d.wait(Duration::from_secs(20));
    let server = if system == System::Xdhcp {
        server_counts(&d.lines())
    } else {
        None
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let r = parse_perfdhcp(&text);
    if r.discover.sent == 0 {
        bail!(
            "perfdhcp sent nothing:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Step {
        server,
        ..measured(&r, load, secs)
    })
}

/// The step's rates and loss: DISCOVERs that never became an ACK (DORA);
/// renewals unanswered, or clients never bound for them (renew).
fn measured(r: &Report, load: Load, secs: u64) -> Step {
    let (answered, offered_msgs) = match load {
        Load::Dora => (r.request.received, r.discover.sent),
        Load::Renew => (r.renew.received, r.renew.sent),
    };
    let mut loss = 1.0 - answered as f64 / offered_msgs.max(1) as f64;
    if load == Load::Renew {
        loss = loss.max(1.0 - r.request.received as f64 / r.discover.sent.max(1) as f64);
    }
    Step {
        offered_per_s: offered_msgs as f64 / secs as f64,
        answered_per_s: answered as f64 / secs as f64,
        loss: loss.max(0.0),
        server: None,
    }
}

/// perfdhcp against `system`, ramped by `cfg` (a fresh server per step).
pub(super) fn perf_ramp(
    lab: &BenchLab,
    system: System,
    bin: &Path,
    load: Load,
    cfg: &RampCfg,
    secs: u64,
) -> Result<(Vec<Pt>, Outcome)> {
    drive(cfg, |rate, stage| {
        let s = step(lab, system, bin, load, rate, perfdhcp_secs(rate, secs))?;
        echo_step(system, load, stage, rate, &s);
        Ok(Pt {
            target: rate,
            offered: s.offered_per_s,
            answered: s.answered_per_s,
            loss_pct: s.loss * 100.0,
            refine: false,
        })
    })
}

fn echo_step(system: System, load: Load, stage: Stage, rate: u64, s: &Step) {
    eprintln!(
        "   {:<38} {:<6} {:<6} target {:>6}/s offered {:>7.0}/s answered {:>7.0}/s loss {:>6.2}%{}",
        system.name(),
        format!("{load:?}"),
        stage.name(),
        rate,
        s.offered_per_s,
        s.answered_per_s,
        s.loss * 100.0,
        s.server
            .map(|(rx, tx)| format!("  (server: {rx} requests in, {tx} replies out)"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEW_OUTPUT: &str = "\
Running: perfdhcp -4 ...
***Statistics for: DISCOVER-OFFER***
sent packets: 4000
received packets: 3990
***Statistics for: REQUEST-ACK***
sent packets: 3990
received packets: 3980
***Statistics for: REQUEST-ACK (renewal)***
sent packets: 2000
received packets: 1500
";

    #[test]
    fn perfdhcp_statistics_are_read_per_exchange() {
        let r = parse_perfdhcp(RENEW_OUTPUT);
        assert_eq!((r.discover.sent, r.discover.received), (4000, 3990));
        assert_eq!((r.request.sent, r.request.received), (3990, 3980));
        assert_eq!((r.renew.sent, r.renew.received), (2000, 1500));
        let renew = measured(&r, Load::Renew, 2);
        assert_eq!((renew.offered_per_s, renew.answered_per_s), (1000.0, 750.0));
        assert!((renew.loss - 0.25).abs() < 1e-9);
        let dora = measured(&r, Load::Dora, 2);
        assert_eq!((dora.offered_per_s, dora.answered_per_s), (2000.0, 1990.0));
        assert!((dora.loss - 0.005).abs() < 1e-9);
    }

    #[test]
    fn a_step_fits_its_new_clients_in_the_pool() {
        assert_eq!(perfdhcp_secs(1_000, 5), 5);
        assert_eq!(perfdhcp_secs(30_000, 5), 2);
        assert_eq!(perfdhcp_secs(100_000, 5), 1);
        assert_eq!(perfdhcp_secs(0, 5), 5);
    }
}
