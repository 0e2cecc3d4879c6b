//! Building the optimizer's problem from the cluster and the settings:
//! hosts with their capacities and limits, VMs with their demand, the
//! anti-affinity groups; and the checks that make a plan meaningful (the
//! hosts and VMs named exist, every balanced VM has samples).

use crate::cli::{Args, Settings};
use crate::cluster::Cluster;
use crate::plan::{Host, Problem, Vm, RESOURCES};
use dwepc_core::collector::first_few;
use dwepc_core::resources::COUNTERS;
use std::collections::HashMap;

/// The optimizer's problem from the cluster and the settings.
pub fn problem(a: &Args, s: &Settings, cl: &Cluster) -> Result<Problem, String> {
    for x in &a.exclude {
        if !cl.hosts.iter().any(|h| &h.name == x) {
            return Err(format!(
                "--exclude {x}: no such host (hosts: {})",
                first_few(&cl.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>())
            ));
        }
    }
    let hosts = hosts(a, cl);
    for (r, w) in s.weights.iter().enumerate() {
        if *w > 0.0
            && r < 2
            && hosts
                .iter()
                .any(|h| !h.excluded && (h.capacity[r].is_nan() || h.capacity[r] <= 0.0))
        {
            return Err(format!("a host reports no {} capacity", RESOURCES[r]));
        }
    }
    let vms = vms(a, s, cl, &hosts)?;
    let apart = apart(a, &vms)?;
    Ok(Problem {
        hosts,
        vms,
        weights: s.weights,
        apart,
        max_moves: s.max_moves,
    })
}

/// The cluster's hosts: capacities, what CPU and memory may hold, and
/// which give and take no VM (maintenance, disconnected, `--exclude`).
fn hosts(a: &Args, cl: &Cluster) -> Vec<Host> {
    cl.hosts
        .iter()
        .map(|h| Host {
            name: h.name.clone(),
            capacity: [
                h.cpu_mhz,
                h.memory_mb,
                a.net_capacity.unwrap_or(1.0),
                a.disk_capacity.unwrap_or(1.0),
            ],
            limit_cpu: h.cpu_mhz * a.cpu_ratio - a.cpu_reserved,
            limit_mem: h.memory_mb * a.mem_ratio - a.mem_reserved,
            excluded: h.in_maintenance || !h.connected || a.exclude.contains(&h.name),
        })
        .collect()
}

/// The cluster's VMs, each with its host index and demand; an error if
/// one runs on a host not listed, if there is none, or if a balanced VM
/// has no samples.
fn vms(a: &Args, s: &Settings, cl: &Cluster, hosts: &[Host]) -> Result<Vec<Vm>, String> {
    let host_of: HashMap<&str, usize> = cl
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.moref.as_str(), i))
        .collect();
    let mut missing = Vec::new();
    let mut vms = Vec::new();
    for (v, d) in cl.vms.iter().zip(&cl.demand) {
        let Some(&h) = v.host.as_deref().and_then(|h| host_of.get(h)) else {
            return Err(format!(
                "VM {} runs on a host the inventory does not list",
                v.name
            ));
        };
        // a VM on an excluded host stays and is not balanced: it needs no
        // samples (a disconnected host's VMs have none)
        if !hosts[h].excluded && (0..4).any(|r| s.weights[r] > 0.0 && d[r].is_none()) {
            missing.push(v.name.as_str());
        }
        vms.push(Vm {
            name: v.name.clone(),
            host: h,
            demand: std::array::from_fn(|r| d[r].unwrap_or(0.0)),
            // what it holds: its CPU demand (or, without samples, its
            // configured maximum) and its configured memory
            cpu: d[0].unwrap_or(v.max_cpu_mhz),
            mem: v.memory_mb,
        });
    }
    if vms.is_empty() {
        return Err("no powered-on VM in the inventory".into());
    }
    if !missing.is_empty() {
        return Err(no_samples(a, s, &missing, vms.len()));
    }
    Ok(vms)
}

/// Why no plan: the VMs `missing` (of `total`) have no samples.
fn no_samples(a: &Args, s: &Settings, missing: &[&str], total: usize) -> String {
    let what: Vec<&str> = (0..4)
        .filter(|&r| s.weights[r] > 0.0)
        .map(|r| COUNTERS[r])
        .collect();
    let all = missing.len() == total;
    format!(
        "{} {} of {} VMs ha{} no sample of {} in the last {} ({}-s interval): {}{}",
        if all { "all" } else { "" },
        missing.len(),
        total,
        if missing.len() == 1 { "s" } else { "ve" },
        what.join(", "),
        a.since,
        s.interval,
        first_few(missing),
        if all {
            "; is the horizon longer than what vCenter keeps at this level, or the statistics level too low?"
        } else {
            "; a plan without them would be incomplete"
        }
    )
    .trim_start()
    .to_string()
}

/// The `--apart` groups as VM indices (two VMs or more each).
fn apart(a: &Args, vms: &[Vm]) -> Result<Vec<Vec<usize>>, String> {
    let index: HashMap<&str, usize> = vms
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut apart = Vec::new();
    for g in &a.apart {
        let mut idx = Vec::new();
        for name in g.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            idx.push(
                *index
                    .get(name)
                    .ok_or_else(|| format!("--apart {g}: no powered-on VM named \"{name}\""))?,
            );
        }
        if idx.len() < 2 {
            return Err(format!("--apart {g}: name two VMs or more"));
        }
        apart.push(idx);
    }
    Ok(apart)
}
