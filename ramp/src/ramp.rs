//! The ramp: which rate to offer next, and how the ramp ended.

use crate::{end::End, ratio::Figure, thousands};

/// A step stalls when the generator's achieved offered rate rises less than
/// this fraction above the highest one before it although the target rose
/// at least as much; [`PLATEAU_STEPS`] stalls in a row end a ramp as a
/// plateau.
pub const PLATEAU_GAIN: f64 = 0.03;
/// Stalls in a row that make a plateau.
pub const PLATEAU_STEPS: u32 = 2;

/// Bounds every ramp obeys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Loss (percent of requests) above which a step is beyond the knee.
    pub max_loss_pct: f64,
    /// Steps in all, probing and refining.
    pub max_steps: u32,
    /// No step starts once the ramp has run this long (seconds).
    pub max_secs: f64,
    /// No target above this rate.
    pub max_rate: u64,
}

/// Which rates a ramp offers.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// From `start`, each target `factor` times the last until a step
    /// loses or the offered rate plateaus; after a loss, `refine`
    /// bisections between the highest target within the threshold and the
    /// lowest beyond it (halving while no target was within it).
    Geometric {
        start: u64,
        factor: f64,
        refine: u32,
    },
    /// These targets in order, ending at the first loss or a plateau, with
    /// no refinement (`xdhcp-loadgen --rates a,b,c`).
    Fixed(Vec<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Raising the rate to find the knee.
    Probe,
    /// Bisecting between the last good and the first bad target.
    Refine,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Refine => "refine",
        }
    }
}

/// One step as measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The rate asked for.
    pub target: u64,
    /// The rate the generator achieved.
    pub offered: f64,
    /// Correct replies per second.
    pub answered: f64,
    pub loss_pct: f64,
    pub stage: Stage,
}

/// A ramp's result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub end: End,
    /// Highest answered rate of a step within the loss threshold; `None`
    /// when no step was.
    pub figure: Option<f64>,
    /// For [`End::Loss`]: the achieved offered rates of the highest target
    /// within the threshold and of the lowest beyond it.
    pub knee: Option<(f64, f64)>,
    /// Those two targets.
    pub knee_targets: Option<(u64, u64)>,
    pub steps: u32,
}

impl Outcome {
    /// The figure with its end, for [`ratio`] (0 when no step counted).
    pub fn as_figure(&self) -> Figure {
        Figure {
            value: self.figure.unwrap_or(0.0),
            end: self.end,
            beyond: self.knee.map(|k| k.1),
        }
    }

    /// "loss (knee between 36,000 and 38,000 offered/s)", "plateau",
    /// "capped", "loss (no step within the threshold)". Where the
    /// generator fell short of a knee target by more than [`PLATEAU_GAIN`]
    /// the targets are given too.
    pub fn describe(&self) -> String {
        match (self.end, self.figure, self.knee) {
            (End::Loss, None, _) => "loss (no step within the loss threshold)".into(),
            (End::Loss, _, Some((lo, hi))) => {
                let short = self
                    .knee_targets
                    .filter(|&(tl, th)| {
                        lo < tl as f64 * (1.0 - PLATEAU_GAIN)
                            || hi < th as f64 * (1.0 - PLATEAU_GAIN)
                    })
                    .map_or(String::new(), |(tl, th)| {
                        format!(
                            ", the generator short of its targets {} and {}/s",
                            thousands(tl as f64),
                            thousands(th as f64)
                        )
                    });
                let located = self.figure.is_some_and(|f| hi > f);
                if located {
                    format!(
                        "loss (knee between {} and {} offered/s{short})",
                        thousands(lo),
                        thousands(hi)
                    )
                } else {
                    format!(
                        "loss, knee not located (the first step beyond offered {}/s, no more than the figure{short})",
                        thousands(hi)
                    )
                }
            }
            (End::Plateau, ..) => "plateau (generator-bound: a lower bound)".into(),
            (End::Capped, ..) => "capped (a bound, not a measurement)".into(),
            (end, ..) => end.name().into(),
        }
    }
}

/// The ramp's controller: ask [`Ramp::next_rate`], run a step at that
/// target, [`Ramp::record`] what it measured; until `next_rate` is `None`.
#[derive(Clone, Debug)]
pub struct Ramp {
    plan: Plan,
    limits: Limits,
    steps: Vec<Step>,
    stage: Stage,
    next: Option<u64>,
    end: Option<End>,
    refined: u32,
    stalls: u32,
    max_offered: f64,
}

impl Ramp {
    pub fn new(plan: Plan, limits: Limits) -> Ramp {
        let next = match &plan {
            Plan::Geometric { start, .. } => Some((*start).clamp(1, limits.max_rate.max(1))),
            Plan::Fixed(rates) => rates.first().copied(),
        };
        Ramp {
            plan,
            limits,
            steps: Vec::new(),
            stage: Stage::Probe,
            end: next.is_none().then_some(End::Capped),
            next,
            refined: 0,
            stalls: 0,
            max_offered: 0.0,
        }
    }

    /// The target of the next step; `None` once the ramp has ended.
    pub fn next_rate(&self) -> Option<u64> {
        if self.end.is_some() {
            None
        } else {
            self.next
        }
    }

