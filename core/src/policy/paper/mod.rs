//! `mode=paper`: the DWEPC algorithm as the paper gives it (Pan Mi and Li
//! Wang, "Research on an Nginx load-balancing algorithm based on ESXi
//! performance counters", 2020; reconstructed in `docs/ALGORITHM.md`),
//! kept so that the paper can be reproduced. Per sample the model refits W
//! and publishes each peer's allocation `Q·W` for the period; per request
//! the pick takes the largest remaining allocation `L = Q·W − V`.
//!
//! [`model`] is the model itself, [`linalg`] the exact non-negative least
//! squares of its fit.

pub mod linalg;
pub mod model;

pub use model::{Dispatcher, FitParams, FitState, PaperModel, ALLOC_LIMIT};

use super::view::{Field, Fields, Metric, Part, Scope};
use super::{Comparison, Mode, Pairing, PeerFacts, Policy, Sample, Tuning};
use crate::resources::R;
use crate::zone::{PeerInfo, Reason, UpstreamZone};

/// The paper mode.
pub struct Paper;

impl Mode for Paper {
    fn name(&self) -> &'static str {
        "paper"
    }

    fn defaults(&self, _t: &mut Tuning, interval_ms: u64, _written: &dyn Fn(&str) -> bool) -> u64 {
        // per-period allocations age fast
        3 * interval_ms
    }

    fn policy(&self, t: &Tuning, peers: &[PeerFacts], zone: UpstreamZone<'_>) -> Box<dyn Policy> {
        Box::new(PaperPolicy::new(t, peers, zone, Allocations))
    }

    fn comparison(&self, _t: &Tuning) -> Comparison {
        Comparison::LargestRemaining
    }

    fn upstream_fields(&self, zone: Option<UpstreamZone<'_>>) -> Fields {
        upstream_fields(zone)
    }

    fn peer_fields(&self, info: Option<&PeerInfo>, usable: bool) -> Fields {
        peer_fields(info, usable)
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }
}

/// What a policy on the paper's model publishes for the pick after each
/// fit: the paper mode its allocations, the wlc mode its weights.
pub(super) trait Publish {
    /// Publishes into `zone` after `model` was refitted, valid until
    /// `until_ms` (its newest sample plus the ttl).
    fn publish(&mut self, model: &PaperModel, zone: UpstreamZone<'_>, until_ms: u64, now: u64);
}

/// A policy on the paper's model: its window, capacities and fit, and what
/// it publishes for the pick.
pub(super) struct PaperPolicy<P> {
    model: PaperModel,
    publish: P,
}

impl<P: Publish> PaperPolicy<P> {
    /// The model for `peers`, starting from the W the zone holds (fitted
    /// before a reload, or by another worker that polled).
    pub(super) fn new(
        t: &Tuning,
        peers: &[PeerFacts],
        zone: UpstreamZone<'_>,
        publish: P,
    ) -> PaperPolicy<P> {
        let model = PaperModel::new(
            FitParams {
                window: t.window,
                min_samples: t.min_samples,
                ..FitParams::default()
            },
            peers.iter().map(|p| p.weight).collect(),
        );
        let model = match zone.w() {
            Some(w) => model.with_w(w),
            None => model,
        };
        PaperPolicy { model, publish }
    }
}

impl<P: Publish> Policy for PaperPolicy<P> {
    fn pairing(&self) -> Pairing {
        Pairing {
            sent: true,
            ..Pairing::default()
        }
    }

    fn set_peer(&mut self, i: usize, facts: PeerFacts) {
        self.model.set_capacity(i, facts.capacity);
    }

    fn push(&mut self, sample: Sample) -> bool {
        self.model.push(sample)
    }

    fn update(&mut self, zone: UpstreamZone<'_>, ttl_ms: u64, now_ms: u64) {
        self.model.refit();
        zone.set_w(self.model.w());
        zone.set_window(self.model.window_len(), self.model.newest_ms().unwrap_or(0));
        for i in 0..self.model.len() {
            self.publish_peer(zone, i);
        }
        let until = self.model.newest_ms().unwrap_or(0) + ttl_ms;
        self.publish.publish(&self.model, zone, until, now_ms);
    }

    fn publish_peer(&self, zone: UpstreamZone<'_>, i: usize) {
        zone.set_peer_model(i, self.model.headroom(i), self.model.has_counters(i));
    }

    fn summary(&self, zone: UpstreamZone<'_>) -> String {
        let w = zone.w().unwrap_or([f64::NAN; R]);
        format!(
            "W cpu={:.4e} mem={:.4e} net={:.4e} disk={:.4e}",
            w[0], w[1], w[2], w[3]
        )
    }
}

/// The paper mode's publication: each peer's allocation `Q·W` for the
/// period, or round robin with the reason.
struct Allocations;

impl Publish for Allocations {
    fn publish(&mut self, model: &PaperModel, zone: UpstreamZone<'_>, until_ms: u64, now: u64) {
        match model.allocations() {
            Some(a) => zone.apply(&a, until_ms, now),
            None => zone.disable(reason_of(model.state())),
        }
    }
}

/// Why the model gives no allocations.
fn reason_of(st: FitState) -> Reason {
    match st {
        FitState::NoSamples => Reason::NoSamples,
        FitState::TooFewSamples { .. } => Reason::TooFewSamples,
        FitState::NoTraffic => Reason::NoTraffic,
        FitState::NoResources | FitState::Fitted { .. } => Reason::NoCounters,
    }
}

/// The upstream's fields: the weight vector W.
pub(super) fn upstream_fields(zone: Option<UpstreamZone<'_>>) -> Fields {
    Fields(vec![("w", Field::MaybeResources(zone.and_then(|z| z.w())))])
}

/// A peer's fields: headroom, allocation, requests of the period and
/// remaining allocation (the last two only while counters drive).
pub(super) fn peer_fields(info: Option<&PeerInfo>, usable: bool) -> Fields {
    let live = |f: fn(&PeerInfo) -> f64| match info {
        Some(x) if usable => f(x),
        _ => f64::NAN,
    };
    Fields(vec![
        ("q", Field::Resources(info.map_or([f64::NAN; R], |x| x.q))),
        ("allocation", Field::Number(live(|x| x.allocation))),
        ("v", Field::Count(info.map_or(0, |x| x.v))),
        ("l", Field::Number(live(|x| x.l))),
    ])
}

/// The Prometheus families of the paper (and wlc) mode.
pub(super) static METRICS: [Metric; 2] = [
    Metric {
        scope: Scope::Upstream,
        field: "w",
        part: Part::EachResource,
        scale: 1.0,
        name: "dwepc_upstream_paper_weight",
        kind: "gauge",
        help: "Paper mode: the fitted weight vector W, per resource.",
    },
    Metric {
        scope: Scope::Peer,
        field: "allocation",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_peer_allocation",
        kind: "gauge",
        help: "Paper and wlc modes: the server's allocation for the current period (requests; wlc: its weight).",
    },
];
