//! The response-time picks: [`super::Comparison::LeastTime`] (every
//! eligible peer compared) and [`super::Comparison::RandomTwo`] (two drawn
//! at random), both on `(in-flight + 1) × response time ÷ weight` from the
//! worker's own estimates ([`Local`]); the weight is `weight=`, or for
//! least_time per share the mode's share from the worker's share table.

use super::worker_rng::WorkerRng;
#[cfg(test)]
use super::Shares;
use super::{Compare, Local};
use crate::policy::slow_start;
use crate::zone::UpstreamZone;

/// [`super::Comparison::LeastTime`]: the least `(in-flight + 1) × response
/// time ÷ weight`. A peer with no response time yet costs 0 while it has
/// nothing in flight (it is tried once) and [`UNSEEN_PENALTY_MS`] per
/// request in flight otherwise (as Finagle's peak-EWMA), so a new peer
/// does not take every request until its first answer. Per share, a peer
/// at its in-flight limit is skipped.
pub struct LeastTime<'a, P = usize> {
    local: Local<'a>,
    per_share: bool,
    best: Option<P>,
    /// The best cost as a fraction ([`Cost`]).
    best_num: f64,
    best_den: f64,
    ties: u32,
    limited: bool,
}

/// The response time a peer with requests in flight and none answered
/// counts with, ms.
pub const UNSEEN_PENALTY_MS: f64 = 60_000.0;

/// Slot `slot`'s cost `(in-flight + 1) × time ÷ weight` and its weight,
/// the weight being `weight=` or (`per_share`) its share; `None` at its
/// in-flight limit. A peer in slow start has its weight (and limit)
/// scaled, and no response time from before its ramp began.
#[inline(always)]
fn cost(
    local: &Local<'_>,
    slot: usize,
    zone: UpstreamZone<'_>,
    per_share: bool,
) -> Option<(f64, u32)> {
    cost_parts(local, slot, zone, per_share).map(|c| (c.num / c.den, c.tie))
}

/// A cost as a fraction, so that a scan compares by cross-multiplying
/// instead of dividing once per peer.
#[derive(Clone, Copy, Debug)]
struct Cost {
    /// `(in-flight + 1) × time`
    num: f64,
    /// the weight (positive; a ramping peer's is scaled down)
    den: f64,
    /// the weight ties are broken on
    tie: u32,
}

impl Cost {
    /// `self < other`, as `num ÷ den` compare (both `den` positive).
    #[inline(always)]
    fn below(self, num: f64, den: f64) -> bool {
        self.num * den < num * self.den
    }

    /// `self == other`, as `num ÷ den` compare.
    #[inline(always)]
    fn equals(self, num: f64, den: f64) -> bool {
        self.num * den == num * self.den
    }
}

/// [`cost`] as a [`Cost`].
// always inlined: called once per peer of a scan, where a call (and its
// Option return through memory) cost more than the arithmetic
#[inline(always)]
fn cost_parts(
    local: &Local<'_>,
    slot: usize,
    zone: UpstreamZone<'_>,
    per_share: bool,
) -> Option<Cost> {
    // in flight, the weight divided by (scaled while the peer ramps) and
    // the one ties are broken on, and the ramp
    let (in_flight, divisor, tie, ramp) = if per_share {
        let v = local.shares.view(zone, slot, local.ramp())?;
        (v.in_flight, v.share as f64, v.share, v.ramping)
    } else {
        let (w, ramp) = (local.weight(slot), local.ramp().at(zone, slot));
        let (divisor, tie) = match ramp {
            Some(r) => (slow_start::weight_f64(w, r.f), slow_start::weight(w, r.f)),
            None => (w as f64, w),
        };
        (zone.in_flight(slot), divisor, tie, ramp)
    };
    let since = ramp.map_or(0, |r| r.since_ms);
    let l = match local.latency(slot, since) {
        Some(l) => l,
        None if in_flight == 0 => 0.0,
        None => UNSEEN_PENALTY_MS,
    };
    Some(Cost {
        num: (in_flight as f64 + 1.0) * l,
        den: divisor,
        tie,
    })
}

