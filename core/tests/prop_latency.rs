//! Property tests of the response-time modes: the peak-EWMA estimate
//! (`policy::latency`) and the picks on it (`policy::pick`'s `LeastTime`
//! and `RandomTwo`).

use std::cell::Cell;
use std::sync::atomic::AtomicU64;

use dwepc_core::policy::latency::{PeakEwma, PRIOR_MS};
use dwepc_core::policy::pick::{Compare, LeastTime, Local, RandomTwo, Shares};
use dwepc_core::zone::{words, UpstreamZone};
use proptest::prelude::*;

const TAU: f64 = 10_000.0;

fn rtt() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0f64..10_000.0,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-5.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever it is fed, the estimate at an observation stays within the
    /// range of the valid times observed, and garbage changes nothing; a
    /// time above it is taken at once (the peak);
    /// read later it moves monotonically toward the prior and never
    /// overshoots it.
    #[test]
    fn the_estimate_stays_within_what_was_observed(
        obs in prop::collection::vec((rtt(), 0u64..60_000), 1..40),
        prior in 0.0f64..5_000.0,
    ) {
        let mut e = PeakEwma::default();
        let mut now = 1u64;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (r, dt) in obs {
            now += dt;
            let before = e.read(now, TAU, 0.0);
            let seen = e.observed();
            e.observe(r, now, TAU, 0.0);
            let v = e.read(now, TAU, 0.0);
            if r.is_finite() && r >= 0.0 {
                lo = lo.min(r);
                hi = hi.max(r);
                if !seen || r > before {
                    prop_assert_eq!(v, r);
                }
                prop_assert!(v.is_finite());
                prop_assert!(v >= lo - 1e-9 && v <= hi + 1e-9, "{} not in [{}, {}]", v, lo, hi);
            } else {
                // ignored: the estimate is what it was
                prop_assert_eq!(v, before);
            }
        }
        if e.observed() {
            let v = e.read(now, TAU, prior);
            let mut last = (v - prior).abs();
            for k in 1..20u64 {
                let r = e.read(now + k * 3_000, TAU, prior);
                prop_assert!(r.is_finite());
                prop_assert!((r - prior).abs() <= last + 1e-9);
                prop_assert!((r - prior) * (v - prior) >= -1e-9, "crossed the prior");
                last = (r - prior).abs();
            }
        }
    }

    /// No peer is starved forever by an estimate nothing refreshes: one
    /// client sends request after request (each taking its peer's true
    /// time, with noise), least_time picks; every peer is picked again
    /// within the time its estimate needs to decay below the best cost
    /// (`τ · ln(ratio of the largest to the smallest cost)`, plus slack).
    #[test]
    fn least_time_starves_no_peer(
        peers in prop::collection::vec((1.0f64..2_000.0, 1u32..5), 2..8),
        noise_seed in any::<u64>(),
    ) {
        let n = peers.len();
        let mem: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let zone = UpstreamZone::new(&mem, n).unwrap();
        zone.init(1);
        let lat: Vec<Cell<PeakEwma>> = (0..n).map(|_| Cell::new(PeakEwma::default())).collect();
        let weight: Vec<u32> = peers.iter().map(|p| p.1).collect();
        let slowest = peers.iter().map(|p| p.0 * 1.5 / p.1 as f64).fold(0.0, f64::max);
        let fastest = peers.iter().map(|p| p.0 * 0.5 / p.1 as f64).fold(f64::INFINITY, f64::min);
        let bound = TAU * ((slowest / fastest).ln() + 3.0) + 2_000.0 * 1.5;
        let mut rng = noise_seed | 1;
        let mut now = 1u64;
        let mut last_pick = vec![now; n];
        let end = 20 * TAU as u64;
        while now < end {
            let local = Local { latency: &lat, weight: &weight, shares: Shares::default(), now_ms: now, tau_ms: TAU, slow_start_ms: 0 };
            let mut c: LeastTime<usize> = LeastTime::new(local, false);
            for i in 0..n {
                c.offer(i, i, zone);
            }
            let i = c.best().unwrap();
            for (j, last) in last_pick.iter().enumerate() {
                prop_assert!(
                    (now - last) as f64 <= bound,
                    "peer {} unpicked for {} ms (bound {:.0})", j, now - last, bound
                );
            }
            last_pick[i] = now;
            // xorshift noise: the answer takes 0.5 to 1.5 times the true time
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let t = peers[i].0 * (0.5 + (rng % 1_000) as f64 / 1_000.0);
            now += t.ceil() as u64;
            let mut e = lat[i].get();
            e.observe(t, now, TAU, PRIOR_MS);
            lat[i].set(e);
        }
    }

    /// random_two never sends to the one dearest peer while another is
    /// eligible, and always picks one of the peers offered.
    #[test]
    fn random_two_never_picks_the_dearest(
        times in prop::collection::vec(1.0f64..5_000.0, 2..10),
        in_flight in prop::collection::vec(0u64..5, 10),
    ) {
        let n = times.len();
        let mem: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let zone = UpstreamZone::new(&mem, n).unwrap();
        zone.init(1);
        let lat: Vec<Cell<PeakEwma>> = times
            .iter()
            .map(|&t| {
                let mut e = PeakEwma::default();
                e.observe(t, 1_000, TAU, PRIOR_MS);
                Cell::new(e)
            })
            .collect();
        for (i, &k) in in_flight.iter().take(n).enumerate() {
            for _ in 0..k {
                zone.count(i);
            }
        }
        let weight = vec![1u32; n];
        let cost: Vec<f64> = (0..n).map(|i| (in_flight[i] + 1) as f64 * times[i]).collect();
        let max = cost.iter().cloned().fold(0.0, f64::max);
        let dearest: Vec<usize> = (0..n).filter(|&i| cost[i] == max).collect();
        let local = Local { latency: &lat, weight: &weight, shares: Shares::default(), now_ms: 1_000, tau_ms: TAU, slow_start_ms: 0 };
        for _ in 0..50 {
            let mut c: RandomTwo<usize> = RandomTwo::new(local);
            for i in 0..n {
                c.offer(i, i, zone);
            }
            let b = c.best().unwrap();
            prop_assert!(b < n);
            if dearest.len() == 1 {
                prop_assert_ne!(b, dearest[0]);
            }
        }
    }
}
