//! The placement advisor's optimizer (`dwepc-place`): where the VMs should
//! run so that one resource (or a weighted mix) is balanced over the hosts,
//! starting from where they run now and within a budget of migrations.
//! Plain data in, a plan out; no vSphere types.
//!
//! The load of a host is the weighted sum, over the balanced resources, of
//! its VMs' demand divided by the host's capacity for that resource (its
//! utilisation). A placement is better than another when its largest host
//! load is smaller, and at an equal largest load when the sum of squared
//! loads is smaller (so that a move that relieves the second-busiest host
//! still counts).
//!
//! Constraints, never broken by a plan: each host's CPU and memory, Nova
//! style (`capacity × ratio − reserved`, [`crate::conf`]'s accounting)
//! hold the VMs placed there; VMs of one anti-affinity group run on
//! different hosts; excluded hosts (maintenance, or named by the user)
//! receive no VM and give none (their VMs stay and are not balanced); at
//! most `max_moves` VMs end on another host than their current one. A VM
//! that already breaks a constraint where it runs now is not forced away;
//! the plan only never makes a host worse on a constraint.
//!
//! The search ([`plan`]): best-improvement local search from the current
//! placement over single moves and pairwise swaps, each step taking the
//! move (or swap) that lowers the objective most, until no step helps or
//! the budget is spent; a move that brings a VM back home gives a
//! migration back. With an unlimited budget it also runs from the
//! greedy placement (largest VM first onto the least-loaded host that can
//! take it) and keeps the better, so it is never worse than greedy. The
//! seed's greedy ([`greedy_lpt`]) and the greedy cut to a budget
//! ([`greedy_within`]) are here too, for the comparison in BENCHMARKS.md.

/// Resources: CPU (MHz), memory (MB), network (KB/s), disk (KB/s).
pub const RESOURCES: [&str; 4] = ["cpu", "mem", "net", "disk"];

/// One host.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// Capacity per resource (CPU MHz, memory MB, network and disk KB/s;
    /// a resource without a known capacity: 1, so loads are raw sums).
    pub capacity: [f64; 4],
    /// What CPU and memory may hold: capacity × ratio − reserved.
    pub limit_cpu: f64,
    pub limit_mem: f64,
    /// Receives and gives no VM.
    pub excluded: bool,
}

/// One VM.
#[derive(Clone, Debug)]
pub struct Vm {
    pub name: String,
    /// Index of its current host.
    pub host: usize,
    /// Demand per resource, in the hosts' units.
    pub demand: [f64; 4],
    /// CPU and memory it holds where it runs (its reservation or its
    /// configured size, as the caller accounts; often its demand).
    pub cpu: f64,
    pub mem: f64,
}

/// What to balance and under which constraints.
#[derive(Clone, Debug)]
pub struct Problem {
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
    /// Weight of each resource in a host's load (e.g. disk only: [0,0,0,1]).
    pub weights: [f64; 4],
    /// Groups of VM indices that must run on different hosts.
    pub apart: Vec<Vec<usize>>,
    /// Most VMs that may end on another host (None: no limit).
    pub max_moves: Option<usize>,
}

/// A placement and what it scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Host index per VM.
    pub host: Vec<usize>,
    /// Load per host.
    pub load: Vec<f64>,
}

impl Placement {
    /// The largest host load among hosts that are balanced.
    pub fn max_load(&self, p: &Problem) -> f64 {
        balanced(p).map(|h| self.load[h]).fold(0.0, f64::max)
    }
    /// Mean load of the balanced hosts.
    pub fn mean_load(&self, p: &Problem) -> f64 {
        let n = balanced(p).count().max(1);
        balanced(p).map(|h| self.load[h]).sum::<f64>() / n as f64
    }
    /// VMs not on their current host.
    pub fn moves(&self, p: &Problem) -> usize {
        self.host
            .iter()
            .zip(&p.vms)
            .filter(|(h, v)| **h != v.host)
            .count()
    }
}

