//! Rate ramps for benchmarks: which rate to offer next, how a ramp ended,
//! and what the ratio of two ramps' figures may claim.
//!
//! A ramp offers a load at rising rates; its figure is the highest
//! answered rate of a step that lost at most `max_loss_pct`. That figure
//! measures the system only if the ramp found where it stops keeping up.
//! [`Ramp`] keeps raising the rate (geometric steps) until a step loses
//! more than the threshold or the generator's achieved offered rate stops
//! rising, then bisects between the last step within the threshold and
//! the first beyond it, so the figure is not a coarse step of the ramp;
//! every load loop is bounded in steps, time and rate. It records how the
//! ramp ended ([`End`]), and [`ratio`] turns two figures into the claim
//! their quotient supports: a measurement, a bound, or neither.
//!
//! `xdhcp-loadgen --ramp-from` and `cargo xtask bench` (for the ramps it
//! drives itself: a fresh server per DORA step, perfdhcp) both use it, so
//! every ramp of a report ends by the same rule.

mod end;
mod ramp;
mod ratio;

pub use end::End;
pub use ramp::{Limits, Outcome, Plan, Ramp, Stage, Step, PLATEAU_GAIN, PLATEAU_STEPS};
pub use ratio::{ratio, Bound, Figure, Ratio, Role, Style, Verdict};

/// 1234567.8 → "1,234,568".
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let groups: Vec<&str> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or("?"))
        .collect();
    groups.join(",")
}
