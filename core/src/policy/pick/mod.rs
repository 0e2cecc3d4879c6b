//! The request path's comparisons: how a mode's pick compares the
//! eligible peers on what its policy published in the zone and on what the
//! worker itself measured. A mode chooses one [`Comparison`] at
//! configuration; for every request the nginx module runs it
//! ([`Comparison::run`]) over nginx's peer list with its own [`Scan`] (the
//! eligibility checks, `tried` bits and locks are nginx's and stay in the
//! module), each comparison ([`Compare`]) compiled into its own loop.
//!
//! | comparison | file | compares | ties |
//! |---|---|---|---|
//! | [`Comparison::LeastPerShare`] | [`share`] | in flight per share, below each peer's in-flight limit ([`LeastPerShare`]) | smooth weighted round robin on the shares ([`SmoothTie`]), as nginx's least_conn |
//! | [`Comparison::LargestRemaining`] | [`largest`] | the remaining allocation `L = target − sent` ([`Argmax`]) | at random |
//! | [`Comparison::LeastTime`] | [`time`] | (in flight + 1) × response time ÷ `weight=`, or ÷ share below the in-flight limit ([`LeastTime`]) | smooth weighted round robin on the same weights |
//! | [`Comparison::RandomTwo`] | [`time`] | the same, of two peers drawn at random ([`RandomTwo`]) | at random |
//! | [`Comparison::LeastConn`] | [`share`] | in flight per `weight=`, no limit: nginx's least_conn, for observe mode ([`LeastWeight`]) | smooth weighted round robin on `weight=` |
//!
//! The random ones draw from the worker's generator ([`worker_rng`]), kept
//! between picks. The per-share ones read the shares and limits from the
//! worker's copy of what the collector published ([`share_table`]), and
//! only the in-flight counts from the zone.
//!
//! How many peers a comparison sees is apart from what it compares: every
//! eligible peer ([`Scan::scan`]), or, for large upstreams and the
//! comparisons per share ([`Comparison::per_share`]), `d` drawn at random in
//! proportion to their shares ([`Scan::draw`], [`draw`]: `choices=`).

pub mod draw;
mod largest;
mod share;
pub mod share_table;
mod time;
mod worker_rng;

pub use draw::{Alias, Choices};
pub use largest::{Argmax, Largest};
pub use share::{LeastPerShare, LeastShare, LeastWeight, SmoothTie};
pub use share_table::{ShareLimit, ShareTable, Shares};
pub use time::{LeastTime, RandomTwo, UNSEEN_PENALTY_MS};
pub use worker_rng::with_worker_rng;

use std::cell::Cell;

use super::latency::{PeakEwma, PRIOR_MS};
use super::slow_start::Ramp;
use crate::zone::UpstreamZone;

/// `observe=`: the upstream's counters, shares and limits are computed
/// and shown, but the pick is one of nginx's own, so an operator can
/// compare before letting dwepc steer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observe {
    /// nginx's least_conn on `weight=` (over every worker's requests in
    /// flight, as with a `zone`).
    LeastConn,
    /// nginx's weighted round robin.
    RoundRobin,
}

impl Observe {
    /// Every option with its name as written (`on` is `least_conn`).
    pub const ALL: [(Observe, &'static str); 2] = [
        (Observe::LeastConn, "least_conn"),
        (Observe::RoundRobin, "round_robin"),
    ];

    /// Name as written in the configuration.
    pub fn name(self) -> &'static str {
        Observe::ALL[self as usize].1
    }

    /// The option named `s` (`on`: least_conn).
    pub fn named(s: &str) -> Option<Observe> {
        match s {
            "on" => Some(Observe::LeastConn),
            _ => Observe::ALL.iter().find(|(_, n)| *n == s).map(|(o, _)| *o),
        }
    }
}

/// `pick=` of the shares mode: what it compares per share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Least `in-flight / share` (nginx's least_conn with the shares as
    /// weights).
    LeastConn,
    /// Least `(in-flight + 1) / share` (shortest expected delay): lower
    /// latency with light traffic, less even utilisation.
    ExpectedDelay,
    /// Least `(in-flight + 1) × response time / share`: the shares from
    /// counters as the prior, each worker's response times as the fast
    /// correction (they carry the load other frontends put on a server).
    LeastTime,
}

