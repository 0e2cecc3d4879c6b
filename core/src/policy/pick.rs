//! The request path's comparisons: how a mode's pick compares the
//! eligible peers on what its policy published in the zone. A mode chooses
//! one [`Comparison`] at configuration; the nginx module runs a
//! [`Picker`] of it over nginx's peer list for every request (the
//! eligibility checks, `tried` bits and locks are nginx's and stay in the
//! module).
//!
//! * [`Comparison::LeastPerShare`]: the least in-flight per share
//!   ([`LeastShare`]), at most each peer's in-flight limit; ties broken by
//!   smooth weighted round robin on the shares ([`SmoothTie`]), as nginx's
//!   least_conn breaks its ties.
//! * [`Comparison::LargestRemaining`]: the largest remaining allocation
//!   `L = target − sent` ([`Argmax`]), ties at random (the worker's
//!   generator, kept between picks).

use std::cell::Cell;

use crate::rng::Rng;
#[cfg(test)]
use crate::zone::share_weight;
use crate::zone::UpstreamZone;

/// `pick=` of the shares mode: what "least in flight per share" counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Least `in-flight / share` (nginx's least_conn with the shares as
    /// weights).
    LeastConn,
    /// Least `(in-flight + 1) / share` (shortest expected delay): lower
    /// latency with light traffic, less even utilisation.
    ExpectedDelay,
}

impl Pick {
    /// Every option with its name as written.
    pub const ALL: [(Pick, &'static str); 2] = [
        (Pick::LeastConn, "least_conn"),
        (Pick::ExpectedDelay, "expected_delay"),
    ];

    /// Name as written in the configuration.
    pub fn name(self) -> &'static str {
        Pick::ALL[self as usize].1
    }

    /// The option named `s`.
    pub fn named(s: &str) -> Option<Pick> {
        Pick::ALL.iter().find(|(_, n)| *n == s).map(|(p, _)| *p)
    }
}

/// How a mode's pick compares peers, chosen once at configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// The largest remaining allocation, random among equals.
    LargestRemaining,
    /// The least in-flight per share (`plus_one`: (in-flight + 1) per
    /// share), below the in-flight limit.
    LeastPerShare { plus_one: bool },
}

/// One pick in progress: offer it every eligible peer, in list order.
pub enum Picker {
    Largest(Argmax, Rng),
    PerShare(LeastShare),
}

thread_local! {
    /// The state of this thread's generator between picks (0: not seeded
    /// yet); each nginx worker is one thread on the request path.
    static WORKER_RNG: Cell<u64> = const { Cell::new(0) };
}

impl Picker {
    /// A pick by `c`. Only [`Comparison::LargestRemaining`] draws from the
    /// worker's generator (taken here, given back when the pick is
    /// dropped).
    #[inline]
    pub fn new(c: Comparison) -> Picker {
        match c {
            Comparison::LargestRemaining => {
                let seed = WORKER_RNG.with(Cell::get);
                let seed = if seed == 0 {
                    (std::process::id() as u64) << 32 ^ crate::clock::now_ms()
                } else {
                    seed
                };
                Picker::Largest(Argmax::default(), Rng::new(seed))
            }
            Comparison::LeastPerShare { plus_one: false } => Picker::PerShare(LeastShare::new()),
            Comparison::LeastPerShare { plus_one: true } => {
                Picker::PerShare(LeastShare::expected_delay())
            }
        }
    }

    /// Offers the peer at list position `pos`, counted in `slot` of
    /// `zone`; true if it is the best so far.
    #[inline]
    pub fn offer(&mut self, pos: usize, slot: usize, zone: UpstreamZone<'_>) -> bool {
        match self {
            Picker::Largest(am, rng) => {
                let before = am.best();
                am.offer(pos, zone.remaining(slot), rng);
                am.best() != before
            }
            Picker::PerShare(ls) => {
                let (in_flight, share, limit) = zone.pick_view(slot);
                ls.offer(pos, in_flight, share, limit)
            }
        }
    }

    /// More than one peer has the best value and the tie is broken by a
    /// second pass ([`Picker::is_tied`] over the peers from the best on,
    /// each tied one offered to a [`SmoothTie`]).
    #[inline]
    pub fn tied(&self) -> bool {
        match self {
            Picker::Largest(..) => false,
            Picker::PerShare(ls) => ls.tied(),
        }
    }

    /// Second pass: is the peer in `slot` one of the tied best?
    #[inline]
    pub fn is_tied(&self, slot: usize, zone: UpstreamZone<'_>) -> bool {
        match self {
            Picker::Largest(..) => false,
            Picker::PerShare(ls) => {
                let (in_flight, share, limit) = zone.pick_view(slot);
                ls.is_tied(in_flight, share, limit)
            }
        }
    }

    /// Some eligible peer was passed over for being at its in-flight
    /// limit (when none was picked: every peer is full).
    #[inline]
    pub fn limited(&self) -> bool {
        match self {
            Picker::Largest(..) => false,
            Picker::PerShare(ls) => ls.limited,
        }
    }
}

impl Drop for Picker {
    #[inline]
    fn drop(&mut self) {
        if let Picker::Largest(_, rng) = self {
            let next = rng.next_u64() | 1;
            WORKER_RNG.with(|c| c.set(next));
        }
    }
}

