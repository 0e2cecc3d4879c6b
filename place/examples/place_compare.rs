//! Compares placement methods on random clusters (BENCHMARKS.md,
//! placement): the greedy of the Proxmox VE / Ceph I/O-balancing article
//! (greedy 'stones into piles'; "seed's greedy" in the table), that greedy
//! cut to a migration budget, and `dwepc_place::plan::plan` at budgets 1,
//! 3, 10 and none (within a budget, the exact search, each plan given
//! LIMIT_MS as `--time-limit`, default 2000). Each instance: 3–32 equal
//! hosts, 10–500 VMs placed at random where they fit, heavy-tailed disk
//! I/O (Pareto, shape 1.2), CPU and memory per VM at random with hosts
//! about 60 % full; the objective is disk I/O per host. Reports max/mean
//! host load over the lower bound max(total/hosts, largest VM), the
//! migrations used, how often a method breaks a host's CPU or memory, the
//! share of plans proven optimal within their budget, and the plan's run
//! time at 16 hosts x 200 VMs and 32 hosts x 500 VMs.
//!
//!     cargo run --release -p dwepc-place --example place_compare -- [INSTANCES] [SEED] [LIMIT_MS]
//!     cargo run --release -p dwepc-place --example place_compare -- proof [INSTANCES]
//!
//! `proof`: how many plans within a budget of 3 are proven optimal (the
//! default 2-s limit) on clusters of up to 16 hosts x 200 VMs and on the
//! whole range, with the slowest plan and the gaps of those not proven.

use dwepc_core::rng::Rng;
use dwepc_place::plan::{
    current, feasible, greedy_lpt, greedy_within, lower_bound, plan, Host, Placement, Problem, Vm,
};
use std::time::{Duration, Instant};

fn uniform(r: &mut Rng) -> f64 {
    (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn instance(r: &mut Rng, hosts: usize, vms: usize) -> Problem {
    // VM sizes first, then hosts sized so the cluster is ~60 % full
    let sizes: Vec<(f64, f64, f64)> = (0..vms)
        .map(|_| {
            let cpu = 500.0 + 3500.0 * uniform(r);
            let mem = [2048.0, 4096.0, 8192.0, 16384.0][r.below(4) as usize];
            // Pareto(xm = 50 KB/s, alpha = 1.2), capped at 200 MB/s
            let disk = (50.0 / (1.0 - uniform(r)).powf(1.0 / 1.2)).min(200_000.0);
            (cpu, mem, disk)
        })
        .collect();
    let total_cpu: f64 = sizes.iter().map(|s| s.0).sum();
    let total_mem: f64 = sizes.iter().map(|s| s.1).sum();
    let largest_mem = sizes.iter().map(|s| s.1).fold(0.0, f64::max);
    let cpu_cap = (total_cpu / hosts as f64 / 0.6).max(8000.0);
    let mem_cap = (total_mem / hosts as f64 / 0.6).max(2.0 * largest_mem);
    let hs: Vec<Host> = (0..hosts)
        .map(|i| Host {
            name: format!("esx-{i}"),
            capacity: [cpu_cap, mem_cap, 1.0, 1.0],
            limit_cpu: cpu_cap,
            limit_mem: mem_cap,
            excluded: false,
        })
        .collect();
    // current placement: each VM on a random host with room (the last
    // resort: the emptiest)
    let mut cpu = vec![0.0; hosts];
    let mut mem = vec![0.0; hosts];
    let vs: Vec<Vm> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(c, m, d))| {
            let mut h = r.below(hosts as u64) as usize;
            for _ in 0..20 {
                if cpu[h] + c <= cpu_cap && mem[h] + m <= mem_cap {
                    break;
                }
                h = r.below(hosts as u64) as usize;
            }
            if cpu[h] + c > cpu_cap || mem[h] + m > mem_cap {
                h = (0..hosts)
                    .min_by(|&a, &b| mem[a].total_cmp(&mem[b]))
                    .unwrap_or(0);
            }
            cpu[h] += c;
            mem[h] += m;
            Vm {
                name: format!("vm-{i}"),
                host: h,
                demand: [c, m, 0.0, d],
                cpu: c,
                mem: m,
            }
        })
        .collect();
    Problem {
        hosts: hs,
        vms: vs,
        weights: [0.0, 0.0, 0.0, 1.0],
        apart: Vec::new(),
        max_moves: None,
    }
}

#[derive(Default)]
struct Col {
    ratio: Vec<f64>,
    moves: Vec<f64>,
    infeasible: usize,
    /// Plans proven optimal (None: a method that proves nothing).
    proven: Option<usize>,
}