impl Pick {
    /// Every option with its name as written.
    pub const ALL: [(Pick, &'static str); 3] = [
        (Pick::LeastConn, "least_conn"),
        (Pick::ExpectedDelay, "expected_delay"),
        (Pick::LeastTime, "least_time"),
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
    /// The least (in-flight + 1) × response time ÷ weight, from this
    /// worker's estimates: the configured `weight=` (NGINX Plus's
    /// `least_time`), or (`per_share`) the mode's share, below the
    /// in-flight limit (counters set the prior, response times correct
    /// it).
    LeastTime { per_share: bool },
    /// The same cost on `weight=`, of two peers drawn at random (NGINX
    /// Plus's `random two least_time`, Linkerd's power of two choices).
    RandomTwo,
    /// The least in flight per `weight=`, no in-flight limit: nginx's
    /// least_conn, which observe mode picks with.
    LeastConn,
}

impl Comparison {
    /// True if the comparison reads values the collector publishes (so
    /// that without usable counters the pick is [`Comparison::without_counters`]);
    /// false if it needs only what the request path itself measures.
    pub fn needs_counters(self) -> bool {
        !matches!(
            self,
            Comparison::LeastTime { per_share: false }
                | Comparison::RandomTwo
                | Comparison::LeastConn
        )
    }

    /// True if the comparison reads each peer's published share and
    /// in-flight limit (from the worker's [`ShareTable`]); only these may
    /// be offered peers drawn at random in proportion to their shares
    /// instead of every eligible peer (`choices=`, which only the shares
    /// mode takes).
    pub fn per_share(self) -> bool {
        matches!(
            self,
            Comparison::LeastPerShare { .. } | Comparison::LeastTime { per_share: true }
        )
    }

    /// How many peers a pick over a list of `n` draws under `choices`
    /// (`None`: every eligible peer): [`Choices::drawn`] for a comparison
    /// [`Comparison::per_share`].
    #[inline]
    pub fn drawn(self, choices: Choices, n: usize) -> Option<usize> {
        choices.drawn(n).filter(|_| self.per_share())
    }

    /// True if the comparison reads the worker's response-time estimates
    /// (so that the end of every request updates them).
    pub fn uses_latency(self) -> bool {
        matches!(self, Comparison::LeastTime { .. } | Comparison::RandomTwo)
    }

    /// What the pick runs while counters are not usable: the comparison
    /// itself if it needs none; least_time on `weight=` for one that also
    /// reads response times; `None` (nginx's round robin) otherwise.
    pub fn without_counters(self) -> Option<Comparison> {
        match self {
            c if !c.needs_counters() => Some(c),
            Comparison::LeastTime { .. } => Some(Comparison::LeastTime { per_share: false }),
            _ => None,
        }
    }

    /// What the pick runs now: itself with usable counters, else
    /// [`Comparison::without_counters`].
    #[inline]
    pub fn now(self, counters_usable: bool) -> Option<Comparison> {
        if counters_usable {
            Some(self)
        } else {
            self.without_counters()
        }
    }
}

/// What a worker itself knows of each slot, besides the zone: its
/// response-time estimate, its configured `weight=` and its copy of the
/// published share and limit.
#[derive(Clone, Copy, Debug)]
pub struct Local<'a> {
    pub latency: &'a [Cell<PeakEwma>],
    pub weight: &'a [u32],
    /// The shares and limits as last published ([`ShareTable::refresh`]
    /// before the pick; the default, none, for picks that read none: not
    /// [`Comparison::per_share`]).
    pub shares: Shares<'a>,
    /// The time of the pick, ms (the one clock).
    pub now_ms: u64,
    /// The estimates' time constant, ms.
    pub tau_ms: f64,
    /// The upstream's `slow_start=`, ms (0: off).
    pub slow_start_ms: u64,
}

impl Local<'_> {
    /// Slot `slot`'s response time now (decaying toward [`PRIOR_MS`]
    /// while it answers nothing; `None` before any answer, or before any
    /// since `since_ms`, when its slow start began).
    #[inline(always)]
    fn latency(&self, slot: usize, since_ms: u64) -> Option<f64> {
        self.latency
            .get(slot)
            .map(Cell::get)
            .filter(|e| e.observed() && e.observed_at() >= since_ms)
            .map(|e| e.read(self.now_ms, self.tau_ms, PRIOR_MS))
    }

    /// Slow start at the pick's time.
    #[inline]
    pub(crate) fn ramp(&self) -> Ramp {
        Ramp {
            now_ms: self.now_ms,
            slow_start_ms: self.slow_start_ms,
        }
    }

    /// Slot `slot`'s configured weight (at least 1).
    #[inline]
    fn weight(&self, slot: usize) -> u32 {
        self.weight.get(slot).copied().unwrap_or(1).max(1)
    }
}

impl Comparison {
    /// Runs `scan` with a fresh comparison of this kind, over every
    /// eligible peer or (`drawn`: `Some(d)`, for a comparison
    /// [`Comparison::per_share`]) over `d` drawn: the one dispatch of a pick,
    /// so that each comparison's loop over the peers is compiled for it
    /// alone.
    #[inline(always)]
    pub fn run<S: Scan>(self, scan: S, local: Local<'_>, drawn: Option<usize>) -> S::Out {
        let drawn = drawn.filter(|_| self.per_share());
        match self {
            Comparison::LargestRemaining => scan.scan(Largest::new()),
            Comparison::LeastPerShare { plus_one: false } => {
                over(scan, LeastPerShare::new(LeastShare::new(), local), drawn)
            }
            Comparison::LeastPerShare { plus_one: true } => over(
                scan,
                LeastPerShare::new(LeastShare::expected_delay(), local),
                drawn,
            ),
            Comparison::LeastTime { per_share } => {
                over(scan, LeastTime::new(local, per_share), drawn)
            }
            Comparison::RandomTwo => scan.scan(RandomTwo::new(local)),
            Comparison::LeastConn => scan.scan(LeastWeight::new(local)),
        }
    }
}

