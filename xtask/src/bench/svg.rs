//! The plot: answered vs offered, log-log, one polyline and colour per
//! system; the legend gives each figure and how its ramp ended, the notes
//! under the plot the ratios with their status.

use std::fmt::Write as _;

use super::model::Curve;

/// The plot's width, the plotting area's height and its margin (px).
const W: f64 = 900.0;
const PLOT_H: f64 = 560.0;
const M: f64 = 70.0;
/// The axes' decades, log10: 100/s .. 10M/s.
const LO: f64 = 2.0;
const HI: f64 = 7.0;
/// Notes are wrapped at this many characters.
const NOTE_WIDTH: usize = 125;

/// Series colours: ten distinct ones, then golden-angle hues, so no two
/// series share one however many there are.
fn colour(k: usize) -> String {
    const PALETTE: [&str; 10] = [
        "#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
        "#17becf", "#bcbd22",
    ];
    match PALETTE.get(k) {
        Some(c) => (*c).into(),
        None => format!(
            "hsl({:.1},70%,40%)",
            (k - PALETTE.len()) as f64 * 137.508 % 360.0
        ),
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A rate as "2.70M", "36.0k", "950".
fn short_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `text` in lines of at most `width` characters (broken at spaces; the
/// lines after the first indented).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
            cur.push_str("    ");
        }
        if !cur.is_empty() && !cur.ends_with("    ") {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    lines.push(cur);
    lines
}

/// An offered rate's x.
fn x(v: f64) -> f64 {
    M + (v.max(100.0).log10() - LO) / (HI - LO) * (W - 2.0 * M)
}

/// An answered rate's y.
fn y(v: f64) -> f64 {
    PLOT_H - M - (v.max(100.0).log10() - LO) / (HI - LO) * (PLOT_H - 2.0 * M)
}

/// The plot of `curves`, with `notes` under it.
pub(super) fn svg(curves: &[Curve], notes: &[String]) -> String {
    let notes: Vec<String> = notes.iter().flat_map(|n| wrap(n, NOTE_WIDTH)).collect();
    let mut o = header(PLOT_H + 10.0 + 16.0 * notes.len() as f64);
    axes(&mut o);
    for (k, c) in curves.iter().enumerate() {
        series(&mut o, c, &colour(k));
        legend_entry(&mut o, c, k);
    }
    for (i, n) in notes.iter().enumerate() {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            M,
            PLOT_H + 6.0 + 16.0 * i as f64,
            esc(n)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// The document `h` px high, white, with its title.
fn header(h: f64) -> String {
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"24\" font-size=\"15\">answered vs offered requests/s (log-log; same veth lab, one run)</text>",
        M
    );
    o
}

/// The grid a decade, the answered = offered diagonal, the axis names.
fn axes(o: &mut String) {
    for e in 2..=7 {
        let v = 10f64.powi(e);
        let label = ["100", "1k", "10k", "100k", "1M", "10M"][(e - 2) as usize];
        let _ = writeln!(
            o,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>",
            x(v),
            M,
            PLOT_H - M,
            PLOT_H - M + 16.0
        );
        let _ = writeln!(
            o,
            "<line x1=\"{1}\" y1=\"{0}\" x2=\"{2}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{3}\" y=\"{0}\" text-anchor=\"end\">{label}</text>",
            y(v),
            M,
            W - M,
            M - 6.0
        );
    }
    let _ = writeln!(
        o,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>",
        x(100.0),
        y(100.0),
        x(1e7),
        y(1e7)
    );
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered/s</text><text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">answered/s</text>",
        W / 2.0,
        PLOT_H - 24.0,
        PLOT_H / 2.0,
        PLOT_H / 2.0
    );
}

/// A curve's line and a dot a step.
fn series(o: &mut String, c: &Curve, col: &str) {
    let pts: Vec<(f64, f64)> = c
        .points
        .iter()
        .map(|p| (x(p.offered), y(p.answered)))
        .collect();
    // The line joins the steps by offered rate, not in the order run
    // (a refinement goes back and forth).
    let mut by_offered = pts.clone();
    by_offered.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line: Vec<String> = by_offered
        .iter()
        .map(|(a, b)| format!("{a:.1},{b:.1}"))
        .collect();
    let _ = writeln!(
        o,
        "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    for (p, (px, py)) in c.points.iter().zip(&pts) {
        // Refinement steps hollow, probing steps filled.
        let fill = if p.refine { "white" } else { col };
        let _ = writeln!(
            o,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{fill}\" stroke=\"{col}\"/>"
        );
    }
}

/// The `k`th legend line: the curve's colour, figure and end.
fn legend_entry(o: &mut String, c: &Curve, k: usize) {
    let ly = M + 10.0 + 16.0 * k as f64;
    let figure = c
        .outcome
        .figure
        .map_or("no step within 1% loss".into(), |f| {
            format!("{}/s", short_rate(f))
        });
    let _ = writeln!(
        o,
        "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
        M + 10.0,
        M + 30.0,
        colour(k),
        M + 36.0,
        ly + 4.0,
        esc(&format!("{}: {figure}, {}", c.key.label(), c.outcome.end))
    );
}

#[cfg(test)]
mod tests {
    use xdhcp_ramp::End;

    use super::*;
    use crate::bench::model::{curve_of, ROWS};

    #[test]
    fn long_notes_are_wrapped() {
        let w = wrap("aaa bbb ccc ddd", 8);
        assert_eq!(w, ["aaa bbb", "    ccc", "    ddd"]);
        assert_eq!(wrap("short", 80), ["short"]);
    }

    #[test]
    fn every_series_has_its_own_colour() {
        let c: Vec<String> = (0..40).map(colour).collect();
        let unique: std::collections::HashSet<&String> = c.iter().collect();
        assert_eq!(unique.len(), c.len(), "{c:?}");
        // Every series of the bench, each its own colour and legend entry.
        let curves: Vec<Curve> = ROWS.iter().map(|r| curve_of(r.1, 1e4, End::Loss)).collect();
        let svg = svg(&curves, &["note".into()]);
        for k in 0..curves.len() {
            let stroke = format!("<polyline fill=\"none\" stroke=\"{}\"", colour(k));
            assert_eq!(svg.matches(&stroke).count(), 1, "{k}");
        }
        assert_eq!(
            svg.matches("stroke-width=\"2\"/><text").count(),
            curves.len()
        );
    }

    #[test]
    fn rates_are_shortened() {
        assert_eq!(short_rate(2_700_000.0), "2.70M");
        assert_eq!(short_rate(36_000.0), "36.0k");
        assert_eq!(short_rate(950.0), "950");
        assert_eq!(esc("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
