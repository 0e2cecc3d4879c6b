//! Response times as a worker sees them: a peak-EWMA per peer (the
//! estimator of Finagle and Linkerd, with a time base as NGINX Plus's
//! `least_time` averages over time rather than over requests).
//!
//! The estimate decays toward a prior with time constant τ while the peer
//! answers nothing, so a peer that had one bad spell and was then avoided
//! is tried again instead of being starved by an estimate nothing
//! refreshes. An observation above the estimate as it reads now replaces
//! it at once (a peer that slows down is avoided from its first slow
//! answer); one below it is blended in with the weight of the time since
//! the previous observation (`1 − e^(−Δt/τ)`), so the estimate moves
//! toward it and never past it.

/// Default time constant of the estimate, ms (Linkerd's decay is 10 s).
pub const DEFAULT_TAU_MS: f64 = 10_000.0;

/// What the request path's estimates decay toward, ms: 0, so that a peer
/// left alone long enough is tried again whatever it answered last.
pub const PRIOR_MS: f64 = 0.0;

/// One peer's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeakEwma {
    /// The estimate at `at_ms`, ms (0 with no observation yet).
    value_ms: f64,
    /// When it was last observed (0: never).
    at_ms: u64,
}

/// `e^(−x)` for `x ≥ 0`, 0 for huge or non-finite `x`.
#[inline]
fn decay(x: f64) -> f64 {
    if x.is_finite() && x < 700.0 {
        (-x.max(0.0)).exp()
    } else {
        0.0
    }
}

impl PeakEwma {
    /// Takes a response time of `rtt_ms` ending at `now_ms`, with time
    /// constant `tau_ms` and decay toward `prior_ms` (those the estimate
    /// is read with). A non-finite or negative time is ignored.
    pub fn observe(&mut self, rtt_ms: f64, now_ms: u64, tau_ms: f64, prior_ms: f64) {
        if !(rtt_ms.is_finite() && rtt_ms >= 0.0) {
            return;
        }
        let current = self.read(now_ms, tau_ms, prior_ms);
        if self.at_ms == 0 || rtt_ms > current {
            self.value_ms = rtt_ms;
        } else {
            let keep = decay(now_ms.saturating_sub(self.at_ms) as f64 / tau_ms);
            self.value_ms = keep * current + (1.0 - keep) * rtt_ms;
        }
        self.at_ms = now_ms.max(1);
    }

    /// The estimate at `now_ms`: decayed toward `prior_ms` for the time
    /// since the last observation; `prior_ms` itself before any.
    #[inline(always)]
    pub fn read(&self, now_ms: u64, tau_ms: f64, prior_ms: f64) -> f64 {
        if self.at_ms == 0 {
            return prior_ms;
        }
        // × 1/τ: the division hoisted out of a scan's loop (τ is the same
        // for every peer)
        let keep = decay(now_ms.saturating_sub(self.at_ms) as f64 * (1.0 / tau_ms));
        prior_ms + (self.value_ms - prior_ms) * keep
    }

    /// True once a response time was observed.
    #[inline]
    pub fn observed(&self) -> bool {
        self.at_ms != 0
    }

    /// When a response time was last observed (0: never).
    #[inline]
    pub fn observed_at(&self) -> u64 {
        self.at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: f64 = DEFAULT_TAU_MS;

    #[test]
    fn a_slow_answer_counts_at_once_a_fast_one_by_the_time_since() {
        let mut e = PeakEwma::default();
        assert_eq!(e.read(5, TAU, 7.0), 7.0);
        e.observe(10.0, 1_000, TAU, 0.0);
        assert_eq!(e.read(1_000, TAU, 0.0), 10.0);
        // slower: taken at once (the peak)
        e.observe(50.0, 1_010, TAU, 0.0);
        assert_eq!(e.read(1_010, TAU, 0.0), 50.0);
        // faster than it reads a tau later (50 / e): the two blended, the
        // new one with weight 1 − 1/e
        let e1 = 1.0 / std::f64::consts::E;
        e.observe(10.0, 11_010, TAU, 0.0);
        let want = 50.0 * e1 * e1 + 10.0 * (1.0 - e1);
        assert!((e.read(11_010, TAU, 0.0) - want).abs() < 1e-9);
        // faster, at once: hardly moves
        let before = e.read(11_010, TAU, 0.0);
        e.observe(1.0, 11_011, TAU, 0.0);
        assert!(e.read(11_011, TAU, 0.0) > before - 0.01);
        // garbage is ignored
        let before = e;
        e.observe(f64::NAN, 20_000, TAU, 0.0);
        e.observe(-1.0, 20_000, TAU, 0.0);
        assert_eq!(e, before);
    }

    #[test]
    fn an_estimate_nothing_refreshes_decays_to_the_prior() {
        let mut e = PeakEwma::default();
        e.observe(900.0, 1_000, TAU, 20.0);
        let at = |t: u64| e.read(t, TAU, 20.0);
        assert!(at(11_000) < 900.0 && at(11_000) > 20.0);
        assert!((at(11_000) - (20.0 + 880.0 / std::f64::consts::E)).abs() < 1e-9);
        assert!((at(1_000_000) - 20.0).abs() < 1e-9);
        // and it never goes below a lower prior's side
        assert!(at(u64::MAX) >= 20.0);
    }

    #[test]
    fn an_answer_slower_than_the_decayed_estimate_counts_at_once() {
        // 2000 ms, then 1.5 s later it reads 2000 e^(−0.15) ≈ 1721: an
        // answer of 1800 is slower than that and replaces it, one of 1000
        // pulls it down and not above where it read
        let mut e = PeakEwma::default();
        e.observe(2_000.0, 1_000, TAU, 0.0);
        let now = e.read(2_500, TAU, 0.0);
        let mut slower = e;
        slower.observe(1_800.0, 2_500, TAU, 0.0);
        assert_eq!(slower.read(2_500, TAU, 0.0), 1_800.0);
        e.observe(1_000.0, 2_500, TAU, 0.0);
        let after = e.read(2_500, TAU, 0.0);
        assert!(after < now && after > 1_000.0, "{now} {after}");
    }
}