/// `c` over every eligible peer of `scan`, or over `d` drawn.
#[inline(always)]
fn over<S: Scan, C: Compare<S::Peer>>(scan: S, c: C, drawn: Option<usize>) -> S::Out {
    match drawn {
        Some(d) => scan.draw(c, d),
        None => scan.scan(c),
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

    /// Offers `d` eligible peers that `c` [`Compare::accepts`], drawn at
    /// random in proportion to their shares ([`draw::draw`] over the
    /// list's [`Alias`] table), to `c`, with no tie pass (the first drawn
    /// of the tied wins); with none drawn, or none taken, goes on with
    /// [`Scan::scan`].
    fn draw<C: Compare<Self::Peer>>(self, c: C, d: usize) -> Self::Out;
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

    /// Whether the comparison would count the peer in `slot` (below its
    /// in-flight limit as slow start has it): what a draw checks before
    /// it spends a choice on the peer.
    fn accepts(&self, _slot: usize, _zone: UpstreamZone<'_>) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::share_weight;

    #[test]
    fn comparisons_read_what_their_mode_published() {
        let words = crate::zone::test_words(3);
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
        assert_ne!(worker_rng::WORKER_RNG.with(Cell::get), 0);
        // shares: the least in flight per share, a full peer skipped; the
        // comparison keeps the caller's handle of the best
        z.apply_shares(&[0.5, 0.25, 0.25], &[1, 0, 0], u64::MAX, 0);
        z.count(0);
        let table = ShareTable::of(z);
        let local = Local {
            latency: &[],
            weight: &[],
            shares: table.shares(),
            now_ms: 0,
            tau_ms: 1.0,
            slow_start_ms: 0,
        };
        let mut p: LeastPerShare<&str> = LeastPerShare::new(LeastShare::new(), local);
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
            fn draw<C: Compare<usize>>(self, _c: C, _d: usize) -> &'static str {
                "drawn"
            }
        }
        assert_eq!(
            Comparison::LargestRemaining.run(Kind, local, None),
            "Largest"
        );
        assert_eq!(
            Comparison::LeastPerShare { plus_one: true }.run(Kind, local, None),
            "LeastPerShare"
        );
        let lt = Comparison::LeastTime { per_share: false };
        assert_eq!(lt.run(Kind, local, None), "LeastTime");
        assert_eq!(Comparison::RandomTwo.run(Kind, local, None), "RandomTwo");
        // draws: only the comparisons per share; the others scan
        let per_share = Comparison::LeastTime { per_share: true };
        assert_eq!(per_share.run(Kind, local, Some(2)), "drawn");
        assert_eq!(
            Comparison::LeastPerShare { plus_one: false }.run(Kind, local, Some(2)),
            "drawn"
        );
        for c in [
            lt,
            Comparison::LargestRemaining,
            Comparison::RandomTwo,
            Comparison::LeastConn,
        ] {
            assert!(!c.per_share());
            assert_ne!(c.run(Kind, local, Some(2)), "drawn");
        }
        assert!(Comparison::RandomTwo.uses_latency() && !Comparison::RandomTwo.needs_counters());
        assert!(!lt.needs_counters() && lt.without_counters() == Some(lt));
        assert!(Comparison::LargestRemaining.needs_counters());
        assert_eq!(Comparison::LargestRemaining.without_counters(), None);
        let hybrid = Comparison::LeastTime { per_share: true };
        assert!(hybrid.needs_counters() && hybrid.uses_latency());
        assert_eq!(hybrid.without_counters(), Some(lt));
        // observe mode's least_conn: in flight per weight=, no limit,
        // whatever the shares say; ties on the weights
        assert_eq!(Comparison::LeastConn.run(Kind, local, None), "LeastWeight");
        let lc = Comparison::LeastConn;
        assert!(!lc.needs_counters() && !lc.uses_latency() && lc.now(false) == Some(lc));
        let weights = [1, 2, 1];
        let local = Local {
            weight: &weights,
            ..local
        };
        // in flight now: 1, 0, 0 (the share limit of 1 on peer 0 ignored)
        let mut p: LeastWeight<usize> = LeastWeight::new(local);
        for i in 0..3 {
            Compare::offer(&mut p, i, i, z);
        }
        assert_eq!(Compare::best(&p), Some(1));
        assert!(Compare::tied(&p) && !Compare::limited(&p));
        assert_eq!(p.tie_weight(1, z), Some(2));
        assert_eq!(p.tie_weight(2, z), Some(1));
        assert_eq!(p.tie_weight(0, z), None);
        // two in flight on the double-weight peer: it ties with one
        z.count(1);
        z.count(1);
        z.count(2);
        let mut p: LeastWeight<usize> = LeastWeight::new(local);
        for i in 0..3 {
            Compare::offer(&mut p, i, i, z);
        }
        assert_eq!(Compare::best(&p), Some(0));
        assert!(Compare::tied(&p));
        assert_eq!(p.tie_weight(1, z), Some(2));
    }
}
