//! [`super::Comparison::LeastPerShare`], the shares mode's pick: the least
//! in flight per share, below each peer's in-flight limit, ties by smooth
//! weighted round robin on the shares ([`LeastPerShare`], on this worker's
//! [`ShareTable`]); and observe mode's least_conn on `weight=`
//! ([`LeastWeight`]). Both compare with [`LeastShare`], the arithmetic.

#[cfg(any(doc, test))]
use super::share_table::ShareTable;
use super::share_table::{ShareLimit, Shares, MOST_COMPARED};
use super::{Compare, Local};
use crate::policy::slow_start::Ramp;
#[cfg(doc)]
use crate::zone::share_weight;
use crate::zone::UpstreamZone;

/// The arithmetic of the per-share picks over the eligible peers: the lowest
/// `in-flight / share` (or `(in-flight + 1) / share` with
/// [`LeastShare::expected_delay`]), compared by integer cross-multiplication
/// of in-flight counts and share weights ([`share_weight`]) as
/// nginx's least_conn compares `conns × weight`; a peer at its in-flight
/// limit is skipped.
///
/// Feed every eligible peer to [`LeastShare::offer`]; if [`LeastShare::tied`]
/// afterwards, feed the eligible peers from [`LeastShare::best`] on to
/// [`LeastShare::is_tied`], the tied ones to a [`SmoothTie`] with the
/// caller's smooth-WRR state, and take [`SmoothTie::winner`].
#[derive(Clone, Copy, Debug)]
pub struct LeastShare<T = usize> {
    add: u64,
    best: Option<T>,
    best_conns: u64,
    best_weight: u64,
    ties: u32,
    /// Some eligible peer was skipped for being at its limit.
    pub limited: bool,
}

impl<T: Copy> LeastShare<T> {
    /// Least in-flight per share.
    pub fn new() -> LeastShare<T> {
        LeastShare {
            add: 0,
            best: None,
            // none yet: a ratio above every peer's (in flight as compared
            // is below 2³², a weight at least 1), so the first offered is
            // the best without a branch on `best`
            best_conns: 1 << 32,
            best_weight: 1,
            ties: 0,
            limited: false,
        }
    }

    /// Shortest expected delay: least (in-flight + 1) per share.
    pub fn expected_delay() -> LeastShare<T> {
        LeastShare {
            add: 1,
            ..LeastShare::new()
        }
    }

    /// In-flight count as compared: plus one for expected delay, or for a
    /// peer in slow start (`ramping`), of at most [`MOST_COMPARED`].
    #[inline(always)]
    fn conns(&self, conns: u64, ramping: bool) -> u64 {
        let add = if ramping { 1 } else { self.add };
        conns.min(MOST_COMPARED) + add
    }

    /// Offers peer `i` (the caller's handle of it: its position, or
    /// whatever it needs to take it) with `conns` in flight, share
    /// `weight` and in-flight `limit` (0 = none), as [`ShareLimit::of`]
    /// reads them: a weight of 0 compares as the smallest positive one
    /// (1 in 2³²). Returns true if it is the best so far.
    #[inline(always)]
    pub fn offer(&mut self, i: T, conns: u64, weight: u32, limit: u32) -> bool {
        let b = ShareLimit::of(weight, limit);
        if !b.admits(conns) {
            self.limited = true;
            return false;
        }
        self.offer_compared(i, self.conns(conns, false), b.share)
    }

    /// [`LeastShare::offer`] of a peer below its limit with `c` in flight
    /// as compared (below 2³²) and a weight of at least 1.
    #[inline(always)]
    fn offer_compared(&mut self, i: T, c: u64, weight: u32) -> bool {
        let w = weight as u64;
        // below 2⁶⁴: c < 2³², best_weight < 2³², best_conns ≤ 2³², w < 2³²
        let lhs = c * self.best_weight;
        let rhs = self.best_conns * w;
        if lhs > rhs {
            return false;
        }
        if lhs == rhs {
            self.ties += 1;
            return false;
        }
        self.best = Some(i);
        self.best_conns = c;
        self.best_weight = w;
        self.ties = 1;
        true
    }

    /// The best peer (the only one, or the first of the tied).
    pub fn best(&self) -> Option<T> {
        self.best
    }

    /// More than one peer has the best ratio.
    pub fn tied(&self) -> bool {
        self.ties > 1
    }

    /// Second pass over the eligible peers: is peer (`conns`, `weight`,
    /// `limit`) one of the tied best?
    #[inline(always)]
    pub fn is_tied(&self, conns: u64, weight: u32, limit: u32) -> bool {
        let b = ShareLimit::of(weight, limit);
        b.admits(conns) && self.is_tied_compared(self.conns(conns, false), b.share)
    }

    /// [`LeastShare::is_tied`] as [`LeastShare::offer_compared`] offers.
    #[inline(always)]
    fn is_tied_compared(&self, c: u64, weight: u32) -> bool {
        self.best.is_some() && c * self.best_weight == self.best_conns * weight as u64
    }
}

