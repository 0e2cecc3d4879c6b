//! Balance and latency metrics for the lab (docs/ALGORITHM.md, "Balance metric").
//!
//! For one resource k with utilisations `u[t][i]` of node i in sample t
//! (N samples, n nodes), the paper's balance is
//! `δ²(k) = 1/N Σ_t 1/n Σ_i (u_it − ū_t)²` and it tabulates `N·δ²(k)`.
//! Because N·δ² grows with the run length, we also report the
//! length-free mean per-sample coefficient of variation and max/mean.

/// Balance of one resource over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Balance {
    /// The paper's N·δ².
    pub n_delta2: f64,
    /// δ² (per-sample variance across nodes, averaged over samples).
    pub delta2: f64,
    /// Mean over samples of std/mean across nodes (samples with a zero
    /// mean are skipped).
    pub cov: f64,
    /// Mean over samples of max/mean across nodes.
    pub max_over_mean: f64,
    /// Mean utilisation over nodes and samples.
    pub mean: f64,
    /// Samples used.
    pub samples: usize,
}

/// Balance of utilisations `u[t][i]`; non-finite values are skipped.
pub fn balance(u: &[Vec<f64>]) -> Balance {
    let mut b = Balance::default();
    let (mut cov_n, mut mm_n, mut total, mut total_n) = (0usize, 0usize, 0.0, 0usize);
    for row in u {
        let vals: Vec<f64> = row.iter().copied().filter(|x| x.is_finite()).collect();
        if vals.is_empty() {
            continue;
        }
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        b.n_delta2 += var;
        b.samples += 1;
        total += vals.iter().sum::<f64>();
        total_n += vals.len();
        if mean > 0.0 {
            b.cov += var.sqrt() / mean;
            cov_n += 1;
            b.max_over_mean += vals.iter().cloned().fold(f64::MIN, f64::max) / mean;
            mm_n += 1;
        }
    }
    if b.samples > 0 {
        b.delta2 = b.n_delta2 / b.samples as f64;
    }
    if cov_n > 0 {
        b.cov /= cov_n as f64;
    }
    if mm_n > 0 {
        b.max_over_mean /= mm_n as f64;
    }
    if total_n > 0 {
        b.mean = total / total_n as f64;
    }
    b
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; `v` need not be sorted.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// After a step at second `from`, the first second from which the shares
/// stay within `tol` of the target for `hold` seconds; returns seconds after
/// the step. "Within" is measured as the fraction of requests sent to the
/// wrong node (total-variation distance, half the L1 distance between the
/// share vectors), so a small node's sampling noise does not dominate.
pub fn settle_time(
    shares: &[Vec<f64>],
    target: &[f64],
    from: usize,
    tol: f64,
    hold: usize,
) -> Option<usize> {
    let ok = |row: &Vec<f64>| {
        let tv: f64 = row
            .iter()
            .zip(target)
            .map(|(s, t)| (s - t).abs())
            .sum::<f64>()
            / 2.0;
        tv <= tol
    };
    let after = shares.get(from..)?;
    (0..after.len())
        .find(|&s| after[s..].iter().take(hold.max(1)).all(ok) && after.len() - s >= hold.max(1))
}

/// Trailing moving average of per-second shares over `window` seconds
/// (NaN seconds are skipped), to see through per-second sampling noise.
pub fn smooth(shares: &[Vec<f64>], window: usize) -> Vec<Vec<f64>> {
    let w = window.max(1);
    (0..shares.len())
        .map(|t| {
            let from = (t + 1).saturating_sub(w);
            let rows: Vec<&Vec<f64>> = shares[from..=t]
                .iter()
                .filter(|r| r.iter().all(|x| x.is_finite()))
                .collect();
            let n = shares[t].len();
            (0..n)
                .map(|i| {
                    if rows.is_empty() {
                        f64::NAN
                    } else {
                        rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64
                    }
                })
                .collect()
        })
        .collect()
}

/// Largest one-second excess of any node's share over its target after
/// second `from`, in share points (0.1 = 10 percentage points).
pub fn max_overshoot(shares: &[Vec<f64>], target: &[f64], from: usize) -> f64 {
    shares
        .iter()
        .skip(from)
        .flat_map(|row| row.iter().zip(target).map(|(s, t)| s - t))
        .fold(0.0, f64::max)
}

/// The largest ratio of a node's share to its target share over windows of
/// `window` seconds from second `from` on (the mean share of the window;
/// nodes whose target is below `min_target` are skipped: their ratio is
/// noise). 0 without a full window.
pub fn max_ratio_over_target(
    shares: &[Vec<f64>],
    target: &[f64],
    from: usize,
    window: usize,
    min_target: f64,
) -> f64 {
    let w = window.max(1);
    let mut worst: f64 = 0.0;
    let mut t = from;
    while t + w <= shares.len() {
        let rows: Vec<&Vec<f64>> = shares[t..t + w]
            .iter()
            .filter(|r| r.iter().all(|x| x.is_finite()))
            .collect();
        if !rows.is_empty() {
            for (i, &tg) in target.iter().enumerate() {
                if tg >= min_target {
                    let mean = rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64;
                    worst = worst.max(mean / tg);
                }
            }
        }
        t += 1;
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_over_target_in_windows() {
        let shares = vec![
            vec![0.5, 0.5],
            vec![0.9, 0.1],
            vec![0.9, 0.1],
            vec![0.5, 0.5],
            vec![f64::NAN, 0.5],
        ];
        // windows of 2 from 1: [0.9,0.9] -> 0.9/0.5 = 1.8
        let r = max_ratio_over_target(&shares, &[0.5, 0.5], 1, 2, 0.02);
        assert!((r - 1.8).abs() < 1e-12, "{r}");
        // a tiny target is skipped
        let r = max_ratio_over_target(&shares, &[0.99, 0.01], 0, 1, 0.02);
        assert!((r - 0.9 / 0.99).abs() < 1e-12);
        assert_eq!(max_ratio_over_target(&shares, &[0.5, 0.5], 4, 2, 0.0), 0.0);
    }

    #[test]
    fn balanced_cluster_has_zero_variance() {
        let u = vec![vec![0.5, 0.5, 0.5]; 10];
        let b = balance(&u);
        assert_eq!(b.n_delta2, 0.0);
        assert_eq!(b.cov, 0.0);
        assert_eq!(b.max_over_mean, 1.0);
        assert_eq!(b.samples, 10);
        assert!((b.mean - 0.5).abs() < 1e-12);
    }

    #[test]
    fn paper_metric_sums_per_sample_variance() {
        // one node at 1.0, one at 0.0: variance 0.25 per sample
        let u = vec![vec![1.0, 0.0]; 4];
        let b = balance(&u);
        assert!((b.n_delta2 - 1.0).abs() < 1e-12);
        assert!((b.delta2 - 0.25).abs() < 1e-12);
        assert!((b.cov - 1.0).abs() < 1e-12);
        assert!((b.max_over_mean - 2.0).abs() < 1e-12);
        // NaN entries are skipped, empty rows ignored
        let b = balance(&[vec![f64::NAN, 1.0], vec![]]);
        assert_eq!(b.samples, 1);
        assert_eq!(b.n_delta2, 0.0);
    }

    #[test]
    fn quantiles() {
        let mut v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let s = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![f64::NAN, f64::NAN],
            vec![1.0, 0.0],
        ];
        let m = smooth(&s, 2);
        assert_eq!(m[0], vec![1.0, 0.0]);
        assert_eq!(m[1], vec![0.5, 0.5]);
        assert_eq!(m[2], vec![0.0, 1.0]); // the NaN second is skipped
        assert_eq!(m[3], vec![1.0, 0.0]);
    }

    #[test]
    fn settle_and_overshoot() {
        let target = [0.5, 0.5];
        let shares = vec![
            vec![0.5, 0.5],
            vec![0.9, 0.1], // step at 1
            vec![0.7, 0.3],
            vec![0.52, 0.48],
            vec![0.5, 0.5],
            vec![0.49, 0.51],
        ];
        assert_eq!(settle_time(&shares, &target, 1, 0.1, 2), Some(2));
        assert!((max_overshoot(&shares, &target, 1) - 0.4).abs() < 1e-12);
        assert_eq!(settle_time(&shares, &target, 1, 0.01, 10), None);
    }
}
