//! Property tests of the placement optimizer (place/src/plan/): a plan
//! never breaks a capacity, anti-affinity, exclusion or budget constraint,
//! never ends worse than the current placement, and with no budget is
//! never worse than greedy; within a budget of 1 to 3 migrations on small
//! clusters it is the optimum that brute force finds, and every migration
//! of it keeps the constraints on its own.

use dwepc_place::plan::{
    current, evaluate, feasible, greedy_feasible, greedy_lpt, greedy_within, local_search,
    lower_bound, plan, Host, Plan, Problem, Vm,
};
use proptest::prelude::*;
use std::time::Duration;

/// The advisor's plan, with time enough to finish on these sizes.
fn best(p: &Problem) -> Plan {
    plan(p, Duration::from_secs(20))
}

/// Hosts (CPU MHz, memory MB, excluded) and VMs (host, disk, CPU, memory).
fn problem() -> impl Strategy<Value = Problem> {
    (2usize..7, 1usize..30).prop_flat_map(|(nh, nv)| {
        (
            prop::collection::vec(
                (
                    20_000.0f64..60_000.0,
                    64_000.0f64..256_000.0,
                    prop::bool::weighted(0.1),
                ),
                nh,
            ),
            prop::collection::vec(
                (
                    0..nh,
                    0.0f64..1000.0,
                    100.0f64..8000.0,
                    512.0f64..32_000.0,
                    prop::bool::weighted(0.3),
                ),
                nv,
            ),
            prop::collection::vec(prop::collection::vec(0..nv, 2..4), 0..3),
            prop_oneof![Just(None), (0usize..6).prop_map(Some)],
            prop::array::uniform4(prop_oneof![Just(0.0), 0.1f64..1.0]),
        )
            .prop_map(move |(hosts, vms, apart, max_moves, w)| {
                let hosts: Vec<Host> = hosts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, excluded))| Host {
                        name: format!("h{i}"),
                        capacity: [cpu, mem, 1.0, 1.0],
                        limit_cpu: cpu,
                        limit_mem: mem,
                        excluded,
                    })
                    .collect();
                let vms: Vec<Vm> = vms
                    .into_iter()
                    .enumerate()
                    .map(|(i, (host, disk, cpu, mem, heavy_tail))| Vm {
                        name: format!("vm{i}"),
                        host,
                        // heavy-tailed I/O: some VMs 20x the rest
                        demand: [
                            cpu,
                            mem,
                            disk / 10.0,
                            if heavy_tail { disk * 20.0 } else { disk },
                        ],
                        cpu,
                        mem,
                    })
                    .collect();
                let apart = groups(apart);
                // balance disk, sometimes mixed with another resource
                let mut weights = w;
                weights[3] = 1.0;
                Problem {
                    hosts,
                    vms,
                    weights,
                    apart,
                    max_moves,
                }
            })
    })
}

/// Anti-affinity groups from drawn VM indices: each sorted without
/// repeats, those of two VMs or more, no group twice in a row.
fn groups(drawn: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    let mut apart: Vec<Vec<usize>> = drawn
        .into_iter()
        .map(|mut g| {
            g.sort_unstable();
            g.dedup();
            g
        })
        .filter(|g| g.len() >= 2)
        .collect();
    apart.dedup();
    apart
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the instance, the local search's placement keeps every
    /// constraint, is no worse than where the VMs run now, and moves no
    /// more VMs than allowed.
    #[test]
    fn a_plan_keeps_the_constraints_and_never_makes_it_worse(p in problem()) {
        let now = current(&p);
        let pl = local_search(&p, true);
        prop_assert!(feasible(&p, &pl.host).is_ok(), "{:?}", feasible(&p, &pl.host));
        prop_assert!(pl.max_load(&p) <= now.max_load(&p) * (1.0 + 1e-9) + 1e-12);
        if let Some(m) = p.max_moves {
            prop_assert!(pl.moves(&p) <= m);
        }
        // excluded hosts give and receive nothing
        for (v, &h) in pl.host.iter().enumerate() {
            if p.hosts[h].excluded || p.hosts[p.vms[v].host].excluded {
                prop_assert_eq!(h, p.vms[v].host);
            }
        }
        // the loads it reports are the loads of its placement
        prop_assert_eq!(&evaluate(&p, &pl.host), &pl);
        prop_assert!(pl.max_load(&p) >= lower_bound(&p) * (1.0 - 1e-9) - 1e-12);
    }

    /// With no budget, the plan is never worse than greedy (when greedy
    /// keeps the constraints).
    #[test]
    fn with_no_budget_never_worse_than_greedy(mut p in problem()) {
        p.max_moves = None;
        let pl = local_search(&p, true);
        for g in [greedy_feasible(&p), greedy_lpt(&p)] {
            if feasible(&p, &g.host).is_ok() {
                prop_assert!(
                    pl.max_load(&p) <= g.max_load(&p) * (1.0 + 1e-9) + 1e-12,
                    "plan {} greedy {}", pl.max_load(&p), g.max_load(&p)
                );
            }
        }
    }

    /// The greedy cut to a budget keeps the budget and the constraints.
    #[test]
    fn greedy_within_a_budget_keeps_it(p in problem(), budget in 0usize..6) {
        let g = greedy_within(&p, budget);
        prop_assert!(g.moves(&p) <= budget);
        let q = Problem { max_moves: Some(budget), ..p.clone() };
        prop_assert!(feasible(&q, &g.host).is_ok());
    }
}

