//! The request path's comparisons: how a mode's pick compares the
//! eligible peers on what its policy published in the zone. A mode chooses
//! one [`Comparison`] at configuration; for every request the nginx module
//! runs it ([`Comparison::run`]) over nginx's peer list with its own
//! [`Scan`] (the eligibility checks, `tried` bits and locks are nginx's and
//! stay in the module), each comparison ([`Compare`]) compiled into its own
//! loop.
//!
//! * [`Comparison::LeastPerShare`]: the least in-flight per share
//!   ([`LeastShare`]), at most each peer's in-flight limit; ties broken by
//!   smooth weighted round robin on the shares ([`SmoothTie`]), as nginx's
//!   least_conn breaks its ties.
//! * [`Comparison::LargestRemaining`]: the largest remaining allocation
//!   `L = target − sent` ([`Argmax`]), ties at random (the worker's
//!   generator, kept between picks).

use std::cell::Cell;

use super::latency::PeakEwma;
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
    /// The least (in-flight + 1) × response time ÷ configured weight
    /// (NGINX Plus's `least_time`), from this worker's estimates.
    LeastTime,
}

impl Comparison {
    /// True if the comparison reads values the collector publishes (so
    /// that without usable counters the pick falls back to round robin);
    /// false if it needs only what the request path itself measures.
    pub fn needs_counters(self) -> bool {
        !matches!(self, Comparison::LeastTime)
    }

    /// True if the comparison reads the worker's response-time estimates
    /// (so that the end of every request updates them).
    pub fn uses_latency(self) -> bool {
        matches!(self, Comparison::LeastTime)
    }
}

/// What a worker itself knows of each slot, besides the zone: its
/// response-time estimate and its configured `weight=`.
#[derive(Clone, Copy, Debug)]
pub struct Local<'a> {
    pub latency: &'a [Cell<PeakEwma>],
    pub weight: &'a [u32],
    /// The time of the pick, ms (the one clock).
    pub now_ms: u64,
    /// The estimates' time constant, ms.
    pub tau_ms: f64,
}

impl Local<'_> {
    /// Slot `slot`'s response time now (decaying toward 0 while it
    /// answers nothing; `None` before any answer) and weight.
    #[inline]
    fn of(&self, slot: usize) -> (Option<f64>, u32) {
        let l = self
            .latency
            .get(slot)
            .map(Cell::get)
            .filter(PeakEwma::observed);
        (
            l.map(|e| e.read(self.now_ms, self.tau_ms, 0.0)),
            self.weight.get(slot).copied().unwrap_or(1).max(1),
        )
    }
}

impl Comparison {
    /// Runs `scan` with a fresh comparison of this kind: the one dispatch
    /// of a pick, so that each comparison's loop over the peers is
    /// compiled for it alone.
    #[inline(always)]
    pub fn run<S: Scan>(self, scan: S, local: Local<'_>) -> S::Out {
        match self {
            Comparison::LargestRemaining => scan.scan(Largest::new()),
            Comparison::LeastPerShare { plus_one: false } => scan.scan(LeastShare::new()),
            Comparison::LeastPerShare { plus_one: true } => scan.scan(LeastShare::expected_delay()),
            Comparison::LeastTime => scan.scan(LeastTime::new(local)),
        }
    }
}

/// What walks a peer list for a pick (the nginx module's scan under its
/// peer lock, the benchmark's loop), generic over the comparison.
pub trait Scan {
    /// The walker's handle of a peer: what it needs to take the winner
    /// (the comparison keeps the best one's, so the walk itself does not
    /// branch per peer).
    type Peer: Copy;
    type Out;
    /// Offers every eligible peer to `c`, in list order; then, if
    /// [`Compare::tied`], breaks the tie with a second pass from the best
    /// on ([`Compare::tie_weight`] of each, the tied ones offered to a
    /// [`SmoothTie`]).
    fn scan<C: Compare<Self::Peer>>(self, c: C) -> Self::Out;
}

/// One comparison of the eligible peers on what the zone holds.
pub trait Compare<P: Copy> {
    /// Offers peer `p`, counted in `slot` of `zone`.
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>);

    /// The best peer offered (the first of the tied), if any.
    fn best(&self) -> Option<P>;

    /// More than one peer has the best value, and a second pass breaks
    /// the tie.
    fn tied(&self) -> bool {
        false
    }

    /// Second pass: the share weight of the peer in `slot` if it is one of
    /// the tied best.
    fn tie_weight(&self, _slot: usize, _zone: UpstreamZone<'_>) -> Option<u32> {
        None
    }

    /// Some eligible peer was passed over for being at its in-flight limit
    /// (when none was picked: every peer is full).
    fn limited(&self) -> bool {
        false
    }
}