impl<'a, P: Copy> LeastTime<'a, P> {
    /// A comparison on `local`'s estimates, per share or per `weight=`.
    pub fn new(local: Local<'a>, per_share: bool) -> LeastTime<'a, P> {
        LeastTime {
            local,
            per_share,
            best: None,
            best_num: f64::INFINITY,
            best_den: 1.0,
            ties: 0,
            limited: false,
        }
    }
}

impl<P: Copy> Compare<P> for LeastTime<'_, P> {
    #[inline(always)]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        let Some(c) = cost_parts(&self.local, slot, zone, self.per_share) else {
            self.limited = true;
            return;
        };
        if self.best.is_none() || c.below(self.best_num, self.best_den) {
            self.best = Some(p);
            (self.best_num, self.best_den) = (c.num, c.den);
            self.ties = 1;
        } else if c.equals(self.best_num, self.best_den) {
            self.ties += 1;
        }
    }

    #[inline]
    fn best(&self) -> Option<P> {
        self.best
    }

    #[inline]
    fn tied(&self) -> bool {
        self.ties > 1
    }

    #[inline(always)]
    fn tie_weight(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<u32> {
        let c = cost_parts(&self.local, slot, zone, self.per_share)?;
        (self.best.is_some() && c.equals(self.best_num, self.best_den)).then_some(c.tie)
    }

    #[inline]
    fn limited(&self) -> bool {
        self.limited
    }

    #[inline]
    fn accepts(&self, slot: usize, zone: UpstreamZone<'_>) -> bool {
        let shares = self.local.shares;
        !self.per_share || shares.view(zone, slot, self.local.ramp()).is_some()
    }
}

/// [`super::Comparison::RandomTwo`]: of two eligible peers drawn uniformly
/// at random, the one with the lesser [`LeastTime`] cost (NGINX Plus's
/// `random two least_time`, Linkerd's power of two choices over peak-EWMA).
/// Frontends that each send to their fastest peer at once pile onto it;
/// two random choices spread them while still avoiding the slow. The two
/// are drawn by reservoir sampling as the scan offers the eligible peers,
/// with the worker's generator; equal costs go either way at random.
pub struct RandomTwo<'a, P = usize> {
    local: Local<'a>,
    rng: WorkerRng,
    /// Eligible peers offered so far.
    seen: u64,
    /// The two drawn so far, with their costs.
    drawn: [Option<(P, f64)>; 2],
    /// Which one wins a tie (drawn once per pick).
    tie_to_second: bool,
}

