//! The only place that reads clocks. Lease timing uses `CLOCK_BOOTTIME` (DESIGN.md, lease rule 1):
//! it keeps counting through suspend and VM pauses, where std's `Instant` (`CLOCK_MONOTONIC`)
//! stops, so a resumed primary never believes a stale lease fresh. Wall-clock time is used only
//! for human-facing stamps (token expiry, history), never for safety.

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the boot-time clock, as a duration since boot. The simulation builds these from
/// its virtual clock, so everything downstream of the drivers is clock-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BootInstant(Duration);

impl BootInstant {
    pub const fn from_duration(since_boot: Duration) -> Self {
        BootInstant(since_boot)
    }
    pub fn as_duration(self) -> Duration {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0 + d)
    }
}
impl Sub<Duration> for BootInstant {
    type Output = BootInstant;
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(d))
    }
}

/// Reads `CLOCK_BOOTTIME`. Panics only if the kernel lacks it (Linux < 2.6.39).
#[allow(clippy::disallowed_methods)]
pub fn boot_now() -> BootInstant {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is available on every supported Linux kernel");
    BootInstant(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
}

/// Wall-clock milliseconds since the Unix epoch, for stamps shown to people and token expiry.
#[allow(clippy::disallowed_methods)]
pub fn wall_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps on tokio's timer; the drivers' only way to wait.
#[allow(clippy::disallowed_methods)]
pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}

/// `ms` since the epoch as RFC 3339 in UTC, as Patroni prints times.
pub fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time with its offset (e.g. `2026-11-25T20:00:00+00:00`) as ms since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
        .map_err(|e| format!("{text:?}: {e}; use e.g. 2026-11-25T20:00:00+00:00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_now();
        let b = boot_now();
        assert!(b >= a);
        assert_eq!(a.saturating_since(b + Duration::from_secs(1)), Duration::ZERO);
    }
}
