//! A lab cell: every policy side by side, each on its own copy of the
//! emulated cluster (its own VMs, vCenter simulator and nginx instances),
//! under the same seeded load, with the same events at the same instants.
//!
//! The emulated VMs are time-based queues that need little real CPU, so the
//! copies do not disturb each other as long as the machine's CPU stays well
//! below saturation; every result records the machine's CPU use during the
//! measured part. A real-CPU cell (`real_cpu`: the VMs as cgroups, see
//! [`crate::vm`]) runs its policies one after another instead, same seed. Each copy's VMs and its load generator are processes of
//! their own (`dwepc-lab vms`, `dwepc-lab load`), so a policy that piles up
//! thousands of connections cannot starve the others of file descriptors.
//!
//! Timeline of a cell: the load starts; after `warmup` the measured part of
//! `duration` begins (events are timed from there); metrics cover the
//! measured part only. vSphere's cadence: usage counters are averages over
//! `period` seconds on vSphere's grid that reach the API `delay` seconds
//! after the period ends (20 s / 5 s for ESXi's realtime counters; the
//! paper polled every 3 s); the counter-driven policies poll every `period`.

mod analyse;
mod cell;
mod clock;
mod events;
mod ideal;
mod loadgen;
mod paths;
mod policy;
mod result;
mod stack;
mod vms;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::hold::{machine_busy_pct, machine_cpu};
use crate::lock;
use crate::wait_for;
use analyse::analyse;
use clock::Clock;
use stack::Stack;
use watch::Watch;

pub use cell::{batch_estimate, parse_real_cpu, Cadence, Cell};
pub use paths::{default_cluster, lab_binary, repo_root};
pub use policy::Policy;
pub use result::{report, save, RunResult};

/// Runs one cell: every policy side by side (on real CPUs, one after
/// another: their VMs would share the machine's cores).
/// `progress(elapsed, total)` is called about every 10 s.
pub fn run_cell(
    cell: &Cell,
    mut progress: impl FnMut(Duration, Duration),
) -> Result<Vec<RunResult>, String> {
    if cell.real_cpu.is_none() {
        return side_by_side(cell, &mut progress);
    }
    let total = cell.estimate();
    let each = total / cell.policies.len().max(1) as u32;
    let mut out = Vec::new();
    for (k, &p) in cell.policies.iter().enumerate() {
        let one = Cell {
            policies: vec![p],
            ..cell.clone()
        };
        let before = each * k as u32;
        out.extend(side_by_side(&one, &mut |e, _| progress(before + e, total))?);
    }
    Ok(out)
}

/// Runs every policy of `cell` side by side.
fn side_by_side(
    cell: &Cell,
    progress: &mut dyn FnMut(Duration, Duration),
) -> Result<Vec<RunResult>, String> {
    cell.scenario.check(&cell.cluster)?;
    let weights = cell.scenario.workload.weights(&cell.cluster);
    let started_at = Instant::now();
    let mut stacks = Vec::new();
    for &p in &cell.policies {
        let weights = match p {
            Policy::Oracle => ideal::oracle_weights(cell, -1.0),
            _ => weights.clone(),
        };
        stacks.push(Stack::start(p, cell, &weights)?);
    }
    let stacks = Arc::new(stacks);
    let total = cell.warmup + cell.duration;
    // everything starts on a whole second, a moment from now: each load
    // generator is a process of its own (as the VMs are), started ahead
    let t0 = dwepc_core::clock::now_ms() / 1000 * 1000 + 3000;
    let loads = loadgen::start(cell, &stacks, total, t0)?;
    while dwepc_core::clock::now_ms() < t0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut clock = Clock::start(stacks.clone(), cell, t0);
    let watch = Watch::start(
        stacks
            .iter()
            .map(|s| s.policy.uses_counters().then_some(s.ports[0]))
            .collect(),
    );
    let (machine, log_from) = measure(cell, &stacks, total, progress);
    let status_end: Vec<Vec<Value>> = stacks.iter().map(|s| s.status_pages()).collect();
    let vcenter: Vec<Value> = stacks
        .iter()
        .map(|s| {
            let mut v = s.vc.stats();
            v["run_s"] = (started_at.elapsed().as_secs_f64()).into();
            v
        })
        .collect();
    let logs: Vec<Vec<String>> = stacks
        .iter()
        .enumerate()
        .map(|(k, s)| s.module_log(log_from.get(k).map_or(&[][..], |v| v)))
        .collect();
    // the requests in flight at the end finish within the load's timeout
    let records = loadgen::finish(loads);
    let watched = watch.finish();
    clock.finish();
    let mut out = Vec::new();
    for (k, s) in stacks.iter().enumerate() {
        let rs = lock(&s.readings).clone();
        let w: Vec<Vec<Value>> = watched.get(k).map(|v| vec![v.clone()]).unwrap_or_default();
        let mut r = analyse(
            cell,
            s.policy,
            &records[k],
            &rs,
            t0,
            &w,
            status_end[k].clone(),
            logs[k].clone(),
            machine,
        );
        r.vcenter = vcenter[k].clone();
        out.push(r);
    }
    drop(stacks);
    Ok(out)
}

/// Waits out the cell's `total` time, calling `progress` about every 10 s.
/// Returns the machine's CPU use during the measured part and, per stack
/// and frontend, where the error log stood when the measured part began.
fn measure(
    cell: &Cell,
    stacks: &[Stack],
    total: Duration,
    progress: &mut dyn FnMut(Duration, Duration),
) -> (f64, Vec<Vec<usize>>) {
    let started = Instant::now();
    let mut cpu_a = None;
    let mut log_from: Vec<Vec<usize>> = Vec::new();
    let mut last_progress = Instant::now();
    while started.elapsed() < total {
        if cpu_a.is_none() && started.elapsed() >= cell.warmup {
            cpu_a = Some(machine_cpu());
            log_from = stacks.iter().map(Stack::error_log_sizes).collect();
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            progress(started.elapsed(), total);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu_b = machine_cpu();
    (machine_busy_pct(cpu_a.unwrap_or(cpu_b), cpu_b), log_from)
}

/// Waits until `port` answers (used by tests).
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    wait_for(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .is_some()
}

/// Test helpers shared by the tests of the run module.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::vm::VmSpec;

    pub(super) fn five() -> Vec<VmSpec> {
        vec![
            VmSpec::new("vm1", "127.0.0.11", 2000.0, 1, 4000.0),
            VmSpec::new("vm2", "127.0.0.12", 4000.0, 2, 8000.0),
            VmSpec::new("vm3", "127.0.0.13", 6000.0, 2, 4000.0),
            VmSpec::new("vm4", "127.0.0.14", 8000.0, 4, 16000.0),
            VmSpec::new("vm5", "127.0.0.15", 10000.0, 4, 2000.0),
        ]
    }

    pub(super) fn cell(text: &str) -> Cell {
        Cell {
            name: "c".into(),
            scenario: crate::scenario::parse("s", text).unwrap(),
            cluster: five(),
            level: 0.8,
            policies: vec![Policy::Lc],
            warmup: Duration::from_secs(60),
            duration: Duration::from_secs(120),
            seed: 1,
            cadence: Cadence::VSPHERE,
            real_cpu: None,
        }
    }
}