impl<'a, P: Copy> RandomTwo<'a, P> {
    /// A comparison on `local`'s estimates, with this worker's generator.
    pub fn new(local: Local<'a>) -> RandomTwo<'a, P> {
        let mut rng = WorkerRng::take();
        let tie_to_second = rng.get().below(2) == 1;
        RandomTwo {
            local,
            rng,
            seen: 0,
            drawn: [None, None],
            tie_to_second,
        }
    }
}

impl<P: Copy> Compare<P> for RandomTwo<'_, P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        self.seen += 1;
        // the n-th peer is kept with probability 2/n, in place of either
        // of the two at random: every pair equally likely
        let at = match self.seen {
            1 => 0,
            2 => 1,
            n => match self.rng.get().below(n) {
                r @ 0..=1 => r as usize,
                _ => return,
            },
        };
        if let Some((c, _)) = cost(&self.local, slot, zone, false) {
            self.drawn[at] = Some((p, c));
        }
    }

    #[inline]
    fn best(&self) -> Option<P> {
        match self.drawn {
            [Some((a, ca)), Some((b, cb))] => {
                let second = cb < ca || (cb == ca && self.tie_to_second);
                Some(if second { b } else { a })
            }
            [one, _] => one.map(|(p, _)| p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn least_time_weighs_response_times_in_flight_and_weights() {
        use crate::policy::latency::PeakEwma;
        let words = crate::zone::test_words(3);
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        let lat: Vec<Cell<PeakEwma>> = (0..3).map(|_| Cell::new(PeakEwma::default())).collect();
        let weight = [1u32, 1, 2];
        let local = |now| Local {
            latency: &lat,
            weight: &weight,
            shares: Shares::default(),
            now_ms: now,
            tau_ms: 10_000.0,
            slow_start_ms: 0,
        };
        let pick = |now| {
            let mut c: LeastTime<usize> = LeastTime::new(local(now), false);
            for i in 0..3 {
                c.offer(i, i, z);
            }
            (c.best(), c.tied())
        };
        // nothing seen yet, nothing in flight: every peer costs 0, a tie
        assert_eq!(pick(1_000), (Some(0), true));
        // peer 0 answered in 100 ms; peer 1 has a request in flight and no
        // answer yet (penalised); peer 2 nothing: the untried idle peer
        let mut e = PeakEwma::default();
        e.observe(100.0, 1_000, 10_000.0, 0.0);
        lat[0].set(e);
        z.count(1);
        assert_eq!(pick(1_000), (Some(2), false));
        // all answered: (in-flight + 1) × time ÷ weight
        let mut e2 = PeakEwma::default();
        e2.observe(300.0, 1_000, 10_000.0, 0.0);
        lat[2].set(e2); // 300 / 2 = 150 > 100
        let mut e1 = PeakEwma::default();
        e1.observe(40.0, 1_000, 10_000.0, 0.0);
        lat[1].set(e1); // (1 + 1) × 40 = 80 < 100
        assert_eq!(pick(1_000), (Some(1), false));
        z.count(1); // (2 + 1) × 40 = 120: peer 0 wins
        assert_eq!(pick(1_000), (Some(0), false));
        // a minute without answers: every estimate decayed toward 0, the
        // peer with nothing in flight wins
        assert_eq!(pick(61_000).0, Some(0));
    }

    #[test]
    fn random_two_draws_every_pair_alike_and_takes_the_cheaper() {
        use crate::policy::latency::PeakEwma;
        let n = 5;
        let words = crate::zone::test_words(n);
        let z = UpstreamZone::new(&words, n).unwrap();
        z.init(1);
        // response times 10, 20, .., 50 ms: the cheaper of two drawn wins,
        // so peer i wins when drawn with a dearer one: (n − 1 − i) of the
        // 10 pairs; the dearest never wins
        let lat: Vec<Cell<PeakEwma>> = (0..n)
            .map(|i| {
                let mut e = PeakEwma::default();
                e.observe(10.0 * (i + 1) as f64, 1_000, 10_000.0, 0.0);
                Cell::new(e)
            })
            .collect();
        let weight = [1u32; 5];
        let local = Local {
            latency: &lat,
            weight: &weight,
            shares: Shares::default(),
            now_ms: 1_000,
            tau_ms: 10_000.0,
            slow_start_ms: 0,
        };
        let runs = 50_000;
        let mut wins = [0u32; 5];
        for _ in 0..runs {
            let mut c: RandomTwo<usize> = RandomTwo::new(local);
            for i in 0..n {
                c.offer(i, i, z);
            }
            assert!(!c.tied());
            wins[c.best().unwrap()] += 1;
        }
        for (i, w) in wins.iter().enumerate() {
            let want = runs as f64 * (n - 1 - i) as f64 / 10.0;
            assert!((*w as f64 - want).abs() < 0.02 * runs as f64, "{wins:?}");
        }
        // one eligible peer: it; none: none
        let mut c: RandomTwo<usize> = RandomTwo::new(local);
        assert_eq!(c.best(), None);
        c.offer(3, 3, z);
        assert_eq!(c.best(), Some(3));
        // two with equal costs (no answers, nothing in flight): either
        let mut firsts = 0;
        let unseen = [
            Cell::new(PeakEwma::default()),
            Cell::new(PeakEwma::default()),
        ];
        for _ in 0..1_000 {
            let mut c: RandomTwo<usize> = RandomTwo::new(Local {
                latency: &unseen,
                ..local
            });
            c.offer(0, 0, z);
            c.offer(1, 1, z);
            firsts += (c.best() == Some(0)) as u32;
        }
        assert!((400..=600).contains(&firsts), "{firsts}");
        // in flight counts: peer 0 (10 ms) with 4 in flight costs 50 ms,
        // more than peer 1's 20 ms
        let mut c: RandomTwo<usize> = RandomTwo::new(local);
        for _ in 0..4 {
            z.count(0);
        }
        c.offer(0, 0, z);
        c.offer(1, 1, z);
        assert_eq!(c.best(), Some(1));
    }
}
