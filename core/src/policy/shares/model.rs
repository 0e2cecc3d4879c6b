//! The shares model: counters steer, in-flight counts pick.
//!
//! vSphere's realtime counters are 20-s averages that reach the balancer
//! 20–45 s after the period they measure began, far too old to score single
//! requests (which is why the paper's `L = Q·W − V` herds). Here they only
//! set slowly moving, load-invariant quantities, once per sample:
//!
//! * **cost of one request** per resource `a_j`, pooled over the nodes (the
//!   same application runs on every VM): the traffic-weighted median over
//!   nodes of `Σ usage·period / Σ requests completed` over the window, with
//!   this instance's own completions paired with each sample's exact period;
//! * **background** per node `b_ij = max(0, usage_ij − a_j·x_i)`, what this
//!   instance's requests do not explain (batch jobs, other frontends), from
//!   the newest sample (`x_i` = completions per second);
//! * **effective capacity** per node: usable capacity (Nova-style accounting,
//!   done by the caller), with CPU scaled by `run / (run + ready)` from
//!   `cpu.ready` (a VM that waits for a physical CPU gets fewer cycles than
//!   its size);
//! * **target shares** that equalise the predicted bottleneck utilisation
//!   `max_j (b_ij + a_j·x_i) / C_ij` at the current total rate (water
//!   filling), with a floor so every node keeps producing informative
//!   counters; the published shares move a fraction `step` of the way to
//!   the target per sample, so nothing herds.
//!
//! Per request the module picks the eligible peer with the lowest
//! `in-flight / share` (nginx's weighted least-connections with the shares
//! as weights; ties by smooth weighted round robin), see [`LeastShare`].
//! The overload guard gives each peer an in-flight limit proportional to its
//! share ([`SharesModel::limits`]); when every peer is at its limit the request is
//! answered at once (like `max_conns`) instead of queueing everywhere.
//!
//! # Degenerate cases (each has a test below)
//!
//! | case | behaviour |
//! |---|---|
//! | no sample | no shares: nginx's weighted round robin |
//! | no sample with request counts (just started), or no request completed in the window | a cost kept from before is used; otherwise no shares (weighted round robin) |
//! | a node without counters (unmapped VM, NaN values) | share = its `weight=` times the mean share per unit weight of the nodes with counters |
//! | a resource without capacity on some node with counters, or with no cost | left out of the bottleneck |
//! | background above capacity everywhere | water filling still orders the nodes (the level rises above 1) |
//! | zero total rate | the target is the water level of an (almost) idle cluster: shares by free capacity |
//! | more nodes than 1/floor | the floor shrinks to half an equal share |
//! | NaN / infinite / negative inputs | ignored per value; shares always finite, positive and summing to 1 per group |
//!
//! Memory is a level, not a rate: it is shown but not part of the
//! bottleneck (a cost per request of memory has no meaning).

// Index loops read best in the numeric code.
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;

use super::math::{floored, ready_factor, water_fill, weighted_median};
use crate::policy::window::{clean_counts, insert_by_end};
use crate::policy::{PeerFacts, Sample};
use crate::resources::{self, Res, R, RATE_RESOURCES};

/// Tunables of the shares model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShareParams {
    /// Samples kept for the cost estimate.
    pub window: usize,
    /// Smallest share of a node (of its group), 0..0.5.
    pub floor: f64,
    /// Fraction of the way to the target moved per sample, (0, 1].
    pub step: f64,
    /// In-flight limit per vCPU of the group (spread over the nodes by
    /// share); 0 = no limit.
    pub inflight_per_vcpu: f64,
}

impl Default for ShareParams {
    fn default() -> Self {
        ShareParams {
            window: DEFAULT_WINDOW,
            floor: 0.01,
            step: 0.5,
            inflight_per_vcpu: DEFAULT_INFLIGHT_PER_VCPU,
        }
    }
}

/// Default window of this mode (1 minute of 20-s samples): the most the
/// cost estimate reaches back when traffic is light.
pub const DEFAULT_WINDOW: usize = 3;

/// The cost per request is estimated from the newest samples that hold at
/// least this many completed requests (all nodes together).
pub const COST_MIN_REQUESTS: f64 = 300.0;

/// Default in-flight limit per vCPU: far above what a node holds below
/// saturation, so it binds only in overload.
pub const DEFAULT_INFLIGHT_PER_VCPU: f64 = 32.0;

/// What the last [`SharesModel::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareState {
    /// The window is empty.
    NoSamples,
    /// No sample with request counts yet, and no cost from before.
    TooFewSamples,
    /// No request completed in the window, and no cost from before.
    NoTraffic,
    /// No node with counters, or no resource with a capacity.
    NoCounters,
    /// Shares computed.
    Active,
}

/// The shares model of one upstream.
#[derive(Clone, Debug)]
pub struct SharesModel {
    params: ShareParams,
    nodes: Vec<PeerFacts>,
    window: VecDeque<Sample>,
    cost: Option<Res>,
    background: Vec<Res>,
    effective: Vec<Res>,
    target: Option<Vec<f64>>,
    shares: Option<Vec<f64>>,
    rate: Option<f64>,
    down: Vec<bool>,
    state: ShareState,
}

