//! A run's report, drawn once and then printed and written to bench/: the
//! printout (table, targets, load caveat), the plot, its points (.txt)
//! and the JSON report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{
    json::json_report,
    markdown::{load_note, points_text, printout, table, target_lines},
    model::{Curve, Machine, MAX_LOSS_PCT},
    svg::svg,
};
use crate::root_dir;

/// The report in every form it takes.
pub(super) struct Rendered {
    /// What the run prints.
    pub printout: String,
    pub svg: String,
    /// The plot's points and the table, as text.
    pub points: String,
    pub json: Value,
}

/// Draws the report of `curves`. `replayed`: the curves are an old run's
/// fixed ramps, classified by replaying them.
pub(super) fn render(curves: &[Curve], quick: bool, machine: &Machine, replayed: bool) -> Rendered {
    let t = table(curves);
    let targets = target_lines(curves, machine.busy());
    let load = load_note(machine);
    let ramps = ramps_note(replayed);
    let mut notes = vec![ramps.clone()];
    notes.extend(targets.iter().cloned());
    notes.push(load.clone());
    let mut json = json_report(curves, quick, machine.busy());
    json["ramps"] = ramps.into();
    json["machine"] = serde_json::json!({
        "cpus": machine.cpus,
        "load_average_before": machine.load_before,
        "load_average_after": machine.load_after,
        "note": load,
    });
    Rendered {
        printout: printout(&t, &targets, &load),
        svg: svg(curves, &notes),
        points: points_text(curves, &t, &targets, &load),
        json,
    }
}

/// How the ramps ended, for the plot's notes and the JSON.
fn ramps_note(replayed: bool) -> String {
    if replayed {
        format!(
            "ramps: the run's fixed rate lists, each ended by the rule (> {MAX_LOSS_PCT}% loss, plateau, or the list's end: capped) when redrawn"
        )
    } else {
        format!(
            "ramps: up until > {MAX_LOSS_PCT}% loss or a plateau of the offered rate, then bisected; filled dots probe, hollow dots refine"
        )
    }
}

/// Prints the table, the targets and the load caveat; writes the plot, its
/// points (.txt) and the report (.json) to bench/.
pub(super) fn write_report(
    curves: &[Curve],
    quick: bool,
    machine: &Machine,
    replayed: bool,
) -> Result<()> {
    let r = render(curves, quick, machine, replayed);
    print!("{}", r.printout);
    let plot = plot_path(quick)?;
    std::fs::write(&plot, &r.svg)?;
    std::fs::write(plot.with_extension("txt"), &r.points)?;
    std::fs::write(
        plot.with_extension("json"),
        serde_json::to_string_pretty(&r.json)?,
    )?;
    println!(
        "plot: {} (points: .txt, report: .json beside it)",
        plot.display()
    );
    Ok(())
}

/// bench/answered-vs-offered[-quick].svg, its folder made.
fn plot_path(quick: bool) -> Result<PathBuf> {
    let out_dir = root_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    Ok(out_dir.join(if quick {
        "answered-vs-offered-quick.svg"
    } else {
        "answered-vs-offered.svg"
    }))
}

/// The JSON report at `path`, parsed.
pub(super) fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::json::read_report;

    /// Redraws `input` and compares every output with what the unsplit
    /// bench.rs drew from it (testdata/README.md).
    /// `XDHCP_BLESS_REPORT=1` rewrites the expected files of `dir` (the
    /// input too, where it is its own expected report) after a deliberate
    /// change of wording or targets: review the diff.
    fn redraws_as_before(
        dir: &str,
        input: &str,
        svg: &str,
        points: &str,
        json: &str,
        stdout: &str,
    ) {
        let r = read_report(&serde_json::from_str(input).unwrap()).unwrap();
        let drawn = render(&r.curves, r.quick, &r.machine, r.replayed);
        if std::env::var_os("XDHCP_BLESS_REPORT").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/bench/testdata")
                .join(dir);
            std::fs::write(dir.join("report.svg"), &drawn.svg).unwrap();
            std::fs::write(dir.join("report.txt"), &drawn.points).unwrap();
            let drawn_json = serde_json::to_string_pretty(&drawn.json).unwrap();
            let name = if input == json {
                "input.json"
            } else {
                "report.json"
            };
            std::fs::write(dir.join(name), drawn_json).unwrap();
            let tail = stdout.rsplit_once("plot: ").unwrap().1;
            std::fs::write(
                dir.join("stdout.txt"),
                format!("{}plot: {tail}", drawn.printout),
            )
            .unwrap();
            return;
        }
        assert_eq!(drawn.svg, svg);
        assert_eq!(drawn.points, points);
        assert_eq!(serde_json::to_string_pretty(&drawn.json).unwrap(), json);
        // Its last line is the plot's path, which write_report prints.
        let printed = stdout.rsplit_once("plot: ").unwrap().0;
        assert_eq!(drawn.printout, printed);
    }

    #[test]
    fn the_full_run_redraws_byte_for_byte() {
        let input = include_str!("testdata/full/input.json");
        redraws_as_before(
            "full",
            input,
            include_str!("testdata/full/report.svg"),
            include_str!("testdata/full/report.txt"),
            input,
            include_str!("testdata/full/stdout.txt"),
        );
    }

    #[test]
    fn a_quick_busy_replayed_run_redraws_byte_for_byte() {
        redraws_as_before(
            "variant",
            include_str!("testdata/variant/input.json"),
            include_str!("testdata/variant/report.svg"),
            include_str!("testdata/variant/report.txt"),
            include_str!("testdata/variant/report.json"),
            include_str!("testdata/variant/stdout.txt"),
        );
    }
}