thread_local! {
    /// The state of this thread's generator between picks (0: not seeded
    /// yet); each nginx worker is one thread on the request path.
    static WORKER_RNG: Cell<u64> = const { Cell::new(0) };
}

/// [`Comparison::LargestRemaining`]: the largest remaining allocation
/// `L = target − sent`, random among equals, with the worker's generator
/// (taken when the comparison starts, given back when it is dropped).
pub struct Largest<P = usize> {
    am: Argmax<P>,
    rng: Rng,
}

impl<P: Copy> Largest<P> {
    /// A comparison with this worker's generator.
    #[inline]
    pub fn new() -> Largest<P> {
        let seed = WORKER_RNG.with(Cell::get);
        let seed = if seed == 0 {
            (std::process::id() as u64) << 32 ^ crate::clock::now_ms()
        } else {
            seed
        };
        Largest {
            am: Argmax::default(),
            rng: Rng::new(seed),
        }
    }
}

impl<P: Copy> Default for Largest<P> {
    fn default() -> Self {
        Largest::new()
    }
}

impl<P> Drop for Largest<P> {
    #[inline]
    fn drop(&mut self) {
        let next = self.rng.next_u64() | 1;
        WORKER_RNG.with(|c| c.set(next));
    }
}

impl<P: Copy> Compare<P> for Largest<P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        self.am.offer(p, zone.remaining(slot), &mut self.rng);
    }

    #[inline]
    fn best(&self) -> Option<P> {
        self.am.best()
    }
}

impl<P: Copy> Compare<P> for LeastShare<P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        let (in_flight, share, limit) = zone.pick_view(slot);
        LeastShare::offer(self, p, in_flight, share, limit);
    }

    #[inline]
    fn best(&self) -> Option<P> {
        LeastShare::best(self)
    }

    #[inline]
    fn tied(&self) -> bool {
        LeastShare::tied(self)
    }

    #[inline]
    fn tie_weight(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<u32> {
        let (in_flight, share, limit) = zone.pick_view(slot);
        self.is_tied(in_flight, share, limit).then_some(share)
    }

    #[inline]
    fn limited(&self) -> bool {
        self.limited
    }
}

/// [`Comparison::LeastTime`]: the least `(in-flight + 1) × response time ÷
/// weight`. A peer with no response time yet costs 0 while it has nothing
/// in flight (it is tried once) and [`UNSEEN_PENALTY_MS`] per request in
/// flight otherwise (as Finagle's peak-EWMA), so a new peer does not take
/// every request until its first answer.
pub struct LeastTime<'a, P = usize> {
    local: Local<'a>,
    best: Option<P>,
    best_cost: f64,
    ties: u32,
}

/// The response time a peer with requests in flight and none answered
/// counts with, ms.
pub const UNSEEN_PENALTY_MS: f64 = 60_000.0;

