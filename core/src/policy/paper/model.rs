//! The DWEPC paper's model: a sliding window of usage samples paired with
//! the requests sent in each sample's period, the non-negative weight fit
//! W, headroom Q and allocations Q·W (reconstructed in
//! `docs/ALGORITHM.md`).
//!
//! Units: CPU in MHz, memory in MB, network and disk in KB/s; request counts
//! per sample period. W converts resource amounts into requests per period,
//! so `Q·W` is the number of requests a node can still take in one period.
//!
//! # Degenerate cases (each has a test below)
//!
//! | case | behaviour |
//! |---|---|
//! | no sample yet | no allocations: the balancer runs nginx's weighted round robin |
//! | fewer samples with request counts than `min_samples` | no new fit; a W kept from an earlier fit is used, otherwise round robin |
//! | singular or collinear columns | ridge term + exact NNLS: a finite W >= 0 whose predictions fit the data; the split among collinear resources is arbitrary but harmless |
//! | zero traffic in the window | nothing to learn: the previous W is kept, otherwise round robin |
//! | every node over capacity (all L < 0) | L still orders the nodes, the largest wins |
//! | a node without counters (or with non-finite ones) | allocation = its `weight=` times the mean allocation per unit weight of the nodes that have counters |
//! | no node has counters | round robin |
//! | resource whose capacity is unknown for some node | left out of the model (neither fitted nor in Q) |
//! | NaN / infinite / huge inputs | ignored per value; outputs are always finite and clamped |
//! | servers added/removed by reload | a new model of the new size; W may be carried over (`with_w`) since it is per resource, not per node |

// Index loops read best in the matrix code.
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;

use super::linalg;
use crate::policy::pick::Argmax;
use crate::policy::window::{clean_counts, insert_by_end};
use crate::policy::Sample;
use crate::resources::{self, Res, R};
use crate::rng::Rng;

/// Largest magnitude an allocation may take (keeps `L` finite and keeps
/// `f64` exact for request counts).
pub const ALLOC_LIMIT: f64 = 1e12;

/// Tunables of the paper's model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitParams {
    /// Window length m (samples kept).
    pub window: usize,
    /// Samples with request counts needed before W is fitted.
    pub min_samples: usize,
    /// Ridge term, relative to the mean diagonal of the scaled normal matrix.
    pub ridge: f64,
}

impl Default for FitParams {
    fn default() -> Self {
        FitParams {
            window: 20,
            min_samples: 2,
            ridge: 1e-6,
        }
    }
}

/// What the last call to [`PaperModel::refit`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FitState {
    /// The window is empty.
    NoSamples,
    /// Fewer samples with request counts than `min_samples`.
    TooFewSamples { have: usize, need: usize },
    /// The window holds no traffic (or nothing W >= 0 can explain).
    NoTraffic,
    /// No resource has both capacities and non-zero usage.
    NoResources,
    /// W was fitted from `rows` (node, sample) pairs.
    Fitted { rows: usize },
}

impl FitState {
    /// Short machine-readable name (status page).
    pub fn name(&self) -> &'static str {
        match self {
            FitState::NoSamples => "no_samples",
            FitState::TooFewSamples { .. } => "too_few_samples",
            FitState::NoTraffic => "no_traffic",
            FitState::NoResources => "no_resources",
            FitState::Fitted { .. } => "fitted",
        }
    }
}

/// The DWEPC model for one upstream of `n` nodes.
#[derive(Clone, Debug)]
pub struct PaperModel {
    n: usize,
    params: FitParams,
    capacity: Vec<Res>,
    weight: Vec<f64>,
    window: VecDeque<Sample>,
    w: Option<Res>,
    state: FitState,
}

impl PaperModel {
    /// A model for `n` nodes with configured round-robin weights `weight`
    /// (used for nodes without counters). Capacities start unknown.
    pub fn new(params: FitParams, weight: Vec<f64>) -> PaperModel {
        let n = weight.len();
        let params = FitParams {
            window: params.window.max(1),
            min_samples: params.min_samples.clamp(1, params.window.max(1)),
            ridge: if params.ridge.is_finite() && params.ridge > 0.0 {
                params.ridge
            } else {
                FitParams::default().ridge
            },
        };
        PaperModel {
            n,
            params,
            capacity: vec![[f64::NAN; R]; n],
            weight: weight
                .into_iter()
                .map(|w| if w.is_finite() && w > 0.0 { w } else { 1.0 })
                .collect(),
            window: VecDeque::new(),
            w: None,
            state: FitState::NoSamples,
        }
    }

