//! The per-request pick, as the module does it on shared atomics, against
//! plain-Rust equivalents of nginx's smooth weighted round robin and
//! least_conn loops over the same number of peers, in the same run.
//!
//!     cargo bench -p dwepc-core --bench pick
//!
//! `dwepc` is the shares mode with `pick=least_conn` as the module runs it
//! (the slot map, the mode's comparison run over the peers: least
//! in-flight per share, in-flight from the zone's sent/done words, limit
//! check; the smooth-WRR tie pass); `dwepc_least_time` the default
//! (`pick=least_time`: (in flight + 1) × the worker's response-time
//! estimate ÷ share, an estimate read per peer) and `least_time` the same
//! on `weight=` (`mode=least_time`);
//! `least_conn` is nginx's loop with its tie pass and per-worker counts
//! (an upstream without `zone`); `least_conn_shared` the same loop on
//! counts exact across workers as dwepc keeps them (shared words, an
//! atomic add at the pick and at the end, no locks); `least_conn_zone` adds the locks nginx
//! takes around the pick and the end of a request when the upstream has a
//! `zone`, and `dwepc_zone` the same locks around dwepc (the module wraps
//! nginx's round robin peer data, so it takes them too); `dwepc_paper` is
//! the paper mode's pick (the largest L, through the same slot map and
//! picker); `dwepc_drawn` and `dwepc_least_time_drawn` the shares mode's
//! two picks over two peers drawn by share (`choices=2`; `_drawn8` eight,
//! the default above 64 peers; the draw table
//! built), beside `random_two_least_conn`, nginx's `random two least_conn`
//! with equal weights. Every loop sees one request end per pick.

// Index loops mirror nginx's C loops.
#![allow(clippy::needless_range_loop)]

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::cell::Cell;

use dwepc_core::policy::latency::PeakEwma;
use dwepc_core::policy::pick::draw::draw;
use dwepc_core::policy::pick::{with_worker_rng, Alias, ShareTable, Shares, SmoothTie};
use dwepc_core::policy::{Compare, Comparison, Local, Scan};
use dwepc_core::zone::slots::{ListPeer, SlotKind, SlotMap};
use dwepc_core::zone::{words, UpstreamZone};

/// nginx's smooth weighted round robin (ngx_http_upstream_get_peer).
struct Wrr {
    weight: Vec<i64>,
    current: Vec<i64>,
    effective: Vec<i64>,
}

