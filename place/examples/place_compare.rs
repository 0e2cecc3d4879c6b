//! Compares placement methods on random clusters (BENCHMARKS.md,
//! placement): the greedy of the Proxmox VE / Ceph I/O-balancing article
//! (greedy 'stones into piles'; "seed's greedy" in the table), that greedy
//! cut to a migration budget, and `dwepc_place::plan::plan` at budgets 1,
//! 3, 10 and none. Each instance: 3–32 equal hosts, 10–500 VMs placed at
//! random where they fit, heavy-tailed disk I/O (Pareto, shape 1.2), CPU
//! and memory per VM at random with hosts about 60 % full; the objective
//! is disk I/O per host. Reports max/mean host load over the lower bound
//! max(total/hosts, largest VM), the migrations used, how often the
//! article's greedy breaks a host's CPU or memory, and the plan's run time
//! at 32 hosts x 500 VMs.
//!
//!     cargo run --release -p dwepc-place --example place_compare -- [INSTANCES] [SEED]

use dwepc_core::rng::Rng;
use dwepc_place::plan::{
    current, feasible, greedy_lpt, greedy_within, lower_bound, plan, Host, Placement, Problem, Vm,
};
use std::time::Instant;

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
}

impl Col {
    fn add(&mut self, p: &Problem, pl: &Placement, lb: f64) {
        self.ratio.push(pl.max_load(p) / lb);
        self.moves.push(pl.moves(p) as f64);
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
        format!(
            "| {name} | {mean:.3} | {p95:.3} | {:.3} | {:.1} % | {mv:.1} | {:.1} % |",
            r[r.len() - 1],
            100.0 * opt as f64 / r.len() as f64,
            100.0 * self.infeasible as f64 / r.len() as f64
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
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
    let t = Instant::now();
    for _ in 0..n {
        let hosts = 3 + r.below(30) as usize;
        let vms = 10 + r.below(491) as usize;
        let mut p = instance(&mut r, hosts, vms);
        let lb = lower_bound(&p);
        cols[0].add(&p, &current(&p), lb);
        cols[1].add(&p, &greedy_lpt(&p), lb);
        for (i, k) in [1usize, 3, 10].iter().enumerate() {
            cols[2 + i].add(&p, &greedy_within(&p, *k), lb);
        }
        for (i, k) in [Some(1usize), Some(3), Some(10), None].iter().enumerate() {
            p.max_moves = *k;
            cols[5 + i].add(&p, &plan(&p), lb);
        }
    }
    eprintln!("{n} instances in {:.1} s", t.elapsed().as_secs_f64());
    println!("{n} instances, seed {seed}: max host load / lower bound (1.000 = optimal)\n");
    println!(
        "| method | mean | p95 | worst | at the bound | migrations (mean) | breaks CPU/memory |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, name) in cols.iter().zip(names) {
        println!("{}", c.row(name));
    }
    // run time at the largest size
    let mut times = Vec::new();
    for _ in 0..10 {
        let mut p = instance(&mut r, 32, 500);
        for k in [Some(10usize), None] {
            p.max_moves = k;
            let t = Instant::now();
            let pl = plan(&p);
            times.push((k, t.elapsed().as_secs_f64() * 1000.0, pl.moves(&p)));
        }
    }
    for k in [Some(10usize), None] {
        let ts: Vec<f64> = times.iter().filter(|t| t.0 == k).map(|t| t.1).collect();
        let mv: Vec<usize> = times.iter().filter(|t| t.0 == k).map(|t| t.2).collect();
        println!(
            "\nplan at 32 hosts x 500 VMs, budget {}: mean {:.0} ms, max {:.0} ms over 10 instances (migrations {:?})",
            k.map_or("none".to_string(), |k| k.to_string()),
            ts.iter().sum::<f64>() / ts.len() as f64,
            ts.iter().cloned().fold(0.0, f64::max),
            mv
        );
    }
}
