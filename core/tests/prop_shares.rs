//! Property tests of the shares mode (`policy::shares`).

// Index loops read best in these numeric checks.
#![allow(clippy::needless_range_loop)]

use std::sync::atomic::AtomicU64;

use dwepc_core::policy::pick::{Compare, LeastPerShare, LeastShare, Local, ShareTable, SmoothTie};
use dwepc_core::policy::shares::math::{floored, water_fill};
use dwepc_core::policy::shares::{ShareParams, ShareState, SharesModel};
use dwepc_core::policy::slow_start;
use dwepc_core::policy::{PeerFacts, Sample};
use dwepc_core::resources::{Res, R};
use dwepc_core::zone::{share_weight, weight_share, words, UpstreamZone};
use proptest::prelude::*;

fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0f64..1e5,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-1.0),
        1 => any::<f64>(),
    ]
}

fn node_strategy() -> impl Strategy<Value = PeerFacts> {
    (
        prop::array::uniform4(prop_oneof![4 => 100.0f64..20_000.0, 1 => any_value()]),
        prop_oneof![3 => 1.0f64..16.0, 1 => any_value()],
        prop_oneof![3 => 1.0f64..10.0, 1 => any_value()],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(capacity, vcpus, weight, backup)| PeerFacts {
            capacity,
            vcpus,
            weight,
            backup,
            present: true,
        })
}