impl Col {
    /// Adds placement `pl`, reached with `moves` migrations.
    fn add(&mut self, p: &Problem, pl: &Placement, moves: usize, lb: f64) {
        self.ratio.push(pl.max_load(p) / lb);
        self.moves.push(moves as f64);
        let q = Problem {
            max_moves: None,
            ..p.clone()
        };
        if feasible(&q, &pl.host).is_err() {
            self.infeasible += 1;
        }
    }
    fn row(&self, name: &str) -> String {
        let mut r = self.ratio.clone();
        r.sort_by(f64::total_cmp);
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let p95 = r[((r.len() as f64 * 0.95).ceil() as usize).clamp(1, r.len()) - 1];
        let opt = r.iter().filter(|&&x| x <= 1.0 + 1e-9).count();
        let mv = self.moves.iter().sum::<f64>() / self.moves.len() as f64;
        let proven = self.proven.map_or("–".to_string(), |n| {
            format!("{:.1} %", 100.0 * n as f64 / r.len() as f64)
        });
        format!(
            "| {name} | {mean:.3} | {p95:.3} | {:.3} | {:.1} % | {mv:.1} | {:.1} % | {proven} |",
            r[r.len() - 1],
            100.0 * opt as f64 / r.len() as f64,
            100.0 * self.infeasible as f64 / r.len() as f64
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proof") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
        return proof(n);
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let limit_ms: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let limit = Duration::from_millis(limit_ms);
    let mut r = Rng::new(seed);
    let names = [
        "current placement",
        "seed's greedy (LPT from empty)",
        "greedy, first 1 move",
        "greedy, first 3 moves",
        "greedy, first 10 moves",
        "plan, budget 1",
        "plan, budget 3",
        "plan, budget 10",
        "plan, no budget",
    ];
    let mut cols: Vec<Col> = names.iter().map(|_| Col::default()).collect();
    for c in &mut cols[5..] {
        c.proven = Some(0);
    }
    let t = Instant::now();
    for _ in 0..n {
        let hosts = 3 + r.below(30) as usize;
        let vms = 10 + r.below(491) as usize;
        let mut p = instance(&mut r, hosts, vms);
        let lb = lower_bound(&p);
        cols[0].add(&p, &current(&p), 0, lb);
        let g = greedy_lpt(&p);
        cols[1].add(&p, &g, g.moves(&p), lb);
        for (i, k) in [1usize, 3, 10].iter().enumerate() {
            let g = greedy_within(&p, *k);
            cols[2 + i].add(&p, &g, g.moves(&p), lb);
        }
        for (i, k) in [Some(1usize), Some(3), Some(10), None].iter().enumerate() {
            p.max_moves = *k;
            let pl = plan(&p, limit);
            let c = &mut cols[5 + i];
            c.add(&p, &pl.placement, pl.moves.len(), lb);
            if pl.proven {
                c.proven = c.proven.map(|x| x + 1);
            }
        }
    }
    eprintln!("{n} instances in {:.1} s", t.elapsed().as_secs_f64());
    if n == 0 {
        // the timings alone (seed 1 with 0 instances: the same clusters)
        for (hosts, vms) in [(16, 200), (32, 500)] {
            timings(&mut r, hosts, vms, limit);
        }
        return;
    }
    println!("{n} instances, seed {seed}, time limit {limit_ms} ms: max host load / lower bound (1.000 = optimal)\n");
    println!(
        "| method | mean | p95 | worst | at the bound | migrations (mean) | breaks CPU/memory | proven optimal |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, name) in cols.iter().zip(names) {
        println!("{}", c.row(name));
    }
    println!();
    for (hosts, vms) in [(16, 200), (32, 500)] {
        timings(&mut r, hosts, vms, limit);
    }
}

/// The plan's run time on 10 instances of `hosts` x `vms`, per budget.
fn timings(r: &mut Rng, hosts: usize, vms: usize, limit: Duration) {
    for k in [Some(3usize), Some(10), None] {
        let mut ms = Vec::new();
        let mut proven = 0;
        for _ in 0..10 {
            let mut p = instance(r, hosts, vms);
            p.max_moves = k;
            let t = Instant::now();
            let pl = plan(&p, limit);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            proven += pl.proven as usize;
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "plan at {hosts} hosts x {vms} VMs, budget {}: p50 {:.0} ms, max {:.0} ms over 10 instances, {proven} proven optimal",
            k.map_or("none".to_string(), |k| k.to_string()),
            0.5 * (ms[4] + ms[5]),
            ms[9],
        );
    }
}

/// Plans within a budget of 3 proven optimal in 2 s, on `n` clusters of
/// up to 16 hosts x 200 VMs and `n` of the whole range.
fn proof(n: usize) {
    let mut r = Rng::new(11);
    let limit = Duration::from_millis(2000);
    for (label, hosts_above_3, vms_above_10) in [
        ("3-16 hosts x 10-200 VMs", 14, 191),
        ("3-32 hosts x 10-500 VMs", 30, 491),
    ] {
        let (mut slowest, mut unproven) = (0.0f64, Vec::new());
        for _ in 0..n {
            let hosts = 3 + r.below(hosts_above_3) as usize;
            let vms = 10 + r.below(vms_above_10) as usize;
            let mut p = instance(&mut r, hosts, vms);
            p.max_moves = Some(3);
            let t = Instant::now();
            let pl = plan(&p, limit);
            slowest = slowest.max(t.elapsed().as_secs_f64() * 1000.0);
            if !pl.proven {
                unproven.push(format!("{hosts}x{vms} gap {:.1} %", 100.0 * pl.gap(&p)));
            }
        }
        println!(
            "{label}, budget 3: {} of {n} proven optimal, slowest {slowest:.0} ms; not proven: {unproven:?}",
            n - unproven.len()
        );
    }
}
