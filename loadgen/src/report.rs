//! What a phase measured, and how it is printed (text, JSON, progress).

use super::*;

/// What the server said it did during a phase (its counters' deltas).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerDelta {
    pub fast_path_acks: u64,
    /// OFFERs the XDP program made (known clients' DISCOVERs).
    pub fast_path_offers: u64,
    pub control_plane_acks: u64,
    pub control_plane_naks: u64,
    pub control_plane_offers: u64,
    pub control_plane_received: u64,
    pub xdp_passed: u64,
    /// Dropped by the XDP program's rate limits.
    pub xdp_rate_limited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub engine: &'static str,
    /// The rate asked for (0 = as fast as the engine goes).
    pub target_per_s: u64,
    pub sent: u64,
    /// Replies that matched a request and passed every check.
    pub ok: u64,
    pub nak: u64,
    pub wrong: u64,
    pub duplicate: u64,
    pub stray: u64,
    pub late: u64,
    /// Requests with no reply (phases that expect one).
    pub lost: u64,
    pub send_secs: f64,
    pub offered_per_s: f64,
    pub answered_per_s: f64,
    pub loss_pct: f64,
    pub latency_us_p50: Option<f64>,
    pub latency_us_p99: Option<f64>,
    pub latency_us_p999: Option<f64>,
    #[serde(flatten)]
    pub extras: PhaseExtras,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerDelta>,
    /// The step's place in a ramp (--rates, --ramp-from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampStep>,
}

/// What only some phases measure (each absent from the JSON elsewhere).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseExtras {
    /// DORA: addresses handed to more than one client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_addresses: Option<u64>,
    /// DORA: ACKs from a server the client's REQUEST did not name, or of
    /// a second address for a client already acknowledged (several
    /// servers on one link must leave these at 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_acks: Option<u64>,
    /// DORA: OFFERs after the one a client answered (other servers').
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_offers: Option<u64>,
    /// Reconnect: requests sent again to clients still unanswered after
    /// `--timeout-ms` (real clients retransmit), not counted in `sent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Reconnect: seconds from the phase's start until the last client
    /// had its address back; none if some never did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_back_secs: Option<f64>,
}

/// A ramp step: its number (from 1), stage, and on the ramp's last step
/// how the ramp ended.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub step: u32,
    /// "probe" (raising the rate) or "refine" (bisecting at the knee).
    pub stage: &'static str,
    /// After a step beyond the loss threshold: the wait until the
    /// interface went quiet, before the next step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<RampEnd>,
}

/// How a ramp ended (`xdhcp_ramp::Outcome`).
#[derive(Debug, Clone, Serialize)]
pub struct RampEnd {
    /// "loss" (a measured knee), "plateau" (the generator's limit: a lower
    /// bound on the server) or "capped" (a limit came first: a bound, not
    /// a measurement).
    pub end: &'static str,
    /// Highest answered rate of a step within --max-loss.
    pub figure_per_s: Option<f64>,
    /// For "loss": offered rates of the last step within and the first
    /// beyond the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knee_offered_per_s: Option<[f64; 2]>,
    /// The targets of those two steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knee_target_per_s: Option<[u64; 2]>,
    pub steps: u32,
    pub summary: String,
}

impl RampEnd {
    pub fn of(o: &xdhcp_ramp::Outcome) -> RampEnd {
        RampEnd {
            end: o.end.name(),
            figure_per_s: o.figure,
            knee_offered_per_s: o.knee.map(|(a, b)| [a, b]),
            knee_target_per_s: o.knee_targets.map(|(a, b)| [a, b]),
            steps: o.steps,
            summary: o.describe(),
        }
    }
}

/// Latency histogram, same buckets as the XDP receiver's.
#[derive(Clone)]
pub struct Latency(pub Vec<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(vec![0; LATENCY_BUCKETS as usize])
    }
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.0[bucket_of(ns) as usize] += 1;
    }

    /// The bucket's upper edge at quantile `q`, in µs (an over-estimate of
    /// at most a quarter of the value).
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(bucket_floor_ns(b as u32 + 1) as f64 / 1000.0);
            }
        }
        None
    }
}

