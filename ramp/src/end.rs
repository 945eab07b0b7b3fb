//! How a ramp ended: what its figure is worth (a measurement or a bound),
//! which both the ramp and the ratio rule read.

use core::fmt;

/// How a ramp ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// A step lost more than the threshold: the knee lies between the
    /// highest step within it and the lowest beyond it. The figure is a
    /// measurement.
    Loss,
    /// No loss, but the generator stopped raising its offered rate: the
    /// figure is the generator's limit, a lower bound on the server.
    Plateau,
    /// A step, time or rate limit came first, while the offered rate still
    /// rose without loss: the figure is a lower bound, not a measurement.
    Capped,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Loss => "loss",
            End::Plateau => "plateau",
            End::Capped => "capped",
        }
    }

    pub fn parse(s: &str) -> Option<End> {
        [End::Loss, End::Plateau, End::Capped]
            .into_iter()
            .find(|e| e.name() == s)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