fn balanced(p: &Problem) -> impl Iterator<Item = usize> + '_ {
    (0..p.hosts.len()).filter(|&h| !p.hosts[h].excluded)
}

/// VM `v`'s share of host `h`'s load, were it there.
pub fn vm_load(p: &Problem, v: usize, h: usize) -> f64 {
    weight(p, v, h)
}

/// A VM's contribution to a host's load.
fn weight(p: &Problem, v: usize, h: usize) -> f64 {
    let (vm, host) = (&p.vms[v], &p.hosts[h]);
    (0..4)
        .filter(|&r| p.weights[r] != 0.0)
        .map(|r| p.weights[r] * vm.demand[r] / host.capacity[r])
        .sum()
}

/// Scores a placement.
pub fn evaluate(p: &Problem, host: &[usize]) -> Placement {
    let mut load = vec![0.0; p.hosts.len()];
    for (v, &h) in host.iter().enumerate() {
        load[h] += weight(p, v, h);
    }
    Placement {
        host: host.to_vec(),
        load,
    }
}

/// The current placement.
pub fn current(p: &Problem) -> Placement {
    evaluate(p, &p.vms.iter().map(|v| v.host).collect::<Vec<_>>())
}

/// Whether a placement keeps every constraint (capacity on hosts that
/// gained a VM, anti-affinity for groups a plan changed, excluded hosts,
/// the budget), judged against the current placement as the module
/// does: what already was is not counted against a plan.
pub fn feasible(p: &Problem, host: &[usize]) -> Result<(), String> {
    let cur: Vec<usize> = p.vms.iter().map(|v| v.host).collect();
    let (cpu0, mem0) = used(p, &cur);
    let (cpu, mem) = used(p, host);
    for (h, hs) in p.hosts.iter().enumerate() {
        if cpu[h] > hs.limit_cpu.max(cpu0[h]) + 1e-9 {
            return Err(format!("host {} over its CPU", hs.name));
        }
        if mem[h] > hs.limit_mem.max(mem0[h]) + 1e-9 {
            return Err(format!("host {} over its memory", hs.name));
        }
    }
    for (v, (&h, vm)) in host.iter().zip(&p.vms).enumerate() {
        if h != vm.host && (p.hosts[h].excluded || p.hosts[vm.host].excluded) {
            return Err(format!(
                "VM {} moved from or to an excluded host",
                p.vms[v].name
            ));
        }
    }
    for g in &p.apart {
        // no two VMs of a group share a host, unless both already run
        // there and stay (a plan does not fix every old breach, but it
        // never makes one, nor moves one elsewhere)
        for (i, &u) in g.iter().enumerate() {
            for &w in &g[i + 1..] {
                if host[u] == host[w] && (host[u] != cur[u] || host[w] != cur[w]) {
                    return Err(format!(
                        "VMs {} and {} of an anti-affinity group on one host",
                        p.vms[u].name, p.vms[w].name
                    ));
                }
            }
        }
    }
    if let Some(m) = p.max_moves {
        let moves = host
            .iter()
            .zip(&p.vms)
            .filter(|(h, v)| **h != v.host)
            .count();
        if moves > m {
            return Err(format!("{moves} moves over the budget of {m}"));
        }
    }
    Ok(())
}

fn used(p: &Problem, host: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut cpu = vec![0.0; p.hosts.len()];
    let mut mem = vec![0.0; p.hosts.len()];
    for (v, &h) in host.iter().enumerate() {
        cpu[h] += p.vms[v].cpu;
        mem[h] += p.vms[v].mem;
    }
    (cpu, mem)
}

/// The search state: a placement with its loads, CPU and memory per host.
#[derive(Clone)]
struct State<'a> {
    p: &'a Problem,
    host: Vec<usize>,
    load: Vec<f64>,
    cpu: Vec<f64>,
    mem: Vec<f64>,
    /// CPU and memory a host may hold: its limit, or what it held at the
    /// start if more.
    cap_cpu: Vec<f64>,
    cap_mem: Vec<f64>,
    /// Per VM, its anti-affinity groups.
    groups: Vec<Vec<usize>>,
    moves: usize,
    /// Swaps are tried (a swap between two full hosts cannot be carried
    /// out one migration at a time).
    swaps: bool,
}