/// The case of the Proxmox VE / Ceph I/O-balancing article (greedy
/// 'stones into piles'): two heavy VMs share a host while another idles;
/// one move fixes it, and the plan makes exactly that move.
#[test]
fn two_heavy_vms_on_one_host_are_split_with_one_move() {
    let p = disk_only(
        vec![
            host("esx-1", 40_000.0, 128_000.0),
            host("esx-2", 40_000.0, 128_000.0),
            host("esx-3", 40_000.0, 128_000.0),
        ],
        vec![
            vm("db-1", 0, 900.0, 1000.0, 4096.0),
            vm("db-2", 0, 800.0, 1000.0, 4096.0),
            vm("web-1", 1, 100.0, 1000.0, 4096.0),
            vm("web-2", 2, 120.0, 1000.0, 4096.0),
        ],
        Some(3),
    );
    let pl = best(&p).placement;
    assert_eq!(pl.moves(&p), 1, "{pl:?}");
    assert_ne!(pl.host[0], pl.host[1], "{pl:?}");
    assert_eq!(pl.max_load(&p), 900.0);
    // the article's greedy moves VMs that need not move
    assert!(greedy_lpt(&p).moves(&p) >= 1);
    // no budget at all: nothing moves
    let none = Problem {
        max_moves: Some(0),
        ..p.clone()
    };
    assert_eq!(best(&none).moves.len(), 0);
}

