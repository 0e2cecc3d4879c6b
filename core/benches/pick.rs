//! The per-request pick, as the module does it on shared atomics, against
//! plain-Rust equivalents of nginx's smooth weighted round robin and
//! least_conn loops over the same number of peers, in the same run.
//!
//!     cargo bench -p dwepc-core --bench pick

use std::hint::black_box;
use std::sync::atomic::AtomicU64;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dwepc_core::algo::{Argmax, Rng};
use dwepc_core::shared::{words, Shared};

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

/// nginx's least_conn comparison loop (conns * weight cross-multiplied).
fn least_conn(conns: &[u64], weight: &[u64]) -> usize {
    let mut best = 0;
    for i in 1..conns.len() {
        if conns[i] * weight[best] < conns[best] * weight[i] {
            best = i;
        }
    }
    best
}

/// The module's pick over the shared words: the largest remaining
/// allocation, random tie-break, counted.
fn pick(shared: &Shared, n: usize, rng: &mut Rng) -> usize {
    let mut am = Argmax::default();
    for i in 0..n {
        am.offer(i, shared.remaining(i), rng);
    }
    let k = am.best().unwrap();
    shared.count(k);
    k
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [4usize, 32, 256, 2000] {
        let zone: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let shared = Shared::new(&zone, n).unwrap();
        shared.init(1);
        // allocations as Q·W gives them: distinct reals
        let alloc: Vec<f64> = (0..n)
            .map(|i| 1000.0 + (i as f64 * 0.618_034).fract() * 100.0)
            .collect();
        shared.apply(&alloc, u64::MAX, 0);
        let mut rng = Rng::new(42);
        g.bench_with_input(BenchmarkId::new("dwepc", n), &n, |b, &n| {
            b.iter(|| black_box(pick(&shared, n, &mut rng)))
        });
        // worst case: every allocation equal, every comparison a tie
        let tzone: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let ties = Shared::new(&tzone, n).unwrap();
        ties.init(1);
        ties.apply(&vec![1000.0; n], u64::MAX, 0);
        g.bench_with_input(BenchmarkId::new("dwepc_all_ties", n), &n, |b, &n| {
            b.iter(|| black_box(pick(&ties, n, &mut rng)))
        });
        let mut wrr = Wrr {
            weight: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
            current: vec![0; n],
            effective: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
        };
        g.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, _| {
            b.iter(|| black_box(wrr.pick()))
        });
        let mut conns: Vec<u64> = (0..n).map(|i| (i % 13) as u64).collect();
        let weight: Vec<u64> = (0..n).map(|i| 1 + (i % 5) as u64).collect();
        g.bench_with_input(BenchmarkId::new("least_conn", n), &n, |b, _| {
            b.iter(|| {
                let k = least_conn(&conns, &weight);
                conns[k] += 1;
                conns[(k + 1) % n] = conns[(k + 1) % n].saturating_sub(1);
                black_box(k)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