impl<T: Copy> Default for LeastShare<T> {
    fn default() -> Self {
        LeastShare::new()
    }
}

/// Smooth weighted round robin among tied peers, as nginx breaks
/// least_conn's ties: every tied peer's current weight grows by its share
/// weight, the largest wins and loses the sum.
#[derive(Clone, Copy, Debug)]
pub struct SmoothTie<T = usize> {
    best: Option<T>,
    best_current: i64,
    total: i64,
}

impl<T: Copy> Default for SmoothTie<T> {
    fn default() -> Self {
        SmoothTie {
            best: None,
            best_current: 0,
            total: 0,
        }
    }
}

impl<T: Copy> SmoothTie<T> {
    /// Offers tied peer `i` with share `weight` and its current weight
    /// `current` (the caller's per-peer state), returning the updated
    /// current weight.
    #[inline]
    pub fn offer(&mut self, i: T, weight: u32, current: i64) -> i64 {
        let w = weight as i64;
        let c = current.saturating_add(w);
        self.total = self.total.saturating_add(w);
        if self.best.is_none() || c > self.best_current {
            self.best = Some(i);
            self.best_current = c;
        }
        c
    }

    /// The tied peer leading so far (the one offered last, if it just
    /// took the lead).
    pub fn leader(&self) -> Option<T> {
        self.best
    }

    /// The winner and the current weight it must be set to.
    pub fn winner(&self) -> Option<(T, i64)> {
        self.best
            .map(|b| (b, self.best_current.saturating_sub(self.total)))
    }
}

/// [`super::Comparison::LeastPerShare`]: [`LeastShare`] over the shares
/// and limits of this worker's [`ShareTable`] and the zone's in-flight
/// counts, with slow start: a ramping peer's share and limit scaled, its
/// in-flight count plus one.
#[derive(Clone, Copy, Debug)]
pub struct LeastPerShare<'a, P> {
    inner: LeastShare<P>,
    shares: Shares<'a>,
    ramp: Ramp,
}

impl<'a, P: Copy> LeastPerShare<'a, P> {
    /// `inner` ([`LeastShare::new`] or [`LeastShare::expected_delay`]) on
    /// `local`'s share table and slow start.
    pub fn new(inner: LeastShare<P>, local: Local<'a>) -> LeastPerShare<'a, P> {
        LeastPerShare {
            inner,
            shares: local.shares,
            ramp: local.ramp(),
        }
    }

    /// What the comparison counts of the peer in `slot`: its in-flight
    /// count as compared and its share weight, or `None` at its in-flight
    /// limit (both as slow start has them while it ramps).
    // always inlined: called once per peer of a scan, where a call (and
    // its Option return) doubled the scan's time
    #[inline(always)]
    fn seen(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<(u64, u32)> {
        let v = self.shares.view(zone, slot, self.ramp)?;
        // a ramping peer counts one request more (expected delay)
        Some((self.inner.conns(v.in_flight, v.ramping.is_some()), v.share))
    }
}

impl<P: Copy> Compare<P> for LeastPerShare<'_, P> {
    #[inline(always)]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        match self.seen(slot, zone) {
            Some((c, share)) => {
                self.inner.offer_compared(p, c, share);
            }
            None => self.inner.limited = true,
        }
    }

    #[inline]
    fn best(&self) -> Option<P> {
        self.inner.best()
    }

    #[inline]
    fn tied(&self) -> bool {
        self.inner.tied()
    }

    #[inline(always)]
    fn tie_weight(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<u32> {
        let (c, share) = self.seen(slot, zone)?;
        self.inner.is_tied_compared(c, share).then_some(share)
    }

    #[inline]
    fn limited(&self) -> bool {
        self.inner.limited
    }

    #[inline]
    fn accepts(&self, slot: usize, zone: UpstreamZone<'_>) -> bool {
        self.seen(slot, zone).is_some()
    }
}

/// [`super::Comparison::LeastConn`], observe mode's pick: nginx's
/// least_conn — the least in flight (every worker's, from the zone) per
/// configured `weight=`, no in-flight limit, ties by smooth weighted round
/// robin on the weights.
#[derive(Clone, Copy, Debug)]
pub struct LeastWeight<'a, P> {
    inner: LeastShare<P>,
    local: Local<'a>,
}

