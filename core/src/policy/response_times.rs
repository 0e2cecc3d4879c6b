//! The modes of response times alone, without counters: `mode=least_time`
//! (NGINX Plus's `least_time` for open-source nginx: each request to the
//! peer with the least `(in-flight + 1) × response time ÷ weight=`) and
//! `mode=random_two` (NGINX Plus's `random two least_time`, Linkerd's
//! balancer: the better of two peers drawn at random by the same cost, so
//! that several frontends do not all pile onto the fastest peer). The
//! response time is this worker's peak-EWMA of the peer's answers
//! ([`super::latency`]), measured from the pick to the end of the
//! upstream request (NGINX Plus's `last_byte`). In-flight counts are the
//! instance's (every worker's); response times carry the load of every
//! frontend, which in-flight counts do not. Modes of their own where no
//! vCenter is at hand: the collector only reads counters for the status
//! page.

use super::view::{Fields, Metric};
use super::{Comparison, Mode, Pairing, PeerFacts, Policy, Sample, Tuning};
use crate::zone::{PeerInfo, UpstreamZone};

/// A mode of response times alone: its name and its comparison.
pub struct ResponseTimes {
    name: &'static str,
    comparison: Comparison,
}

/// `mode=least_time`.
pub static LEAST_TIME: ResponseTimes = ResponseTimes {
    name: "least_time",
    comparison: Comparison::LeastTime { per_share: false },
};

/// `mode=random_two`.
pub static RANDOM_TWO: ResponseTimes = ResponseTimes {
    name: "random_two",
    comparison: Comparison::RandomTwo,
};

impl Mode for ResponseTimes {
    fn name(&self) -> &'static str {
        self.name
    }

    fn options(&self) -> &'static [&'static str] {
        &["slow_start"]
    }

    fn defaults(&self, _t: &mut Tuning, interval_ms: u64, _written: &dyn Fn(&str) -> bool) -> u64 {
        3 * interval_ms
    }

    fn policy(&self, _t: &Tuning, peers: &[PeerFacts], _zone: UpstreamZone<'_>) -> Box<dyn Policy> {
        Box::new(Watch::new(peers.len()))
    }

    fn comparison(&self, _t: &Tuning) -> Comparison {
        self.comparison
    }

    fn upstream_fields(&self, _zone: Option<UpstreamZone<'_>>) -> Fields {
        Fields::default()
    }

    fn peer_fields(&self, _info: Option<&PeerInfo>, _usable: bool) -> Fields {
        Fields::default()
    }

    fn metrics(&self) -> &'static [Metric] {
        &[]
    }
}

/// The collector's side of these modes: nothing drives the pick; it says
/// which peers' VMs report counters (the status page shows their usage).
struct Watch {
    counted: Vec<bool>,
}

impl Watch {
    /// The policy of an upstream of `n` peers.
    fn new(n: usize) -> Watch {
        Watch {
            counted: vec![false; n],
        }
    }
}

impl Policy for Watch {
    fn pairing(&self) -> Pairing {
        Pairing::default()
    }

    fn set_peer(&mut self, _i: usize, _facts: PeerFacts) {}

    fn push(&mut self, sample: Sample) -> bool {
        if sample.usage.len() != self.counted.len() {
            return false;
        }
        for (c, u) in self.counted.iter_mut().zip(&sample.usage) {
            *c = u.iter().any(|x| x.is_finite());
        }
        true
    }

    fn update(&mut self, zone: UpstreamZone<'_>, _ttl_ms: u64, _now_ms: u64) {
        for i in 0..self.counted.len() {
            self.publish_peer(zone, i);
        }
    }

    fn publish_peer(&self, zone: UpstreamZone<'_>, i: usize) {
        let counted = self.counted.get(i).copied().unwrap_or(false);
        zone.set_peer_model(i, [f64::NAN; crate::resources::R], counted);
    }

    fn summary(&self, _zone: UpstreamZone<'_>) -> String {
        "response times".into()
    }
}
