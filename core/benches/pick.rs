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

mod common;

use std::cell::Cell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use common::module::*;
use common::nginx::*;
use dwepc_core::policy::latency::PeakEwma;
use dwepc_core::policy::pick::{Alias, ShareTable, Shares};
use dwepc_core::policy::{Comparison, Local};
use dwepc_core::zone::UpstreamZone;

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
        shares: share_table(how, shares, zone),
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

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

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

/// nginx's own: smooth weighted round robin, least_conn, least_conn on
/// shared counts, and least_conn inside the locks of an upstream with a
/// `zone`.
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
    let mut lc = LeastConn::new(n);
    g.bench_with_input(BenchmarkId::new("least_conn", n), &n, |b, _| {
        b.iter(|| black_box(lc.step()))
    });
    let mut shared = SharedLeastConn::new(n);
    g.bench_with_input(BenchmarkId::new("least_conn_shared", n), &n, |b, _| {
        b.iter(|| black_box(shared.step()))
    });
    let locks = ZoneLocks::new(n);
    g.bench_with_input(BenchmarkId::new("least_conn_zone", n), &n, |b, _| {
        b.iter(|| black_box(lc.step_in(&locks)))
    });
}

/// The shares mode's pick, without and with nginx's `zone` locks (the
/// module's get and free run inside them as least_conn's do).
fn bench_shares(g: &mut Group<'_>, n: usize) {
    let words = shares_zone_words(n);
    let mut dwepc = SharesPick::new(UpstreamZone::new(&words, n).unwrap());
    g.bench_with_input(BenchmarkId::new("dwepc", n), &n, |b, _| {
        b.iter(|| black_box(dwepc.step()))
    });
    let locks = ZoneLocks::new(n);
    g.bench_with_input(BenchmarkId::new("dwepc_zone", n), &n, |b, _| {
        b.iter(|| black_box(dwepc.step_in(&locks)))
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
        shares: Shares::default(),
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
        shares: Shares::default(),
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