impl SharesModel {
    /// A model of `nodes`; parameters are clamped to sane ranges.
    pub fn new(params: ShareParams, nodes: Vec<PeerFacts>) -> SharesModel {
        let n = nodes.len();
        let params = ShareParams {
            window: params.window.max(1),
            floor: if params.floor.is_finite() {
                params.floor.clamp(0.0, 0.5)
            } else {
                0.01
            },
            step: if params.step.is_finite() && params.step > 0.0 {
                params.step.min(1.0)
            } else {
                0.5
            },
            inflight_per_vcpu: if params.inflight_per_vcpu.is_finite() {
                params.inflight_per_vcpu.max(0.0)
            } else {
                0.0
            },
        };
        let nodes = nodes
            .into_iter()
            .map(|mut nd| {
                nd.capacity = nd.capacity.map(resources::capacity);
                nd.vcpus = if resources::amount(nd.vcpus) >= 1.0 {
                    nd.vcpus
                } else {
                    f64::NAN
                };
                nd.weight = if nd.weight.is_finite() && nd.weight > 0.0 {
                    nd.weight
                } else {
                    1.0
                };
                nd
            })
            .collect();
        SharesModel {
            params,
            nodes,
            window: VecDeque::new(),
            cost: None,
            background: vec![[f64::NAN; R]; n],
            effective: vec![[f64::NAN; R]; n],
            target: None,
            shares: None,
            rate: None,
            down: vec![false; n],
            state: ShareState::NoSamples,
        }
    }

