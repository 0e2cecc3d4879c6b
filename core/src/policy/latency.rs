//! Response times as a worker sees them: a peak-EWMA per peer (the
//! estimator of Finagle and Linkerd, with a time base as NGINX Plus's
//! `least_time` averages over time rather than over requests).
//!
//! An observation above the estimate replaces it at once (a peer that
//! slows down is avoided from its first slow answer); one below it is
//! blended in with the weight of the time since the previous observation
//! (`1 − e^(−Δt/τ)`). Read at a later time, the estimate decays toward a
//! prior with the same time constant while the peer answers nothing, so a
//! peer that had one bad spell and was then avoided is tried again instead
//! of being starved by an estimate nothing refreshes.

/// Default time constant of the estimate, ms (Linkerd's decay is 10 s).
pub const DEFAULT_TAU_MS: f64 = 10_000.0;

/// One peer's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeakEwma {
    /// The estimate at `at_ms`, ms (0 with no observation yet).
    value_ms: f64,
    /// When it was last observed (0: never).
    at_ms: u64,
}

/// `e^(−x)` for `x ≥ 0`, 0 for huge or non-finite `x`.
fn decay(x: f64) -> f64 {
    if x.is_finite() && x < 700.0 {
        (-x.max(0.0)).exp()
    } else {
        0.0
    }
}

impl PeakEwma {
    /// Takes a response time of `rtt_ms` ending at `now_ms`, with time
    /// constant `tau_ms`. A non-finite or negative time is ignored.
    pub fn observe(&mut self, rtt_ms: f64, now_ms: u64, tau_ms: f64) {
        if !(rtt_ms.is_finite() && rtt_ms >= 0.0) {
            return;
        }
        if self.at_ms == 0 || rtt_ms > self.value_ms {
            self.value_ms = rtt_ms;
        } else {
            let keep = decay(now_ms.saturating_sub(self.at_ms) as f64 / tau_ms);
            self.value_ms = keep * self.value_ms + (1.0 - keep) * rtt_ms;
        }
        self.at_ms = now_ms.max(1);
    }

    /// The estimate at `now_ms`: decayed toward `prior_ms` for the time
    /// since the last observation; `prior_ms` itself before any.
    pub fn read(&self, now_ms: u64, tau_ms: f64, prior_ms: f64) -> f64 {
        if self.at_ms == 0 {
            return prior_ms;
        }
        let keep = decay(now_ms.saturating_sub(self.at_ms) as f64 / tau_ms);
        prior_ms + (self.value_ms - prior_ms) * keep
    }

    /// True once a response time was observed.
    pub fn observed(&self) -> bool {
        self.at_ms != 0
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
        e.observe(10.0, 1_000, TAU);
        assert_eq!(e.read(1_000, TAU, 0.0), 10.0);
        // slower: taken at once (the peak)
        e.observe(50.0, 1_010, TAU);
        assert_eq!(e.read(1_010, TAU, 0.0), 50.0);
        // faster, a tau later: weight 1 − 1/e
        e.observe(10.0, 11_010, TAU);
        let want = 50.0 / std::f64::consts::E + 10.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((e.read(11_010, TAU, 0.0) - want).abs() < 1e-9);
        // faster, at once: hardly moves
        let before = e.read(11_010, TAU, 0.0);
        e.observe(1.0, 11_011, TAU);
        assert!(e.read(11_011, TAU, 0.0) > before - 0.01);
        // garbage is ignored
        let before = e;
        e.observe(f64::NAN, 20_000, TAU);
        e.observe(-1.0, 20_000, TAU);
        assert_eq!(e, before);
    }

    #[test]
    fn an_estimate_nothing_refreshes_decays_to_the_prior() {
        let mut e = PeakEwma::default();
        e.observe(900.0, 1_000, TAU);
        let at = |t: u64| e.read(t, TAU, 20.0);
        assert!(at(11_000) < 900.0 && at(11_000) > 20.0);
        assert!((at(11_000) - (20.0 + 880.0 / std::f64::consts::E)).abs() < 1e-9);
        assert!((at(1_000_000) - 20.0).abs() < 1e-9);
        // and it never goes below a lower prior's side
        assert!(at(u64::MAX) >= 20.0);
    }
}