impl<'a, P: Copy> LeastTime<'a, P> {
    /// A comparison on `local`'s estimates.
    pub fn new(local: Local<'a>) -> LeastTime<'a, P> {
        LeastTime {
            local,
            best: None,
            best_cost: f64::INFINITY,
            ties: 0,
        }
    }

    /// Slot `slot`'s cost with `in_flight` requests, and its weight.
    #[inline]
    fn cost(&self, slot: usize, in_flight: u64) -> (f64, u32) {
        let (l, w) = self.local.of(slot);
        let l = match l {
            Some(l) => l,
            None if in_flight == 0 => 0.0,
            None => UNSEEN_PENALTY_MS,
        };
        ((in_flight as f64 + 1.0) * l / w as f64, w)
    }
}

impl<P: Copy> Compare<P> for LeastTime<'_, P> {
    #[inline]
    fn offer(&mut self, p: P, slot: usize, zone: UpstreamZone<'_>) {
        let (c, _) = self.cost(slot, zone.in_flight(slot));
        if self.best.is_none() || c < self.best_cost {
            self.best = Some(p);
            self.best_cost = c;
            self.ties = 1;
        } else if c == self.best_cost {
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

    #[inline]
    fn tie_weight(&self, slot: usize, zone: UpstreamZone<'_>) -> Option<u32> {
        let (c, w) = self.cost(slot, zone.in_flight(slot));
        (self.best.is_some() && c == self.best_cost).then_some(w)
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
            best_conns: 0,
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

    /// In-flight count as compared: plus one for expected delay, at most
    /// 2³² − 1 so that its product with a 32-bit weight fits 64 bits.
    #[inline]
    fn conns(&self, conns: u64) -> u64 {
        conns.saturating_add(self.add).min(u32::MAX as u64)
    }

    /// Offers peer `i` (the caller's handle of it: its position, or
    /// whatever it needs to take it) with `conns` in flight, share
    /// `weight` and in-flight `limit` (0 = none). Returns true if it is the
    /// best so far. A weight of 0 compares as the smallest positive one
    /// (1 in 2³²).
    #[inline]
    pub fn offer(&mut self, i: T, conns: u64, weight: u32, limit: u32) -> bool {
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
    pub fn best(&self) -> Option<T> {
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
    fn comparisons_read_what_their_mode_published() {
        use std::sync::atomic::AtomicU64;
        let words: Vec<AtomicU64> = (0..crate::zone::words(3))
            .map(|_| AtomicU64::new(0))
            .collect();
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        // paper: the largest remaining allocation
        z.apply(&[5.0, 9.0, 1.0], u64::MAX, 0);
        let mut p: Largest<usize> = Largest::new();
        for i in 0..3 {
            Compare::offer(&mut p, i, i, z);
        }
        assert_eq!(Compare::best(&p), Some(1));
        assert!(!Compare::tied(&p) && !Compare::limited(&p) && p.tie_weight(1, z).is_none());
        drop(p);
        assert_ne!(WORKER_RNG.with(Cell::get), 0);
        // shares: the least in flight per share, a full peer skipped; the
        // comparison keeps the caller's handle of the best
        z.apply_shares(&[0.5, 0.25, 0.25], &[1, 0, 0], u64::MAX, 0);
        z.count(0);
        let mut p: LeastShare<&str> = LeastShare::new();
        Compare::offer(&mut p, "first", 0, z);
        assert!(Compare::limited(&p) && Compare::best(&p).is_none());
        Compare::offer(&mut p, "second", 1, z);
        Compare::offer(&mut p, "third", 2, z);
        assert_eq!(Compare::best(&p), Some("second"));
        assert!(Compare::tied(&p));
        assert_eq!(p.tie_weight(2, z), Some(share_weight(0.25)));
        assert_eq!(p.tie_weight(0, z), None);
        // run: one dispatch, then the comparison of the kind asked for
        struct Kind;
        impl Scan for Kind {
            type Peer = usize;
            type Out = &'static str;
            fn scan<C: Compare<usize>>(self, _c: C) -> &'static str {
                let name = std::any::type_name::<C>();
                name.split('<')
                    .next()
                    .unwrap_or("")
                    .rsplit("::")
                    .next()
                    .unwrap_or("")
            }
        }
        let local = Local {
            latency: &[],
            weight: &[],
            now_ms: 0,
            tau_ms: 1.0,
        };
        assert_eq!(Comparison::LargestRemaining.run(Kind, local), "Largest");
        assert_eq!(
            Comparison::LeastPerShare { plus_one: true }.run(Kind, local),
            "LeastShare"
        );
        assert_eq!(Comparison::LeastTime.run(Kind, local), "LeastTime");
        assert!(!Comparison::LeastTime.needs_counters());
        assert!(Comparison::LargestRemaining.needs_counters());
    }

    #[test]
    fn least_time_weighs_response_times_in_flight_and_weights() {
        use super::super::latency::PeakEwma;
        use std::sync::atomic::AtomicU64;
        let words: Vec<AtomicU64> = (0..crate::zone::words(3))
            .map(|_| AtomicU64::new(0))
            .collect();
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        let lat: Vec<Cell<PeakEwma>> = (0..3).map(|_| Cell::new(PeakEwma::default())).collect();
        let weight = [1u32, 1, 2];
        let local = |now| Local {
            latency: &lat,
            weight: &weight,
            now_ms: now,
            tau_ms: 10_000.0,
        };
        let pick = |now| {
            let mut c: LeastTime<usize> = LeastTime::new(local(now));
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
        e.observe(100.0, 1_000, 10_000.0);
        lat[0].set(e);
        z.count(1);
        assert_eq!(pick(1_000), (Some(2), false));
        // all answered: (in-flight + 1) × time ÷ weight
        let mut e2 = PeakEwma::default();
        e2.observe(300.0, 1_000, 10_000.0);
        lat[2].set(e2); // 300 / 2 = 150 > 100
        let mut e1 = PeakEwma::default();
        e1.observe(40.0, 1_000, 10_000.0);
        lat[1].set(e1); // (1 + 1) × 40 = 80 < 100
        assert_eq!(pick(1_000), (Some(1), false));
        z.count(1); // (2 + 1) × 40 = 120: peer 0 wins
        assert_eq!(pick(1_000), (Some(0), false));
        // a minute without answers: every estimate decayed toward 0, the
        // peer with nothing in flight wins
        assert_eq!(pick(61_000).0, Some(0));
    }
}