    /// Starts from a weight vector fitted earlier (e.g. before a reload):
    /// W is per resource, so it stays meaningful when nodes change.
    pub fn with_w(mut self, w: Res) -> PaperModel {
        if w.iter().all(|x| x.is_finite() && *x >= 0.0) && w.iter().any(|x| *x > 0.0) {
            self.w = Some(w);
        }
        self
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a model of zero nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The parameters in force (after clamping).
    pub fn params(&self) -> FitParams {
        self.params
    }

    /// Sets the usable capacity of node `i` (NaN or <= 0 = unknown).
    pub fn set_capacity(&mut self, i: usize, c: Res) {
        if let Some(slot) = self.capacity.get_mut(i) {
            *slot = c.map(resources::capacity);
        }
    }

    /// Usable capacity of node `i`.
    pub fn capacity(&self, i: usize) -> Res {
        self.capacity.get(i).copied().unwrap_or([f64::NAN; R])
    }

    /// Samples in the window, oldest first.
    pub fn window(&self) -> impl Iterator<Item = &Sample> {
        self.window.iter()
    }

    /// Number of samples in the window.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// End time of the newest sample.
    pub fn newest_ms(&self) -> Option<u64> {
        self.window.back().map(|s| s.end_ms)
    }

    /// Current W (fitted now or kept from an earlier fit).
    pub fn w(&self) -> Option<Res> {
        self.w
    }

    /// Outcome of the last refit.
    pub fn state(&self) -> FitState {
        self.state
    }

    /// Adds a sample. Returns false (and changes nothing) when it has the
    /// wrong number of nodes, duplicates a sample already held (same end
    /// time: vSphere returns the same realtime sample until the next one), or
    /// is older than everything in a full window.
    pub fn push(&mut self, mut s: Sample) -> bool {
        if s.usage.len() != self.n {
            return false;
        }
        if s.sent.as_ref().is_some_and(|r| r.len() != self.n) {
            s.sent = None;
        }
        // vSphere's -1 marks a gap; the paper pairs requests sent only
        for row in &mut s.usage {
            *row = row.map(resources::amount);
        }
        if let Some(r) = &mut s.sent {
            clean_counts(r);
        }
        s.ready_ms = Vec::new();
        s.done = None;
        s.failed = None;
        insert_by_end(&mut self.window, s, self.params.window, |o| o.end_ms)
    }

    /// Resources taking part in the model: known capacity on every node
    /// that has counters in the window.
    fn modelled(&self) -> [bool; R] {
        let mut ok = [true; R];
        let mut any_node = false;
        for i in 0..self.n {
            if !self.has_counters(i) {
                continue;
            }
            any_node = true;
            for (j, flag) in ok.iter_mut().enumerate() {
                if !self.capacity[i][j].is_finite() {
                    *flag = false;
                }
            }
        }
        if any_node {
            ok
        } else {
            [false; R]
        }
    }

    /// True if node `i` has at least one finite counter in the window.
    pub fn has_counters(&self, i: usize) -> bool {
        self.window
            .iter()
            .any(|s| s.usage[i].iter().any(|x| x.is_finite()))
    }

    /// Refits W from the window (the paper's normal equations, solved as
    /// exact NNLS on scaled columns with a small ridge). A degenerate window
    /// keeps the previous W.
    pub fn refit(&mut self) -> FitState {
        self.state = self.fit_inner();
        self.state
    }

    fn fit_inner(&mut self) -> FitState {
        if self.window.is_empty() {
            return FitState::NoSamples;
        }
        let with_counts = self.window.iter().filter(|s| s.sent.is_some()).count();
        if with_counts < self.params.min_samples {
            return FitState::TooFewSamples {
                have: with_counts,
                need: self.params.min_samples,
            };
        }
        let modelled = self.modelled();
        let rows = self.rows(modelled);
        let (sigma, allowed) = column_scales(&rows, modelled);
        if allowed == 0 {
            return FitState::NoResources;
        }
        let Some((a, b)) = normal_equations(&rows, &sigma, allowed, self.params.ridge) else {
            return FitState::NoTraffic;
        };
        let ws = linalg::nnls(&a, &b, allowed);
        let w: Res = std::array::from_fn(|j| ws[j] / sigma[j]);
        if w.iter().all(|x| *x == 0.0) || w.iter().any(|x| !x.is_finite()) {
            return FitState::NoTraffic;
        }
        self.w = Some(w);
        FitState::Fitted { rows: rows.len() }
    }

    /// The fit's rows: per (sample with request counts, node with every
    /// modelled counter) the usage restricted to the modelled resources
    /// and the requests sent.
    fn rows(&self, modelled: [bool; R]) -> Vec<(Res, f64)> {
        let mut rows = Vec::new();
        for s in &self.window {
            let Some(req) = &s.sent else { continue };
            for i in 0..self.n {
                let u = s.usage[i];
                if (0..R).any(|j| modelled[j] && !u[j].is_finite()) {
                    continue;
                }
                let e: Res = std::array::from_fn(|j| if modelled[j] { u[j] } else { 0.0 });
                rows.push((e, req[i]));
            }
        }
        rows
    }

    /// Mean usage of node `i` over the window, per resource (NaN where the
    /// node has no value).
    pub fn mean_usage(&self, i: usize) -> Res {
        let mut sum = [0.0; R];
        let mut cnt = [0usize; R];
        for s in &self.window {
            for j in 0..R {
                let x = s.usage[i][j];
                if x.is_finite() {
                    sum[j] += x;
                    cnt[j] += 1;
                }
            }
        }
        std::array::from_fn(|j| {
            if cnt[j] > 0 {
                sum[j] / cnt[j] as f64
            } else {
                f64::NAN
            }
        })
    }

    /// Predicted headroom `Q = C - mean(E)` of node `i` (paper: "mean
    /// based"); NaN where capacity or usage is unknown.
    pub fn headroom(&self, i: usize) -> Res {
        let m = self.mean_usage(i);
        let c = self.capacity(i);
        std::array::from_fn(|j| c[j] - m[j])
    }

    /// Allocations `Q·W` per node in requests per period, or `None` when
    /// the balancer must fall back to weighted round robin (no W, or no node
    /// with counters). Always finite, within `±ALLOC_LIMIT`.
    pub fn allocations(&self) -> Option<Vec<f64>> {
        let w = self.w?;
        let modelled = self.modelled();
        if !modelled.iter().any(|&m| m) {
            return None;
        }
        let mut out: Vec<Option<f64>> = (0..self.n)
            .map(|i| {
                if !self.has_counters(i) {
                    return None;
                }
                let q = self.headroom(i);
                let mut a = 0.0;
                for j in 0..R {
                    if modelled[j] && w[j] != 0.0 {
                        if !q[j].is_finite() {
                            return None;
                        }
                        a += q[j] * w[j];
                    }
                }
                a.is_finite().then(|| a.clamp(-ALLOC_LIMIT, ALLOC_LIMIT))
            })
            .collect();
        let known: Vec<(f64, f64)> = out
            .iter()
            .zip(&self.weight)
            .filter_map(|(a, w)| a.map(|a| (a, *w)))
            .collect();
        if known.is_empty() {
            return None;
        }
        let per_weight = known.iter().map(|(a, w)| a / w).sum::<f64>() / known.len() as f64;
        for (slot, w) in out.iter_mut().zip(&self.weight) {
            if slot.is_none() {
                *slot = Some((per_weight * w).clamp(-ALLOC_LIMIT, ALLOC_LIMIT));
            }
        }
        Some(out.into_iter().map(|a| a.unwrap_or(0.0)).collect())
    }
}

/// Each column's RMS over `rows` (1 where it is zero or not modelled),
/// and the mask of the columns that can be fitted.
fn column_scales(rows: &[(Res, f64)], modelled: [bool; R]) -> (Res, u8) {
    let mut sigma = [0.0; R];
    for (e, _) in rows {
        for j in 0..R {
            sigma[j] += e[j] * e[j];
        }
    }
    let mut allowed = 0u8;
    for (j, s) in sigma.iter_mut().enumerate() {
        *s = (*s / rows.len().max(1) as f64).sqrt();
        if modelled[j] && s.is_finite() && *s > 0.0 {
            allowed |= 1 << j;
        } else {
            *s = 1.0;
        }
    }
    (sigma, allowed)
}

/// The normal equations `A w = b` of the scaled rows, with a ridge of
/// `ridge` times the mean diagonal of the fitted columns; `None` when the
/// rows hold no traffic.
fn normal_equations(
    rows: &[(Res, f64)],
    sigma: &Res,
    allowed: u8,
    ridge: f64,
) -> Option<([[f64; R]; R], Res)> {
    let mut a = [[0.0; R]; R];
    let mut b = [0.0; R];
    let mut traffic = 0.0;
    for (e, v) in rows {
        let x: Res = std::array::from_fn(|j| e[j] / sigma[j]);
        for i in 0..R {
            for j in 0..R {
                a[i][j] += x[i] * x[j];
            }
            b[i] += x[i] * v;
        }
        traffic += v;
    }
    if traffic <= 0.0 {
        return None;
    }
    let diag: f64 = (0..R)
        .filter(|j| allowed & (1 << j) != 0)
        .map(|j| a[j][j])
        .sum::<f64>()
        / allowed.count_ones() as f64;
    let lambda = ridge * diag.max(f64::MIN_POSITIVE);
    for (j, row) in a.iter_mut().enumerate() {
        row[j] += lambda;
    }
    Some((a, b))
}

/// Per-node dispatch counting in one period, as the balancer does it:
/// `L_i = target_i - total_i` where `target_i = total_i(at period start) +
/// allocation_i`. This plain version drives the property tests and the lab
/// simulations; nginx keeps the same two numbers in shared memory.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    /// Target per node.
    pub target: Vec<f64>,
    /// Requests sent per node (cumulative).
    pub total: Vec<u64>,
}

