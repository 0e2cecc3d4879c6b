//! The shares model's arithmetic, each piece on its own: how much of the
//! cycles a VM wants it gets under CPU contention ([`ready_factor`]), the
//! pooled cost per request ([`weighted_median`]), the rates that equalise
//! the bottleneck ([`water_fill`]) and the floor every share keeps
//! ([`floored`]).

// Index loops read best in the numeric code.
#![allow(clippy::needless_range_loop)]

use crate::resources::{Res, R};

/// `run / (run + ready)`: the part of the cycles a VM wants that it gets.
/// `usage` MHz of `capacity` MHz over `secs`, `ready_ms` summed over
/// `vcpus`. 1 when there is no evidence (no counter, an idle VM).
pub fn ready_factor(usage: f64, capacity: f64, ready_ms: f64, secs: f64, vcpus: f64) -> f64 {
    let v = if vcpus.is_finite() && vcpus >= 1.0 {
        vcpus
    } else {
        1.0
    };
    if !(usage.is_finite() && capacity.is_finite() && capacity > 0.0 && ready_ms.is_finite())
        || secs <= 0.0
    {
        return 1.0;
    }
    let run = (usage / capacity).clamp(0.0, 1.0);
    let ready = (ready_ms / 1000.0 / secs / v).clamp(0.0, 1.0);
    if run + ready < 0.02 {
        return 1.0;
    }
    (run / (run + ready)).clamp(0.05, 1.0)
}

/// Weighted median of (value, weight) points; NaN for none.
pub fn weighted_median(mut pts: Vec<(f64, f64)>) -> f64 {
    pts.retain(|(v, w)| v.is_finite() && w.is_finite() && *w > 0.0);
    if pts.is_empty() {
        return f64::NAN;
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pts.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for (v, w) in &pts {
        acc += w;
        if acc >= total / 2.0 {
            return *v;
        }
    }
    pts[pts.len() - 1].0
}

/// Rates per node (summing to `total`, or proportional to free capacity
/// when `total` is 0) that equalise the predicted bottleneck utilisation
/// `max_j (bg_ij + cost_j·x_i) / cap_ij` over the resources in `use_res`.
pub fn water_fill(
    caps: &[Res],
    bg: &[Res],
    cost: &Res,
    use_res: [bool; R],
    total: f64,
) -> Vec<f64> {
    let n = caps.len();
    let res: Vec<usize> = (0..R)
        .filter(|&j| use_res[j] && cost[j].is_finite() && cost[j] > 0.0)
        .collect();
    if n == 0 || res.is_empty() {
        return vec![0.0; n];
    }
    let x_at = |level: f64, i: usize| -> f64 {
        let mut x = f64::INFINITY;
        for &j in &res {
            let c = caps[i][j];
            let b = if bg[i][j].is_finite() { bg[i][j] } else { 0.0 };
            let xj = if c.is_finite() && c > 0.0 {
                (level * c - b) / cost[j]
            } else {
                0.0
            };
            x = x.min(xj);
        }
        x.max(0.0)
    };
    let sum_at = |level: f64| (0..n).map(|i| x_at(level, i)).sum::<f64>();
    // an idle cluster: the level of a tiny rate, so shares follow free capacity
    let want = if total.is_finite() && total > 0.0 {
        total
    } else {
        sum_at(1.0).max(1e-9) * 1e-3
    };
    let mut hi = 1.0;
    let mut tries = 0;
    while sum_at(hi) < want && tries < 64 {
        hi *= 2.0;
        tries += 1;
    }
    if sum_at(hi) <= 0.0 {
        return vec![0.0; n];
    }
    let mut lo = 0.0;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if sum_at(mid) < want {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (0..n).map(|i| x_at(hi, i)).collect()
}

/// `raw` normalised to sum 1 with every entry at least `floor` (shrunk to
/// half an equal share when there are more than 1/(2·floor) entries).
pub fn floored(raw: &[f64], floor: f64) -> Vec<f64> {
    let k = raw.len();
    if k == 0 {
        return Vec::new();
    }
    let floor = floor.clamp(0.0, 0.5 / k as f64);
    let mut x: Vec<f64> = raw
        .iter()
        .map(|v| if v.is_finite() && *v > 0.0 { *v } else { 0.0 })
        .collect();
    let sum: f64 = x.iter().sum();
    if sum.is_nan() || sum <= 0.0 {
        return vec![1.0 / k as f64; k];
    }
    x.iter_mut().for_each(|v| *v /= sum);
    // fix the entries below the floor at the floor, rescale the rest;
    // repeat until none falls below (at most k rounds)
    let mut fixed = vec![false; k];
    for _ in 0..k {
        let nfixed = fixed.iter().filter(|&&f| f).count();
        let free_sum: f64 = (0..k).filter(|&i| !fixed[i]).map(|i| x[i]).sum();
        let room = 1.0 - floor * nfixed as f64;
        let scale = if free_sum > 0.0 { room / free_sum } else { 0.0 };
        let mut changed = false;
        for i in 0..k {
            if !fixed[i] && x[i] * scale < floor {
                fixed[i] = true;
                changed = true;
            }
        }
        if !changed {
            for i in 0..k {
                x[i] = if fixed[i] { floor } else { x[i] * scale };
            }
            return x;
        }
    }
    vec![1.0 / k as f64; k]
}