/// A candidate step: move `v` to `to`, or swap `v` and `w`.
#[derive(Clone, Copy, Debug)]
enum Step {
    Move { v: usize, to: usize },
    Swap { v: usize, w: usize },
}

/// (max load, sum of squared loads), compared lexicographically with a
/// tolerance on the max.
#[derive(Clone, Copy, Debug)]
struct Score {
    max: f64,
    sq: f64,
}

impl Score {
    fn better_than(&self, o: &Score) -> bool {
        let tol = 1e-12 * o.max.abs().max(1e-300);
        if self.max < o.max - tol {
            return true;
        }
        self.max <= o.max + tol && self.sq < o.sq - 1e-12 * o.sq.abs().max(1e-300)
    }
}

impl<'a> State<'a> {
    fn new(p: &'a Problem, host: Vec<usize>) -> State<'a> {
        let pl = evaluate(p, &host);
        let (cpu, mem) = used(p, &host);
        let cur: Vec<usize> = p.vms.iter().map(|v| v.host).collect();
        let (cpu0, mem0) = used(p, &cur);
        let mut groups = vec![Vec::new(); p.vms.len()];
        for (gi, g) in p.apart.iter().enumerate() {
            for &v in g {
                groups[v].push(gi);
            }
        }
        let moves = host
            .iter()
            .zip(&p.vms)
            .filter(|(h, v)| **h != v.host)
            .count();
        State {
            cap_cpu: p
                .hosts
                .iter()
                .zip(&cpu0)
                .map(|(h, &c)| h.limit_cpu.max(c))
                .collect(),
            cap_mem: p
                .hosts
                .iter()
                .zip(&mem0)
                .map(|(h, &m)| h.limit_mem.max(m))
                .collect(),
            p,
            host,
            load: pl.load,
            cpu,
            mem,
            groups,
            moves,
            swaps: true,
        }
    }

    fn score(&self) -> Score {
        score_of(self.p, &self.load)
    }

    /// The three largest loads of balanced hosts, as (load, host).
    fn top3(&self) -> [(f64, usize); 3] {
        let mut t = [(f64::NEG_INFINITY, usize::MAX); 3];
        for h in balanced(self.p) {
            let l = self.load[h];
            if l > t[0].0 {
                t = [(l, h), t[0], t[1]];
            } else if l > t[1].0 {
                t = [t[0], (l, h), t[1]];
            } else if l > t[2].0 {
                t[2] = (l, h);
            }
        }
        t
    }

    /// Whether `v` may run on `to` alongside the VMs there, `gone` (if
    /// any) leaving `to` at the same time.
    fn apart_ok(&self, v: usize, to: usize, gone: Option<usize>) -> bool {
        self.groups[v].iter().all(|&g| {
            self.p.apart[g]
                .iter()
                .all(|&u| u == v || Some(u) == gone || self.host[u] != to)
        })
    }

    fn moved_delta(&self, v: usize, to: usize) -> isize {
        let home = self.p.vms[v].host;
        let was = (self.host[v] != home) as isize;
        let will = (to != home) as isize;
        will - was
    }

    /// The score after `step` and its change in migrations, or None if it
    /// breaks a constraint.
    fn try_step(
        &self,
        step: Step,
        top: &[(f64, usize); 3],
        base: &Score,
    ) -> Option<(Score, isize)> {
        let p = self.p;
        // (host, new load) for the two hosts the step changes
        let (a, b, la, lb, dm) = match step {
            Step::Move { v, to } => {
                let from = self.host[v];
                if to == from || p.hosts[to].excluded || p.hosts[from].excluded {
                    return None;
                }
                let vm = &p.vms[v];
                if self.cpu[to] + vm.cpu > self.cap_cpu[to] + 1e-9
                    || self.mem[to] + vm.mem > self.cap_mem[to] + 1e-9
                    || !self.apart_ok(v, to, None)
                {
                    return None;
                }
                (
                    from,
                    to,
                    self.load[from] - weight(p, v, from),
                    self.load[to] + weight(p, v, to),
                    self.moved_delta(v, to),
                )
            }
            Step::Swap { v, w } => {
                let (hv, hw) = (self.host[v], self.host[w]);
                if hv == hw || p.hosts[hv].excluded || p.hosts[hw].excluded {
                    return None;
                }
                let (x, y) = (&p.vms[v], &p.vms[w]);
                if self.cpu[hw] - y.cpu + x.cpu > self.cap_cpu[hw] + 1e-9
                    || self.mem[hw] - y.mem + x.mem > self.cap_mem[hw] + 1e-9
                    || self.cpu[hv] - x.cpu + y.cpu > self.cap_cpu[hv] + 1e-9
                    || self.mem[hv] - x.mem + y.mem > self.cap_mem[hv] + 1e-9
                    || !self.apart_ok(v, hw, Some(w))
                    || !self.apart_ok(w, hv, Some(v))
                {
                    return None;
                }
                (
                    hv,
                    hw,
                    self.load[hv] - weight(p, v, hv) + weight(p, w, hv),
                    self.load[hw] - weight(p, w, hw) + weight(p, v, hw),
                    self.moved_delta(v, hw) + self.moved_delta(w, hv),
                )
            }
        };
        if let Some(m) = p.max_moves {
            if self.moves as isize + dm > m as isize {
                return None;
            }
        }
        let rest = top
            .iter()
            .find(|(_, h)| *h != a && *h != b)
            .map_or(0.0, |t| t.0.max(0.0));
        let max = rest.max(la).max(lb);
        let (oa, ob) = (self.load[a], self.load[b]);
        let sq = base.sq - oa * oa - ob * ob + la * la + lb * lb;
        Some((Score { max, sq }, dm))
    }

    fn apply(&mut self, step: Step) {
        let p = self.p;
        let put = |s: &mut State, v: usize, to: usize| {
            let from = s.host[v];
            s.moves = (s.moves as isize + s.moved_delta(v, to)) as usize;
            s.load[from] -= weight(p, v, from);
            s.load[to] += weight(p, v, to);
            s.cpu[from] -= p.vms[v].cpu;
            s.cpu[to] += p.vms[v].cpu;
            s.mem[from] -= p.vms[v].mem;
            s.mem[to] += p.vms[v].mem;
            s.host[v] = to;
        };
        match step {
            Step::Move { v, to } => put(self, v, to),
            Step::Swap { v, w } => {
                let (hv, hw) = (self.host[v], self.host[w]);
                put(self, v, hw);
                put(self, w, hv);
            }
        }
    }

    /// The best improving step, preferring (at an equal score) the one
    /// that uses fewer migrations.
    fn best_step(&self) -> Option<Step> {
        let p = self.p;
        let base = self.score();
        let top = self.top3();
        let mut best: Option<(Score, isize, Step)> = None;
        let consider = |step: Step, best: &mut Option<(Score, isize, Step)>| {
            if let Some((s, dm)) = self.try_step(step, &top, &base) {
                if !s.better_than(&base) {
                    return;
                }
                let wins = match best {
                    None => true,
                    Some((bs, bdm, _)) => s.better_than(bs) || (!bs.better_than(&s) && dm < *bdm),
                };
                if wins {
                    *best = Some((s, dm, step));
                }
            }
        };
        let hosts: Vec<usize> = balanced(p).collect();
        for v in 0..p.vms.len() {
            for &to in &hosts {
                consider(Step::Move { v, to }, &mut best);
            }
        }
        // swaps that touch one of the busiest hosts (only they can lower
        // the max; the sum of squares alone rarely needs a swap)
        let busy: Vec<usize> = top
            .iter()
            .map(|t| t.1)
            .filter(|&h| h != usize::MAX)
            .collect();
        for v in (0..p.vms.len()).filter(|&v| self.swaps && busy.contains(&self.host[v])) {
            for w in 0..p.vms.len() {
                if self.host[w] != self.host[v] {
                    consider(Step::Swap { v, w }, &mut best);
                }
            }
        }
        best.map(|b| b.2)
    }

    /// Improves until no step helps, the budget is spent, or the largest
    /// load is at `bound` (no placement does better), then takes back
    /// every migration the largest load does not need.
    fn run(&mut self, max_steps: usize, bound: f64) {
        for _ in 0..max_steps {
            if self.score().max <= bound * (1.0 + 1e-9) {
                break;
            }
            match self.best_step() {
                Some(s) => self.apply(s),
                None => break,
            }
        }
        self.take_back();
    }

    /// Sends moved VMs home (smallest first) while the largest load stays
    /// where it is: a migration that only evened out quieter hosts is not
    /// worth a vMotion.
    fn take_back(&mut self) {
        let p = self.p;
        let max = self.score().max;
        let mut moved: Vec<usize> = (0..p.vms.len())
            .filter(|&v| self.host[v] != p.vms[v].host)
            .collect();
        moved.sort_by(|&a, &b| {
            weight(p, a, self.host[a])
                .total_cmp(&weight(p, b, self.host[b]))
                .then(a.cmp(&b))
        });
        for v in moved {
            let step = Step::Move {
                v,
                to: p.vms[v].host,
            };
            let base = self.score();
            let top = self.top3();
            if let Some((s, _)) = self.try_step(step, &top, &base) {
                if s.max <= max * (1.0 + 1e-12) {
                    self.apply(step);
                }
            }
        }
    }
}

/// The seed's greedy (seeds/004): every balanced VM, heaviest first, onto
/// the currently lightest host, from an empty cluster; no capacity,
/// anti-affinity or budget (VMs on excluded hosts stay).
pub fn greedy_lpt(p: &Problem) -> Placement {
    greedy(p, false)
}

/// Greedy as above but only onto hosts that can take the VM (CPU, memory,
/// anti-affinity); a VM no host can take stays where it is.
pub fn greedy_feasible(p: &Problem) -> Placement {
    greedy(p, true)
}

fn greedy(p: &Problem, check: bool) -> Placement {
    let mut host: Vec<usize> = p.vms.iter().map(|v| v.host).collect();
    let movable: Vec<usize> = (0..p.vms.len())
        .filter(|&v| !p.hosts[p.vms[v].host].excluded)
        .collect();
    let mut order = movable.clone();
    order.sort_by(|&a, &b| size(p, b).total_cmp(&size(p, a)).then(a.cmp(&b)));
    let mut load = vec![0.0; p.hosts.len()];
    let mut cpu = vec![0.0; p.hosts.len()];
    let mut mem = vec![0.0; p.hosts.len()];
    for (v, vm) in p.vms.iter().enumerate() {
        if p.hosts[vm.host].excluded {
            cpu[vm.host] += vm.cpu;
            mem[vm.host] += vm.mem;
            load[vm.host] += weight(p, v, vm.host);
        }
    }
    let mut placed: Vec<Option<usize>> = vec![None; p.vms.len()];
    for &v in &order {
        let vm = &p.vms[v];
        let fits = |h: usize| {
            !check
                || (cpu[h] + vm.cpu <= p.hosts[h].limit_cpu + 1e-9
                    && mem[h] + vm.mem <= p.hosts[h].limit_mem + 1e-9
                    && p.apart
                        .iter()
                        .filter(|g| g.contains(&v))
                        .all(|g| g.iter().all(|&u| u == v || placed[u] != Some(h))))
        };
        let target = balanced(p)
            .filter(|&h| fits(h))
            .min_by(|&a, &b| (load[a] + weight(p, v, a)).total_cmp(&(load[b] + weight(p, v, b))));
        let h = target.unwrap_or(vm.host);
        placed[v] = Some(h);
        host[v] = h;
        load[h] += weight(p, v, h);
        cpu[h] += vm.cpu;
        mem[h] += vm.mem;
    }
    evaluate(p, &host)
}

/// The seed's greedy plan cut to `budget` migrations: its moves taken
/// heaviest VM first while each keeps the constraints, the rest left
/// where they run.
pub fn greedy_within(p: &Problem, budget: usize) -> Placement {
    let target = greedy_lpt(p);
    let mut order: Vec<usize> = (0..p.vms.len())
        .filter(|&v| target.host[v] != p.vms[v].host)
        .collect();
    order.sort_by(|&a, &b| size(p, b).total_cmp(&size(p, a)).then(a.cmp(&b)));
    let mut st = State::new(p, p.vms.iter().map(|v| v.host).collect());
    for v in order {
        if st.moves >= budget {
            break;
        }
        let step = Step::Move {
            v,
            to: target.host[v],
        };
        let base = st.score();
        let top = st.top3();
        if st.try_step(step, &top, &base).is_some() {
            st.apply(step);
        }
    }
    evaluate(p, &st.host)
}

/// The plan: the best placement found within the constraints. Never worse
/// than the current placement; with no budget, never worse than greedy
/// ([`greedy_feasible`], or [`greedy_lpt`] where it keeps the
/// constraints) either.
pub fn plan(p: &Problem) -> Placement {
    plan_with(p, true)
}

/// [`plan`] with or without swaps: a plan of single moves only can
/// always be carried out in the order its search found it, one migration
/// at a time.
pub fn plan_with(p: &Problem, swaps: bool) -> Placement {
    let steps = 20 * p.vms.len() + 100;
    let bound = lower_bound(p);
    let mut st = State::new(p, p.vms.iter().map(|v| v.host).collect());
    st.swaps = swaps;
    st.run(steps, bound);
    let mut best = evaluate(p, &st.host);
    if p.max_moves.is_none() {
        for g in [greedy_feasible(p), greedy_lpt(p)] {
            if feasible(p, &g.host).is_err() {
                continue;
            }
            let mut sg = State::new(p, g.host);
            sg.swaps = swaps;
            sg.run(steps, bound);
            let cand = evaluate(p, &sg.host);
            let (sb, sc) = (score_of(p, &best.load), score_of(p, &cand.load));
            // the better objective; at a tie, fewer migrations
            if sc.better_than(&sb) || (!sb.better_than(&sc) && cand.moves(p) < best.moves(p)) {
                best = cand;
            }
        }
    }
    best
}

/// The score of host loads `load`.
fn score_of(p: &Problem, load: &[f64]) -> Score {
    let mut s = Score { max: 0.0, sq: 0.0 };
    for h in balanced(p) {
        s.max = s.max.max(load[h]);
        s.sq += load[h] * load[h];
    }
    s
}

/// A VM's size for the greedy order: its weighted demand.
fn size(p: &Problem, v: usize) -> f64 {
    (0..4).map(|r| p.weights[r] * p.vms[v].demand[r]).sum()
}

/// A lower bound on the largest load of any placement of the balanced
/// VMs: max(total / hosts, largest VM), each VM counted on the host where
/// it weighs least (for equal hosts: the plain total and largest VM).
pub fn lower_bound(p: &Problem) -> f64 {
    let hosts: Vec<usize> = balanced(p).collect();
    if hosts.is_empty() {
        return 0.0;
    }
    let vms: Vec<usize> = (0..p.vms.len())
        .filter(|&v| !p.hosts[p.vms[v].host].excluded)
        .collect();
    let best = |v: usize| {
        hosts
            .iter()
            .map(|&h| weight(p, v, h))
            .fold(f64::INFINITY, f64::min)
    };
    let total: f64 = vms.iter().map(|&v| best(v)).sum();
    let largest = vms.iter().map(|&v| best(v)).fold(0.0, f64::max);
    (total / hosts.len() as f64).max(largest)
}

/// Per-VM demand over a horizon from its samples: a high percentile or
/// the mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// The `q`-quantile (0..=1), nearest rank: `p95` = 0.95.
    Percentile(f64),
    Mean,
}