/// Capacity: the idle host has no memory left, so the heavy VM goes to the
/// other one even though it is busier.
#[test]
fn a_full_host_receives_nothing() {
    let p = disk_only(
        vec![
            host("a", 40_000.0, 64_000.0),
            host("b", 40_000.0, 64_000.0),
            host("c", 40_000.0, 8_000.0),
        ],
        vec![
            vm("x", 0, 900.0, 1000.0, 16_000.0),
            vm("y", 0, 800.0, 1000.0, 16_000.0),
            vm("z", 1, 300.0, 1000.0, 16_000.0),
            vm("small", 2, 10.0, 1000.0, 6_000.0),
        ],
        Some(1),
    );
    let pl = best(&p).placement;
    assert_eq!(pl.host[3], 2);
    assert!(pl.host.iter().filter(|&&h| h == 2).count() == 1, "{pl:?}");
    assert_eq!(pl.moves(&p), 1);
    assert!((pl.max_load(&p) - 1100.0).abs() < 1e-9, "{pl:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The plan's migrations, one at a time in the given order, end at the
    /// plan, and every intermediate placement keeps the constraints.
    #[test]
    fn migrations_in_order_keep_the_constraints_at_every_step(p in problem()) {
        let pl = local_search(&p, true);
        let (moves, stuck) = dwepc_place::plan::ordered_moves(&p, &pl);
        let mut at: Vec<usize> = p.vms.iter().map(|v| v.host).collect();
        let free = Problem { max_moves: None, ..p.clone() };
        for m in &moves {
            prop_assert_eq!(at[m.vm], m.from);
            at[m.vm] = m.to;
            prop_assert!(feasible(&free, &at).is_ok(), "{:?}", feasible(&free, &at));
            prop_assert!((evaluate(&p, &at).max_load(&p) - m.peak_after).abs() <= 1e-9 * m.peak_after.max(1.0));
        }
        for &v in &stuck {
            at[v] = pl.host[v];
        }
        prop_assert_eq!(&at, &pl.host);
        // moves left out only when no order of them all works: with few
        // moves the search is exhaustive, and every order is tried here
        for target in [pl, local_search(&p, false)] {
            let (moves, stuck) = dwepc_place::plan::ordered_moves(&p, &target);
            let home: Vec<usize> = p.vms.iter().map(|v| v.host).collect();
            let all: Vec<usize> = moves.iter().map(|m| m.vm).chain(stuck.iter().copied()).collect();
            if !stuck.is_empty() && all.len() <= 6 {
                prop_assert!(!some_order_works(&free, &home, &all, &target.host), "{:?} of {:?} could be ordered", stuck, all);
            }
        }
    }
}

/// Whether the VMs of `left` can move from `at` to `target` one at a time,
/// each step keeping the constraints (every order tried).
fn some_order_works(p: &Problem, at: &[usize], left: &[usize], target: &[usize]) -> bool {
    if left.is_empty() {
        return true;
    }
    left.iter().any(|&v| {
        let mut next = at.to_vec();
        next[v] = target[v];
        feasible(p, &next).is_ok() && {
            let rest: Vec<usize> = left.iter().copied().filter(|&u| u != v).collect();
            some_order_works(p, &next, &rest, target)
        }
    })
}

/// Disk I/O balanced over `hosts`, no anti-affinity.
fn disk_only(hosts: Vec<Host>, vms: Vec<Vm>, max_moves: Option<usize>) -> Problem {
    Problem {
        hosts,
        vms,
        weights: [0.0, 0.0, 0.0, 1.0],
        apart: Vec::new(),
        max_moves,
    }
}

/// A host of `cpu` MHz and `mem` MB, all of it usable.
fn host(name: &str, cpu: f64, mem: f64) -> Host {
    Host {
        name: name.into(),
        capacity: [cpu, mem, 1.0, 1.0],
        limit_cpu: cpu,
        limit_mem: mem,
        excluded: false,
    }
}

/// A VM on host `host` using `disk` KB/s, `cpu` MHz and `mem` MB.
fn vm(name: &str, host: usize, disk: f64, cpu: f64, mem: f64) -> Vm {
    Vm {
        name: name.into(),
        host,
        demand: [cpu, mem, 0.0, disk],
        cpu,
        mem,
    }
}

/// A review's case: with no budget, the greedy start put vm1 next to its
/// anti-affinity partner vm0; such a plan is infeasible now.
#[test]
fn no_plan_brings_an_anti_affinity_pair_together() {
    let p = Problem {
        apart: vec![vec![0, 1, 2]],
        ..disk_only(
            vec![host("h0", 1e6, 1e6), host("h1", 1e6, 1e6)],
            vec![
                vm("vm0", 1, 10.0, 1.0, 1.0),
                vm("vm1", 0, 50.0, 1.0, 1.0),
                vm("vm2", 0, 300.0, 1.0, 1.0),
            ],
            None,
        )
    };
    let pl = best(&p).placement;
    assert!(feasible(&p, &pl.host).is_ok(), "{pl:?}");
    assert_ne!(pl.host[0], pl.host[1], "{pl:?}");
    assert!(feasible(&p, &[1, 1, 0]).is_err());
}

/// A review's case: taking the best move first (v3) blocks v0 and v1; the
/// order v1, v0, v3 works and is found.
#[test]
fn a_migration_order_is_found_where_the_first_choice_blocks() {
    let p = disk_only(
        vec![
            host("h0", 400.0, 1e6),
            host("h1", 400.0, 1e6),
            host("h2", 300.0, 1e6),
            host("h3", 300.0, 1e6),
        ],
        vec![
            vm("v0", 1, 200.0, 100.0, 1.0),
            vm("v1", 3, 50.0, 200.0, 1.0),
            vm("v2", 2, 300.0, 100.0, 1.0),
            vm("v3", 0, 300.0, 200.0, 1.0),
            vm("v4", 0, 300.0, 200.0, 1.0),
            vm("v5", 3, 200.0, 100.0, 1.0),
        ],
        None,
    );
    let target = evaluate(&p, &[3, 1, 2, 1, 0, 3]);
    let (moves, stuck) = dwepc_place::plan::ordered_moves(&p, &target);
    assert!(stuck.is_empty(), "{moves:?} {stuck:?}");
    assert_eq!(moves.len(), 3);
}

#[test]
fn statistics_of_samples() {
    use dwepc_place::plan::Stat;
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(Stat::parse("p95").unwrap().of(&v), Some(95.0));
    assert_eq!(Stat::parse("max").unwrap().of(&v), Some(100.0));
    assert_eq!(Stat::parse("mean").unwrap().of(&v), Some(50.5));
    // vSphere's -1 ("no value") and NaN are left out
    assert_eq!(Stat::Mean.of(&[-1.0, 4.0, f64::NAN, 2.0]), Some(3.0));
    assert_eq!(Stat::Mean.of(&[-1.0]), None);
    // nearest rank without floating-point drift: p55 of 180 is the 99th
    let hour: Vec<f64> = (1..=180).map(f64::from).collect();
    assert_eq!(Stat::parse("p55").unwrap().of(&hour), Some(99.0));
    assert_eq!(Stat::parse("p7").unwrap().of(&v), Some(7.0));
    assert!(
        Stat::parse("p0").is_err() && Stat::parse("q95").is_err() && Stat::parse("p101").is_err()
    );
}

/// Small clusters like those of a trial of dwepc-place on unseen clusters: 2–5 hosts of unequal
/// size (CPU, memory and disk capacity, so a VM weighs differently on each)
/// with CPU/memory ratios and reservations (limits apart from capacities),
/// 2–10 VMs of unequal disk I/O, CPU and memory (some hosts near their
/// memory limit), anti-affinity groups, sometimes an excluded host, a
/// budget of 1–3 migrations; disk I/O balanced, sometimes with CPU.
fn small_problem() -> impl Strategy<Value = Problem> {
    (2usize..=5, 2usize..=10).prop_flat_map(|(nh, nv)| {
        (
            prop::collection::vec(
                (
                    10_000.0f64..40_000.0,
                    16_000.0f64..64_000.0,
                    0.5f64..2.0,
                    0.0f64..4000.0,
                    prop::bool::weighted(0.08),
                    prop_oneof![Just(1.0), 0.5f64..2.0],
                ),
                nh,
            ),
            prop::collection::vec(
                (0..nh, 1.0f64..1000.0, 500.0f64..8000.0, 1024.0f64..24_000.0),
                nv,
            ),
            prop::collection::vec(prop::collection::vec(0..nv, 2..4), 0..3),
            1usize..=3,
            prop_oneof![Just(0.0), 0.2f64..1.0],
        )
            .prop_map(move |(hosts, vms, apart, budget, cpu_weight)| {
                let hosts: Vec<Host> = hosts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, ratio, reserved, excluded, disk))| Host {
                        name: format!("h{i}"),
                        capacity: [cpu, mem, 1.0, disk],
                        limit_cpu: cpu * ratio - reserved,
                        limit_mem: mem * ratio.min(1.2) - reserved,
                        excluded,
                    })
                    .collect();
                let vms: Vec<Vm> = vms
                    .into_iter()
                    .enumerate()
                    .map(|(i, (host, disk, cpu, mem))| Vm {
                        name: format!("vm{i}"),
                        host,
                        demand: [cpu, mem, 0.0, disk],
                        cpu,
                        mem,
                    })
                    .collect();
                let apart = groups(apart);
                Problem {
                    hosts,
                    vms,
                    weights: [cpu_weight, 0.0, 0.0, 1.0],
                    apart,
                    max_moves: Some(budget),
                }
            })
    })
}

