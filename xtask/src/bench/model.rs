//! What a run measured, as every rendering reads it: the curves (a ramp's
//! steps and how it ended), which rows and targets the report holds, the
//! ratios between curves, and the machine's load around the run.

use serde_json::Value;
use xdhcp_ramp::{ratio, End, Figure, Outcome, Ratio, Role, Style};

/// Loss (percent) beyond which a step is past the knee.
pub(super) const MAX_LOSS_PCT: f64 = 1.0;

/// A ramp step as plotted and written out.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Pt {
    pub target: u64,
    pub offered: f64,
    pub answered: f64,
    pub loss_pct: f64,
    /// A bisection step at the knee.
    pub refine: bool,
}

impl Pt {
    /// A step as loadgen and the report write it; `stage` is where that
    /// writer puts the step's stage ("probe" or "refine").
    pub(super) fn from_json(v: &Value, stage: &Value) -> Pt {
        Pt {
            target: v["target_per_s"].as_u64().unwrap_or(0),
            offered: v["offered_per_s"].as_f64().unwrap_or(0.0),
            answered: v["answered_per_s"].as_f64().unwrap_or(0.0),
            loss_pct: v["loss_pct"].as_f64().unwrap_or(100.0),
            refine: *stage == "refine",
        }
    }
}

/// How a ramp ended, as loadgen and the report write it (`figure_per_s`,
/// `knee_offered_per_s`, `knee_target_per_s`); the caller reads `end`,
/// and counts `steps`, its own way.
pub(super) fn outcome_from_json(v: &Value, end: End, steps: u32) -> Outcome {
    let pair = |k: &str| {
        v[k].as_array()
            .and_then(|p| Some((p.first()?.as_f64()?, p.get(1)?.as_f64()?)))
    };
    Outcome {
        end,
        figure: v["figure_per_s"].as_f64(),
        knee: pair("knee_offered_per_s"),
        knee_targets: pair("knee_target_per_s").map(|(a, b)| (a as u64, b as u64)),
        steps,
    }
}

/// Which measurement a curve is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    Ceiling,
    FastPath,
    ControlPlane,
    XdhcpDora,
    KeaDora,
    KeaRenew,
    PerfDoraKea,
    PerfDoraXdhcp,
    PerfRenewKea,
    PerfRenewXdhcp,
    FastPathDot1q,
    FastPathQinq,
    FastPathClientId,
    FastPathUnpadded,
    FastPathDiscover,
    FastPathSelecting,
    PgDora1,
    PgRenew1,
    PgLabEmbeddedRenew,
    PgDora2,
    KeaPgDora,
    PgRenew2,
}

impl Key {
    pub(super) const ALL: [Key; 22] = [
        Key::Ceiling,
        Key::FastPath,
        Key::ControlPlane,
        Key::XdhcpDora,
        Key::KeaDora,
        Key::KeaRenew,
        Key::PerfDoraKea,
        Key::PerfDoraXdhcp,
        Key::PerfRenewKea,
        Key::PerfRenewXdhcp,
        Key::FastPathDot1q,
        Key::FastPathQinq,
        Key::FastPathClientId,
        Key::FastPathUnpadded,
        Key::FastPathDiscover,
        Key::FastPathSelecting,
        Key::PgDora1,
        Key::PgRenew1,
        Key::PgLabEmbeddedRenew,
        Key::PgDora2,
        Key::KeaPgDora,
        Key::PgRenew2,
    ];