impl Stat {
    /// `p95`, `p50`, `p99.9`, `max`, `mean`.
    pub fn parse(s: &str) -> Result<Stat, String> {
        match s {
            "mean" => Ok(Stat::Mean),
            "max" => Ok(Stat::Percentile(1.0)),
            _ => s
                .strip_prefix('p')
                .and_then(|q| q.parse::<f64>().ok())
                .filter(|q| (0.0..=100.0).contains(q) && *q > 0.0)
                .map(|q| Stat::Percentile(q / 100.0))
                .ok_or_else(|| {
                    format!("unknown statistic \"{s}\": use p95 (any p1..p100), max or mean")
                }),
        }
    }

    /// The statistic of `values` (non-finite and negative values, which
    /// vSphere uses for "no value", are left out); None if none is left.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        let mut v: Vec<f64> = values
            .iter()
            .copied()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        Some(match self {
            Stat::Mean => v.iter().sum::<f64>() / v.len() as f64,
            Stat::Percentile(q) => {
                v.sort_by(f64::total_cmp);
                // nearest rank; the epsilon keeps q = 0.55 of 180 samples
                // at rank 99, which 0.55 * 180 in floating point is not
                let rank = (q * v.len() as f64 - 1e-9).ceil() as usize;
                v[rank.clamp(1, v.len()) - 1]
            }
        })
    }
}

