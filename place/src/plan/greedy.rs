//! The greedy baselines of the comparison in BENCHMARKS.md: the greedy of
//! the Proxmox VE / Ceph I/O-balancing article (greedy "stones into
//! piles": every VM, heaviest first, onto the lightest host), the same
//! only where a VM fits, and its plan cut to a budget of migrations.

use super::model::{balanced, evaluate, vm_load, Placement, Problem};
use super::state::{State, Step};

/// The greedy of the Proxmox VE / Ceph I/O-balancing article ("stones
/// into piles"): every balanced VM, heaviest first, onto the currently
/// lightest host, from an empty cluster; no capacity, anti-affinity or
/// budget (VMs on excluded hosts stay).
pub fn greedy_lpt(p: &Problem) -> Placement {
    greedy(p, false)
}

/// Greedy as above but only onto hosts that can take the VM (CPU, memory,
/// anti-affinity); a VM no host can take stays where it is.
pub fn greedy_feasible(p: &Problem) -> Placement {
    greedy(p, true)
}

/// The greedy's piles: load, CPU and memory per host, and where each VM
/// has been placed so far.
struct Piles {
    load: Vec<f64>,
    cpu: Vec<f64>,
    mem: Vec<f64>,
    placed: Vec<Option<usize>>,
}

impl Piles {
    /// Empty hosts, but for the VMs of excluded hosts (they stay).
    fn new(p: &Problem) -> Piles {
        let n = p.hosts.len();
        let mut piles = Piles {
            load: vec![0.0; n],
            cpu: vec![0.0; n],
            mem: vec![0.0; n],
            placed: vec![None; p.vms.len()],
        };
        for (v, vm) in p.vms.iter().enumerate() {
            if p.hosts[vm.host].excluded {
                piles.cpu[vm.host] += vm.cpu;
                piles.mem[vm.host] += vm.mem;
                piles.load[vm.host] += vm_load(p, v, vm.host);
            }
        }
        piles
    }

    /// Whether host `h` can take VM `v` (CPU, memory, anti-affinity with
    /// the VMs placed so far).
    fn fits(&self, p: &Problem, v: usize, h: usize) -> bool {
        let vm = &p.vms[v];
        self.cpu[h] + vm.cpu <= p.hosts[h].limit_cpu + 1e-9
            && self.mem[h] + vm.mem <= p.hosts[h].limit_mem + 1e-9
            && p.apart
                .iter()
                .filter(|g| g.contains(&v))
                .all(|g| g.iter().all(|&u| u == v || self.placed[u] != Some(h)))
    }

    fn put(&mut self, p: &Problem, v: usize, h: usize) {
        self.placed[v] = Some(h);
        self.load[h] += vm_load(p, v, h);
        self.cpu[h] += p.vms[v].cpu;
        self.mem[h] += p.vms[v].mem;
    }
}

fn greedy(p: &Problem, check: bool) -> Placement {
    let mut host = p.homes();
    let mut order: Vec<usize> = (0..p.vms.len())
        .filter(|&v| !p.hosts[p.vms[v].host].excluded)
        .collect();
    order.sort_by(|&a, &b| size(p, b).total_cmp(&size(p, a)).then(a.cmp(&b)));
    let mut piles = Piles::new(p);
    for v in order {
        let after = |h: usize| piles.load[h] + vm_load(p, v, h);
        let target = balanced(p)
            .filter(|&h| !check || piles.fits(p, v, h))
            .min_by(|&a, &b| after(a).total_cmp(&after(b)));
        let h = target.unwrap_or(p.vms[v].host);
        piles.put(p, v, h);
        host[v] = h;
    }
    evaluate(p, &host)
}

/// The article's greedy plan cut to `budget` migrations: its moves taken
/// heaviest VM first while each keeps the constraints, the rest left
/// where they run.
pub fn greedy_within(p: &Problem, budget: usize) -> Placement {
    let target = greedy_lpt(p);
    let mut order: Vec<usize> = (0..p.vms.len())
        .filter(|&v| target.host[v] != p.vms[v].host)
        .collect();
    order.sort_by(|&a, &b| size(p, b).total_cmp(&size(p, a)).then(a.cmp(&b)));
    let mut st = State::new(p, p.homes());
    for v in order {
        if st.moves >= budget {
            break;
        }
        let step = Step::Move {
            v,
            to: target.host[v],
        };
        if st.try_now(step).is_some() {
            st.apply(step);
        }
    }
    evaluate(p, &st.host)
}

/// A VM's size for the greedy order: its weighted demand.
fn size(p: &Problem, v: usize) -> f64 {
    (0..4).map(|r| p.weights[r] * p.vms[v].demand[r]).sum()
}
