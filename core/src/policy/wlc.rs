//! `mode=wlc`: the dynamic weighted least-connection of the LVS paper (She
//! Peng, "Research on the weighted least-connection scheduling algorithm
//! of LVS clusters", 2019), kept as a comparison mode: per sample each
//! peer's weight is `A·(1 − (K_cpu·cpu + K_mem·mem + K_net·net))` from its
//! current utilisations, 0 when any utilisation exceeds the cutoff, and a
//! new weight replaces the old one only when it moved by more than B; per
//! request the pick takes the least in flight per weight.
//!
//! Like nginx's least_conn reuses round robin, this mode reuses the paper
//! mode's model for its window, capacities and the status it shows, and
//! adds only the weights.

use super::paper::{self, PaperModel, PaperPolicy, Publish};
use super::view::{Fields, Metric};
use super::{Comparison, Mode, PeerFacts, Policy, Tuning};
use crate::resources::{CPU, MEM, NET, R};
use crate::zone::{PeerInfo, UpstreamZone};

/// The wlc mode.
pub struct Wlc;

impl Mode for Wlc {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn options(&self) -> &'static [&'static str] {
        &["slow_start"]
    }

    fn defaults(&self, _t: &mut Tuning, interval_ms: u64, _written: &dyn Fn(&str) -> bool) -> u64 {
        3 * interval_ms
    }

    fn policy(&self, t: &Tuning, peers: &[PeerFacts], zone: UpstreamZone<'_>) -> Box<dyn Policy> {
        let weights = Weights {
            f: WlcWeights::default(),
            configured: peers.iter().map(|p| p.weight).collect(),
            in_force: vec![None; peers.len()],
        };
        Box::new(PaperPolicy::new(t, peers, zone, weights))
    }

    fn comparison(&self, _t: &Tuning) -> Comparison {
        Comparison::LeastPerShare { plus_one: false }
    }

    fn upstream_fields(&self, zone: Option<UpstreamZone<'_>>) -> Fields {
        paper::upstream_fields(zone)
    }

    fn peer_fields(&self, info: Option<&PeerInfo>, usable: bool) -> Fields {
        paper::peer_fields(info, usable)
    }

    fn metrics(&self) -> &'static [Metric] {
        &paper::METRICS
    }
}

/// The LVS paper's weight function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WlcWeights {
    /// Scale A (weights in [0, A]).
    pub a: f64,
    /// Rewrite threshold B.
    pub b: f64,
    /// Influence factors for cpu, mem, net.
    pub k: [f64; 3],
    /// Utilisation above which the weight is 0.
    pub cutoff: f64,
}

impl Default for WlcWeights {
    /// The paper's values: A = 10, B = 5, K = 0.5/0.3/0.2, cutoff 0.9.
    fn default() -> Self {
        WlcWeights {
            a: 10.0,
            b: 5.0,
            k: [0.5, 0.3, 0.2],
            cutoff: 0.9,
        }
    }
}

impl WlcWeights {
    /// Weight for utilisations (cpu, mem, net) in [0, 1]; a NaN
    /// utilisation (no counter or capacity) contributes nothing.
    pub fn weight(&self, util: [f64; 3]) -> f64 {
        let mut load = 0.0;
        for (u, k) in util.iter().zip(self.k) {
            if u.is_finite() {
                if *u > self.cutoff {
                    return 0.0;
                }
                load += k * u.max(0.0);
            }
        }
        (self.a * (1.0 - load)).clamp(0.0, self.a)
    }

    /// The weight in force after a new computation: replaced only when it
    /// moved by more than B (the first one is always taken).
    pub fn update(&self, old: Option<f64>, new: f64) -> f64 {
        match old {
            Some(o) if (new - o).abs() <= self.b => o,
            _ => new,
        }
    }
}

/// The wlc mode's publication on the paper's model: the weights in force.
struct Weights {
    f: WlcWeights,
    /// Configured `weight=` per peer (for peers without counters).
    configured: Vec<f64>,
    /// Weight in force per peer.
    in_force: Vec<Option<f64>>,
}

impl Weights {
    /// New weights from the newest sample's utilisations; a peer without
    /// counters gets its configured weight, scaled to A.
    fn next(&mut self, model: &PaperModel) -> Vec<f64> {
        let newest = model.window().last().cloned();
        let heaviest = self.configured.iter().copied().fold(1.0, f64::max);
        (0..model.len())
            .map(|p| {
                let cap = model.capacity(p);
                let e = newest.as_ref().map_or([f64::NAN; R], |s| s.usage[p]);
                let util = [CPU, MEM, NET].map(|j| e[j] / cap[j]);
                let w = if util.iter().all(|x| !x.is_finite()) {
                    self.f.a * self.configured[p] / heaviest
                } else {
                    self.f.weight(util)
                };
                let w = self.f.update(self.in_force[p], w);
                self.in_force[p] = Some(w);
                w
            })
            .collect()
    }
}

impl Publish for Weights {
    fn publish(&mut self, model: &PaperModel, zone: UpstreamZone<'_>, until_ms: u64, now: u64) {
        let weights = self.next(model);
        // the pick reads the weights as shares (least in flight per share
        // is weighted least connections); the status page shows them as
        // allocations
        let sum: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
        let shares: Vec<f64> = weights
            .iter()
            .map(|w| {
                if sum > 0.0 && w.is_finite() {
                    w.max(0.0) / sum
                } else {
                    0.0
                }
            })
            .collect();
        zone.apply(&weights, until_ms, now);
        zone.apply_shares(&shares, &[], until_ms, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wlc_weights_follow_the_lvs_paper() {
        let w = WlcWeights::default();
        assert_eq!(w.weight([0.0, 0.0, 0.0]), 10.0);
        assert!((w.weight([0.5, 0.5, 0.5]) - 5.0).abs() < 1e-12);
        assert_eq!(w.weight([0.91, 0.0, 0.0]), 0.0);
        assert_eq!(w.weight([0.0, 0.0, 0.95]), 0.0);
        assert!((w.weight([0.4, f64::NAN, 0.0]) - 8.0).abs() < 1e-12);
        assert_eq!(w.update(None, 7.0), 7.0);
        assert_eq!(w.update(Some(7.0), 3.0), 7.0); // moved by 4 <= B
        assert_eq!(w.update(Some(7.0), 1.0), 1.0); // moved by 6 > B
    }
}