    /// Starts from shares and a cost kept from before (a reload with the
    /// same servers, or another worker's collector that held the lease).
    pub fn resume(mut self, shares: Option<Vec<f64>>, cost: Option<Res>) -> SharesModel {
        if let Some(s) = shares {
            if s.len() == self.nodes.len() && s.iter().all(|x| x.is_finite() && *x > 0.0) {
                self.shares = Some(s);
            }
        }
        if let Some(c) = cost {
            if c.iter().all(|x| x.is_nan() || (x.is_finite() && *x >= 0.0))
                && c.iter().any(|x| *x > 0.0)
            {
                self.cost = Some(c);
            }
        }
        self
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a model of zero nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Replaces node `i`'s facts (capacity, vCPUs after an inventory read;
    /// presence when a `resolve` address takes or leaves a spare slot). A
    /// node that leaves gets share 0 at once; one that arrives gets the
    /// mean share of its group until the next sample places it.
    pub fn set_node(&mut self, i: usize, node: PeerFacts) {
        if i >= self.nodes.len() {
            return;
        }
        let fresh = SharesModel::new(self.params, vec![node]);
        let was = self.nodes[i].present;
        self.nodes[i] = fresh.nodes[0];
        if was == node.present {
            return;
        }
        let groups = self.groups();
        let members = &groups[usize::from(node.backup)];
        for v in [&mut self.shares, &mut self.target].into_iter().flatten() {
            if node.present {
                let others: Vec<f64> = members.iter().filter(|&&m| m != i).map(|&m| v[m]).collect();
                v[i] = if others.is_empty() {
                    1.0
                } else {
                    others.iter().sum::<f64>() / others.len() as f64
                };
            } else {
                v[i] = 0.0;
            }
            let sum: f64 = members.iter().map(|&m| v[m]).sum();
            if sum > 0.0 {
                for &m in members {
                    v[m] /= sum;
                }
            }
        }
    }

    /// Node `i`'s facts.
    pub fn node(&self, i: usize) -> PeerFacts {
        self.nodes.get(i).copied().unwrap_or_default()
    }

    /// Adds a sample; false (nothing changed) for the wrong size, a
    /// duplicate end time, or one older than a full window.
    pub fn push(&mut self, mut s: Sample) -> bool {
        let n = self.nodes.len();
        if s.usage.len() != n || s.period_ms == 0 {
            return false;
        }
        if s.ready_ms.len() != n {
            s.ready_ms = vec![f64::NAN; n];
        }
        if s.done.as_ref().is_some_and(|d| d.len() != n) {
            s.done = None;
        }
        if s.failed.as_ref().is_some_and(|d| d.len() != n) {
            s.failed = None;
        }
        for row in &mut s.usage {
            *row = row.map(resources::amount);
        }
        for r in &mut s.ready_ms {
            *r = resources::amount(*r);
        }
        // what requests were sent is not this model's business
        s.sent = None;
        for d in [&mut s.done, &mut s.failed].into_iter().flatten() {
            clean_counts(d);
        }
        // successful completions: what the cost and the rate are about
        if let (Some(d), Some(f)) = (&mut s.done, &s.failed) {
            for (x, y) in d.iter_mut().zip(f) {
                *x = (*x - y).max(0.0);
            }
        }
        insert_by_end(&mut self.window, s, self.params.window, |o| o.end_ms)
    }

    /// Samples in the window.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// End time of the newest sample.
    pub fn newest_ms(&self) -> Option<u64> {
        self.window.back().map(|s| s.end_ms)
    }

    /// Cost of one request per resource (MHz·s, –, KB, KB; memory has
    /// none), NaN where unknown; `None` before the first estimate.
    pub fn cost(&self) -> Option<Res> {
        self.cost
    }

    /// Background use of node `i` (NaN where unknown).
    pub fn background(&self, i: usize) -> Res {
        self.background.get(i).copied().unwrap_or([f64::NAN; R])
    }

    /// Effective capacity of node `i` (capacity, CPU scaled by CPU ready).
    pub fn effective_capacity(&self, i: usize) -> Res {
        self.effective.get(i).copied().unwrap_or([f64::NAN; R])
    }

    /// Completed requests per second (smoothed) seen in the samples.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Node `i` was down in the newest sample (its requests failed).
    pub fn is_down(&self, i: usize) -> bool {
        self.down.get(i).copied().unwrap_or(false)
    }

    /// Target shares of the last update.
    pub fn target(&self) -> Option<&[f64]> {
        self.target.as_deref()
    }

    /// Shares in force (`None`: weighted round robin).
    pub fn shares(&self) -> Option<&[f64]> {
        if self.state == ShareState::Active {
            self.shares.as_deref()
        } else {
            None
        }
    }

    /// True if node `i` has a finite usage value in the newest sample.
    pub fn has_counters(&self, i: usize) -> bool {
        self.window
            .back()
            .is_some_and(|s| s.usage[i].iter().any(|x| x.is_finite()))
    }

    /// Recomputes cost, background, capacities, target and shares from the
    /// window. Call once per new sample.
    pub fn update(&mut self) -> ShareState {
        self.state = self.update_inner();
        self.state
    }

    fn update_inner(&mut self) -> ShareState {
        let n = self.nodes.len();
        let Some(newest) = self.window.back().cloned() else {
            return ShareState::NoSamples;
        };
        let with_counts = self.window.iter().any(|s| s.done.is_some());
        // cost per request, pooled over nodes
        if let Some(c) = self.estimate_cost() {
            self.cost = Some(c);
        }
        let Some(cost) = self.cost else {
            return if with_counts {
                ShareState::NoTraffic
            } else {
                ShareState::TooFewSamples
            };
        };
        let counted: Vec<bool> = (0..n)
            .map(|i| newest.usage[i].iter().any(|x| x.is_finite()))
            .collect();
        if !counted.iter().any(|&c| c) {
            return ShareState::NoCounters;
        }
        self.down = down_in(&newest);
        let rate = self.read_newest(&newest, &cost);
        let groups = self.groups();
        let mut target = vec![0.0; n];
        for members in groups.iter().filter(|m| !m.is_empty()) {
            let t = self.group_target(members, &counted, &self.down, &cost, rate);
            for (k, &i) in members.iter().enumerate() {
                target[i] = t[k];
            }
        }
        if target.iter().any(|x| !x.is_finite()) {
            return ShareState::NoCounters;
        }
        self.shares = Some(self.step_towards(&target, &groups));
        self.target = Some(target);
        ShareState::Active
    }

    /// What the newest sample says besides the cost: each node's
    /// background and effective capacity, and the (smoothed) total rate
    /// of completed requests the shares are computed for.
    fn read_newest(&mut self, newest: &Sample, cost: &Res) -> f64 {
        let n = self.nodes.len();
        let secs = newest.period_ms as f64 / 1000.0;
        let rate: Vec<f64> = match &newest.done {
            Some(d) => d.iter().map(|x| x / secs).collect(),
            None => vec![f64::NAN; n],
        };
        for i in 0..n {
            let u = newest.usage[i];
            self.background[i] = std::array::from_fn(|j| {
                if !RATE_RESOURCES[j] || !cost[j].is_finite() || !rate[i].is_finite() {
                    // memory is a level, not a rate; unknown without a cost
                    return f64::NAN;
                }
                (u[j] - cost[j] * rate[i]).max(0.0)
            });
            let nd = self.nodes[i];
            let mut c = nd.capacity;
            c[0] *= ready_factor(u[0], nd.capacity[0], newest.ready_ms[i], secs, nd.vcpus);
            self.effective[i] = c;
        }
        let total: f64 = rate.iter().filter(|x| x.is_finite()).sum();
        if newest.done.is_some() {
            self.rate = Some(match self.rate {
                Some(r) => 0.5 * r + 0.5 * total,
                None => total,
            });
        }
        self.rate.unwrap_or(0.0)
    }

    /// The shares a fraction `step` of the way from those in force to
    /// `target` (each group summing to exactly 1), or the target itself
    /// when none are in force.
    fn step_towards(&self, target: &[f64], groups: &[Vec<usize>; 2]) -> Vec<f64> {
        let Some(s) = self.shares.as_ref().filter(|s| s.len() == target.len()) else {
            return target.to_vec();
        };
        let a = self.params.step;
        let mut out: Vec<f64> = s
            .iter()
            .zip(target)
            .zip(&self.nodes)
            .map(|((s, t), nd)| if nd.present { s + a * (t - s) } else { 0.0 })
            .collect();
        for members in groups {
            let sum: f64 = members.iter().map(|&i| out[i]).sum();
            if sum > 0.0 {
                for &i in members {
                    out[i] /= sum;
                }
            }
        }
        out
    }

    /// The nodes of each group (present in nginx's list): primaries, then
    /// backups.
    fn groups(&self) -> [Vec<usize>; 2] {
        [false, true].map(|backup| {
            (0..self.nodes.len())
                .filter(|&i| self.nodes[i].backup == backup && self.nodes[i].present)
                .collect()
        })
    }

    /// Target shares of one group (`members`), summing to 1.
    fn group_target(
        &self,
        members: &[usize],
        counted: &[bool],
        down: &[bool],
        cost: &Res,
        x_total: f64,
    ) -> Vec<f64> {
        let k = members.len();
        // resources in the bottleneck: a cost, and a capacity on every
        // member with counters
        let mut use_res = [false; R];
        for j in 0..R {
            use_res[j] = RATE_RESOURCES[j]
                && cost[j].is_finite()
                && cost[j] > 0.0
                && members
                    .iter()
                    .filter(|&&i| counted[i])
                    .all(|&i| self.effective[i][j].is_finite());
        }
        let known: Vec<usize> = (0..k).filter(|&m| counted[members[m]]).collect();
        let mut t = vec![f64::NAN; k];
        if !known.is_empty() && use_res.iter().any(|&u| u) {
            let caps: Vec<Res> = known.iter().map(|&m| self.effective[members[m]]).collect();
            let bg: Vec<Res> = known
                .iter()
                .map(|&m| self.background[members[m]].map(|x| if x.is_finite() { x } else { 0.0 }))
                .collect();
            // a down node takes no part (capacity 0: water filling gives it
            // nothing, the floor keeps it probed)
            let caps: Vec<Res> = known
                .iter()
                .zip(caps)
                .map(|(&m, c)| if down[members[m]] { [0.0; R] } else { c })
                .collect();
            let x = water_fill(&caps, &bg, cost, use_res, x_total);
            for (q, &m) in known.iter().enumerate() {
                t[m] = x[q];
            }
        } else if !known.is_empty() {
            // counters but no usable resource: shares by weight
            for &m in &known {
                t[m] = self.nodes[members[m]].weight;
            }
        }
        let sum_known: f64 = known.iter().map(|&m| t[m]).sum();
        if known.is_empty() || sum_known.is_nan() || sum_known <= 0.0 {
            // nothing known: by weight
            let w: Vec<f64> = members.iter().map(|&i| self.nodes[i].weight).collect();
            return floored(&w, self.params.floor);
        }
        // nodes without counters: their weight times the known mean per weight
        let per_w = known
            .iter()
            .map(|&m| t[m] / sum_known / self.nodes[members[m]].weight)
            .sum::<f64>()
            / known.len() as f64;
        let mut raw = vec![0.0; k];
        for m in 0..k {
            raw[m] = if counted[members[m]] {
                t[m] / sum_known
            } else {
                per_w * self.nodes[members[m]].weight
            };
        }
        floored(&raw, self.params.floor)
    }

    /// The pooled per-request cost: per resource, the traffic-weighted
    /// median over nodes of (usage × time) / completions, summed over the
    /// newest samples of the window that hold [`COST_MIN_REQUESTS`].
    fn estimate_cost(&self) -> Option<Res> {
        let n = self.nodes.len();
        let mut work = vec![[0.0; R]; n];
        let mut reqs = vec![[0.0; R]; n];
        let mut any = false;
        let mut counted = 0.0;
        // the newest samples that hold enough completed requests: one
        // sample under real traffic (so a change of the request mix shows
        // at once), more of the window with light traffic
        for s in self.window.iter().rev() {
            if counted >= COST_MIN_REQUESTS {
                break;
            }
            let Some(done) = &s.done else { continue };
            counted += done.iter().sum::<f64>();
            let secs = s.period_ms as f64 / 1000.0;
            for i in 0..n {
                for j in 0..R {
                    let u = s.usage[i][j];
                    if u.is_finite() && done[i] > 0.0 {
                        work[i][j] += u * secs;
                        reqs[i][j] += done[i];
                        any = true;
                    }
                }
            }
        }
        if !any {
            return None;
        }
        let mut out = [f64::NAN; R];
        for j in (0..R).filter(|&j| RATE_RESOURCES[j]) {
            let pts: Vec<(f64, f64)> = (0..n)
                .filter(|&i| reqs[i][j] > 0.0)
                .map(|i| (work[i][j] / reqs[i][j], reqs[i][j]))
                .collect();
            out[j] = weighted_median(pts);
        }
        out.iter().any(|x| x.is_finite()).then_some(out)
    }

    /// Per-node in-flight limits of the overload guard: the group's
    /// `inflight_per_vcpu × vCPUs` spread by share (rounded), but never
    /// below what the node itself holds — `inflight_per_vcpu ×` its own
    /// vCPUs × the fraction of its CPU its background leaves free — so a
    /// node with a small share is not limited to a request or two while
    /// it is idle (0 = no limit). A node with unknown vCPUs counts as one
    /// vCPU.
    pub fn limits(&self) -> Vec<u64> {
        let n = self.nodes.len();
        let Some(s) = self.shares() else {
            return vec![0; n];
        };
        if self.params.inflight_per_vcpu <= 0.0 {
            return vec![0; n];
        }
        let mut out = vec![0; n];
        for members in self.groups() {
            let vcpus: f64 = members.iter().map(|&i| self.vcpus(i)).sum();
            let total = self.params.inflight_per_vcpu * vcpus;
            for i in members {
                let own = self.params.inflight_per_vcpu * self.vcpus(i) * self.free_cpu(i);
                out[i] = ((total * s[i]).max(own).round() as u64).max(1);
            }
        }
        out
    }

    /// Node `i`'s vCPUs (1 where unknown).
    fn vcpus(&self, i: usize) -> f64 {
        let v = self.nodes[i].vcpus;
        if v.is_finite() && v > 0.0 {
            v
        } else {
            1.0
        }
    }

    /// The fraction of node `i`'s effective CPU its background leaves
    /// free (0 for a node that is down, 1 where unknown).
    fn free_cpu(&self, i: usize) -> f64 {
        if self.is_down(i) {
            return 0.0;
        }
        let free = 1.0 - self.background(i)[0] / self.effective_capacity(i)[0];
        // NaN: unknown; ±inf (no capacity) clamps like any other value
        if free.is_nan() {
            1.0
        } else {
            free.clamp(0.0, 1.0)
        }
    }
}

/// Nodes whose requests all failed in `newest` (none succeeded): down.
/// nginx's max_fails already skips them; they keep only the floor share,
/// so the others get their in-flight limits.
fn down_in(newest: &Sample) -> Vec<bool> {
    (0..newest.usage.len())
        .map(|i| {
            let f = newest.failed.as_ref().map_or(0.0, |f| f[i]);
            let ok = newest.done.as_ref().map_or(0.0, |d| d[i]);
            f > 0.0 && ok == 0.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::math::*;
    use super::*;

    const NAN4: Res = [f64::NAN; R];

    fn node(cpu: f64, net: f64, vcpus: f64) -> PeerFacts {
        PeerFacts {
            capacity: [cpu, 4096.0, net, f64::NAN],
            vcpus,
            ..PeerFacts::default()
        }
    }

    /// A model of the lab's cluster moving `step` of the way per sample.
    fn stepping(step: f64) -> SharesModel {
        SharesModel::new(
            ShareParams {
                step,
                ..ShareParams::default()
            },
            lab_nodes(),
        )
    }

    /// The lab's cluster: CPU 2..10 GHz, network 4/8/4/16/2 MB/s.
    fn lab_nodes() -> Vec<PeerFacts> {
        vec![
            node(2000.0, 4000.0, 1.0),
            node(4000.0, 8000.0, 2.0),
            node(6000.0, 4000.0, 2.0),
            node(8000.0, 16000.0, 4.0),
            node(10000.0, 2000.0, 4.0),
        ]
    }

    /// A sample of `rate` req/s per node costing `cost` per request, plus
    /// `bg` per node, over 20 s.
    fn sample(t: u64, rate: &[f64], cost: Res, bg: &[Res]) -> Sample {
        let usage = rate
            .iter()
            .zip(bg)
            .map(|(x, b)| std::array::from_fn(|j| if j == 1 { 1000.0 } else { b[j] + cost[j] * x }))
            .collect();
        Sample {
            end_ms: t * 20_000,
            period_ms: 20_000,
            usage,
            ready_ms: vec![0.0; rate.len()],
            sent: None,
            done: Some(rate.iter().map(|x| x * 20.0).collect()),
            failed: None,
        }
    }

    fn no_bg(n: usize) -> Vec<Res> {
        vec![[0.0; R]; n]
    }

    /// Request rates that keep every lab node at 50 % CPU at 100 MHz·s per
    /// request.
    fn half_load() -> Vec<f64> {
        [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]
            .iter()
            .map(|c| 0.5 * c / 100.0)
            .collect()
    }

    #[test]
    fn no_samples_means_round_robin() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        assert_eq!(m.update(), ShareState::NoSamples);
        assert!(m.shares().is_none());
        assert_eq!(m.limits(), vec![0; 5]);
    }

    #[test]
    fn samples_without_counts_wait() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        let mut s = sample(1, &[1.0; 5], [100.0, 0.0, 10.0, 0.0], &no_bg(5));
        s.done = None;
        m.push(s);
        assert_eq!(m.update(), ShareState::TooFewSamples);
        assert!(m.shares().is_none());
    }

    #[test]
    fn zero_traffic_without_history_waits_and_with_history_keeps_cost() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        m.push(sample(1, &[0.0; 5], [100.0, 0.0, 10.0, 0.0], &no_bg(5)));
        assert_eq!(m.update(), ShareState::NoTraffic);
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes())
            .resume(None, Some([100.0, f64::NAN, 10.0, f64::NAN]));
        m.push(sample(1, &[0.0; 5], [100.0, 0.0, 10.0, 0.0], &no_bg(5)));
        assert_eq!(m.update(), ShareState::Active);
        // an idle cluster: shares by free capacity of the bottleneck (CPU
        // with cost 100 vs net with cost 10: min over resources)
        let s = m.shares().unwrap();
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_bound_shares_follow_cpu_capacity() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        // a balanced start: every node at 50 % CPU, 1 KB per request
        let cost = [100.0, 0.0, 1.0, 0.0];
        let rate = half_load();
        m.push(sample(1, &rate, cost, &no_bg(5)));
        assert_eq!(m.update(), ShareState::Active);
        let c = m.cost().unwrap();
        assert!(
            (c[0] - 100.0).abs() < 1e-9 && (c[2] - 1.0).abs() < 1e-9,
            "{c:?}"
        );
        let s = m.shares().unwrap();
        for (i, cap) in [2.0, 4.0, 6.0, 8.0, 10.0].iter().enumerate() {
            assert!((s[i] - cap / 30.0).abs() < 1e-6, "{s:?}");
        }
    }

    #[test]
    fn absent_spare_slots_get_nothing_and_arrivals_start_at_the_mean() {
        let mut nodes = lab_nodes();
        nodes[4].present = false;
        let mut m = SharesModel::new(ShareParams::default(), nodes.clone());
        let cost = [100.0, 0.0, 1.0, 0.0];
        let mut rate = half_load();
        rate[4] = 0.0;
        m.push(sample(1, &rate, cost, &no_bg(5)));
        assert_eq!(m.update(), ShareState::Active);
        let s = m.shares().unwrap();
        assert_eq!(s[4], 0.0);
        assert!((s[..4].iter().sum::<f64>() - 1.0).abs() < 1e-9, "{s:?}");
        for (i, cap) in [2.0, 4.0, 6.0, 8.0].iter().enumerate() {
            assert!((s[i] - cap / 20.0).abs() < 1e-6, "{s:?}");
        }
        assert_eq!(m.limits()[4], 0);
        // an address claims the slot: the mean share of the group, then
        // the group is normalised again
        let mut arrived = nodes[4];
        arrived.present = true;
        m.set_node(4, arrived);
        let s = m.shares().unwrap();
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{s:?}");
        assert!((s[4] - 0.25 / 1.25).abs() < 1e-9, "{s:?}");
        // and leaves: share 0 at once
        m.set_node(4, nodes[4]);
        let s = m.shares().unwrap();
        assert_eq!(s[4], 0.0);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn network_bound_shares_follow_the_network() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        // 300 KB per request, little CPU: the network is the bottleneck
        let cost = [10.0, 0.0, 300.0, 0.0];
        let rate = [5.0, 10.0, 5.0, 20.0, 2.0];
        m.push(sample(1, &rate, cost, &no_bg(5)));
        m.update();
        let s = m.shares().unwrap();
        let net = [4000.0, 8000.0, 4000.0, 16000.0, 2000.0];
        let sum: f64 = net.iter().sum();
        for i in 0..5 {
            assert!((s[i] - net[i] / sum).abs() < 1e-6, "{s:?}");
        }
    }

    #[test]
    fn background_is_explained_and_avoided() {
        let mut m = stepping(1.0);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let mut bg = no_bg(5);
        bg[4][0] = 4000.0; // a batch job takes 40 % of vm5
        let rate = [10.0, 20.0, 30.0, 40.0, 50.0]; // 50 % each before the job
        m.push(sample(1, &rate, cost, &bg));
        m.update();
        // the median cost ignores vm5's inflated ratio
        assert!((m.cost().unwrap()[0] - 100.0).abs() < 1e-9);
        assert!((m.background(4)[0] - 4000.0).abs() < 1e-6);
        assert!(m.background(0)[0].abs() < 1e-6);
        // equal utilisation at 150 req/s total: level L with
        // sum (L·C_i − b_i)/100 = 150 -> L = (15000 + 4000) / 30000
        let level = 19000.0 / 30000.0;
        let s = m.shares().unwrap();
        let want4 = (level * 10000.0 - 4000.0) / 100.0 / 150.0;
        assert!((s[4] - want4).abs() < 1e-6, "{s:?} vs {want4}");
        let util: Vec<f64> = (0..5)
            .map(|i| {
                (m.background(i)[0] + 100.0 * 150.0 * s[i])
                    / [2000.0, 4000.0, 6000.0, 8000.0, 10000.0][i]
            })
            .collect();
        for u in &util {
            assert!((u - level).abs() < 1e-6, "{util:?}");
        }
    }

    #[test]
    fn cpu_ready_shrinks_capacity() {
        assert_eq!(ready_factor(1000.0, 2000.0, f64::NAN, 20.0, 1.0), 1.0);
        assert_eq!(ready_factor(0.0, 2000.0, 0.0, 20.0, 1.0), 1.0);
        // 50 % run, 50 % ready: the VM gets half of what it asks
        let g = ready_factor(1000.0, 2000.0, 10_000.0, 20.0, 1.0);
        assert!((g - 0.5).abs() < 1e-12);
        // summed over 4 vCPUs
        let g = ready_factor(4000.0, 8000.0, 40_000.0, 20.0, 4.0);
        assert!((g - 0.5).abs() < 1e-12);
        let mut m = stepping(1.0);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let rate = half_load();
        let mut s = sample(1, &rate, cost, &no_bg(5));
        // vm4 waits as long as it runs (4 vCPUs at 50 %, 20 s)
        s.ready_ms[3] = 0.5 * 4.0 * 20_000.0;
        m.push(s);
        m.update();
        assert!((m.effective_capacity(3)[0] - 4000.0).abs() < 1e-6);
        let sh = m.shares().unwrap();
        assert!((sh[3] - 4.0 / 26.0).abs() < 1e-6, "{sh:?}");
    }

    #[test]
    fn unmapped_node_gets_weighted_mean_share() {
        let mut nodes = lab_nodes();
        nodes[2].weight = 2.0;
        let mut m = SharesModel::new(ShareParams::default(), nodes);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let mut s = sample(1, &[10.0, 20.0, 30.0, 40.0, 50.0], cost, &no_bg(5));
        s.usage[2] = NAN4;
        m.push(s);
        assert_eq!(m.update(), ShareState::Active);
        let sh = m.shares().unwrap();
        assert!((sh.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // known nodes' mean share per weight, times 2, before normalising
        let known = [2.0, 4.0, 8.0, 10.0].map(|c: f64| c / 24.0);
        let per_w = known.iter().sum::<f64>() / 4.0;
        let raw2 = 2.0 * per_w;
        assert!((sh[2] - raw2 / (1.0 + raw2)).abs() < 1e-6, "{sh:?}");
    }

    #[test]
    fn no_counters_at_all() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes())
            .resume(None, Some([1.0, f64::NAN, 1.0, f64::NAN]));
        m.push(Sample {
            end_ms: 1,
            period_ms: 20_000,
            usage: vec![NAN4; 5],
            ready_ms: vec![],
            sent: None,
            done: None,
            failed: None,
        });
        assert_eq!(m.update(), ShareState::NoCounters);
        assert!(m.shares().is_none());
    }

    #[test]
    fn floor_keeps_every_node_alive() {
        let s = floored(&[0.0, 1.0, 1.0], 0.01);
        assert!((s[0] - 0.01).abs() < 1e-12 && (s[1] - 0.495).abs() < 1e-12);
        let s = floored(&vec![1.0; 500], 0.01);
        assert!(s.iter().all(|x| (x - 0.002).abs() < 1e-12));
        let s = floored(&[f64::NAN, -1.0, 0.0], 0.01);
        assert!(s.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12));
        // more than 1/(2 floor) nodes: floor = half an equal share
        let mut raw = vec![0.0; 100];
        raw[0] = 1.0;
        let s = floored(&raw, 0.01);
        assert!((s[1] - 0.005).abs() < 1e-12, "{}", s[1]);
    }

    #[test]
    fn moves_gradually() {
        let mut m = stepping(0.5);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let rate = half_load();
        m.push(sample(1, &rate, cost, &no_bg(5)));
        m.update();
        let before = m.shares().unwrap().to_vec();
        let mut bg = no_bg(5);
        bg[3][0] = 4000.0;
        m.push(sample(2, &rate, cost, &bg));
        m.update();
        let t = m.target().unwrap().to_vec();
        let after = m.shares().unwrap().to_vec();
        for i in 0..5 {
            assert!((after[i] - (before[i] + 0.5 * (t[i] - before[i]))).abs() < 1e-9);
        }
        assert!(after[3] < before[3] && after[3] > t[3]);
    }

    #[test]
    fn cost_follows_a_change_of_the_mix_at_once() {
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        let rate = [10.0, 20.0, 30.0, 40.0, 50.0];
        m.push(sample(1, &rate, [10.0, 0.0, 300.0, 0.0], &no_bg(5)));
        m.update();
        assert!((m.cost().unwrap()[2] - 300.0).abs() < 1e-9);
        // the next sample (3000 requests) is enough on its own
        m.push(sample(2, &rate, [120.0, 0.0, 1.0, 0.0], &no_bg(5)));
        m.update();
        let c = m.cost().unwrap();
        assert!(
            (c[0] - 120.0).abs() < 1e-9 && (c[2] - 1.0).abs() < 1e-9,
            "{c:?}"
        );
        // light traffic: the window is pooled until enough requests
        let mut m = SharesModel::new(ShareParams::default(), lab_nodes());
        let light = [0.1, 0.2, 0.3, 0.4, 0.5]; // 30 requests per sample
        m.push(sample(1, &light, [100.0, 0.0, 1.0, 0.0], &no_bg(5)));
        m.push(sample(2, &light, [200.0, 0.0, 1.0, 0.0], &no_bg(5)));
        m.update();
        let c = m.cost().unwrap();
        assert!((c[0] - 150.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn a_failing_node_keeps_only_the_floor() {
        let mut m = stepping(1.0);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let rate = half_load();
        m.push(sample(1, &rate, cost, &no_bg(5)));
        m.update();
        assert!(!m.is_down(2));
        // vm3 dies: it uses nothing and its few requests fail
        let mut r2 = rate.clone();
        r2[2] = 0.0;
        let mut s = sample(2, &r2, cost, &no_bg(5));
        s.done.as_mut().unwrap()[2] = 4.0;
        s.failed = Some(vec![0.0, 0.0, 4.0, 0.0, 0.0]);
        m.push(s);
        m.update();
        assert!(m.is_down(2));
        let sh = m.shares().unwrap();
        assert!((sh[2] - 0.01).abs() < 1e-9, "{sh:?}");
        // failures alongside successes: not down
        let mut s = sample(3, &rate, cost, &no_bg(5));
        s.failed = Some(vec![0.0, 0.0, 2.0, 0.0, 0.0]);
        m.push(s);
        m.update();
        assert!(!m.is_down(2));
    }

    #[test]
    fn backups_are_their_own_group() {
        let mut nodes = lab_nodes();
        nodes[4].backup = true;
        nodes[3].backup = true;
        let mut m = SharesModel::new(ShareParams::default(), nodes);
        let cost = [100.0, 0.0, 1.0, 0.0];
        m.push(sample(1, &[10.0, 20.0, 30.0, 0.0, 0.0], cost, &no_bg(5)));
        m.update();
        let s = m.shares().unwrap();
        assert!((s[0] + s[1] + s[2] - 1.0).abs() < 1e-9);
        assert!((s[3] + s[4] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn limits_follow_shares() {
        let mut m = SharesModel::new(
            ShareParams {
                inflight_per_vcpu: 4.0,
                ..ShareParams::default()
            },
            lab_nodes(),
        );
        assert_eq!(m.limits(), vec![0; 5]);
        let cost = [100.0, 0.0, 1.0, 0.0];
        let rate = half_load();
        m.push(sample(1, &rate, cost, &no_bg(5)));
        m.update();
        // 13 vCPUs × 4 = 52 in flight by CPU share ([3, 7, 10, 14, 17]),
        // but never below what each VM's own vCPUs hold (4, 8, 8, 16, 16
        // with no background)
        assert_eq!(m.limits(), vec![4, 8, 10, 16, 17]);
        // a VM busy with work of its own holds less: 75 % background
        // leaves a quarter of its 4 vCPUs
        let mut busy = SharesModel::new(
            ShareParams {
                inflight_per_vcpu: 4.0,
                ..ShareParams::default()
            },
            lab_nodes(),
        );
        let mut bg = no_bg(5);
        bg[3][0] = 6000.0;
        busy.push(sample(1, &rate, cost, &bg));
        busy.update();
        let l = busy.limits();
        assert!(l[3] < 16 && l[3] >= 4, "{l:?}");
        let mut off = SharesModel::new(
            ShareParams {
                inflight_per_vcpu: 0.0,
                ..ShareParams::default()
            },
            lab_nodes(),
        );
        off.push(sample(1, &rate, cost, &no_bg(5)));
        off.update();
        assert_eq!(off.limits(), vec![0; 5]);
    }

    #[test]
    fn water_fill_orders_overloaded_nodes() {
        // every node's background above its capacity: the level rises
        // above 1 and the least overloaded node still gets the most
        let caps = vec![[100.0, 1.0, 1.0, 1.0]; 3];
        let bg = vec![
            [150.0, 0.0, 0.0, 0.0],
            [120.0, 0.0, 0.0, 0.0],
            [200.0, 0.0, 0.0, 0.0],
        ];
        let x = water_fill(
            &caps,
            &bg,
            &[1.0, 0.0, 0.0, 0.0],
            [true, false, false, false],
            10.0,
        );
        assert!((x.iter().sum::<f64>() - 10.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] >= x[2], "{x:?}");
    }

    #[test]
    fn weighted_median_basics() {
        assert!(weighted_median(vec![]).is_nan());
        assert_eq!(
            weighted_median(vec![(1.0, 1.0), (5.0, 1.0), (3.0, 1.0)]),
            3.0
        );
        assert_eq!(
            weighted_median(vec![(1.0, 10.0), (5.0, 1.0), (3.0, 1.0)]),
            1.0
        );
        assert_eq!(weighted_median(vec![(f64::NAN, 10.0), (2.0, 1.0)]), 2.0);
    }
}
