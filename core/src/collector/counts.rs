//! Pairing request counts with sample periods.
//!
//! The request path keeps cumulative per-peer counters in the zone (one
//! atomic add each). Every worker's collector snapshots the counters its
//! policy pairs ([`crate::policy::Pairing`]) every tick into a
//! [`CountHistory`]; when a vSphere sample for the period `(t0, t1]`
//! arrives (late, and stamped by vSphere), the requests of that period are
//! `cum(t1) - cum(t0)`, with `cum` interpolated linearly between the
//! snapshots around each instant.

use std::collections::VecDeque;

use crate::policy::Pairing;
use crate::zone::UpstreamZone;

/// Snapshots of cumulative per-peer counters, oldest first.
#[derive(Clone, Debug)]
pub struct CountHistory {
    n: usize,
    retain_ms: u64,
    snaps: VecDeque<(u64, Vec<u64>)>,
}

impl CountHistory {
    /// History for `n` peers keeping `retain_ms` of snapshots.
    pub fn new(n: usize, retain_ms: u64) -> CountHistory {
        CountHistory {
            n,
            retain_ms,
            snaps: VecDeque::new(),
        }
    }

    /// Records the counters at time `t_ms`. Snapshots must come in time
    /// order; an earlier time than the newest one is ignored, as is a slice
    /// of the wrong length.
    pub fn record(&mut self, t_ms: u64, totals: &[u64]) {
        if totals.len() != self.n {
            return;
        }
        if let Some((last, _)) = self.snaps.back() {
            if t_ms <= *last {
                return;
            }
        }
        self.snaps.push_back((t_ms, totals.to_vec()));
        let keep_from = t_ms.saturating_sub(self.retain_ms);
        // keep one snapshot at or before keep_from so that instant stays covered
        while self.snaps.len() > 2 && self.snaps[1].0 <= keep_from {
            self.snaps.pop_front();
        }
    }

    /// Time of the oldest snapshot.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.snaps.front().map(|s| s.0)
    }

    /// Interpolated cumulative count of peer `i` at `t_ms`; `None` before
    /// the oldest snapshot; after the newest, the newest value.
    fn at(&self, i: usize, t_ms: u64) -> Option<f64> {
        let first = self.snaps.front()?;
        if t_ms < first.0 {
            return None;
        }
        let pos = self.snaps.partition_point(|s| s.0 <= t_ms);
        let (ta, a) = &self.snaps[pos - 1];
        match self.snaps.get(pos) {
            None => Some(a[i] as f64),
            Some((tb, b)) => {
                let f = (t_ms - ta) as f64 / (tb - ta) as f64;
                let (a, b) = (a[i] as f64, b[i] as f64);
                Some(a + (b - a).max(0.0) * f)
            }
        }
    }

    /// Requests per peer during `(t0_ms, t1_ms]`, or `None` if the history
    /// does not reach back to `t0_ms`.
    pub fn between(&self, t0_ms: u64, t1_ms: u64) -> Option<Vec<f64>> {
        if t1_ms < t0_ms {
            return None;
        }
        (0..self.n)
            .map(|i| Some((self.at(i, t1_ms)? - self.at(i, t0_ms)?).max(0.0)))
            .collect()
    }
}

/// The histories one upstream's policy pairs: requests sent, ended and
/// failed, each kept only if the policy asks for it.
#[derive(Clone, Debug)]
pub struct Counts {
    sent: Option<CountHistory>,
    done: Option<CountHistory>,
    failed: Option<CountHistory>,
}

/// Requests per peer in one period, as [`Counts::period`] pairs them.
pub struct PeriodCounts {
    pub sent: Option<Vec<f64>>,
    pub done: Option<Vec<f64>>,
    pub failed: Option<Vec<f64>>,
}

impl Counts {
    /// Histories of `n` peers for `pairing`, keeping `retain_ms`.
    pub fn new(pairing: Pairing, n: usize, retain_ms: u64) -> Counts {
        let history = |want: bool| want.then(|| CountHistory::new(n, retain_ms));
        Counts {
            sent: history(pairing.sent),
            done: history(pairing.done),
            failed: history(pairing.failed),
        }
    }

    /// Snapshots the zone's counters at `now_ms`.
    pub fn record(&mut self, now_ms: u64, zone: UpstreamZone<'_>) {
        if let Some(h) = &mut self.sent {
            h.record(now_ms, &zone.totals());
        }
        if let Some(h) = &mut self.done {
            h.record(now_ms, &zone.dones());
        }
        if let Some(h) = &mut self.failed {
            h.record(now_ms, &zone.all_failures());
        }
    }

    /// The requests of the period `(t0_ms, t1_ms]`.
    pub fn period(&self, t0_ms: u64, t1_ms: u64) -> PeriodCounts {
        let of = |h: &Option<CountHistory>| h.as_ref().and_then(|h| h.between(t0_ms, t1_ms));
        PeriodCounts {
            sent: of(&self.sent),
            done: of(&self.done),
            failed: of(&self.failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_on_snapshots_and_interpolated_between() {
        let mut h = CountHistory::new(2, 10_000);
        h.record(1000, &[0, 0]);
        h.record(2000, &[10, 4]);
        h.record(3000, &[30, 4]);
        assert_eq!(h.between(1000, 3000), Some(vec![30.0, 4.0]));
        assert_eq!(h.between(1500, 2500), Some(vec![15.0, 2.0]));
        assert_eq!(h.between(500, 2000), None);
        // after the newest snapshot: counts so far
        assert_eq!(h.between(2000, 9000), Some(vec![20.0, 0.0]));
    }

    #[test]
    fn retention_keeps_boundary_snapshot() {
        let mut h = CountHistory::new(1, 2000);
        for t in 0..10u64 {
            h.record(t * 1000, &[t * 10]);
        }
        // newest 9000, retain 2000 -> 7000 must still be answerable
        assert_eq!(h.between(7000, 9000), Some(vec![20.0]));
        assert!(h.oldest_ms().unwrap() <= 7000);
        assert_eq!(h.between(3000, 9000), None);
    }

    #[test]
    fn out_of_order_and_wrong_size_ignored() {
        let mut h = CountHistory::new(1, 5000);
        h.record(1000, &[1]);
        h.record(500, &[100]);
        h.record(2000, &[1, 2]);
        assert_eq!(h.between(1000, 1000), Some(vec![0.0]));
        assert_eq!(h.between(2000, 1000), None);
    }

    #[test]
    fn counter_reset_never_negative() {
        let mut h = CountHistory::new(1, 5000);
        h.record(1000, &[50]);
        h.record(2000, &[0]);
        assert_eq!(h.between(1000, 2000), Some(vec![0.0]));
    }
}