/// One migration of a plan, in the order it can be carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    /// The largest host load once this and the moves before it are done.
    pub peak_after: f64,
}

/// The migrations from the current placement to `plan`, one at a time
/// such that each keeps every host within CPU and memory and the
/// anti-affinity groups apart on its own (each step chosen to lower the
/// peak most); the moves that cannot be done one at a time (a swap
/// between two full hosts) are returned apart, in plan order.
pub fn ordered_moves(p: &Problem, plan: &Placement) -> (Vec<Move>, Vec<usize>) {
    let free = Problem {
        max_moves: None,
        ..p.clone()
    };
    let st = State::new(&free, p.vms.iter().map(|v| v.host).collect());
    let left: Vec<usize> = (0..p.vms.len())
        .filter(|&v| plan.host[v] != p.vms[v].host)
        .collect();
    // depth first, the step that lowers the peak most first, backtracking
    // when stuck, within a bounded number of steps tried
    let mut budget = 20_000usize;
    let mut best: Vec<Move> = Vec::new();
    let mut path: Vec<Move> = Vec::new();
    order_from(st, &left, plan, &mut path, &mut best, &mut budget);
    let done: Vec<usize> = best.iter().map(|m| m.vm).collect();
    let stuck = left.into_iter().filter(|v| !done.contains(v)).collect();
    (best, stuck)
}

