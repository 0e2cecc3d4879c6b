//! Slow start (`slow_start=TIME`): a server that answers again after nginx
//! marked it failed (`max_fails`), or that `resolve` adds while the
//! upstream already serves traffic, ramps its weight up over `TIME`
//! instead of taking every new request while it has nothing in flight.
//!
//! While a peer ramps, at a fraction `f` of the way (0 at the start, 1 at
//! the end), the comparisons see it as:
//! - its share or `weight=` times `f` ([`weight`], [`weight_f64`]);
//! - its in-flight count plus one (the expected delay of one more
//!   request), so that an idle peer does not win every comparison while
//!   its weight is small;
//! - its in-flight limit times `f`, at least 1 ([`limit`]);
//! - with no response time of its own from before the ramp (the peer
//!   may be another server now): tried once, then waited for.
//!
//! Plain functions of numbers (and [`Ramp`], which reads the zone for
//! them), property-tested in
//! `core/tests/prop_slow_start.rs`. The start time lives in the peer's
//! zone word ([`crate::zone::UpstreamZone::ramp_since`]), shared by the
//! workers.

use crate::zone::UpstreamZone;

/// The request path's side of slow start: the pick's time and the
/// upstream's `slow_start=` (0: off, and no zone word is read).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ramp {
    pub now_ms: u64,
    pub slow_start_ms: u64,
}

/// A peer that ramps: how far (`0 ≤ f < 1`) and since when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramping {
    pub f: f64,
    pub since_ms: u64,
}

impl Ramp {
    /// Peer `slot` of `zone` if it ramps now.
    #[inline(always)]
    pub fn at(self, zone: UpstreamZone<'_>, slot: usize) -> Option<Ramping> {
        if self.slow_start_ms == 0 {
            return None;
        }
        let since_ms = zone.ramp_since(slot);
        factor(since_ms, self.now_ms, self.slow_start_ms).map(|f| Ramping { f, since_ms })
    }
}

/// How far a peer's ramp is at `now_ms`: `Some(f)` with `0 ≤ f < 1` while it
/// ramps (started at `since_ms`, 0 = never), `None` once done or with slow
/// start off (`slow_start_ms` 0).
#[inline]
pub fn factor(since_ms: u64, now_ms: u64, slow_start_ms: u64) -> Option<f64> {
    if slow_start_ms == 0 || since_ms == 0 {
        return None;
    }
    let elapsed = now_ms.saturating_sub(since_ms);
    (elapsed < slow_start_ms).then(|| elapsed as f64 / slow_start_ms as f64)
}

/// A share's weight (or any integer weight) at ramp fraction `f`: scaled,
/// at least 1.
#[inline]
pub fn weight(w: u32, f: f64) -> u32 {
    ((w as f64 * f).round() as u32).clamp(1, w.max(1))
}

/// A `weight=` at ramp fraction `f` for the response-time cost, which
/// divides by it: scaled, at least a thousandth of it.
#[inline]
pub fn weight_f64(w: u32, f: f64) -> f64 {
    w as f64 * f.max(MIN_FACTOR)
}

/// The smallest fraction a weight is divided by.
pub const MIN_FACTOR: f64 = 1e-3;

/// An in-flight limit at ramp fraction `f` (0 = no limit stays none):
/// scaled, rounded up, at least 1.
#[inline]
pub fn limit(limit: u32, f: f64) -> u32 {
    if limit == 0 {
        return 0;
    }
    ((limit as f64 * f).ceil() as u32).clamp(1, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_from_start_to_end() {
        assert_eq!(factor(0, 5_000, 10_000), None, "never started");
        assert_eq!(factor(1_000, 5_000, 0), None, "slow start off");
        assert_eq!(factor(1_000, 1_000, 10_000), Some(0.0));
        assert_eq!(factor(1_000, 6_000, 10_000), Some(0.5));
        assert_eq!(factor(1_000, 11_000, 10_000), None, "done");
        // a start stamped by another worker a little ahead of this clock
        assert_eq!(factor(2_000, 1_500, 10_000), Some(0.0));
        assert_eq!(weight(1000, 0.0), 1);
        assert_eq!(weight(1000, 0.25), 250);
        assert_eq!(weight(u32::MAX, 0.999_999_999_9), u32::MAX);
        assert_eq!((limit(0, 0.5), limit(8, 0.0), limit(8, 0.3)), (0, 1, 3));
        assert!(weight_f64(2, 0.0) > 0.0 && weight_f64(2, 0.5) == 1.0);
    }
}