    /// The stage the next step belongs to.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Records the step just run at `target`; `elapsed_secs` is the time
    /// since the ramp started.
    pub fn record(
        &mut self,
        target: u64,
        offered: f64,
        answered: f64,
        loss_pct: f64,
        elapsed_secs: f64,
    ) {
        if self.end.is_some() {
            return;
        }
        let prev_target = self.steps.last().map(|s| s.target);
        // A refinement step bisects once a target was within the threshold;
        // before that it halves, which the refinement budget does not count.
        let bisecting = self.knee_targets().0.is_some();
        self.steps.push(Step {
            target,
            offered,
            answered,
            loss_pct,
            stage: self.stage,
        });
        let good = within(loss_pct, self.limits.max_loss_pct);
        match self.stage {
            Stage::Probe if !good => match self.plan {
                Plan::Geometric { refine, .. } if refine > 0 => self.stage = Stage::Refine,
                _ => return self.finish(End::Loss),
            },
            Stage::Probe => {
                let target_rose =
                    prev_target.is_some_and(|p| target as f64 >= p as f64 * (1.0 + PLATEAU_GAIN));
                if target_rose && offered < self.max_offered * (1.0 + PLATEAU_GAIN) {
                    self.stalls += 1;
                } else {
                    self.stalls = 0;
                }
                self.max_offered = self.max_offered.max(offered);
                if self.stalls >= PLATEAU_STEPS {
                    return self.finish(End::Plateau);
                }
            }
            Stage::Refine => {
                self.refined += u32::from(bisecting);
                let refine = match self.plan {
                    Plan::Geometric { refine, .. } => refine,
                    Plan::Fixed(_) => 0,
                };
                if self.refined >= refine && self.knee_targets().0.is_some() {
                    return self.finish(End::Loss);
                }
            }
        }
        if self.steps.len() as u32 >= self.limits.max_steps
            || elapsed_secs.is_nan()
            || elapsed_secs >= self.limits.max_secs
        {
            return self.finish(if self.stage == Stage::Refine {
                End::Loss
            } else {
                End::Capped
            });
        }
        match self.next_target() {
            Some(t) => self.next = Some(t),
            None => self.finish(if self.stage == Stage::Refine {
                End::Loss
            } else {
                End::Capped
            }),
        }
    }

    fn finish(&mut self, end: End) {
        self.end = Some(end);
        self.next = None;
    }

    /// (highest target within the threshold below the lowest beyond it,
    /// lowest target beyond it).
    fn knee_targets(&self) -> (Option<u64>, Option<u64>) {
        let max_loss = self.limits.max_loss_pct;
        let hi = self
            .steps
            .iter()
            .filter(|s| !within(s.loss_pct, max_loss))
            .map(|s| s.target)
            .min();
        let lo = self
            .steps
            .iter()
            .filter(|s| within(s.loss_pct, max_loss) && hi.is_none_or(|h| s.target < h))
            .map(|s| s.target)
            .max();
        (lo, hi)
    }

    fn next_target(&self) -> Option<u64> {
        let last = self.steps.last()?.target;
        match (&self.plan, self.stage) {
            (Plan::Fixed(rates), _) => rates.get(self.steps.len()).copied(),
            (Plan::Geometric { factor, .. }, Stage::Probe) => {
                if last >= self.limits.max_rate {
                    return None;
                }
                let next = ((last as f64 * factor).round() as u64).max(last + 1);
                Some(next.min(self.limits.max_rate))
            }
            (Plan::Geometric { .. }, Stage::Refine) => match self.knee_targets() {
                (Some(lo), Some(hi)) => {
                    let mid = lo + (hi - lo) / 2;
                    (mid > lo).then_some(mid)
                }
                (None, Some(hi)) => Some(hi / 2).filter(|&h| h > 0),
                (_, None) => None,
            },
        }
    }

    /// How the ramp ended (an unfinished ramp counts as capped).
    pub fn outcome(&self) -> Outcome {
        let end = self.end.unwrap_or(End::Capped);
        let max_loss = self.limits.max_loss_pct;
        let figure = self
            .steps
            .iter()
            .filter(|s| within(s.loss_pct, max_loss))
            .map(|s| s.answered)
            .reduce(f64::max);
        let knee_targets = match (end, self.knee_targets()) {
            (End::Loss, (Some(lo), Some(hi))) => Some((lo, hi)),
            _ => None,
        };
        let knee = match (end, self.knee_targets()) {
            (End::Loss, (Some(lo), Some(hi))) => {
                let offered = |t: u64| {
                    self.steps
                        .iter()
                        .filter(|s| s.target == t)
                        .map(|s| s.offered)
                        .reduce(f64::max)
                };
                offered(lo).zip(offered(hi))
            }
            _ => None,
        };
        Outcome {
            end,
            figure,
            knee,
            knee_targets,
            steps: self.steps.len() as u32,
        }
    }
}

/// Whether a step's loss is within the threshold (NaN, nothing measured,
/// is not).
fn within(loss_pct: f64, max_loss_pct: f64) -> bool {
    loss_pct <= max_loss_pct
}

#[cfg(test)]
mod tests;