/// Extends `path` from `st` with the moves of `left`; keeps in `best` the
/// longest order found. Returns true once every move is ordered.
fn order_from(
    st: State<'_>,
    left: &[usize],
    plan: &Placement,
    path: &mut Vec<Move>,
    best: &mut Vec<Move>,
    budget: &mut usize,
) -> bool {
    if path.len() > best.len() {
        *best = path.clone();
    }
    if left.is_empty() {
        return true;
    }
    let base = st.score();
    let top = st.top3();
    let mut steps: Vec<(usize, Score)> = left
        .iter()
        .enumerate()
        .filter_map(|(i, &v)| {
            let step = Step::Move {
                v,
                to: plan.host[v],
            };
            st.try_step(step, &top, &base).map(|(s, _)| (i, s))
        })
        .collect();
    steps.sort_by(|a, b| a.1.max.total_cmp(&b.1.max).then(a.1.sq.total_cmp(&b.1.sq)));
    for (i, _) in steps {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let v = left[i];
        let mut next = st.clone();
        let from = next.host[v];
        next.apply(Step::Move {
            v,
            to: plan.host[v],
        });
        path.push(Move {
            vm: v,
            from,
            to: plan.host[v],
            peak_after: next.score().max,
        });
        let rest: Vec<usize> = left.iter().copied().filter(|&u| u != v).collect();
        if order_from(next, &rest, plan, path, best, budget) {
            return true;
        }
        path.pop();
    }
    false
}
