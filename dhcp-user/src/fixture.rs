//! Katran-style fixtures for the XDP program: a frame in, the verdict and
//! the exact frame out expected, and which counters must move by how much.
//! Each fixture runs through `BPF_PROG_TEST_RUN`, no interface involved.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use dhcp_common::{stat, STAT_NAMES};

use crate::xdp::loader::{Fastpath, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX};

#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub frame_in: Vec<u8>,
    pub verdict: u32,
    /// The frame the program must leave; `None` means unchanged.
    pub frame_out: Option<Vec<u8>>,
    /// (stat index, delta) for every counter that must move; all others
    /// must stay put.
    pub counters: Vec<(u32, u64)>,
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn hexdump_diff(want: &[u8], got: &[u8]) -> String {
    let mut s = format!("length want {} got {}\n", want.len(), got.len());
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i), got.get(i));
        if w != g {
            let _ = writeln!(s, "  byte {i}: want {w:02x?} got {g:02x?}");
            if s.len() > 2000 {
                s.push_str("  ...\n");
                break;
            }
        }
    }
    s
}

impl Fixture {
    pub fn new(name: &str, frame_in: Vec<u8>, verdict: u32) -> Fixture {
        Fixture {
            name: name.to_string(),
            frame_in,
            verdict,
            frame_out: None,
            counters: Vec::new(),
        }
    }

    pub fn counts(mut self, index: u32, delta: u64) -> Fixture {
        self.counters.push((index, delta));
        self
    }

    /// Runs once and checks everything; the error lists every mismatch.
    pub fn check(&self, fastpath: &Fastpath) -> Result<()> {
        let before = fastpath.stats()?;
        let out = fastpath.test_run(&self.frame_in, 1)?;
        let delta = fastpath.stats()?.since(&before);
        let mut errors = String::new();
        if out.verdict != self.verdict {
            let _ = writeln!(
                errors,
                "verdict: want {} got {}",
                verdict_name(self.verdict),
                verdict_name(out.verdict)
            );
        }
        let want_frame = self.frame_out.as_deref().unwrap_or(&self.frame_in);
        if out.frame != want_frame {
            errors.push_str("frame out differs: ");
            errors.push_str(&hexdump_diff(want_frame, &out.frame));
        }
        for i in 0..stat::COUNT {
            let want = self
                .counters
                .iter()
                .filter(|(idx, _)| *idx == i)
                .map(|(_, d)| d)
                .sum::<u64>();
            if delta.get(i) != want {
                let _ = writeln!(
                    errors,
                    "counter {}: want +{want} got +{}",
                    STAT_NAMES[i as usize],
                    delta.get(i)
                );
            }
        }
        if !errors.is_empty() {
            bail!("fixture {:?}:\n{errors}", self.name);
        }
        Ok(())
    }
}

/// Runs every fixture and reports all failures at once.
pub fn check_all(fastpath: &Fastpath, fixtures: &[Fixture]) -> Result<()> {
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|f| f.check(fastpath).err().map(|e| format!("{e:#}")))
        .collect();
    if !failures.is_empty() {
        bail!(
            "{} of {} fixtures failed:\n{}",
            failures.len(),
            fixtures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
