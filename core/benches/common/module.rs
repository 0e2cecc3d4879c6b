//! The module's pick as the benchmarks run it: over a zone's words in
//! private memory, through the worker's slot map, the mode's comparison
//! ([`Comparison::run`]) and the tie pass, minus nginx's own peer checks.

use std::sync::atomic::AtomicU64;

use dwepc_core::policy::pick::draw::draw;
use dwepc_core::policy::pick::{with_worker_rng, Alias, ShareTable, Shares, SmoothTie};
use dwepc_core::policy::{Compare, Comparison, Local, Scan};
use dwepc_core::zone::slots::{ListPeer, SlotKind, SlotMap};
use dwepc_core::zone::{words, UpstreamZone};

use super::nginx::ZoneLocks;

/// A mode's pick over the zone's words, as the module's `get` does it
/// (minus nginx's own peer checks, which the nginx loops lack too): the
/// list's slot map checked, each peer's slot looked up, the mode's
/// comparison run over them ([`Comparison::run`]), the tie pass, counted.
pub struct BenchScan<'a> {
    pub zone: UpstreamZone<'a>,
    pub map: &'a SlotMap,
    pub n: usize,
    pub tie: &'a mut [i64],
    /// The alias table of the shares, for drawn choices.
    pub table: Option<&'a Alias>,
}

impl Scan for BenchScan<'_> {
    type Peer = usize;
    type Out = usize;

    #[inline(always)]
    fn scan<C: Compare<usize>>(self, mut c: C) -> usize {
        let (zone, map, n) = (self.zone, self.map, self.n);
        assert!(map.is_current(0) && map.complete());
        let slot_of = |i: usize| match map.offset() {
            Some(base) => base + i,
            None => map.slot(i).unwrap_or(usize::MAX),
        };
        // as the module: one loop per way of finding slots, a plain loop
        // in the pick (as the module's walk of nginx's list; an iterator
        // adapter here compiled to an out-of-line fold with the
        // comparison's state in memory)
        match map.offset() {
            Some(base) => {
                for i in 0..n {
                    c.offer(i, base + i, zone);
                }
            }
            None => {
                for i in 0..n {
                    c.offer(i, slot_of(i), zone);
                }
            }
        }
        let mut k = c.best().unwrap_or(0);
        if c.tied() {
            // as nginx: the tied are the first best and peers after it
            let mut t = SmoothTie::default();
            for i in k..n {
                if let Some(share) = c.tie_weight(slot_of(i), zone) {
                    self.tie[i] = t.offer(i, share, self.tie[i]);
                }
            }
            if let Some((w, cur)) = t.winner() {
                self.tie[w] = cur;
                k = w;
            }
        }
        zone.count(slot_of(k));
        k
    }

    #[inline(always)]
    fn draw<C: Compare<usize>>(self, mut c: C, d: usize) -> usize {
        let (zone, map) = (self.zone, self.map);
        let Some(table) = self.table else {
            return self.scan(c);
        };
        let slot_of = |i: usize| map.slot(i).unwrap_or(usize::MAX);
        // as the module, minus nginx's own peer checks
        let offer = |i: usize| {
            let slot = slot_of(i);
            let usable = c.accepts(slot, zone);
            if usable {
                c.offer(i, slot, zone);
            }
            usable
        };
        let got = with_worker_rng(|rng| draw(rng, table, d, offer));
        if got == 0 || c.best().is_none() {
            return self.scan(c);
        }
        let k = c.best().unwrap_or(0);
        zone.count(slot_of(k));
        k
    }
}

/// One pick of `how` over `n` peers, without response times (the
/// worker's copy of the shares checked first, as the module does).
pub fn pick_mode(
    zone: UpstreamZone<'_>,
    how: Comparison,
    map: &SlotMap,
    n: usize,
    tie: &mut [i64],
    shares: &mut ShareTable,
) -> usize {
    let local = Local {
        latency: &[],
        weight: &[],
        shares: share_table(how, shares, zone),
        now_ms: 0,
        tau_ms: 1.0,
        slow_start_ms: 0,
    };
    let scan = BenchScan {
        zone,
        map,
        n,
        tie,
        table: None,
    };
    how.run(scan, local, None)
}

