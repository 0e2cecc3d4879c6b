//! Property tests of the DWEPC paper's model (`policy::paper`).

use dwepc_core::policy::paper::{Dispatcher, FitParams, FitState, PaperModel, ALLOC_LIMIT};
use dwepc_core::policy::Sample;
use dwepc_core::resources::{Res, R};
use dwepc_core::rng::Rng;
use proptest::prelude::*;

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e3f64..1e6,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-1.0),
        1 => any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Samples generated from a known W (v = E·W) give back that W.
    #[test]
    fn fit_recovers_known_w(
        w_true in prop::array::uniform4(prop_oneof![1 => Just(0.0), 3 => 0.001f64..2.0]),
        n in 3usize..8,
        samples in 4usize..20,
        seed in any::<u64>(),
    ) {
        prop_assume!(w_true.iter().any(|x| *x > 0.0));
        let mut rng = Rng::new(seed);
        let mut m = PaperModel::new(FitParams { window: samples, ..FitParams::default() }, vec![1.0; n]);
        for i in 0..n {
            m.set_capacity(i, [1e5; R]);
        }
        let scale = [3000.0, 8000.0, 50_000.0, 20_000.0];
        for t in 0..samples as u64 {
            let usage: Vec<Res> = (0..n)
                .map(|_| std::array::from_fn(|j| 1.0 + (rng.below(1_000_000) as f64 / 1e6) * scale[j]))
                .collect();
            let req: Vec<f64> = usage.iter().map(|e| (0..R).map(|j| e[j] * w_true[j]).sum()).collect();
            let s = Sample { end_ms: t * 1000, period_ms: 1000, usage, sent: Some(req), ..Sample::default() };
            prop_assert!(m.push(s));
        }
        let st = m.refit();
        prop_assert!(matches!(st, FitState::Fitted { .. }), "{:?}", st);
        let w = m.w().unwrap();
        for j in 0..R {
            // absolute tolerance relative to the size of W's effect on requests
            let tol = 1e-3 * w_true.iter().cloned().fold(0.0, f64::max) + 1e-9;
            prop_assert!((w[j] - w_true[j]).abs() <= tol, "w={:?} true={:?}", w, w_true);
        }
    }

    /// Picking as many requests as the allocations sum to gives every node
    /// its allocation, to within one request.
    #[test]
    fn split_follows_allocations(
        alloc in prop::collection::vec(0u32..400, 2..12),
        seed in any::<u64>(),
    ) {
        let n = alloc.len();
        let alloc_f: Vec<f64> = alloc.iter().map(|&a| a as f64).collect();
        let total: u32 = alloc.iter().sum();
        let mut d = Dispatcher::new(n);
        d.apply(&alloc_f);
        let mut rng = Rng::new(seed);
        for _ in 0..total {
            d.pick(0..n, &mut rng).unwrap();
        }
        for i in 0..n {
            prop_assert!((d.total[i] as i64 - alloc[i] as i64).abs() <= 1, "{:?} vs {:?}", d.total, alloc);
        }
        // beyond the allocations, extra requests spread evenly (L decreases by one per pick)
        for _ in 0..(n as u32 * 50) {
            d.pick(0..n, &mut rng).unwrap();
        }
        let over: Vec<i64> = (0..n).map(|i| d.total[i] as i64 - alloc[i] as i64).collect();
        let (lo, hi) = (over.iter().min().unwrap(), over.iter().max().unwrap());
        prop_assert!(hi - lo <= 1, "{:?}", over);
    }

    /// Equal allocations: every round of n picks hits each node once.
    #[test]
    fn ties_split_evenly(n in 2usize..16, rounds in 1u64..50, a in 0.0f64..100.0, seed in any::<u64>()) {
        let mut d = Dispatcher::new(n);
        d.apply(&vec![a; n]);
        let mut rng = Rng::new(seed);
        for _ in 0..(n as u64 * rounds) {
            d.pick(0..n, &mut rng).unwrap();
        }
        prop_assert!(d.total.iter().all(|&t| t == rounds), "{:?}", d.total);
    }

    /// No input makes the model panic, and what it publishes is finite.
    #[test]
    fn arbitrary_inputs_never_panic(
        n in 1usize..6,
        caps in prop::collection::vec(prop::array::uniform4(any_f64()), 6),
        rows in prop::collection::vec((prop::collection::vec(prop::array::uniform4(any_f64()), 6), prop::collection::vec(any_f64(), 6), any::<bool>()), 0..12),
        weights in prop::collection::vec(any_f64(), 6),
        w0 in prop::array::uniform4(any_f64()),
        window in 0usize..8,
        min_samples in 0usize..8,
    ) {
        let mut m = PaperModel::new(FitParams { window, min_samples, ridge: f64::NAN }, weights[..n].to_vec()).with_w(w0);
        for (i, c) in caps.iter().enumerate().take(n) {
            m.set_capacity(i, *c);
        }
        for (t, (usage, req, has)) in rows.iter().enumerate() {
            let s = Sample {
                end_ms: t as u64 * 100,
                period_ms: 100,
                usage: usage[..n].to_vec(),
                sent: has.then(|| req[..n].to_vec()),
                ..Sample::default()
            };
            m.push(s);
            m.refit();
            if let Some(w) = m.w() {
                prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{:?}", w);
            }
            if let Some(a) = m.allocations() {
                prop_assert_eq!(a.len(), n);
                prop_assert!(a.iter().all(|x| x.is_finite() && x.abs() <= ALLOC_LIMIT), "{:?}", a);
                let mut d = Dispatcher::new(n);
                d.apply(&a);
                let mut rng = Rng::new(1);
                prop_assert!(d.pick(0..n, &mut rng).is_some());
            }
        }
    }
}