/// The per-request pick of this mode over the eligible peers: the lowest
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
pub struct LeastShare {
    add: u64,
    best: Option<usize>,
    best_conns: u64,
    best_weight: u64,
    ties: u32,
    /// Some eligible peer was skipped for being at its limit.
    pub limited: bool,
}

impl LeastShare {
    /// Least in-flight per share.
    pub fn new() -> LeastShare {
        LeastShare {
            add: 0,
            best: None,
            best_conns: 0,
            best_weight: 1,
            ties: 0,
            limited: false,
        }
    }

    /// Shortest expected delay: least (in-flight + 1) per share.
    pub fn expected_delay() -> LeastShare {
        LeastShare {
            add: 1,
            ..LeastShare::new()
        }
    }

    /// In-flight count as compared: plus one for expected delay, at most
    /// 2³² − 1 so that its product with a 32-bit weight fits 64 bits.
    #[inline]
    fn conns(&self, conns: u64) -> u64 {
        conns.saturating_add(self.add).min(u32::MAX as u64)
    }

    /// Offers peer `i` with `conns` in flight, share `weight` and in-flight
    /// `limit` (0 = none). Returns true if it is the best so far. A weight
    /// of 0 compares as the smallest positive one (1 in 2³²).
    #[inline]
    pub fn offer(&mut self, i: usize, conns: u64, weight: u32, limit: u32) -> bool {
        if limit != 0 && conns >= limit as u64 {
            self.limited = true;
            return false;
        }
        let c = self.conns(conns);
        let w = weight.max(1) as u64;
        if self.best.is_some() {
            let lhs = c * self.best_weight;
            let rhs = self.best_conns * w;
            if lhs > rhs {
                return false;
            }
            if lhs == rhs {
                self.ties += 1;
                return false;
            }
        }
        self.best = Some(i);
        self.best_conns = c;
        self.best_weight = w;
        self.ties = 1;
        true
    }

    /// The best peer (the only one, or the first of the tied).
    pub fn best(&self) -> Option<usize> {
        self.best
    }

    /// More than one peer has the best ratio.
    pub fn tied(&self) -> bool {
        self.ties > 1
    }

    /// Second pass over the eligible peers: is peer (`conns`, `weight`,
    /// `limit`) one of the tied best?
    #[inline]
    pub fn is_tied(&self, conns: u64, weight: u32, limit: u32) -> bool {
        if self.best.is_none() || (limit != 0 && conns >= limit as u64) {
            return false;
        }
        self.conns(conns) * self.best_weight == self.best_conns * weight.max(1) as u64
    }
}

impl Default for LeastShare {
    fn default() -> Self {
        LeastShare::new()
    }
}

/// Smooth weighted round robin among tied peers, as nginx breaks
/// least_conn's ties: every tied peer's current weight grows by its share
/// weight, the largest wins and loses the sum.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmoothTie {
    best: Option<usize>,
    best_current: i64,
    total: i64,
}

impl SmoothTie {
    /// Offers tied peer `i` with share `weight` and its current weight
    /// `current` (the caller's per-peer state), returning the updated
    /// current weight.
    #[inline]
    pub fn offer(&mut self, i: usize, weight: u32, current: i64) -> i64 {
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
    pub fn leader(&self) -> Option<usize> {
        self.best
    }

    /// The winner and the current weight it must be set to.
    pub fn winner(&self) -> Option<(usize, i64)> {
        self.best
            .map(|b| (b, self.best_current.saturating_sub(self.total)))
    }
}

/// Running argmax of `L` with uniform random tie-breaking (reservoir
/// sampling over the tied candidates), used on the per-request path.
#[derive(Clone, Copy, Debug)]
pub struct Argmax {
    best: Option<usize>,
    value: f64,
    ties: u64,
}

impl Default for Argmax {
    fn default() -> Self {
        Argmax {
            best: None,
            value: f64::NEG_INFINITY,
            ties: 0,
        }
    }
}

impl Argmax {
    /// Offers candidate `i` with remaining allocation `l`; NaN counts as
    /// -infinity (the candidate can still win if it is the only one).
    #[inline]
    pub fn offer(&mut self, i: usize, l: f64, rng: &mut Rng) {
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
    pub fn best(&self) -> Option<usize> {
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

    #[test]
    fn pickers_compare_what_their_mode_published() {
        use std::sync::atomic::AtomicU64;
        let words: Vec<AtomicU64> = (0..crate::zone::words(3))
            .map(|_| AtomicU64::new(0))
            .collect();
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        // paper: the largest remaining allocation
        z.apply(&[5.0, 9.0, 1.0], u64::MAX, 0);
        let mut p = Picker::new(Comparison::LargestRemaining);
        let best: Vec<bool> = (0..3).map(|i| p.offer(i, i, z)).collect();
        assert_eq!(best, [true, true, false]);
        assert!(!p.tied() && !p.limited() && !p.is_tied(1, z));
        drop(p);
        assert_ne!(WORKER_RNG.with(Cell::get), 0);
        // shares: the least in flight per share, a full peer skipped
        z.apply_shares(&[0.5, 0.25, 0.25], &[1, 0, 0], u64::MAX, 0);
        z.count(0);
        let mut p = Picker::new(Comparison::LeastPerShare { plus_one: false });
        assert!(!p.offer(0, 0, z) && p.limited());
        assert!(p.offer(1, 1, z));
        assert!(!p.offer(2, 2, z) && p.tied() && p.is_tied(2, z));
    }
}
