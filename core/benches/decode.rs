//! Decoding a QueryPerf answer, as the collector reads one batch of
//! `VMS_PER_QUERY` VMs: as it streams (`stream`, what the client does)
//! against building the answer's element tree (`tree`, what the client did
//! before it decoded the samples from that tree, a step not counted here),
//! and quick-xml's reader alone (`events`: the floor of both).
//!
//!     cargo bench -p dwepc-core --bench decode
//!
//! `poll`: one sample of seven counters per VM (every poll); `window`: 15
//! samples each (a new poller's first query fills the window).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use dwepc_core::vsphere::budget::VMS_PER_QUERY;
use dwepc_core::vsphere::xml::{parse, parse_perf, perf_answer, sample_metrics};

fn answer(samples: usize) -> String {
    perf_answer(&sample_metrics(VMS_PER_QUERY, 7, samples))
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("query_perf");
    for (name, samples) in [("poll", 1), ("window", 15)] {
        let text = answer(samples);
        g.bench_with_input(BenchmarkId::new("stream", name), &text, |b, t| {
            b.iter(|| black_box(parse_perf(t.as_bytes()).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("events", name), &text, |b, t| {
            b.iter(|| {
                let mut r = quick_xml::Reader::from_reader(t.as_bytes());
                let mut buf = Vec::new();
                let mut n = 0;
                loop {
                    match r.read_event_into(&mut buf).unwrap() {
                        quick_xml::events::Event::Eof => break,
                        _ => n += 1,
                    }
                    buf.clear();
                }
                black_box(n)
            })
        });
        g.bench_with_input(BenchmarkId::new("tree", name), &text, |b, t| {
            b.iter(|| black_box(parse(t.as_bytes()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
