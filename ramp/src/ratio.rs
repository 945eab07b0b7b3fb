//! The reporting rule: what the ratio of two ramps' figures may claim.

use crate::end::End;

/// A ramp's figure and how its ramp ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figure {
    pub value: f64,
    pub end: End,
    /// For a loss: the offered rate of the first step beyond the
    /// threshold. The system's capacity lies between `value` and this: the
    /// figure is a step of the ramp, so itself only a lower bound, as close
    /// to the capacity as the ramp's refinement went.
    pub beyond: Option<f64>,
}

impl Figure {
    /// The interval the measured system's capacity lies in, as this ratio
    /// may use it: a loss bounds it by the knee; a plateau of the lab's
    /// ceiling is the ceiling (`as_ceiling`); anything else is only a
    /// lower bound.
    ///
    /// A step beyond the threshold that offered no more than the figure
    /// (a generator that fell short, or noise) bounds nothing: the knee was
    /// not located, and the figure is a lower bound.
    fn interval(&self, as_ceiling: bool) -> (f64, f64) {
        match self.end {
            End::Loss => match self.beyond {
                Some(b) if b > self.value => (self.value, b),
                Some(_) => (self.value, f64::INFINITY),
                None => (self.value, self.value),
            },
            End::Plateau if as_ceiling => (self.value, self.value),
            _ => (self.value, f64::INFINITY),
        }
    }
}

/// What the denominator of a ratio stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The lab's ceiling, measured through the same generator: a plateau
    /// is the most this lab can do, and counts as the ceiling.
    Ceiling,
    /// A peer server: a plateau is only a lower bound on the peer.
    Peer,
}

/// What a printed ratio claims about the true one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Both figures count: the ratio is a measurement.
    Measured,
    /// The numerator is a lower bound: the ratio is at least this.
    AtLeast,
    /// The denominator is a lower bound: the ratio is at most this.
    AtMost,
    /// Both are lower bounds: no bound either way.
    Neither,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// The figures' quotient.
    pub value: f64,
    /// The true ratio lies within [low, high]: `low` 0 and `high` infinite
    /// when unbounded on that side.
    pub low: f64,
    pub high: f64,
    pub bound: Bound,
    pub num: End,
    pub den: End,
    /// A ramp that ended in loss without locating its knee.
    pub num_unlocated: bool,
    pub den_unlocated: bool,
    pub role: Role,
}

/// Whether a ratio shows a target (a ratio of at least `target`) met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    NotMet,
    /// A bound on the wrong side of the target: this run does not tell.
    Undecided,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::Undecided => "undecided (its bound or range does not settle it)",
        }
    }
}

/// The reporting rule. Each figure stands for an interval holding the
/// capacity it measures: from the figure to the first step beyond the loss
/// threshold for a loss (the knee); the figure alone for the lab's ceiling
/// that plateaued; the figure and up, a lower bound, otherwise (a plateau
/// of anything else, a capped ramp). The ratio lies within the quotient of
/// the intervals; it is a measurement when both are bounded, a lower bound
/// when only the denominator is, an upper bound when only the numerator
/// is, and no bound when neither is. `None` when the denominator is not
/// positive.
pub fn ratio(num: Figure, den: Figure, role: Role) -> Option<Ratio> {
    if den.value.is_nan() || den.value <= 0.0 || !num.value.is_finite() {
        return None;
    }
    let (n_lo, n_hi) = num.interval(false);
    let (d_lo, d_hi) = den.interval(role == Role::Ceiling);
    let low = n_lo / d_hi;
    let high = n_hi / d_lo;
    let bound = match (high.is_finite(), low > 0.0) {
        (true, true) => Bound::Measured,
        (false, true) => Bound::AtLeast,
        (true, false) => Bound::AtMost,
        (false, false) => Bound::Neither,
    };
    Some(Ratio {
        value: num.value / den.value,
        low,
        high,
        bound,
        num: num.end,
        den: den.end,
        num_unlocated: num.end == End::Loss && !n_hi.is_finite(),
        den_unlocated: den.end == End::Loss && !d_hi.is_finite(),
        role,
    })
}

/// How a ratio is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// "73.9%"
    Percent,
    /// "8.0x"
    Times,
}

impl Ratio {
    /// Whether the ratio shows `target` (e.g. 0.70) met: met when its
    /// whole interval is at or above it, not met when wholly below, else
    /// undecided (a bound on the wrong side, or a knee that straddles it).
    pub fn against(&self, target: f64) -> Verdict {
        if self.low >= target {
            Verdict::Met
        } else if self.high < target {
            Verdict::NotMet
        } else {
            Verdict::Undecided
        }
    }

    /// The ratio with its status: "73.9%", "3.9x (3.7x-4.2x)" (the knees'
    /// width), "73.9% (ceiling plateau)", "≥ 291.2x (fast path capped)",
    /// "≤ 58.7% (ceiling capped)", "58.7%, no bound (fast path capped,
    /// ceiling capped)". Bounds are the interval's ends.
    pub fn text(&self, style: Style, num_name: &str, den_name: &str) -> String {
        let f = |x: f64| match style {
            Style::Percent => format!("{:.1}%", 100.0 * x),
            Style::Times => format!("{:.1}x", x),
        };
        let v = match self.bound {
            Bound::Measured if f(self.low) != f(self.high) => {
                format!("{} ({}-{})", f(self.value), f(self.low), f(self.high))
            }
            Bound::AtLeast => f(self.low),
            Bound::AtMost => f(self.high),
            _ => f(self.value),
        };
        let notes: Vec<String> = [
            (num_name, self.num, self.num_unlocated),
            (den_name, self.den, self.den_unlocated),
        ]
        .into_iter()
        .filter_map(|(n, e, unlocated)| match (e, unlocated) {
            (End::Loss, false) => None,
            (End::Loss, true) => Some(format!("{n} knee not located")),
            (e, _) => Some(format!("{n} {e}")),
        })
        .collect();
        let notes = notes.join(", ");
        match (self.bound, notes.is_empty()) {
            (Bound::Measured, true) => v,
            (Bound::Measured, false) => format!("{v} ({notes})"),
            (Bound::AtLeast, _) => format!("≥ {v} ({notes})"),
            (Bound::AtMost, _) => format!("≤ {v} ({notes})"),
            (Bound::Neither, _) => format!("{v}, no bound ({notes})"),
        }
    }
}

#[cfg(test)]
mod tests;
