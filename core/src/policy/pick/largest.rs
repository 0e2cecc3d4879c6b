//! [`super::Comparison::LargestRemaining`], the paper's pick: the largest
//! remaining allocation `L = target − sent`, random among equals.

use super::worker_rng::WorkerRng;
use super::Compare;
use crate::rng::Rng;
use crate::zone::UpstreamZone;

/// [`super::Comparison::LargestRemaining`]: the largest remaining allocation
/// `L = target − sent`, random among equals, with the worker's generator
/// (taken when the comparison starts, given back when it is dropped).
pub struct Largest<P = usize> {
    am: Argmax<P>,
    rng: WorkerRng,
}

impl<P: Copy> Largest<P> {
    /// A comparison with this worker's generator.
    #[inline]
    pub fn new() -> Largest<P> {
        Largest {
            am: Argmax::default(),
            rng: WorkerRng::take(),
        }
    }
}

impl<P: Copy> Default for Largest<P> {
    fn default() -> Self {
        Largest::new()
    }
}

impl<P: Copy> Compare<P> for Largest<P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        self.am.offer(p, zone.remaining(slot), self.rng.get());
    }

    #[inline]
    fn best(&self) -> Option<P> {
        self.am.best()
    }
}

/// Running argmax of `L` with uniform random tie-breaking (reservoir
/// sampling over the tied candidates), used on the per-request path.
#[derive(Clone, Copy, Debug)]
pub struct Argmax<T = usize> {
    best: Option<T>,
    value: f64,
    ties: u64,
}

impl<T: Copy> Default for Argmax<T> {
    fn default() -> Self {
        Argmax {
            best: None,
            value: f64::NEG_INFINITY,
            ties: 0,
        }
    }
}

impl<T: Copy> Argmax<T> {
    /// Offers candidate `i` with remaining allocation `l`; NaN counts as
    /// -infinity (the candidate can still win if it is the only one).
    #[inline]
    pub fn offer(&mut self, i: T, l: f64, rng: &mut Rng) {
        let l = if l.is_nan() { f64::NEG_INFINITY } else { l };
        if self.best.is_none() || l > self.value {
            self.best = Some(i);
            self.value = l;
            self.ties = 1;
        } else if l == self.value {
            self.ties += 1;
            if rng.below(self.ties) == 0 {
                self.best = Some(i);
            }
        }
    }

    /// The winner, if any candidate was offered.
    pub fn best(&self) -> Option<T> {
        self.best
    }

    /// The winner's value.
    pub fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_are_uniform() {
        let mut rng = Rng::new(7);
        let mut hits = [0u32; 4];
        for _ in 0..40_000 {
            let mut am = Argmax::default();
            for i in 0..4 {
                am.offer(i, if i == 0 { 1.0 } else { 5.0 }, &mut rng);
            }
            hits[am.best().unwrap()] += 1;
        }
        assert_eq!(hits[0], 0);
        for h in &hits[1..] {
            assert!((*h as f64 - 13_333.0).abs() < 600.0, "{hits:?}");
        }
    }

    #[test]
    fn nan_candidate_loses_but_can_win_alone() {
        let mut rng = Rng::new(1);
        let mut am = Argmax::default();
        am.offer(0, f64::NAN, &mut rng);
        assert_eq!(am.best(), Some(0));
        am.offer(1, -1e300, &mut rng);
        assert_eq!(am.best(), Some(1));
    }
}
