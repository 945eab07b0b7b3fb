//! `[rate_limits]` and `[subnet.rate_limits]`: the XDP program's token
//! buckets as configured (`ratelimit` writes them to its maps).

use dhcp_common::rate::RateConf;
use serde::Deserialize;

use super::Config;

/// Defaults: both buckets off (0), so a server nobody tuned serves every
/// line at whatever rate it can; bursts apply once a rate is set.
pub const DEFAULT_BURST_MAC: u32 = 20;
pub const DEFAULT_BURST_LINE: u32 = 200;
/// Above this a bucket's interval is under 1 µs: no limit at all.
pub const MAX_PER_SEC: u32 = 1_000_000;
pub const MAX_BURST: u32 = 1_000_000;

/// `[rate_limits]` or `[subnet.rate_limits]`; unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Frames a second per client MAC (0 = no limit).
    pub mac_per_sec: Option<u32>,
    pub mac_burst: Option<u32>,
    /// Frames a second per subscriber line (0 = no limit).
    pub line_per_sec: Option<u32>,
    pub line_burst: Option<u32>,
}

impl RateLimits {
    /// These keys over `base`'s, key by key.
    pub fn over(&self, base: &RateLimits) -> RateLimits {
        RateLimits {
            mac_per_sec: self.mac_per_sec.or(base.mac_per_sec),
            mac_burst: self.mac_burst.or(base.mac_burst),
            line_per_sec: self.line_per_sec.or(base.line_per_sec),
            line_burst: self.line_burst.or(base.line_burst),
        }
    }

    /// What the XDP program gets.
    pub fn resolve(&self) -> RateConf {
        let (mac_interval_ns, mac_burst_ns) = RateConf::bucket(
            self.mac_per_sec.unwrap_or(0),
            self.mac_burst.unwrap_or(DEFAULT_BURST_MAC),
        );
        let (line_interval_ns, line_burst_ns) = RateConf::bucket(
            self.line_per_sec.unwrap_or(0),
            self.line_burst.unwrap_or(DEFAULT_BURST_LINE),
        );
        RateConf {
            mac_interval_ns,
            mac_burst_ns,
            line_interval_ns,
            line_burst_ns,
        }
    }

    /// Why these values are refused, if they are.
    pub fn check(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("mac_per_sec", self.mac_per_sec, MAX_PER_SEC),
            ("line_per_sec", self.line_per_sec, MAX_PER_SEC),
            ("mac_burst", self.mac_burst, MAX_BURST),
            ("line_burst", self.line_burst, MAX_BURST),
        ] {
            if v.is_some_and(|v| v > max) {
                return Err(format!("{name} {} is over {max}", v.unwrap()));
            }
        }
        for (name, v) in [
            ("mac_burst", self.mac_burst),
            ("line_burst", self.line_burst),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{name} 0 would drop every frame (turn the limit off with its _per_sec = 0)"
                ));
            }
        }
        Ok(())
    }
}

/// Checks the global table and every subnet's: Err((the table's header,
/// 0 for the global one, or the subnet's index; the reason)).
pub(super) fn check_rate_limits(config: &Config) -> Result<(), (Option<usize>, String)> {
    config
        .rate_limits
        .check()
        .map_err(|r| (None, format!("rate_limits: {r}")))?;
    for (i, s) in config.subnets.iter().enumerate() {
        if let Some(r) = &s.rate_limits {
            r.check()
                .map_err(|e| (Some(i), format!("subnet {} rate_limits: {e}", s.id)))?;
        }
    }
    Ok(())
}
