//! The program's per-CPU counters, summed.

use super::*;

/// Counters summed over every CPU, indexed like `dhcp_common::stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpStats(pub [u64; stat::COUNT as usize]);

impl Default for XdpStats {
    fn default() -> Self {
        XdpStats([0; stat::COUNT as usize])
    }
}

impl XdpStats {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// Counter-wise difference, for "what did this traffic do".
    pub fn since(&self, earlier: &XdpStats) -> XdpStats {
        let mut d = *self;
        for (a, b) in d.0.iter_mut().zip(earlier.0.iter()) {
            *a = a.wrapping_sub(*b);
        }
        d
    }

    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        STAT_NAMES.iter().copied().zip(self.0.iter().copied())
    }
}

impl std::fmt::Display for XdpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, v)) in self.named().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={v}")?;
        }
        Ok(())
    }
}

impl Fastpath {
    pub fn stats(&self) -> Result<XdpStats> {
        let map = self
            .ebpf
            .map(MAP_STATS)
            .ok_or_else(|| anyhow!("map {MAP_STATS} missing"))?;
        let array = PerCpuArray::<_, dhcp_common::Stats>::try_from(map)?;
        let mut out = XdpStats::default();
        for cpu in array.get(&0, 0)?.iter() {
            for (slot, v) in out.0.iter_mut().zip(cpu) {
                *slot += v;
            }
        }
        Ok(out)
    }
}