/// Raw counts of a phase, before rates.
#[derive(Default, Clone)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub nak: u64,
    pub wrong: u64,
    pub duplicate: u64,
    pub stray: u64,
    pub late: u64,
    pub send_secs: f64,
    pub latency: Latency,
    pub expects_reply: bool,
    pub extras: PhaseExtras,
}

impl Counts {
    pub fn report(&self, phase: Phase, engine: &'static str) -> PhaseReport {
        let answered = self.ok + self.nak + self.wrong;
        let lost = if self.expects_reply {
            self.sent.saturating_sub(answered)
        } else {
            0
        };
        let secs = self.send_secs.max(1e-9);
        PhaseReport {
            phase,
            engine,
            target_per_s: 0,
            sent: self.sent,
            ok: self.ok,
            nak: self.nak,
            wrong: self.wrong,
            duplicate: self.duplicate,
            stray: self.stray,
            late: self.late,
            lost,
            send_secs: self.send_secs,
            offered_per_s: self.sent as f64 / secs,
            answered_per_s: self.ok as f64 / secs,
            loss_pct: if self.expects_reply && self.sent > 0 {
                100.0 * (self.sent - self.ok.min(self.sent)) as f64 / self.sent as f64
            } else {
                0.0
            },
            latency_us_p50: self.latency.quantile_us(0.5),
            latency_us_p99: self.latency.quantile_us(0.99),
            latency_us_p999: self.latency.quantile_us(0.999),
            extras: self.extras.clone(),
            server: None,
            ramp: None,
        }
    }
}

pub(crate) fn fmt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v >= 1000.0 {
            format!("{:.1} ms", v / 1000.0)
        } else {
            format!("{v:.0} µs")
        }
    })
}

pub(crate) fn render_one(r: &PhaseReport) -> String {
    format!(
        "loadgen: {} ({}) sent {} ok {} in {:.2} s",
        r.phase.name(),
        r.engine,
        r.sent,
        r.ok,
        r.send_secs
    )
}

/// The end-of-run table.
pub fn render(reports: &[PhaseReport]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:<7} {:>10} {:>10} {:>10} {:>12} {:>12} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  answered by",
        "phase", "engine", "target/s", "sent", "ok", "offered/s", "answered/s", "loss", "nak", "wrong", "late",
        "p50", "p99", "p99.9"
    );
    for r in reports {
        let path = r.server.as_ref().map_or("-".to_string(), |s| {
            format!(
                "xdp {} ack {} offer / control plane {} ack {} nak {} offer",
                s.fast_path_acks,
                s.fast_path_offers,
                s.control_plane_acks,
                s.control_plane_naks,
                s.control_plane_offers
            )
        });
        let mut extra = String::new();
        if let Some(d) = r.extras.duplicate_addresses {
            extra = format!(
                "  (duplicate addresses: {d}, duplicate ACKs: {}, other servers' offers: {})",
                r.extras.duplicate_acks.unwrap_or(0),
                r.extras.other_offers.unwrap_or(0)
            );
        }
        if let Some(n) = r.extras.retries {
            extra += &match r.extras.all_back_secs {
                Some(t) => format!("  (all back in {t:.3} s, {n} retransmissions)"),
                None => format!("  (NOT all back; {n} retransmissions)"),
            };
        }
        let _ = writeln!(
            t,
            "{:<12} {:<7} {:>10} {:>10} {:>10} {:>12.0} {:>12.0} {:>6.2}% {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  {}{}",
            r.phase.name(),
            r.engine,
            if r.target_per_s == 0 { "max".to_string() } else { r.target_per_s.to_string() },
            r.sent,
            r.ok,
            r.offered_per_s,
            r.answered_per_s,
            r.loss_pct,
            r.nak,
            r.wrong,
            r.late,
            fmt_us(r.latency_us_p50),
            fmt_us(r.latency_us_p99),
            fmt_us(r.latency_us_p999),
            path,
            extra
        );
    }
    for r in reports {
        if let Some(e) = r.ramp.as_ref().and_then(|s| s.end.as_ref()) {
            let _ = writeln!(
                t,
                "ramp {}: {} steps, figure {}/s, ended: {}",
                r.phase.name(),
                e.steps,
                e.figure_per_s.map_or("-".into(), xdhcp_ramp::thousands),
                e.summary
            );
        }
    }
    t
}

/// A progress bar on stderr, hidden for `--json`.
pub fn progress_bar(total: u64, label: &str, json: bool) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
