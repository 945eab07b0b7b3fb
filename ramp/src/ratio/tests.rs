use super::*;
use crate::Outcome;

fn fig(value: f64, end: End) -> Figure {
    Figure {
        value,
        end,
        beyond: None,
    }
}

/// The figures: fast path 2.33 M/s and ceiling 3.15 M/s, both
/// at the top step of their ramps without loss; the quick run's 97.6%
/// against a ceiling capped at its 3 M step. Neither may read as met.
#[test]
fn ratios_against_a_capped_ceiling_never_meet_a_target() {
    let r = ratio(
        fig(2_329_430.0, End::Capped),
        fig(3_153_237.0, End::Capped),
        Role::Ceiling,
    )
    .unwrap();
    assert_eq!(r.bound, Bound::Neither);
    assert_eq!(r.against(0.70), Verdict::Undecided);
    assert_eq!(
        r.text(Style::Percent, "fast path", "ceiling"),
        "73.9%, no bound (fast path capped, ceiling capped)"
    );
    // A measured fast path over a capped ceiling: only an upper bound,
    // which can show a target missed but never met.
    let r = ratio(
        fig(2.636e6, End::Loss),
        fig(2.70e6, End::Capped),
        Role::Ceiling,
    )
    .unwrap();
    assert_eq!(r.bound, Bound::AtMost);
    assert_eq!(
        r.text(Style::Percent, "fast path", "ceiling"),
        "≤ 97.6% (ceiling capped)"
    );
    assert_eq!(r.against(0.70), Verdict::Undecided);
    let r = ratio(
        fig(1.5e6, End::Loss),
        fig(2.7e6, End::Capped),
        Role::Ceiling,
    )
    .unwrap();
    assert_eq!(r.against(0.70), Verdict::NotMet);
}

/// A figure is a step of its ramp: the capacity lies up to the first
/// step beyond the threshold. The full run's DORA: xdhcp 19,992/s with
/// its next step lost to pool exhaustion (a bound), Kea 6,000/s with
/// 8,000/s lost: at least 2.5x, not the 3.3x the figures divide to.
#[test]
fn a_knee_bounds_the_ratio() {
    let kea = Figure {
        value: 6_000.0,
        end: End::Loss,
        beyond: Some(8_000.0),
    };
    let r = ratio(fig(19_992.0, End::Capped), kea, Role::Peer).unwrap();
    assert_eq!(r.bound, Bound::AtLeast);
    assert!((r.low - 2.499).abs() < 1e-3);
    assert_eq!(
        r.text(Style::Times, "xdhcp DORA", "Kea DORA"),
        "≥ 2.5x (xdhcp DORA capped)"
    );
    assert_eq!(r.against(3.0), Verdict::Undecided);
    // Both refined: 3.9x within 3.7x-4.2x; a 3x target met, a 4x one
    // undecided.
    let xdhcp = Figure {
        value: 15_454.0,
        end: End::Loss,
        beyond: Some(15_991.0),
    };
    let kea = Figure {
        value: 3_972.0,
        end: End::Loss,
        beyond: Some(4_250.0),
    };
    let r = ratio(xdhcp, kea, Role::Peer).unwrap();
    assert_eq!(r.bound, Bound::Measured);
    assert_eq!(r.text(Style::Times, "xdhcp", "Kea"), "3.9x (3.6x-4.0x)");
    assert_eq!(r.against(3.0), Verdict::Met);
    assert_eq!(r.against(3.8), Verdict::Undecided);
    assert_eq!(r.against(4.1), Verdict::NotMet);
    // Against a capped ceiling the numerator's knee is the upper bound.
    let fast = Figure {
        value: 2.0e6,
        end: End::Loss,
        beyond: Some(2.2e6),
    };
    let r = ratio(fast, fig(2.7e6, End::Capped), Role::Ceiling).unwrap();
    assert_eq!(
        r.text(Style::Percent, "fast path", "ceiling"),
        "≤ 81.5% (ceiling capped)"
    );
    // From an outcome.
    let o = Outcome {
        end: End::Loss,
        figure: Some(100.0),
        knee: Some((100.0, 110.0)),
        knee_targets: Some((100, 110)),
        steps: 5,
    };
    assert_eq!(o.as_figure().beyond, Some(110.0));
}

#[test]
fn the_reporting_rule() {
    use End::*;
    let cases = [
        // (num, den, role, bound)
        (Loss, Loss, Role::Ceiling, Bound::Measured),
        (Loss, Plateau, Role::Ceiling, Bound::Measured),
        (Loss, Capped, Role::Ceiling, Bound::AtMost),
        (Plateau, Loss, Role::Ceiling, Bound::AtLeast),
        (Plateau, Plateau, Role::Ceiling, Bound::AtLeast),
        (Capped, Loss, Role::Ceiling, Bound::AtLeast),
        (Capped, Capped, Role::Ceiling, Bound::Neither),
        (Plateau, Capped, Role::Ceiling, Bound::Neither),
        (Loss, Loss, Role::Peer, Bound::Measured),
        (Loss, Plateau, Role::Peer, Bound::AtMost),
        (Capped, Loss, Role::Peer, Bound::AtLeast),
        (Plateau, Plateau, Role::Peer, Bound::Neither),
    ];
    for (n, d, role, want) in cases {
        let r = ratio(fig(3.0, n), fig(4.0, d), role).unwrap();
        assert_eq!(r.bound, want, "{n} / {d} ({role:?})");
        assert_eq!(r.value, 0.75);
    }
    assert_eq!(ratio(fig(1.0, Loss), fig(0.0, Loss), Role::Peer), None);

    let at = |n, d, role, v: f64| ratio(fig(v, n), fig(1.0, d), role).unwrap();
    // Verdicts against a 70% target.
    let verdicts = [
        (Loss, Loss, 0.74, Verdict::Met),
        (Loss, Loss, 0.58, Verdict::NotMet),
        (Capped, Loss, 0.74, Verdict::Met),
        (Capped, Loss, 0.58, Verdict::Undecided),
        (Loss, Capped, 0.74, Verdict::Undecided),
        (Loss, Capped, 0.58, Verdict::NotMet),
        (Capped, Capped, 0.99, Verdict::Undecided),
    ];
    for (n, d, v, want) in verdicts {
        let got = at(n, d, Role::Ceiling, v).against(0.7);
        assert_eq!(got, want, "{v} as {n} / {d}");
    }

    // Texts.
    assert_eq!(
        at(Loss, Plateau, Role::Ceiling, 0.739).text(Style::Percent, "fast path", "ceiling"),
        "73.9% (ceiling plateau)"
    );
    assert_eq!(
        at(Capped, Loss, Role::Peer, 291.2).text(Style::Times, "fast path", "Kea"),
        "≥ 291.2x (fast path capped)"
    );
    assert_eq!(
        at(Loss, Loss, Role::Peer, 3.24).text(Style::Times, "xdhcp", "Kea"),
        "3.2x"
    );
}
