//! Property tests of slow start (`policy::slow_start`) and of the picks
//! that apply it: the ramp moves one way and ends; a ramping peer that
//! wins a comparison still wins it later in its ramp (more weight never
//! loses); once the ramp is over the comparison is the plain one.

use std::cell::Cell;
use std::sync::atomic::AtomicU64;

use dwepc_core::policy::latency::PeakEwma;
use dwepc_core::policy::pick::{Compare, LeastPerShare, LeastShare, LeastTime, Local, ShareTable};
use dwepc_core::policy::slow_start;
use dwepc_core::zone::{words, UpstreamZone};
use proptest::prelude::*;

/// The estimates' time constant: so long that they hold still while the
/// ramp moves (the property is about the ramp).
const TAU: f64 = 1e15;
const T: u64 = 30_000;
const SINCE: u64 = 100_000;

/// A peer: share, in-flight limit (0: none), requests in flight, response
/// time (ms, 0: none yet), `weight=`.
type PeerState = (f64, u64, u64, f64, u32);

fn peers() -> impl Strategy<Value = Vec<PeerState>> {
    prop::collection::vec(
        (
            0.01f64..1.0,
            prop_oneof![Just(0u64), 1u64..64],
            0u64..40,
            prop_oneof![Just(0.0), 1.0f64..2_000.0],
            1u32..5,
        ),
        2..7,
    )
}

/// The zone of `ps` (peer 0 ramping since [`SINCE`]) and the workers'
/// estimates (observed at [`SINCE`], so they count in the ramp).
fn setup<'m>(ps: &[PeerState], mem: &'m [AtomicU64]) -> (UpstreamZone<'m>, Vec<Cell<PeakEwma>>) {
    let n = ps.len();
    let zone = UpstreamZone::new(mem, n).unwrap();
    zone.init(1);
    let shares: Vec<f64> = ps.iter().map(|p| p.0).collect();
    let limits: Vec<u64> = ps.iter().map(|p| p.1).collect();
    zone.apply_shares(&shares, &limits, u64::MAX, 0);
    for (i, p) in ps.iter().enumerate() {
        for _ in 0..p.2 {
            zone.count(i);
        }
    }
    zone.start_ramp(0, SINCE);
    let lat = ps
        .iter()
        .map(|p| {
            let mut e = PeakEwma::default();
            if p.3 > 0.0 {
                e.observe(p.3, SINCE, TAU, 0.0);
            }
            Cell::new(e)
        })
        .collect();
    (zone, lat)
}

/// The best of every peer offered to `c`.
fn best<C: Compare<usize>>(mut c: C, zone: UpstreamZone<'_>, n: usize) -> Option<usize> {
    for i in 0..n {
        c.offer(i, i, zone);
    }
    c.best()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The ramp: a fraction in [0, 1) that only grows, then over; the
    /// scaled weight and limit stay within [1, their own] and grow with it.
    #[test]
    fn the_ramp_grows_and_ends(
        since in 1u64..1_000_000,
        t in 1u64..100_000,
        steps in prop::collection::vec(0u64..5_000, 1..40),
        w in any::<u32>(),
        limit in any::<u32>(),
    ) {
        let mut now = since;
        let mut last = (0.0f64, 0u32, 0u32);
        for dt in steps {
            now += dt;
            match slow_start::factor(since, now, t) {
                Some(f) => {
                    prop_assert!((0.0..1.0).contains(&f) && f >= last.0);
                    let (sw, sl) = (slow_start::weight(w, f), slow_start::limit(limit, f));
                    prop_assert!(sw >= 1 && sw <= w.max(1) && sw >= last.1);
                    prop_assert!(sl <= limit && (limit == 0 || sl >= 1) && sl >= last.2);
                    last = (f, sw, sl);
                }
                None => prop_assert!(now - since >= t),
            }
        }
    }

    /// A ramping peer that wins a comparison early in its ramp wins it
    /// later too (its weight only grows), in every comparison slow start
    /// applies to; and after the ramp every comparison is the plain one.
    #[test]
    fn a_ramping_winner_keeps_winning_and_the_ramp_ends(
        ps in peers(),
        early in 0u64..T,
        later in 0u64..T,
    ) {
        let n = ps.len();
        let mem: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let (zone, lat) = setup(&ps, &mem);
        let weight: Vec<u32> = ps.iter().map(|p| p.4).collect();
        let table = ShareTable::of(zone);
        let (a, b) = (SINCE + early.min(later), SINCE + early.max(later));
        let local = |now, slow_start_ms| Local {
            latency: &lat,
            weight: &weight,
            shares: table.shares(),
            now_ms: now,
            tau_ms: TAU,
            slow_start_ms,
        };
        type Pick<'a> = dyn Fn(u64, u64) -> Option<usize> + 'a;
        let picks: [(&str, Box<Pick<'_>>); 4] = [
            ("least_conn", Box::new(|now, t| best(LeastPerShare::new(LeastShare::new(), local(now, t)), zone, n))),
            ("expected_delay", Box::new(|now, t| best(LeastPerShare::new(LeastShare::expected_delay(), local(now, t)), zone, n))),
            ("least_time", Box::new(|now, t| best(LeastTime::new(local(now, t), false), zone, n))),
            ("least_time per share", Box::new(|now, t| best(LeastTime::new(local(now, t), true), zone, n))),
        ];
        for (name, pick) in &picks {
            if pick(a, T) == Some(0) {
                prop_assert_eq!(pick(b, T), Some(0), "{}: won at {} but not at {}", name, a, b);
            }
            prop_assert_eq!(pick(SINCE + T, T), pick(SINCE + T, 0), "{}: the ramp is over", name);
        }
    }
}