impl Dispatcher {
    /// All counts zero, no allocation yet.
    pub fn new(n: usize) -> Dispatcher {
        Dispatcher {
            target: vec![0.0; n],
            total: vec![0; n],
        }
    }

    /// Starts a period with new allocations.
    pub fn apply(&mut self, alloc: &[f64]) {
        for (i, a) in alloc.iter().enumerate().take(self.total.len()) {
            self.target[i] = self.total[i] as f64 + a;
        }
    }

    /// Remaining allocation of node `i`.
    pub fn remaining(&self, i: usize) -> f64 {
        self.target[i] - self.total[i] as f64
    }

    /// One pick among the `eligible` nodes: argmax L, random ties, count it.
    pub fn pick(&mut self, eligible: impl Iterator<Item = usize>, rng: &mut Rng) -> Option<usize> {
        let mut am = Argmax::default();
        for i in eligible {
            am.offer(i, self.remaining(i), rng);
        }
        let k = am.best()?;
        self.total[k] += 1;
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(end_ms: u64, usage: Vec<Res>, req: Option<Vec<f64>>) -> Sample {
        Sample {
            end_ms,
            period_ms: 1000,
            usage,
            sent: req,
            ..Sample::default()
        }
    }

    fn model(n: usize) -> PaperModel {
        let mut m = PaperModel::new(FitParams::default(), vec![1.0; n]);
        for i in 0..n {
            m.set_capacity(i, [1000.0, 1000.0, 1000.0, 1000.0]);
        }
        m
    }

    #[test]
    fn no_samples_means_round_robin() {
        let mut m = model(3);
        assert_eq!(m.refit(), FitState::NoSamples);
        assert!(m.allocations().is_none());
    }

    #[test]
    fn too_few_samples() {
        let mut m = model(2);
        m.push(sample(1, vec![[1.0; 4], [2.0; 4]], Some(vec![1.0, 2.0])));
        assert_eq!(m.refit(), FitState::TooFewSamples { have: 1, need: 2 });
        assert!(m.allocations().is_none());
        // a sample without counts does not count towards the fit
        m.push(sample(2, vec![[1.0; 4], [2.0; 4]], None));
        assert_eq!(m.refit(), FitState::TooFewSamples { have: 1, need: 2 });
    }

    #[test]
    fn duplicate_and_stale_samples_are_dropped() {
        let mut m = PaperModel::new(
            FitParams {
                window: 2,
                ..FitParams::default()
            },
            vec![1.0],
        );
        assert!(m.push(sample(10, vec![[1.0; 4]], None)));
        assert!(!m.push(sample(10, vec![[5.0; 4]], None)));
        assert!(m.push(sample(5, vec![[1.0; 4]], None))); // late, window not full
        assert!(!m.push(sample(1, vec![[1.0; 4]], None))); // older than a full window
        assert!(m.push(sample(20, vec![[1.0; 4]], None)));
        let ends: Vec<u64> = m.window().map(|s| s.end_ms).collect();
        assert_eq!(ends, vec![10, 20]);
        assert!(!m.push(sample(30, vec![[1.0; 4]; 2], None))); // wrong n
    }

    #[test]
    fn collinear_columns_give_finite_nonnegative_w_that_fits() {
        // All usage is proportional to our own requests: every column is a
        // multiple of v. The fit must still predict v.
        let mut m = model(3);
        for t in 0..10u64 {
            let v: Vec<f64> = (0..3).map(|i| (t + 1 + i) as f64).collect();
            let usage = v.iter().map(|x| [2.0 * x, 3.0 * x, 0.5 * x, *x]).collect();
            m.push(sample(t, usage, Some(v)));
        }
        assert!(matches!(m.refit(), FitState::Fitted { .. }));
        let w = m.w().unwrap();
        assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
        let pred = 2.0 * w[0] + 3.0 * w[1] + 0.5 * w[2] + w[3];
        assert!((pred - 1.0).abs() < 1e-3, "{w:?} predicts {pred}");
    }

    #[test]
    fn zero_traffic_keeps_previous_w() {
        let mut m = model(2);
        m.push(sample(1, vec![[1.0; 4], [2.0; 4]], Some(vec![0.0, 0.0])));
        m.push(sample(2, vec![[1.0; 4], [2.0; 4]], Some(vec![0.0, 0.0])));
        assert_eq!(m.refit(), FitState::NoTraffic);
        assert!(m.allocations().is_none());
        let mut m = model(2).with_w([0.1, 0.0, 0.0, 0.0]);
        m.push(sample(1, vec![[1.0; 4], [2.0; 4]], Some(vec![0.0, 0.0])));
        m.push(sample(2, vec![[1.0; 4], [2.0; 4]], Some(vec![0.0, 0.0])));
        assert_eq!(m.refit(), FitState::NoTraffic);
        assert_eq!(m.w(), Some([0.1, 0.0, 0.0, 0.0]));
        let a = m.allocations().unwrap();
        assert!(
            (a[0] - 99.9).abs() < 1e-9 && (a[1] - 99.8).abs() < 1e-9,
            "{a:?}"
        );
    }

    #[test]
    fn all_over_capacity_still_orders_nodes() {
        let mut m = model(2).with_w([1.0, 0.0, 0.0, 0.0]);
        m.push(sample(1, vec![[1500.0; 4], [1200.0; 4]], None));
        let a = m.allocations().unwrap();
        assert!(a[0] < 0.0 && a[1] < 0.0);
        let mut d = Dispatcher::new(2);
        d.apply(&a);
        let mut rng = Rng::new(1);
        assert_eq!(d.pick(0..2, &mut rng), Some(1));
    }

    #[test]
    fn node_without_counters_gets_weighted_mean() {
        let mut m =
            PaperModel::new(FitParams::default(), vec![1.0, 1.0, 2.0]).with_w([0.1, 0.0, 0.0, 0.0]);
        for i in 0..3 {
            m.set_capacity(i, [1000.0; 4]);
        }
        let nan = [f64::NAN; 4];
        m.push(sample(1, vec![[0.0; 4], [500.0; 4], nan], None));
        let a = m.allocations().unwrap();
        assert!((a[0] - 100.0).abs() < 1e-9 && (a[1] - 50.0).abs() < 1e-9);
        assert!((a[2] - 150.0).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn no_node_with_counters_means_round_robin() {
        let mut m = model(2).with_w([0.1, 0.0, 0.0, 0.0]);
        let nan = [f64::NAN; 4];
        m.push(sample(1, vec![nan, nan], None));
        assert!(m.allocations().is_none());
    }

    #[test]
    fn unknown_capacity_drops_the_resource() {
        let mut m = PaperModel::new(FitParams::default(), vec![1.0, 1.0]);
        m.set_capacity(0, [1000.0, 1000.0, f64::NAN, 0.0]);
        m.set_capacity(1, [1000.0, 1000.0, 1000.0, 1000.0]);
        m.push(sample(
            1,
            vec![[100.0, 1.0, 5.0, 5.0], [200.0, 1.0, 5.0, 5.0]],
            Some(vec![1.0, 2.0]),
        ));
        m.push(sample(
            2,
            vec![[300.0, 1.0, 5.0, 5.0], [100.0, 1.0, 5.0, 5.0]],
            Some(vec![3.0, 1.0]),
        ));
        assert!(matches!(m.refit(), FitState::Fitted { .. }));
        let w = m.w().unwrap();
        assert_eq!((w[2], w[3]), (0.0, 0.0));
        assert!((w[0] - 0.01).abs() < 1e-4, "{w:?}");
    }

    #[test]
    fn reload_carries_w_over() {
        let m = PaperModel::new(FitParams::default(), vec![1.0; 5]).with_w([0.5, 0.0, 0.1, 0.0]);
        assert_eq!(m.w(), Some([0.5, 0.0, 0.1, 0.0]));
        let bad =
            PaperModel::new(FitParams::default(), vec![1.0]).with_w([f64::NAN, 0.0, 0.0, 0.0]);
        assert_eq!(bad.w(), None);
    }

    #[test]
    fn vsphere_gap_marker_is_missing_value() {
        let mut m = model(1);
        m.push(sample(1, vec![[-1.0, 10.0, 10.0, 10.0]], None));
        assert!(m.mean_usage(0)[0].is_nan());
        assert_eq!(m.mean_usage(0)[1], 10.0);
    }
}
