//! The scenario's events on a stack: when each happens (the timeline) and
//! what it does (apply).

use std::path::Path;
use std::time::Duration;

use super::lock;
use super::paths::lab_binary;
use super::stack::{stop_child, Stack};
use crate::hold::BackgroundJob;
use crate::scenario::{Action, Scenario};
use crate::vm::VmSpec;

/// Applies one event to one stack.
pub(super) fn apply(stack: &Stack, action: &Action, seed: u64, cluster: &[VmSpec]) {
    let idx = |vm: &str| cluster.iter().position(|v| v.name == vm);
    let real = |i: usize| stack.vms.cgroups.get(i).cloned().flatten();
    let res = match action {
        Action::Background { vm, lo, hi } => match idx(vm) {
            Some(i) => match real(i) {
                Some(g) => start_hold(stack, i, *lo, *hi, &g),
                None => {
                    lock(&stack.jobs)[i] =
                        Some(BackgroundJob::new(*lo, *hi, seed ^ ((i as u64 + 1) * 7919)));
                    Ok(())
                }
            },
            None => Ok(()),
        },
        Action::BackgroundOff { vm } => {
            if let Some(i) = idx(vm) {
                lock(&stack.jobs)[i] = None;
                stop_child(&mut lock(&stack.holds)[i]);
            }
            stack.vms.ctl(&format!("/vm/{vm}/hog?mhz=0"))
        }
        Action::Contention { vm, pct } => stack.vms.ctl(&format!("/vm/{vm}/contention?pct={pct}")),
        Action::Slowdown { vm, pct } => stack.vms.ctl(&format!("/vm/{vm}/slowdown?pct={pct}")),
        Action::Resize { vm, vcpus } => match idx(vm) {
            Some(i) => {
                let v = &cluster[i];
                let mhz = (v.cpu_mhz * *vcpus as f64 / v.vcpus as f64).round() as u32;
                stack
                    .vms
                    .ctl(&format!("/vm/{vm}/vcpus?n={vcpus}"))
                    .and_then(|()| stack.vc.resize(vm, *vcpus, mhz))
            }
            None => Ok(()),
        },
        Action::Down { vm } => stack.vms.ctl(&format!("/vm/{vm}/down")),
        Action::Up { vm } => stack.vms.ctl(&format!("/vm/{vm}/up")),
        Action::VsphereDown { .. } => {
            stack.vc.fault("hang");
            Ok(())
        }
        Action::VsphereUp => {
            stack.vc.fault("none");
            Ok(())
        }
        Action::Mix { .. } => Ok(()), // the load generator's phases
    };
    if let Err(e) = res {
        eprintln!("lab: event {action:?} on {}: {e}", stack.policy.name());
    }
}

/// Starts the batch job of a VM on real CPUs: `dwepc-lab cpuhold LO HI
/// --cgroup G`, a real process inside the VM's cgroup.
fn start_hold(stack: &Stack, i: usize, lo: f64, hi: f64, cgroup: &Path) -> Result<(), String> {
    let mut holds = lock(&stack.holds);
    stop_child(&mut holds[i]);
    let log = std::fs::File::create(stack.dir.join(format!("cpuhold-{i}.log")))
        .map_err(|e| e.to_string())?;
    // threads of about 5 % of the VM each, started near the band (as the
    // emulated job), busy 2 ms at a time so that each second sees many
    let threads = (0.5 * (lo + hi) / 5.0).round().to_string();
    let child = std::process::Command::new(lab_binary())
        .args([
            "cpuhold",
            &lo.to_string(),
            &hi.to_string(),
            "--threads",
            &threads,
        ])
        .args(["--busy-ms", "2", "--cgroup"])
        .arg(cgroup)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .spawn()
        .map_err(|e| format!("cpuhold: {e}"))?;
    crate::procs::register(child.id());
    holds[i] = Some(child);
    Ok(())
}

/// The events of a scenario as (ms after the load starts, action), with the
/// end of a timed vSphere outage as its own event.
pub(super) fn timeline(sc: &Scenario, warmup: Duration) -> Vec<(u64, Action)> {
    let w = warmup.as_millis() as f64;
    let mut out = Vec::new();
    for e in &sc.events {
        let at = (w + e.at_s * 1000.0).max(0.0) as u64;
        out.push((at, e.action.clone()));
        if let Action::VsphereDown { secs: Some(d) } = e.action {
            out.push((at + (d * 1000.0) as u64, Action::VsphereUp));
        }
    }
    out.sort_by_key(|x| x.0);
    out
}