/// The share table a pick of `how` reads, as the module's `get` has it:
/// the worker's copy refreshed for a comparison per share, none otherwise.
pub fn share_table<'t>(
    how: Comparison,
    shares: &'t mut ShareTable,
    zone: UpstreamZone<'_>,
) -> Shares<'t> {
    if !how.per_share() {
        return Shares::default();
    }
    shares.refresh(zone);
    shares.shares()
}

/// A slot map for `n` configured servers, as a worker builds it once.
pub fn slot_map(shared: UpstreamZone<'_>, n: usize) -> SlotMap {
    let names: Vec<String> = (0..n)
        .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
        .collect();
    let kinds: Vec<SlotKind> = names.iter().map(|a| SlotKind::fixed(a, a)).collect();
    let list: Vec<ListPeer<'_>> = names
        .iter()
        .map(|a| ListPeer {
            server: a,
            name: a,
            addr: None,
        })
        .collect();
    let mut map = SlotMap::default();
    map.rebuild(0, &list, &kinds, 0..n, Some(shared));
    map
}

/// A zone of `n` peers, initialised.
pub fn zone_words(n: usize) -> Vec<AtomicU64> {
    let words: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
    UpstreamZone::new(&words, n).unwrap().init(1);
    words
}

/// A zone of `n` peers with shares 1..5 (by position) and 0..12 requests
/// in flight each, as the shares and response-time picks see it.
pub fn shares_zone_words(n: usize) -> Vec<AtomicU64> {
    let words = zone_words(n);
    let sh = UpstreamZone::new(&words, n).unwrap();
    let wsum: f64 = (0..n).map(|i| 1.0 + (i % 5) as f64).sum();
    let shares: Vec<f64> = (0..n).map(|i| (1.0 + (i % 5) as f64) / wsum).collect();
    sh.apply_shares(&shares, &vec![0; n], u64::MAX, 0);
    for i in 0..n {
        for _ in 0..(i % 13) {
            sh.count(i);
        }
    }
    words
}

/// The shares mode's pick (`pick=least_conn`) over a zone's peers, with
/// what a worker keeps for it: the slot map, the tie weights and the share
/// table.
pub struct SharesPick<'a> {
    zone: UpstreamZone<'a>,
    map: SlotMap,
    tie: Vec<i64>,
    shares: ShareTable,
    /// The zone's epoch when the requests it ends were counted.
    epoch: u64,
}

impl<'a> SharesPick<'a> {
    /// Over every peer of `zone`.
    pub fn new(zone: UpstreamZone<'a>) -> SharesPick<'a> {
        SharesPick {
            zone,
            map: slot_map(zone, zone.len()),
            tie: vec![0; zone.len()],
            shares: ShareTable::default(),
            epoch: zone.epoch(),
        }
    }

    /// One pick.
    #[inline(always)]
    pub fn pick(&mut self) -> usize {
        let how = Comparison::LeastPerShare { plus_one: false };
        let n = self.zone.len();
        pick_mode(
            self.zone,
            how,
            &self.map,
            n,
            &mut self.tie,
            &mut self.shares,
        )
    }

    /// The end of a request on peer `j`.
    #[inline(always)]
    pub fn end(&self, j: usize) {
        if self.zone.in_flight(j) > 0 {
            self.zone.finish(j, self.epoch);
        }
    }

    /// One pick, then one request's end on the next peer.
    #[inline(always)]
    pub fn step(&mut self) -> usize {
        let k = self.pick();
        self.end((k + 1) % self.zone.len());
        k
    }

    /// [`SharesPick::step`] inside the locks of an upstream with a `zone`
    /// (the module's get and free run inside them, as least_conn's do).
    #[inline(always)]
    pub fn step_in(&mut self, locks: &ZoneLocks) -> usize {
        let k = locks.pick(|| self.pick());
        let j = (k + 1) % self.zone.len();
        locks.end(j, || self.end(j));
        k
    }
}