/// Brute force, written apart from the optimizer: every sequence of at
/// most `max_moves` migrations, each keeping the constraints on its own
/// (the target has the CPU and memory — its limit, or what it held at the
/// start if more — no VM of the migrating VM's anti-affinity groups runs
/// there, neither host is excluded). Returns the lowest peak and the
/// fewest migrations that reach it.
fn brute_force(p: &Problem) -> (f64, usize) {
    let home = p.homes();
    let used = |at: &[usize], h: usize| {
        at.iter()
            .enumerate()
            .filter(|(_, &x)| x == h)
            .fold((0.0, 0.0), |(c, m), (v, _)| {
                (c + p.vms[v].cpu, m + p.vms[v].mem)
            })
    };
    let room: Vec<(f64, f64)> = (0..p.hosts.len())
        .map(|h| {
            let (c, m) = used(&home, h);
            (p.hosts[h].limit_cpu.max(c), p.hosts[h].limit_mem.max(m))
        })
        .collect();
    let step_ok = |at: &[usize], v: usize, to: usize| {
        let (c, m) = used(at, to);
        to != at[v]
            && !p.hosts[to].excluded
            && !p.hosts[at[v]].excluded
            && c + p.vms[v].cpu <= room[to].0 + 1e-9
            && m + p.vms[v].mem <= room[to].1 + 1e-9
            && !p
                .apart
                .iter()
                .filter(|g| g.contains(&v))
                .any(|g| g.iter().any(|&u| u != v && at[u] == to))
    };
    fn go(
        p: &Problem,
        at: &mut Vec<usize>,
        depth: usize,
        left: usize,
        step_ok: &dyn Fn(&[usize], usize, usize) -> bool,
        best: &mut (f64, usize),
    ) {
        let peak = evaluate(p, at).max_load(p);
        let tol = 1e-9 * best.0.max(1e-300);
        if peak < best.0 - tol || (peak <= best.0 + tol && depth < best.1) {
            *best = (peak, depth);
        }
        if left == 0 {
            return;
        }
        for v in 0..p.vms.len() {
            for to in 0..p.hosts.len() {
                if step_ok(at, v, to) {
                    let from = at[v];
                    at[v] = to;
                    go(p, at, depth + 1, left - 1, step_ok, best);
                    at[v] = from;
                }
            }
        }
    }
    let mut best = (f64::INFINITY, usize::MAX);
    let mut at = home.clone();
    go(p, &mut at, 0, p.max_moves.unwrap_or(0), &step_ok, &mut best);
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Within a budget of 1–3 migrations the plan reaches the lowest peak
    /// brute force finds, with as few migrations, says it is proven, and
    /// every migration, in the printed order, keeps the constraints on
    /// its own.
    #[test]
    fn within_a_budget_the_plan_is_the_brute_force_optimum(p in small_problem()) {
        let (peak, fewest) = brute_force(&p);
        let pl = best(&p);
        let got = pl.placement.max_load(&p);
        prop_assert!((got - peak).abs() <= 1e-9 * peak.max(1e-12), "plan peak {} brute force {} ({:?})", got, peak, pl.moves);
        prop_assert_eq!(pl.moves.len(), fewest, "{:?}", pl.moves);
        prop_assert!(pl.proven);
        let free = Problem { max_moves: None, ..p.clone() };
        let mut at = p.homes();
        for m in &pl.moves {
            prop_assert_eq!(at[m.vm], m.from);
            at[m.vm] = m.to;
            prop_assert!(feasible(&free, &at).is_ok(), "{:?} after {:?}", feasible(&free, &at), m);
            prop_assert!(!p.hosts[m.from].excluded && !p.hosts[m.to].excluded);
        }
        prop_assert_eq!(&at, &pl.placement.host);
        prop_assert!((pl.bound - peak).abs() <= 1e-9 * peak.max(1e-12), "bound {} optimum {}", pl.bound, peak);
    }

    /// A search given no time still prints a plan that runs, and its bound
    /// is below (or at) the true optimum, so its gap is an honest one.
    #[test]
    fn a_search_cut_short_gives_a_true_bound(p in small_problem()) {
        let (peak, _) = brute_force(&p);
        let pl = plan(&p, Duration::ZERO);
        prop_assert!(pl.bound <= peak * (1.0 + 1e-9), "bound {} above the optimum {}", pl.bound, peak);
        prop_assert!(pl.placement.max_load(&p) >= peak * (1.0 - 1e-9));
        prop_assert!(pl.moves.len() <= p.max_moves.unwrap_or(usize::MAX));
        let free = Problem { max_moves: None, ..p.clone() };
        let mut at = p.homes();
        for m in &pl.moves {
            at[m.vm] = m.to;
            prop_assert!(feasible(&free, &at).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With no budget the plan runs as printed (every migration keeps the
    /// constraints on its own, nothing is left to move "together") and is
    /// never worse than the plan within the default budget of 3.
    #[test]
    fn with_no_budget_the_plan_runs_as_printed_and_beats_budget_3(p in small_problem()) {
        let none = Problem { max_moves: None, ..p.clone() };
        let three = Problem { max_moves: Some(3), ..p.clone() };
        let pl = best(&none);
        let mut at = p.homes();
        for m in &pl.moves {
            prop_assert_eq!(at[m.vm], m.from);
            at[m.vm] = m.to;
            prop_assert!(feasible(&none, &at).is_ok(), "{:?} after {:?}", feasible(&none, &at), m);
        }
        prop_assert_eq!(&at, &pl.placement.host);
        let (peak, within) = (pl.placement.max_load(&none), best(&three).placement.max_load(&three));
        prop_assert!(peak <= within * (1.0 + 1e-9), "no budget {} budget 3 {}", peak, within);
    }
}