impl Wrr {
    fn pick(&mut self) -> usize {
        let mut best = usize::MAX;
        let mut total = 0;
        for i in 0..self.weight.len() {
            self.current[i] += self.effective[i];
            total += self.effective[i];
            if self.effective[i] < self.weight[i] {
                self.effective[i] += 1;
            }
            if best == usize::MAX || self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}

/// nginx's least_conn (ngx_http_upstream_get_least_conn_peer): the least
/// conns/weight (cross-multiplied), then, when several tie, smooth weighted
/// round robin among them.
struct LeastConn {
    conns: Vec<u64>,
    weight: Vec<i64>,
    current: Vec<i64>,
}

impl LeastConn {
    fn pick(&mut self) -> usize {
        let conns = &self.conns;
        let best = least_conn(conns.len(), |i| conns[i], &self.weight, &mut self.current);
        self.conns[best] += 1;
        best
    }
}

/// nginx's least_conn loop over `n` peers with counts `conns(i)`: the
/// least conns/weight (cross-multiplied), ties by smooth weighted round
/// robin on `current`; the peer, not yet counted.
#[inline(always)]
fn least_conn(
    n: usize,
    conns: impl Fn(usize) -> u64,
    weight: &[i64],
    current: &mut [i64],
) -> usize {
    let mut best = 0;
    let mut many = false;
    for i in 1..n {
        let (a, b) = (
            conns(i) * weight[best] as u64,
            conns(best) * weight[i] as u64,
        );
        if a < b {
            best = i;
            many = false;
        } else if a == b {
            many = true;
        }
    }
    if many {
        let mut total = 0;
        let mut p = usize::MAX;
        for i in best..n {
            if conns(i) * weight[best] as u64 != conns(best) * weight[i] as u64 {
                continue;
            }
            current[i] += weight[i];
            total += weight[i];
            if p == usize::MAX || current[i] > current[p] {
                p = i;
            }
        }
        current[p] -= total;
        best = p;
    }
    best
}

/// [`LeastConn::pick`] over counts in shared words, counted with an
/// atomic add.
fn least_conn_shared(conns: &[AtomicU64], weight: &[i64], current: &mut [i64]) -> usize {
    let best = least_conn(conns.len(), |i| conns[i].load(Relaxed), weight, current);
    conns[best].fetch_add(1, Relaxed);
    best
}

/// nginx's `ngx_rwlock_t` (src/core/ngx_rwlock.c), uncontended: the write
/// lock is a compare-and-set from 0, a read lock a compare-and-set adding
/// one reader, the unlock another compare-and-set or an atomic add. An
/// upstream with a `zone` takes the peers' write lock around the pick and,
/// in the round robin `free`, the peers' read lock and the peer's own lock
/// around `conns--`.
struct NgxRwlock(AtomicU64);

const NGX_RWLOCK_WLOCK: u64 = u64::MAX;

impl NgxRwlock {
    fn wlock(&self) {
        while self
            .0
            .compare_exchange(0, NGX_RWLOCK_WLOCK, Acquire, Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }

    fn rlock(&self) {
        loop {
            let r = self.0.load(Relaxed);
            if r != NGX_RWLOCK_WLOCK && self.0.compare_exchange(r, r + 1, Acquire, Relaxed).is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        if self.0.load(Relaxed) == NGX_RWLOCK_WLOCK {
            let _ = self
                .0
                .compare_exchange(NGX_RWLOCK_WLOCK, 0, Release, Relaxed);
        } else {
            self.0.fetch_sub(1, Release);
        }
    }
}

/// A mode's pick over the zone's words, as the module's `get` does it
/// (minus nginx's own peer checks, which least_conn above lacks too): the
/// list's slot map checked, each peer's slot looked up, the mode's
/// comparison run over them ([`Comparison::run`]), the tie pass, counted.
struct BenchScan<'a> {
    zone: UpstreamZone<'a>,
    map: &'a SlotMap,
    n: usize,
    tie: &'a mut [i64],
    /// The alias table of the shares, for drawn choices.
    table: Option<&'a Alias>,
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
fn pick_mode(
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
        share_table: share_table(how, shares, zone),
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
fn share_table<'t>(
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

/// One pick of `how` over `scan` (every peer, or `drawn` drawn), then the
/// end of a request on the next peer, as under a steady load.
fn pick_then_end(
    how: Comparison,
    scan: BenchScan<'_>,
    local: Local<'_>,
    shares: &mut ShareTable,
    drawn: Option<usize>,
    epoch: u64,
) -> usize {
    let (zone, n) = (scan.zone, scan.n);
    let local = Local {
        share_table: share_table(how, shares, zone),
        ..local
    };
    let k = how.run(scan, local, drawn);
    let j = (k + 1) % n;
    if zone.in_flight(j) > 0 {
        zone.finish(j, epoch);
    }
    k
}

/// Response-time estimates of `n` peers, 20-60 ms, observed at 1 s.
fn estimates(n: usize) -> Vec<Cell<PeakEwma>> {
    (0..n)
        .map(|i| {
            let mut e = PeakEwma::default();
            e.observe(
                20.0 + (i as f64 * 0.618_034).fract() * 40.0,
                1_000,
                10_000.0,
                0.0,
            );
            Cell::new(e)
        })
        .collect()
}

/// A slot map for `n` configured servers, as a worker builds it once.
fn slot_map(shared: UpstreamZone<'_>, n: usize) -> SlotMap {
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

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// A zone of `n` peers, initialised.
fn zone_words(n: usize) -> Vec<AtomicU64> {
    let words: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
    UpstreamZone::new(&words, n).unwrap().init(1);
    words
}

/// A zone of `n` peers with shares 1..5 (by position) and 0..12 requests
/// in flight each, as the shares and response-time picks see it.
fn shares_zone_words(n: usize) -> Vec<AtomicU64> {
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

/// The paper mode's pick: distinct allocations as Q·W gives them, and the
/// worst case, every allocation equal (every comparison a tie).
fn bench_paper(g: &mut Group<'_>, n: usize) {
    let paper = Comparison::LargestRemaining;
    let mut tie = vec![0i64; n];
    let mut shares = ShareTable::default();
    let words = zone_words(n);
    let zone = UpstreamZone::new(&words, n).unwrap();
    let alloc: Vec<f64> = (0..n)
        .map(|i| 1000.0 + (i as f64 * 0.618_034).fract() * 100.0)
        .collect();
    zone.apply(&alloc, u64::MAX, 0);
    let map = slot_map(zone, n);
    g.bench_with_input(BenchmarkId::new("dwepc_paper", n), &n, |b, &n| {
        b.iter(|| black_box(pick_mode(zone, paper, &map, n, &mut tie, &mut shares)))
    });
    let twords = zone_words(n);
    let ties = UpstreamZone::new(&twords, n).unwrap();
    ties.apply(&vec![1000.0; n], u64::MAX, 0);
    let tmap = slot_map(ties, n);
    g.bench_with_input(BenchmarkId::new("dwepc_paper_all_ties", n), &n, |b, &n| {
        b.iter(|| black_box(pick_mode(ties, paper, &tmap, n, &mut tie, &mut shares)))
    });
}

/// nginx's own: smooth weighted round robin, least_conn, and least_conn
/// inside the locks of an upstream with a `zone`.
fn bench_nginx(g: &mut Group<'_>, n: usize) {
    let mut wrr = Wrr {
        weight: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
        current: vec![0; n],
        effective: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
    };
    g.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, _| {
        b.iter(|| black_box(wrr.pick()))
    });
    // least_conn and dwepc see the same requests end: after each pick
    // one request ends on the next peer, so in-flight counts keep
    // moving and ties happen as in a live upstream
    let mut lc = LeastConn {
        conns: (0..n).map(|i| (i % 13) as u64).collect(),
        weight: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
        current: vec![0; n],
    };
    g.bench_with_input(BenchmarkId::new("least_conn", n), &n, |b, _| {
        b.iter(|| {
            let k = lc.pick();
            lc.conns[(k + 1) % n] = lc.conns[(k + 1) % n].saturating_sub(1);
            black_box(k)
        })
    });
    // the same loop on counts kept exact across workers as dwepc keeps
    // them (a shared word per peer, an atomic add at the pick and at the
    // end; no locks): the floor of a scan with dwepc's exactness
    let shared: Vec<AtomicU64> = (0..n).map(|i| AtomicU64::new((i % 13) as u64)).collect();
    let mut cur = vec![0i64; n];
    g.bench_with_input(BenchmarkId::new("least_conn_shared", n), &n, |b, _| {
        b.iter(|| {
            let k = least_conn_shared(&shared, &lc.weight, &mut cur);
            let j = (k + 1) % n;
            if shared[j].load(Relaxed) > 0 {
                shared[j].fetch_sub(1, Relaxed);
            }
            black_box(k)
        })
    });
    // the same with a `zone`: nginx's locks around the pick and the end
    let peers_lock = NgxRwlock(AtomicU64::new(0));
    let peer_locks: Vec<NgxRwlock> = (0..n).map(|_| NgxRwlock(AtomicU64::new(0))).collect();
    g.bench_with_input(BenchmarkId::new("least_conn_zone", n), &n, |b, _| {
        b.iter(|| {
            peers_lock.wlock();
            let k = lc.pick();
            peers_lock.unlock();
            let j = (k + 1) % n;
            peers_lock.rlock();
            peer_locks[j].wlock();
            lc.conns[j] = lc.conns[j].saturating_sub(1);
            peer_locks[j].unlock();
            peers_lock.unlock();
            black_box(k)
        })
    });
}

/// The shares mode's pick, without and with nginx's `zone` locks (the
/// module's get and free run inside them as least_conn's do).
fn bench_shares(g: &mut Group<'_>, n: usize) {
    let words = shares_zone_words(n);
    let sh = UpstreamZone::new(&words, n).unwrap();
    let epoch = sh.epoch();
    let map = slot_map(sh, n);
    let mut tie = vec![0i64; n];
    let mut shares = ShareTable::default();
    let how = Comparison::LeastPerShare { plus_one: false };
    g.bench_with_input(BenchmarkId::new("dwepc", n), &n, |b, &n| {
        b.iter(|| {
            let k = pick_mode(sh, how, &map, n, &mut tie, &mut shares);
            let j = (k + 1) % n;
            if sh.in_flight(j) > 0 {
                sh.finish(j, epoch);
            }
            black_box(k)
        })
    });
    let peers_lock = NgxRwlock(AtomicU64::new(0));
    let peer_locks: Vec<NgxRwlock> = (0..n).map(|_| NgxRwlock(AtomicU64::new(0))).collect();
    g.bench_with_input(BenchmarkId::new("dwepc_zone", n), &n, |b, &n| {
        b.iter(|| {
            peers_lock.wlock();
            let k = pick_mode(sh, how, &map, n, &mut tie, &mut shares);
            peers_lock.unlock();
            let j = (k + 1) % n;
            peers_lock.rlock();
            peer_locks[j].wlock();
            if sh.in_flight(j) > 0 {
                sh.finish(j, epoch);
            }
            peer_locks[j].unlock();
            peers_lock.unlock();
            black_box(k)
        })
    });
}

/// The response-time picks: the default (shares mode, `pick=least_time`:
/// (in flight + 1) x estimate / share below the limit) and `mode=least_time`
/// (the same on `weight=`), with an estimate per peer read at each pick.
fn bench_time(g: &mut Group<'_>, n: usize) {
    let words = shares_zone_words(n);
    let sh = UpstreamZone::new(&words, n).unwrap();
    let epoch = sh.epoch();
    let map = slot_map(sh, n);
    let mut tie = vec![0i64; n];
    let mut shares = ShareTable::default();
    let lat = estimates(n);
    let weight: Vec<u32> = (0..n).map(|i| 1 + (i % 5) as u32).collect();
    let local = Local {
        latency: &lat,
        weight: &weight,
        share_table: Shares::default(),
        now_ms: 2_000,
        tau_ms: 10_000.0,
        slow_start_ms: 0,
    };
    for (name, how) in [
        (
            "dwepc_least_time",
            Comparison::LeastTime { per_share: true },
        ),
        ("least_time", Comparison::LeastTime { per_share: false }),
        // observe mode's pick: nginx's least_conn on weight=, over the
        // zone's counts
        ("observe_least_conn", Comparison::LeastConn),
    ] {
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
            b.iter(|| {
                let scan = BenchScan {
                    zone: sh,
                    map: &map,
                    n,
                    tie: &mut tie,
                    table: None,
                };
                black_box(pick_then_end(how, scan, local, &mut shares, None, epoch))
            })
        });
    }
}

/// Two choices drawn by share (`choices=2`) for the shares mode's picks,
/// eight for the default (`choices=auto` above 64 peers),
/// beside nginx's `random two least_conn` (two peers drawn uniformly, the
/// lesser conns/weight; nginx draws by weight with a binary search over
/// its ranges, so this is its cost with equal weights at best).
fn bench_drawn(g: &mut Group<'_>, n: usize) {
    let words = shares_zone_words(n);
    let sh = UpstreamZone::new(&words, n).unwrap();
    let epoch = sh.epoch();
    let map = slot_map(sh, n);
    let mut tie = vec![0i64; n];
    let mut shares = ShareTable::default();
    let weights: Vec<u32> = (0..n).map(|i| sh.pick_view(i).1).collect();
    let table = Alias::new(&weights);
    let lat = estimates(n);
    let local = Local {
        latency: &lat,
        weight: &[],
        share_table: Shares::default(),
        now_ms: 2_000,
        tau_ms: 10_000.0,
        slow_start_ms: 0,
    };
    let per_share = Comparison::LeastTime { per_share: true };
    for (name, how, d) in [
        (
            "dwepc_drawn",
            Comparison::LeastPerShare { plus_one: false },
            2,
        ),
        ("dwepc_least_time_drawn", per_share, 2),
        // choices=auto above 64 peers (the default)
        ("dwepc_least_time_drawn8", per_share, 8),
    ] {
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
            b.iter(|| {
                let scan = BenchScan {
                    zone: sh,
                    map: &map,
                    n,
                    tie: &mut tie,
                    table: Some(&table),
                };
                black_box(pick_then_end(how, scan, local, &mut shares, Some(d), epoch))
            })
        });
    }
    let mut conns = vec![0u64; n];
    let weight: Vec<u64> = (0..n).map(|i| 1 + (i % 5) as u64).collect();
    let mut rng = dwepc_core::rng::Rng::new(1);
    g.bench_with_input(BenchmarkId::new("random_two_least_conn", n), &n, |b, &n| {
        b.iter(|| {
            let (x, y) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
            let k = if conns[x] * weight[y] <= conns[y] * weight[x] {
                x
            } else {
                y
            };
            conns[k] += 1;
            let j = (k + 1) % n;
            conns[j] = conns[j].saturating_sub(1);
            black_box(k)
        })
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [4usize, 32, 256, 2000] {
        bench_paper(&mut g, n);
        bench_nginx(&mut g, n);
        bench_shares(&mut g, n);
        bench_time(&mut g, n);
        bench_drawn(&mut g, n);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
