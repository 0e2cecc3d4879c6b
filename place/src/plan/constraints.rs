//! The constraints a plan keeps (CPU and memory per host, excluded hosts,
//! anti-affinity, the budget), judged against the current placement: what
//! already was is not counted against a plan.

use super::model::Problem;
use std::fmt;

/// The constraint a placement breaks. (A placement's budget counts the
/// VMs it puts elsewhere, the fewest migrations that can reach it; a
/// plan's sequence may need more, and the exact search counts those.)
#[derive(Clone, Debug, PartialEq)]
pub enum Infeasible {
    /// A host holds more CPU than its limit (and than it held before).
    Cpu { host: String },
    /// A host holds more memory than its limit (and than it held before).
    Memory { host: String },
    /// A VM moved from or to an excluded host.
    Excluded { vm: String },
    /// Two VMs of an anti-affinity group share a host they did not share
    /// before.
    Together { a: String, b: String },
    /// More migrations than the budget.
    Budget { moves: usize, budget: usize },
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infeasible::Cpu { host } => write!(f, "host {host} over its CPU"),
            Infeasible::Memory { host } => write!(f, "host {host} over its memory"),
            Infeasible::Excluded { vm } => {
                write!(f, "VM {vm} moved from or to an excluded host")
            }
            Infeasible::Together { a, b } => {
                write!(f, "VMs {a} and {b} of an anti-affinity group on one host")
            }
            Infeasible::Budget { moves, budget } => {
                write!(f, "{moves} moves over the budget of {budget}")
            }
        }
    }
}

impl std::error::Error for Infeasible {}

/// Whether a placement keeps every constraint (capacity on hosts that
/// gained a VM, anti-affinity for groups a plan changed, excluded hosts,
/// the budget), judged against the current placement as the module
/// does: what already was is not counted against a plan.
pub fn feasible(p: &Problem, host: &[usize]) -> Result<(), Infeasible> {
    within_room(p, host)?;
    off_excluded(p, host)?;
    apart(p, host)?;
    within_budget(p, host)
}

/// CPU and memory used per host by placement `host`.
pub(super) fn used(p: &Problem, host: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut cpu = vec![0.0; p.hosts.len()];
    let mut mem = vec![0.0; p.hosts.len()];
    for (v, &h) in host.iter().enumerate() {
        cpu[h] += p.vms[v].cpu;
        mem[h] += p.vms[v].mem;
    }
    (cpu, mem)
}

/// CPU and memory each host may hold: its limit, or what it holds now if
/// more (a plan never makes a host worse; it need not mend it).
pub(super) fn room(p: &Problem) -> (Vec<f64>, Vec<f64>) {
    let (cpu, mem) = used(p, &p.homes());
    let cap = |limit: fn(&super::Host) -> f64, now: &[f64]| {
        p.hosts
            .iter()
            .zip(now)
            .map(|(h, &n)| limit(h).max(n))
            .collect()
    };
    (cap(|h| h.limit_cpu, &cpu), cap(|h| h.limit_mem, &mem))
}

fn within_room(p: &Problem, host: &[usize]) -> Result<(), Infeasible> {
    let (room_cpu, room_mem) = room(p);
    let (cpu, mem) = used(p, host);
    for (h, hs) in p.hosts.iter().enumerate() {
        if cpu[h] > room_cpu[h] + 1e-9 {
            return Err(Infeasible::Cpu {
                host: hs.name.clone(),
            });
        }
        if mem[h] > room_mem[h] + 1e-9 {
            return Err(Infeasible::Memory {
                host: hs.name.clone(),
            });
        }
    }
    Ok(())
}

fn off_excluded(p: &Problem, host: &[usize]) -> Result<(), Infeasible> {
    for (&h, vm) in host.iter().zip(&p.vms) {
        if h != vm.host && (p.hosts[h].excluded || p.hosts[vm.host].excluded) {
            return Err(Infeasible::Excluded {
                vm: vm.name.clone(),
            });
        }
    }
    Ok(())
}

/// No two VMs of a group share a host, unless both already run there and
/// stay (a plan does not fix every old breach, but it never makes one,
/// nor moves one elsewhere).
fn apart(p: &Problem, host: &[usize]) -> Result<(), Infeasible> {
    let cur = p.homes();
    for g in &p.apart {
        for (i, &u) in g.iter().enumerate() {
            for &w in &g[i + 1..] {
                if host[u] == host[w] && (host[u] != cur[u] || host[w] != cur[w]) {
                    return Err(Infeasible::Together {
                        a: p.vms[u].name.clone(),
                        b: p.vms[w].name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn within_budget(p: &Problem, host: &[usize]) -> Result<(), Infeasible> {
    match p.max_moves {
        Some(budget) if p.migrations(host) > budget => Err(Infeasible::Budget {
            moves: p.migrations(host),
            budget,
        }),
        _ => Ok(()),
    }
}
