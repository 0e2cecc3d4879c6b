//! The problem (hosts, VMs, what to balance and under which budget) and
//! how a placement scores: host loads, the objective, a lower bound.

/// Resources: CPU (MHz), memory (MB), network (KB/s), disk (KB/s).
pub use dwepc_core::resources::RESOURCES;

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
    /// Weight of each resource in a host's load (e.g. disk only: `[0, 0, 0, 1]`).
    pub weights: [f64; 4],
    /// Groups of VM indices that must run on different hosts.
    pub apart: Vec<Vec<usize>>,
    /// Most migrations a plan may make (None: no limit). A placement
    /// needs at least as many as the VMs it puts on another host; a plan
    /// counts each migration of its sequence (a VM that steps aside on a
    /// third host, twice).
    pub max_moves: Option<usize>,
}

impl Problem {
    /// Host index per VM where it runs now.
    pub fn homes(&self) -> Vec<usize> {
        self.vms.iter().map(|v| v.host).collect()
    }

    /// The same problem without a budget (what one migration may do,
    /// whatever the count).
    pub fn unbounded(&self) -> Problem {
        Problem {
            max_moves: None,
            ..self.clone()
        }
    }

    /// VMs that placement `host` (host index per VM) puts on another host
    /// than their current one.
    pub fn migrations(&self, host: &[usize]) -> usize {
        host.iter()
            .zip(&self.vms)
            .filter(|(h, v)| **h != v.host)
            .count()
    }
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
        p.migrations(&self.host)
    }
}

/// The hosts that give and take VMs (not excluded).
pub(super) fn balanced(p: &Problem) -> impl Iterator<Item = usize> + '_ {
    (0..p.hosts.len()).filter(|&h| !p.hosts[h].excluded)
}

/// VM `v`'s share of host `h`'s load, were it there.
pub fn vm_load(p: &Problem, v: usize, h: usize) -> f64 {
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
        load[h] += vm_load(p, v, h);
    }
    Placement {
        host: host.to_vec(),
        load,
    }
}

/// The current placement.
pub fn current(p: &Problem) -> Placement {
    evaluate(p, &p.homes())
}

/// The objective: (max load, sum of squared loads), compared
/// lexicographically with a tolerance on the max.
#[derive(Clone, Copy, Debug)]
pub(super) struct Score {
    pub(super) max: f64,
    pub(super) sq: f64,
}

impl Score {
    pub(super) fn better_than(&self, o: &Score) -> bool {
        let tol = 1e-12 * o.max.abs().max(1e-300);
        if self.max < o.max - tol {
            return true;
        }
        self.max <= o.max + tol && self.sq < o.sq - 1e-12 * o.sq.abs().max(1e-300)
    }
}

/// The score of host loads `load`.
pub(super) fn score_of(p: &Problem, load: &[f64]) -> Score {
    let mut s = Score { max: 0.0, sq: 0.0 };
    for h in balanced(p) {
        s.max = s.max.max(load[h]);
        s.sq += load[h] * load[h];
    }
    s
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
            .map(|&h| vm_load(p, v, h))
            .fold(f64::INFINITY, f64::min)
    };
    let total: f64 = vms.iter().map(|&v| best(v)).sum();
    let largest = vms.iter().map(|&v| best(v)).fold(0.0, f64::max);
    (total / hosts.len() as f64).max(largest)
}