    /// The fast path's renewals in each request shape but the plain one
    /// (section 2), with loadgen's `--shape` for each.
    pub(super) const SHAPES: [(Key, &'static str); 4] = [
        (Key::FastPathDot1q, "dot1q"),
        (Key::FastPathQinq, "qinq"),
        (Key::FastPathClientId, "client-id"),
        (Key::FastPathUnpadded, "unpadded"),
    ];

    /// A known client's reconnect answered by the fast path, with
    /// loadgen's phase for each.
    pub(super) const RECONNECTS: [(Key, &'static str); 2] = [
        (Key::FastPathDiscover, "discover-known"),
        (Key::FastPathSelecting, "selecting"),
    ];

    /// The curve's label in the plot, txt and JSON.
    pub(super) fn label(self) -> &'static str {
        match self {
            Key::Ceiling => "ceiling: bare XDP bounce",
            Key::FastPath => "xdhcp renewals, fast path (XDP)",
            Key::ControlPlane => "xdhcp renewals, control plane",
            Key::XdhcpDora => "xdhcp DORA (SQLite fsync)",
            Key::KeaDora => "Kea 2.2 DORA (memfile, 2 threads)",
            Key::KeaRenew => "Kea 2.2 renewals",
            Key::PerfDoraKea => "perfdhcp DORA: Kea",
            Key::PerfDoraXdhcp => "perfdhcp DORA: xdhcp",
            Key::PerfRenewKea => "perfdhcp renew: Kea",
            Key::PerfRenewXdhcp => "perfdhcp renew: xdhcp",
            Key::FastPathDot1q => "xdhcp renewals, fast path, 802.1Q",
            Key::FastPathQinq => "xdhcp renewals, fast path, QinQ",
            Key::FastPathClientId => "xdhcp renewals, fast path, client id",
            Key::FastPathUnpadded => "xdhcp renewals, fast path, unpadded",
            Key::FastPathDiscover => "xdhcp known clients' DISCOVER, fast path OFFER",
            Key::FastPathSelecting => "xdhcp SELECTING REQUEST, fast path ACK",
            Key::PgDora1 => "xdhcp DORA, 1 node on PostgreSQL",
            Key::PgRenew1 => "xdhcp renewals, fast path, 1 node on PostgreSQL",
            Key::PgLabEmbeddedRenew => {
                "xdhcp renewals, fast path, embedded store (beside PostgreSQL)"
            }
            Key::PgDora2 => "xdhcp DORA, 2 nodes on one PostgreSQL",
            Key::KeaPgDora => "Kea 2.2 DORA (PostgreSQL, 2 threads)",
            Key::PgRenew2 => "xdhcp renewals, fast path, 2 nodes on one PostgreSQL (sum)",
        }
    }

    /// The name a ratio's note uses ("≤ 97.6% (ceiling capped)").
    pub(super) fn short(self) -> &'static str {
        match self {
            Key::Ceiling => "ceiling",
            Key::FastPath => "fast path",
            Key::ControlPlane => "control plane",
            Key::XdhcpDora => "xdhcp DORA",
            Key::KeaDora => "Kea DORA",
            Key::KeaRenew => "Kea renewals",
            Key::PerfDoraKea | Key::PerfRenewKea => "Kea",
            Key::PerfDoraXdhcp | Key::PerfRenewXdhcp => "xdhcp",
            Key::FastPathDot1q => "fast path 802.1Q",
            Key::FastPathQinq => "fast path QinQ",
            Key::FastPathClientId => "fast path client id",
            Key::FastPathUnpadded => "fast path unpadded",
            Key::FastPathDiscover => "fast path OFFER",
            Key::FastPathSelecting => "fast path SELECTING ACK",
            Key::PgDora1 => "1 node",
            Key::PgRenew1 => "PostgreSQL",
            Key::PgLabEmbeddedRenew => "embedded",
            Key::PgDora2 => "2 nodes",
            Key::KeaPgDora => "Kea on PostgreSQL",
            Key::PgRenew2 => "2 nodes",
        }
    }

    /// The curve's row label in the table, without its indent.
    pub(super) fn row_label(self) -> &'static str {
        ROWS.iter()
            .find(|r| r.1 == self)
            .map_or("?", |r| r.0.trim_start())
    }
}

/// One system's ramp: its steps and how it ended.
#[derive(Clone, Debug)]
pub(super) struct Curve {
    pub key: Key,
    pub points: Vec<Pt>,
    pub outcome: Outcome,
}

impl Curve {
    pub(super) fn new(key: Key, (points, outcome): (Vec<Pt>, Outcome)) -> Curve {
        Curve {
            key,
            points,
            outcome,
        }
    }

    fn figure(&self) -> Figure {
        self.outcome.as_figure()
    }
}