impl<'a, P: Copy> LeastWeight<'a, P> {
    /// A fresh comparison with the worker's weights.
    pub fn new(local: Local<'a>) -> LeastWeight<'a, P> {
        LeastWeight {
            inner: LeastShare::new(),
            local,
        }
    }
}

impl<P: Copy> Compare<P> for LeastWeight<'_, P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        let w = self.local.weight(slot);
        LeastShare::offer(&mut self.inner, p, zone.in_flight(slot), w, 0);
    }

    #[inline]
    fn best(&self) -> Option<P> {
        self.inner.best()
    }

    #[inline]
    fn tied(&self) -> bool {
        self.inner.tied()
    }

    #[inline]
    fn tie_weight(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<u32> {
        let w = self.local.weight(slot);
        self.inner.is_tied(zone.in_flight(slot), w, 0).then_some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::share_weight;

    #[test]
    fn the_first_peer_offered_is_the_best_whatever_it_counts() {
        for add in [false, true] {
            for (conns, weight) in [(u64::MAX, 1), (u32::MAX as u64, 1), (0, 0), (7, u32::MAX)] {
                let mut c: LeastShare = if add {
                    LeastShare::expected_delay()
                } else {
                    LeastShare::new()
                };
                assert!(c.offer(3, conns, weight, 0), "{conns} {weight}");
                assert_eq!((c.best(), c.tied()), (Some(3), false));
                // the same again ties; one more in flight does not
                assert!(!c.offer(4, conns, weight, 0) && c.tied());
                assert!(!c.offer(5, conns.saturating_add(1), weight, 0));
                assert_eq!(c.best(), Some(3));
            }
        }
    }

    #[test]
    fn a_ramping_peer_counts_one_more_on_a_scaled_share_and_limit() {
        let words = crate::zone::test_words(2);
        let z = UpstreamZone::new(&words, 2).unwrap();
        z.init(1);
        z.apply_shares(&[0.5, 0.5], &[8, 8], u64::MAX, 0);
        let table = ShareTable::of(z);
        for _ in 0..3 {
            z.count(1);
        }
        let pick = |now| {
            let local = Local {
                latency: &[],
                weight: &[],
                shares: table.shares(),
                now_ms: now,
                tau_ms: 1.0,
                slow_start_ms: 10_000,
            };
            let mut c = LeastPerShare::new(LeastShare::new(), local);
            Compare::offer(&mut c, 0, 0, z);
            Compare::offer(&mut c, 1, 1, z);
            (Compare::best(&c), Compare::limited(&c))
        };
        // no ramp: the idle peer wins
        assert_eq!(pick(5_000), (Some(0), false));
        z.start_ramp(0, 5_000);
        // a tenth of the way: (0 + 1) / 0.05 against 3 / 0.5
        assert_eq!(pick(6_000), (Some(1), false));
        // nine tenths: 1 / 0.45 against 6
        assert_eq!(pick(14_000), (Some(0), false));
        // one in flight: at a tenth its limit is 1 (of 8)
        z.count(0);
        assert_eq!(pick(6_000), (Some(1), true));
        // the ramp is over: 1 / 0.5 against 3 / 0.5
        assert_eq!(pick(15_000), (Some(0), false));
    }

    #[test]
    fn least_share_pick_and_ties() {
        // in flight 2, 1, 3 with shares .5, .25, .25: ratios 4, 4, 12
        let conns = [2u64, 1, 3];
        let share = [0.5, 0.25, 0.25].map(share_weight);
        let mut p = LeastShare::new();
        for i in 0..3 {
            p.offer(i, conns[i], share[i], 0);
        }
        assert!(p.tied());
        let mut cur = [0i64; 3];
        let mut wins = [0u32; 3];
        for _ in 0..300 {
            let mut t = SmoothTie::default();
            for i in 0..3 {
                if p.is_tied(conns[i], share[i], 0) {
                    cur[i] = t.offer(i, share[i], cur[i]);
                }
            }
            let (w, c) = t.winner().unwrap();
            cur[w] = c;
            wins[w] += 1;
        }
        assert_eq!(wins, [200, 100, 0]);
        // a limit excludes; (conns+1)/share favours the big share when idle
        let mut p = LeastShare::new();
        p.offer(0, 4, 5, 4);
        p.offer(1, 9, 5, 0);
        assert!(p.limited && p.best() == Some(1));
        let mut p = LeastShare::expected_delay();
        p.offer(0, 0, 2, 0);
        p.offer(1, 1, 8, 0);
        assert_eq!(p.best(), Some(1));
        let mut p = LeastShare::new();
        assert!(p.offer(0, 0, 2, 0));
        p.offer(1, 1, 8, 0);
        assert_eq!(p.best(), Some(0));
        // a zero weight is the smallest share: it loses to any real share
        // unless it has nothing in flight and they have
        let half = share_weight(0.5);
        let mut p = LeastShare::new();
        p.offer(0, 1, 0, 0);
        p.offer(1, 5, half, 0);
        assert_eq!(p.best(), Some(1));
        let mut p = LeastShare::new();
        p.offer(0, 3, half, 0);
        p.offer(1, 0, 0, 0);
        assert_eq!(p.best(), Some(1));
        let mut p = LeastShare::new();
        p.offer(0, 0, half, 0);
        p.offer(1, 0, 0, 0);
        assert!(p.tied());
        // no overflow at the extremes: u32::MAX weights, huge counts
        let mut p = LeastShare::expected_delay();
        p.offer(0, u64::MAX, u32::MAX, 0);
        p.offer(1, u64::MAX - 1, u32::MAX, 0);
        assert!(p.tied());
    }
}