fn group_sums(m: &SharesModel, s: &[f64]) -> Vec<f64> {
    let mut sums = Vec::new();
    for backup in [false, true] {
        let idx: Vec<usize> = (0..m.len())
            .filter(|&i| m.node(i).backup == backup)
            .collect();
        if !idx.is_empty() {
            sums.push(idx.iter().map(|&i| s[i]).sum());
        }
    }
    sums
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the counters say (NaN, huge, negative, missing), shares are
    /// finite, positive, and sum to 1 in each group; limits are at least 1.
    #[test]
    fn shares_sum_to_one_per_group(
        nodes in prop::collection::vec(node_strategy(), 1..12),
        samples in prop::collection::vec(
            (prop::collection::vec(prop::array::uniform4(any_value()), 12),
             prop::collection::vec(any_value(), 12),
             prop::option::of(prop::collection::vec(any_value(), 12))),
            1..8),
        floor in 0.0f64..0.2,
        step in 0.05f64..1.0,
    ) {
        let n = nodes.len();
        let mut m = SharesModel::new(ShareParams { floor, step, ..ShareParams::default() }, nodes)
            .resume(None, Some([50.0, f64::NAN, 3.0, f64::NAN]));
        for (t, (usage, ready, done)) in samples.into_iter().enumerate() {
            m.push(Sample {
                end_ms: (t as u64 + 1) * 20_000,
                period_ms: 20_000,
                usage: usage[..n].to_vec(),
                ready_ms: ready[..n].to_vec(),
                done: done.map(|d| d[..n].to_vec()),
                ..Sample::default()
            });
            let st = m.update();
            if let Some(s) = m.shares() {
                prop_assert_eq!(st, ShareState::Active);
                prop_assert!(s.iter().all(|x| x.is_finite() && *x > 0.0), "{:?}", s);
                for sum in group_sums(&m, s) {
                    prop_assert!((sum - 1.0).abs() < 1e-9, "sum {} of {:?}", sum, s);
                }
                let lim = m.limits();
                prop_assert!(lim.iter().all(|&l| l >= 1), "{:?}", lim);
            }
        }
    }

    /// Each sample moves a share exactly `step` of the way to its target:
    /// never more, never past it.
    #[test]
    fn bounded_moves_per_sample(
        caps in prop::collection::vec(500.0f64..20_000.0, 2..8),
        bgs in prop::collection::vec(prop::collection::vec(0.0f64..5_000.0, 8), 2..6),
        step in 0.05f64..1.0,
    ) {
        let n = caps.len();
        let nodes: Vec<PeerFacts> = caps.iter().map(|&c| PeerFacts {
            capacity: [c, 4096.0, 1e6, f64::NAN], vcpus: 4.0, ..PeerFacts::default()
        }).collect();
        let mut m = SharesModel::new(ShareParams { step, floor: 0.01, ..ShareParams::default() }, nodes);
        let mut prev: Option<Vec<f64>> = None;
        for (t, bg) in bgs.iter().enumerate() {
            let rate: Vec<f64> = caps.iter().map(|c| c * 0.3 / 100.0).collect();
            let usage: Vec<Res> = (0..n).map(|i| [bg[i] + 100.0 * rate[i], 1000.0, rate[i], 0.0]).collect();
            m.push(Sample {
                end_ms: (t as u64 + 1) * 20_000,
                period_ms: 20_000,
                usage,
                ready_ms: vec![0.0; n],
                done: Some(rate.iter().map(|x| x * 20.0).collect()),
                ..Sample::default()
            });
            m.update();
            let s = m.shares().unwrap().to_vec();
            let target = m.target().unwrap().to_vec();
            if let Some(p) = &prev {
                for i in 0..n {
                    let want = p[i] + step * (target[i] - p[i]);
                    prop_assert!((s[i] - want).abs() < 1e-9, "{} vs {}", s[i], want);
                    prop_assert!((s[i] - p[i]).abs() <= step * (target[i] - p[i]).abs() + 1e-9);
                }
            } else {
                prop_assert_eq!(&s, &target);
            }
            prev = Some(s);
        }
    }

    /// Usage made of a known per-request cost plus background on a minority
    /// of the traffic gives back that cost and that background.
    #[test]
    fn background_is_explained(
        caps in prop::collection::vec(2_000.0f64..20_000.0, 3..9),
        cost in 10.0f64..500.0,
        util in 0.1f64..0.6,
        bg_frac in 0.05f64..0.5,
        seed in any::<u64>(),
    ) {
        let n = caps.len();
        // the node with the least traffic carries a batch job
        let rate: Vec<f64> = caps.iter().map(|c| c * util / cost).collect();
        let k = (0..n).min_by(|&a, &b| rate[a].total_cmp(&rate[b])).unwrap();
        let total_rate: f64 = rate.iter().sum();
        prop_assume!(rate[k] < 0.5 * total_rate);
        let mut bg = vec![0.0; n];
        bg[k] = bg_frac * caps[k] * (1.0 + (seed % 7) as f64 / 10.0);
        let nodes: Vec<PeerFacts> = caps.iter().map(|&c| PeerFacts {
            capacity: [c, 4096.0, f64::NAN, f64::NAN], vcpus: 2.0, ..PeerFacts::default()
        }).collect();
        let mut m = SharesModel::new(ShareParams { step: 1.0, ..ShareParams::default() }, nodes);
        m.push(Sample {
            end_ms: 20_000,
            period_ms: 20_000,
            usage: (0..n).map(|i| [bg[i] + cost * rate[i], 500.0, f64::NAN, f64::NAN]).collect(),
            ready_ms: vec![0.0; n],
            done: Some(rate.iter().map(|x| x * 20.0).collect()),
            ..Sample::default()
        });
        prop_assert_eq!(m.update(), ShareState::Active);
        let c = m.cost().unwrap();
        prop_assert!((c[0] - cost).abs() < 1e-6 * cost, "{} vs {}", c[0], cost);
        for i in 0..n {
            prop_assert!((m.background(i)[0] - bg[i]).abs() < 1e-6 * caps[i], "{:?}", m.background(i));
        }
        // the target equalises utilisation among the nodes that get traffic
        let s = m.shares().unwrap();
        let u: Vec<f64> = (0..n).map(|i| (bg[i] + cost * total_rate * s[i]) / caps[i]).collect();
        // (a node held at the floor share is the one with the batch job:
        // the only one with background, so flooring keeps the others equal)
        let top = (0..n).filter(|&i| s[i] > 0.011).map(|i| u[i]).fold(f64::MIN, f64::max);
        for i in 0..n {
            if s[i] > 0.011 {
                prop_assert!((u[i] - top).abs() < 1e-6, "{:?}", u);
            }
        }
    }

    /// The guard's limits: never below the total spread by share nor
    /// below what a VM's own vCPUs hold, and bounded by twice the total
    /// (plus rounding), so the guard still binds in overload.
    #[test]
    fn guard_limits_follow_shares(
        caps in prop::collection::vec(500.0f64..20_000.0, 1..10),
        vcpus in prop::collection::vec(1.0f64..8.0, 10),
        per_vcpu in 0.5f64..16.0,
    ) {
        let n = caps.len();
        let nodes: Vec<PeerFacts> = caps.iter().zip(&vcpus).map(|(&c, &v)| PeerFacts {
            capacity: [c, 4096.0, f64::NAN, f64::NAN], vcpus: v.floor(), ..PeerFacts::default()
        }).collect();
        let mut m = SharesModel::new(ShareParams { inflight_per_vcpu: per_vcpu, ..ShareParams::default() }, nodes);
        let rate: Vec<f64> = caps.iter().map(|c| c * 0.4 / 100.0).collect();
        m.push(Sample {
            end_ms: 20_000,
            period_ms: 20_000,
            usage: rate.iter().map(|x| [100.0 * x, 500.0, f64::NAN, f64::NAN]).collect(),
            ready_ms: vec![0.0; n],
            done: Some(rate.iter().map(|x| x * 20.0).collect()),
            ..Sample::default()
        });
        m.update();
        let s = m.shares().unwrap().to_vec();
        let lim = m.limits();
        let total = per_vcpu * vcpus[..n].iter().map(|v| v.floor()).sum::<f64>();
        let sum: u64 = lim.iter().sum();
        // bounded (the guard still binds in overload): at most the total
        // by share plus what every VM holds itself, plus rounding
        prop_assert!(sum as f64 <= 2.0 * total + n as f64, "{} vs {}", sum, total);
        for i in 0..n {
            // never tighter than the total spread by share ...
            prop_assert!(lim[i] as f64 >= (total * s[i]).round(), "{:?} {:?}", s, lim);
            // ... nor than what the VM's own vCPUs hold (no background
            // here), however small its share
            prop_assert!(lim[i] as f64 >= (per_vcpu * vcpus[i].floor()).round(), "{:?} {:?}", s, lim);
            prop_assert!(lim[i] >= 1);
        }
    }

    /// Water filling gives the asked total and equal bottleneck utilisation
    /// to every node it gives traffic; a node it leaves out is already at
    /// or above that level.
    #[test]
    fn water_fill_equalises_the_bottleneck(
        nodes in prop::collection::vec((100.0f64..1e4, 100.0f64..1e4, 0.0f64..5e3, 0.0f64..5e3), 1..10),
        cost in (1.0f64..100.0, 1.0f64..100.0),
        total in 0.1f64..500.0,
    ) {
        let caps: Vec<Res> = nodes.iter().map(|n| [n.0, f64::NAN, n.1, f64::NAN]).collect();
        let bg: Vec<Res> = nodes.iter().map(|n| [n.2, 0.0, n.3, 0.0]).collect();
        let a = [cost.0, f64::NAN, cost.1, f64::NAN];
        let use_res = [true, false, true, false];
        let x = water_fill(&caps, &bg, &a, use_res, total);
        prop_assert!((x.iter().sum::<f64>() - total).abs() < 1e-6 * total.max(1.0));
        let util = |i: usize, xi: f64| -> f64 {
            (0..R).filter(|&j| use_res[j]).map(|j| (bg[i][j] + a[j] * xi) / caps[i][j]).fold(f64::MIN, f64::max)
        };
        let level = (0..x.len()).filter(|&i| x[i] > 1e-9).map(|i| util(i, x[i])).fold(f64::MIN, f64::max);
        for i in 0..x.len() {
            if x[i] > 1e-9 {
                prop_assert!((util(i, x[i]) - level).abs() < 1e-6 * level.max(1.0), "{} vs {}", util(i, x[i]), level);
            } else {
                prop_assert!(util(i, 0.0) >= level - 1e-6 * level.max(1.0));
            }
        }
    }

    /// Flooring keeps the order, the sum and the floor.
    #[test]
    fn floored_keeps_order_and_floor(raw in prop::collection::vec(0.0f64..10.0, 1..60), floor in 0.0f64..0.1) {
        let s = floored(&raw, floor);
        let k = raw.len();
        let f = floor.min(0.5 / k as f64);
        prop_assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for i in 0..k {
            prop_assert!(s[i] >= f - 1e-12);
            for j in 0..k {
                if raw[i] > raw[j] {
                    prop_assert!(s[i] >= s[j] - 1e-12);
                }
            }
        }
    }

    /// The pick takes a peer with the least in-flight per share among the
    /// peers below their limit (checked against exact rational arithmetic
    /// on the shares the weights stand for), the first of them; the tie
    /// pass finds exactly the peers with that ratio, and smooth weighted
    /// round robin among them is exactly proportional to their weights
    /// over one cycle.
    #[test]
    fn pick_is_the_least_ratio(
        peers in prop::collection::vec((0u64..50, 0.0f64..1.0, 0u32..40), 1..40),
        sed in any::<bool>(),
    ) {
        let add = u64::from(sed);
        let mut ls = if sed { LeastShare::expected_delay() } else { LeastShare::new() };
        let view: Vec<(u64, u32, u32)> = peers.iter().map(|&(c, s, l)| (c, share_weight(s), l)).collect();
        for (i, &(c, w, l)) in view.iter().enumerate() {
            ls.offer(i, c, w, l);
        }
        let open: Vec<usize> = (0..view.len()).filter(|&i| view[i].2 == 0 || view[i].0 < view[i].2 as u64).collect();
        prop_assert_eq!(ls.limited, open.len() < view.len());
        if open.is_empty() {
            prop_assert!(ls.best().is_none());
            return Ok(());
        }
        // (c + add) / max(w, 1), compared exactly in u128
        let less = |a: usize, b: usize| {
            let (ca, wa) = ((view[a].0 + add) as u128, view[a].1.max(1) as u128);
            let (cb, wb) = ((view[b].0 + add) as u128, view[b].1.max(1) as u128);
            (ca * wb).cmp(&(cb * wa))
        };
        let first = open.iter().copied().fold(open[0], |b, i| if less(i, b).is_lt() { i } else { b });
        prop_assert_eq!(ls.best(), Some(first));
        let tied: Vec<usize> = open.iter().copied().filter(|&i| less(i, first).is_eq()).collect();
        prop_assert_eq!(ls.tied(), tied.len() > 1);
        for i in 0..view.len() {
            prop_assert_eq!(ls.is_tied(view[i].0, view[i].1, view[i].2), tied.contains(&i));
        }
        // one cycle of smooth WRR over the tied with small weights
        let w: Vec<u32> = tied.iter().map(|&i| 1 + (view[i].1 >> 28)).collect();
        let total: u32 = w.iter().sum();
        let mut cur = vec![0i64; tied.len()];
        let mut wins = vec![0u32; tied.len()];
        for _ in 0..total {
            let mut t = SmoothTie::default();
            for k in 0..tied.len() {
                cur[k] = t.offer(k, w[k], cur[k]);
            }
            let (k, c) = t.winner().unwrap();
            cur[k] = c;
            wins[k] += 1;
        }
        prop_assert_eq!(wins, w);
        prop_assert!(weight_share(share_weight(0.5)) == 0.5);
    }

    /// The shares mode's comparison over this worker's copy of the
    /// published shares ([`ShareTable`]) decides as [`LeastShare`] fed the
    /// zone's own words (a share of 0 as the smallest, a limit of 0 as
    /// none), with peer 0 in slow start or not (its share and limit scaled,
    /// one request more in flight): the same best, ties, tie weights (a
    /// share of 0 ties as the smallest too) and full peers.
    #[test]
    fn the_pick_over_the_copy_is_the_pick_over_the_zone(
        peers in prop::collection::vec(
            (0u64..50, prop_oneof![1 => Just(0.0), 4 => 0.0f64..1.0], prop_oneof![1 => Just(0u64), 3 => 0u64..40]),
            1..40,
        ),
        sed in any::<bool>(),
        ramp in prop::option::of(0u64..RAMP_MS),
    ) {
        let n = peers.len();
        let mem: Vec<AtomicU64> = (0..words(n)).map(|_| AtomicU64::new(0)).collect();
        let zone = UpstreamZone::new(&mem, n).unwrap();
        zone.init(1);
        let shares: Vec<f64> = peers.iter().map(|p| p.1).collect();
        let limits: Vec<u64> = peers.iter().map(|p| p.2).collect();
        zone.apply_shares(&shares, &limits, u64::MAX, 1);
        for (i, p) in peers.iter().enumerate() {
            for _ in 0..p.0 {
                zone.count(i);
            }
        }
        // peer 0 ramping, `elapsed` into its slow start
        let since = 1_000;
        let now = since + ramp.unwrap_or(RAMP_MS);
        zone.start_ramp(0, since);
        let f = slow_start::factor(since, now, RAMP_MS);
        prop_assert_eq!(f.is_some(), ramp.is_some());
        let table = ShareTable::of(zone);
        let local = Local { latency: &[], weight: &[], shares: table.shares(), now_ms: now, tau_ms: 1.0, slow_start_ms: RAMP_MS };
        let plain = || if sed { LeastShare::expected_delay() } else { LeastShare::new() };
        // what the zone's words say of peer i: in flight as compared, share
        // and limit, as slow start has them
        let seen = |i: usize| {
            let (c, w, l) = zone.pick_view(i);
            match f.filter(|_| i == 0) {
                Some(f) => (c, c + 1 - u64::from(sed), slow_start::weight(w, f), slow_start::limit(l, f)),
                None => (c, c, w, l),
            }
        };
        let mut copy = LeastPerShare::new(plain(), local);
        let mut words = plain();
        let mut full = false;
        for i in 0..n {
            Compare::offer(&mut copy, i, i, zone);
            let (c, compared, w, l) = seen(i);
            if l != 0 && c >= l as u64 {
                full = true;
            } else {
                words.offer(i, compared, w, 0);
            }
        }
        prop_assert_eq!(Compare::best(&copy), words.best());
        prop_assert_eq!(Compare::tied(&copy), words.tied());
        prop_assert_eq!(Compare::limited(&copy), full);
        for i in 0..n {
            let (c, compared, w, l) = seen(i);
            let open = l == 0 || c < l as u64;
            let want = (open && words.is_tied(compared, w, 0)).then_some(w.max(1));
            prop_assert_eq!(copy.tie_weight(i, zone), want);
            prop_assert_eq!(copy.accepts(i, zone), open);
        }
    }
}

/// The slow start of [`the_pick_over_the_copy_is_the_pick_over_the_zone`], ms.
const RAMP_MS: u64 = 10_000;
