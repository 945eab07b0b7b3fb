//! What a run ramps and for how long: the adaptive ramps' settings for
//! `--quick` and the full run, for the bench's own ramps and loadgen's.

use xdhcp_ramp::{Limits, Plan, Ramp};

use super::{loadgen::s, model::MAX_LOSS_PCT, servers::MAX_NEW_CLIENTS};

/// An adaptive ramp (see `xdhcp_ramp`): from `from`, `factor` per step
/// until loss or plateau, then `refine` bisections; at most `max_steps`
/// steps, `max_secs` seconds and `max_rate`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RampCfg {
    from: u64,
    factor: f64,
    refine: u32,
    max_steps: u32,
    max_secs: f64,
    max_rate: u64,
}

impl RampCfg {
    pub(super) fn ramp(&self) -> Ramp {
        Ramp::new(
            Plan::Geometric {
                start: self.from,
                factor: self.factor,
                refine: self.refine,
            },
            Limits {
                max_loss_pct: MAX_LOSS_PCT,
                max_steps: self.max_steps,
                max_secs: self.max_secs,
                max_rate: self.max_rate,
            },
        )
    }

    /// The same ramp, run by loadgen.
    pub(super) fn loadgen_args(&self) -> Vec<String> {
        vec![
            s("--ramp-from"),
            s(self.from),
            s("--ramp-factor"),
            s(self.factor),
            s("--ramp-refine"),
            s(self.refine),
            s("--ramp-max-steps"),
            s(self.max_steps),
            s("--ramp-max-secs"),
            s(self.max_secs),
            s("--ramp-max-rate"),
            s(self.max_rate),
            s("--max-loss"),
            s(MAX_LOSS_PCT),
        ]
    }
}

/// Ramps that rise by `factor` a probe and bisect the knee `refine` times,
/// in at most `max_steps` steps: each from a rate, up to a rate and for a
/// time of its own.
fn geometric(factor: f64, refine: u32, max_steps: u32) -> impl Fn(u64, u64, f64) -> RampCfg {
    move |from, max_rate, max_secs| RampCfg {
        from,
        factor,
        refine,
        max_steps,
        max_secs,
        max_rate,
    }
}

/// What a run ramps, and how long each step sends.
pub(super) struct BenchPlan {
    pub xdp: RampCfg,
    pub xdp_secs: f64,
    pub cp: RampCfg,
    pub cp_secs: f64,
    pub dora: RampCfg,
    pub dora_secs: u64,
    pub clients: u32,
    pub perfdhcp: RampCfg,
    pub perfdhcp_secs: u64,
}

impl BenchPlan {
    pub(super) fn new(quick: bool) -> BenchPlan {
        if quick {
            BenchPlan::quick()
        } else {
            BenchPlan::full()
        }
    }

    /// Factor-2 probes and four bisections: the knee to 1/16 of a probe
    /// step (6%).
    fn quick() -> BenchPlan {
        let r = geometric(2.0, 4, 14);
        BenchPlan {
            xdp: r(500_000, 64_000_000, 90.0),
            xdp_secs: 1.0,
            cp: r(4_000, 2_000_000, 90.0),
            cp_secs: 1.5,
            dora: r(2_000, 1_000_000, 150.0),
            dora_secs: 2,
            clients: 20_000,
            perfdhcp: RampCfg {
                refine: 3,
                max_steps: 9,
                ..r(1_000, MAX_NEW_CLIENTS, 90.0)
            },
            perfdhcp_secs: 2,
        }
    }

    /// Factor-1.5 probes and five bisections: the knee to 1/64 of a probe
    /// step (under 1%).
    fn full() -> BenchPlan {
        let r = geometric(1.5, 5, 26);
        BenchPlan {
            xdp: r(250_000, 64_000_000, 400.0),
            xdp_secs: 3.0,
            cp: r(1_000, 2_000_000, 400.0),
            cp_secs: 3.0,
            dora: r(1_000, 1_000_000, 600.0),
            dora_secs: 3,
            clients: 50_000,
            perfdhcp: RampCfg {
                refine: 4,
                max_steps: 20,
                ..r(1_000, MAX_NEW_CLIENTS, 400.0)
            },
            perfdhcp_secs: 5,
        }
    }
}
