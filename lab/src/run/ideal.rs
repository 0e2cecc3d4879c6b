//! The ideal split of a cell: the rates that equalise the true bottleneck
//! utilisation after the scenario's capacity events.

use super::cell::Cell;
use crate::scenario::Action;

/// The ideal split after the capacity events up to `t` seconds into the
/// measured part: rates that equalise the true bottleneck utilisation
/// (effective CPU minus the background job's mid-band, network), at the
/// offered rate, for the mix then in force.
pub(super) fn ideal_split(cell: &Cell, t: f64) -> Vec<f64> {
    let n = cell.cluster.len();
    let Truth {
        cpu_lost,
        cpu_scale,
        bg,
        down,
    } = truth(cell, t);
    let w = cell.scenario.workload_at(t);
    let (c_cpu, c_bytes) = w.mean_cost();
    let caps: Vec<[f64; 4]> = cell
        .cluster
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if down[i] {
                [0.0, f64::NAN, 0.0, f64::NAN]
            } else {
                let net = if v.net_kbps > 0.0 {
                    v.net_kbps * 1024.0
                } else {
                    1e15
                };
                let cpu = v.cpu_mhz * cpu_scale[i];
                [cpu * (1.0 - cpu_lost[i]), f64::NAN, net, f64::NAN]
            }
        })
        .collect();
    let bgs: Vec<[f64; 4]> = (0..n)
        .map(|i| {
            [
                bg[i] * cell.cluster[i].cpu_mhz * cpu_scale[i],
                0.0,
                0.0,
                0.0,
            ]
        })
        .collect();
    // CPU in MHz·ms per ms = MHz; per request c_cpu MHz·ms -> c_cpu/1000 MHz·s
    let cost = [c_cpu / 1000.0, f64::NAN, c_bytes, f64::NAN];
    let rate = cell.level
        * cell.scenario.workload.capacity_rps(&cell.cluster)
        * w.capacity_rps(&cell.cluster)
        / cell.scenario.workload.capacity_rps(&cell.cluster);
    let x = dwepc_core::policy::shares::math::water_fill(
        &caps,
        &bgs,
        &cost,
        [true, false, true, false],
        rate,
    );
    let sum: f64 = x.iter().sum();
    x.iter()
        .map(|v| if sum > 0.0 { v / sum } else { 0.0 })
        .collect()
}

/// The oracle's nginx weights `t` seconds into the measured part: the
/// ideal split in thousandths (at least 1), 0 for a VM that is down.
pub(super) fn oracle_weights(cell: &Cell, t: f64) -> Vec<u32> {
    let down = truth(cell, t).down;
    ideal_split(cell, t)
        .iter()
        .zip(down)
        .map(|(s, down)| {
            if down {
                0
            } else {
                ((s * 1000.0).round() as u32).max(1)
            }
        })
        .collect()
}

/// What the scenario's events up to `t` did to each node.
struct Truth {
    /// Part of the CPU lost to contention and slowdown.
    cpu_lost: Vec<f64>,
    /// CPU size over the cluster file's (vCPUs added while running).
    cpu_scale: Vec<f64>,
    /// The background job's mid-band, part of the CPU.
    bg: Vec<f64>,
    down: Vec<bool>,
}

/// Applies the events up to `t` seconds into the measured part.
fn truth(cell: &Cell, t: f64) -> Truth {
    let n = cell.cluster.len();
    let mut cpu_lost = vec![0.0f64; n];
    let mut cpu_scale = vec![1.0f64; n];
    let mut bg = vec![0.0f64; n];
    let mut down = vec![false; n];
    let idx = |vm: &str| cell.cluster.iter().position(|v| v.name == vm);
    for e in cell.scenario.events.iter().filter(|e| e.at_s <= t) {
        match &e.action {
            Action::Background { vm, lo, hi } => {
                if let Some(i) = idx(vm) {
                    bg[i] = 0.5 * (lo + hi) / 100.0;
                }
            }
            Action::BackgroundOff { vm } => {
                if let Some(i) = idx(vm) {
                    bg[i] = 0.0;
                }
            }
            Action::Contention { vm, pct } | Action::Slowdown { vm, pct } => {
                if let Some(i) = idx(vm) {
                    cpu_lost[i] = 1.0 - (1.0 - cpu_lost[i]) * (1.0 - pct / 100.0);
                }
            }
            Action::Resize { vm, vcpus } => {
                if let Some(i) = idx(vm) {
                    cpu_scale[i] = *vcpus as f64 / cell.cluster[i].vcpus as f64;
                }
            }
            Action::Down { vm } => {
                if let Some(i) = idx(vm) {
                    down[i] = true;
                }
            }
            Action::Up { vm } => {
                if let Some(i) = idx(vm) {
                    down[i] = false;
                }
            }
            _ => {}
        }
    }
    Truth {
        cpu_lost,
        cpu_scale,
        bg,
        down,
    }
}

/// The first event after which the ideal split changes (capacity, background,
/// node death, mix), if any.
pub(super) fn first_shift(cell: &Cell) -> Option<f64> {
    cell.scenario
        .events
        .iter()
        .filter(|e| e.at_s >= 0.0 && e.at_s < cell.duration.as_secs_f64())
        .find(|e| {
            matches!(
                e.action,
                Action::Background { .. }
                    | Action::Contention { .. }
                    | Action::Slowdown { .. }
                    | Action::Resize { .. }
                    | Action::Down { .. }
                    | Action::Mix { .. }
            )
        })
        .map(|e| e.at_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::cell;

    #[test]
    fn ideal_split_follows_true_capacity() {
        let c = cell("workload t2\nat 30s vm4 contention 50%\n");
        let before = ideal_split(&c, 0.0);
        for (i, cap) in [2.0, 4.0, 6.0, 8.0, 10.0].iter().enumerate() {
            assert!((before[i] - cap / 30.0).abs() < 1e-6, "{before:?}");
        }
        let after = ideal_split(&c, 31.0);
        assert!((after[3] - 4.0 / 26.0).abs() < 1e-6, "{after:?}");
        assert_eq!(oracle_weights(&c, -1.0), vec![67, 133, 200, 267, 333]);
        assert_eq!(oracle_weights(&c, 31.0), vec![77, 154, 231, 154, 385]);
        let c = cell("workload t2\nat 30s vm3 down\n");
        assert_eq!(oracle_weights(&c, 31.0)[2], 0);
        // a background job at 40-50 % on vm5 at 0.8x
        let c = cell("workload t2\nat 30s vm5 background cpu 40-50%\n");
        let s = ideal_split(&c, 31.0);
        assert!(s[4] < 10.0 / 30.0 * 0.7, "{s:?}");
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // a dead node gets nothing
        // vm2 (2 vCPUs, 4000 MHz) hot-added to 4 vCPUs: 8000 of 34000 MHz
        let c = cell("workload t2\nat 30s vm2 vcpus 4\n");
        assert!((ideal_split(&c, 31.0)[1] - 8.0 / 34.0).abs() < 1e-6);
        assert_eq!(first_shift(&c), Some(30.0));
        let c = cell("at 30s vm3 down\n");
        assert_eq!(ideal_split(&c, 31.0)[2], 0.0);
        assert_eq!(first_shift(&c), Some(30.0));
    }
}
