//! The daemon's two clocks and the conversion between them.
//!
//! The kernel has no wall clock, so expiries in the lease map are
//! `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_coarse_ns` reads, at
//! jiffy resolution: a boot-time clock read costs the program ~50 ns in a
//! VM). Monotonic time stops while a host is suspended; the map's expiries
//! then run late by the suspension, which is harmless: the map follows
//! the store, and the control plane reclaims by wall clock.
//! Userspace converts a Unix expiry when it writes an entry, from a fresh
//! reading of both clocks: `mono = mono_now + (unix - unix_now)`, and
//! back the same way for what the kernel reports. A wall-clock step
//! between two conversions moves expiries by the step, exactly as it would
//! move the control plane's own Unix-time expiries.
//!
//! Tests move the wall clock forward with [`advance_for_tests`] (the model
//! test moves the kernel's view by the same amount by rewriting the map's
//! monotonic times, see `FastMaps::shift_clock_for_tests`).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

static OFFSET_NS: AtomicU64 = AtomicU64::new(0);

/// Moves this process's wall clock forward (tests only: the model-based
/// test's controllable clock).
pub fn advance_for_tests(secs: u64) {
    OFFSET_NS.fetch_add(secs * 1_000_000_000, Ordering::SeqCst);
}

pub fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        + OFFSET_NS.load(Ordering::Relaxed)
}

/// Unix seconds.
pub fn unix_now() -> u64 {
    unix_ns_now() / 1_000_000_000
}

pub fn mono_ns_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Unix seconds to `CLOCK_MONOTONIC` nanoseconds.
pub fn unix_to_mono_ns(unix_secs: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (mono + unix_secs.saturating_mul(1_000_000_000)).saturating_sub(unix)
}

/// `CLOCK_MONOTONIC` nanoseconds to Unix seconds, rounded down.
pub fn mono_ns_to_unix(mono_ns: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (unix + mono_ns).saturating_sub(mono) / 1_000_000_000
}

/// `CLOCK_MONOTONIC` nanoseconds to Unix seconds, rounded up: for an end
/// the kernel granted, so the store never holds it shorter than the client.
pub fn mono_ns_to_unix_ceil(mono_ns: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (unix + mono_ns)
        .saturating_sub(mono)
        .div_ceil(1_000_000_000)
}

/// `CLOCK_MONOTONIC` nanoseconds to Unix nanoseconds: for ordering a
/// kernel grant against an end the control plane recorded.
pub fn mono_ns_to_unix_ns(mono_ns: u64) -> u64 {
    let (mono, unix) = (mono_ns_now(), unix_ns_now());
    (unix + mono_ns).saturating_sub(mono)
}

/// Both clocks read once, for converting many kernel times alike.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    mono: u64,
    unix: u64,
}

impl Clocks {
    pub fn now() -> Clocks {
        Clocks {
            mono: mono_ns_now(),
            unix: unix_ns_now(),
        }
    }

    /// `mono_ns_to_unix_ceil` at the instant of the reading.
    pub fn mono_ns_to_unix_ceil(&self, mono_ns: u64) -> u64 {
        (self.unix + mono_ns)
            .saturating_sub(self.mono)
            .div_ceil(1_000_000_000)
    }

    /// `mono_ns_to_unix` at the instant of the reading.
    pub fn mono_ns_to_unix(&self, mono_ns: u64) -> u64 {
        (self.unix + mono_ns).saturating_sub(self.mono) / 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_round_trips_to_the_second() {
        let unix = unix_now() + 3600;
        let mono = unix_to_mono_ns(unix);
        assert!(mono > mono_ns_now() + 3590 * 1_000_000_000);
        let back = mono_ns_to_unix(mono);
        assert!(back.abs_diff(unix) <= 1, "{back} vs {unix}");
        let up = mono_ns_to_unix_ceil(mono);
        assert!(up >= back && up - back <= 1);
    }
}