/// Table rows: label, curve, and the peer it is compared with.
pub(super) const ROWS: [(&str, Key, Option<Key>); 16] = [
    ("1. ceiling: bare XDP bounce", Key::Ceiling, None),
    (
        "2. xdhcp renewals, fast path (XDP)",
        Key::FastPath,
        Some(Key::KeaRenew),
    ),
    (
        "   fast path, 802.1Q-tagged requests",
        Key::FastPathDot1q,
        None,
    ),
    (
        "   fast path, QinQ (802.1ad + 802.1Q)",
        Key::FastPathQinq,
        None,
    ),
    (
        "   fast path, with a client identifier (61)",
        Key::FastPathClientId,
        None,
    ),
    (
        "   fast path, unpadded requests (grown in the kernel)",
        Key::FastPathUnpadded,
        None,
    ),
    (
        "   fast path, a known client's DISCOVER (kernel OFFER)",
        Key::FastPathDiscover,
        None,
    ),
    (
        "   fast path, a known client's SELECTING REQUEST (kernel ACK)",
        Key::FastPathSelecting,
        None,
    ),
    (
        "3. xdhcp renewals, fast path off (control plane, SQLite fsync)",
        Key::ControlPlane,
        Some(Key::KeaRenew),
    ),
    (
        "4. xdhcp DORA, durable leases",
        Key::XdhcpDora,
        Some(Key::KeaDora),
    ),
    (
        "   Kea 2.2 DORA (memfile, 2 threads), loadgen",
        Key::KeaDora,
        None,
    ),
    ("   Kea 2.2 renewals, loadgen", Key::KeaRenew, None),
    ("5. perfdhcp DORA: Kea", Key::PerfDoraKea, None),
    (
        "5. perfdhcp DORA: xdhcp",
        Key::PerfDoraXdhcp,
        Some(Key::PerfDoraKea),
    ),
    ("5. perfdhcp renewals: Kea", Key::PerfRenewKea, None),
    (
        "5. perfdhcp renewals: xdhcp",
        Key::PerfRenewXdhcp,
        Some(Key::PerfRenewKea),
    ),
];

/// The issue's targets: (what, numerator, denominator, role, at least).
pub(super) const TARGETS: [(&str, Key, Key, Role, f64, Style); 3] = [
    (
        "fast-path renewals >= 80% of the bare ceiling",
        Key::FastPath,
        Key::Ceiling,
        Role::Ceiling,
        0.80,
        Style::Percent,
    ),
    (
        "fast-path renewals >= 300x Kea's renewals (same generator)",
        Key::FastPath,
        Key::KeaRenew,
        Role::Peer,
        300.0,
        Style::Times,
    ),
    (
        "control-plane DORA >= 10x Kea's, durable leases (same generator)",
        Key::XdhcpDora,
        Key::KeaDora,
        Role::Peer,
        10.0,
        Style::Times,
    ),
];

pub(super) fn curve(curves: &[Curve], key: Key) -> Option<&Curve> {
    curves.iter().find(|c| c.key == key)
}

/// `num / den` with its status, by the reporting rule.
pub(super) fn ratio_of(curves: &[Curve], num: Key, den: Key, role: Role) -> Option<Ratio> {
    let (n, d) = (curve(curves, num)?, curve(curves, den)?);
    n.outcome.figure?;
    ratio(n.figure(), d.figure(), role)
}

/// The machine's state around the run.
pub(super) struct Machine {
    pub cpus: usize,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
}

impl Machine {
    /// Busy before the bench started: a 1-minute load above half its CPUs.
    pub(super) fn busy(&self) -> bool {
        self.load_before.is_some_and(|l| l > 0.5 * self.cpus as f64)
    }
}

#[cfg(test)]
pub(super) fn curve_of(key: Key, figure: f64, end: End) -> Curve {
    Curve {
        key,
        points: vec![Pt {
            target: figure as u64,
            offered: figure,
            answered: figure,
            loss_pct: 0.0,
            refine: false,
        }],
        outcome: Outcome {
            end,
            figure: Some(figure),
            knee: None,
            knee_targets: None,
            steps: 1,
        },
    }
}

/// The issue's full run: ceiling and fast path both ended at the top step
/// without loss.
#[cfg(test)]
pub(super) fn issue_full_run() -> Vec<Curve> {
    vec![
        curve_of(Key::Ceiling, 3_153_237.0, End::Capped),
        curve_of(Key::FastPath, 2_329_430.0, End::Capped),
        curve_of(Key::KeaRenew, 8_000.0, End::Loss),
        curve_of(Key::XdhcpDora, 19_992.0, End::Loss),
        curve_of(Key::KeaDora, 6_000.0, End::Loss),
    ]
}
