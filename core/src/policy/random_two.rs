//! `mode=random_two`: NGINX Plus's `random two least_time` for open-source
//! nginx (Linkerd's balancer: power of two choices over peak-EWMA). Each
//! request goes to the better of two peers drawn at random, by the
//! [`least_time`](super::least_time) cost `(in-flight + 1) × response
//! time ÷ weight=`. Where several frontends each send to their fastest peer
//! at once, two random choices keep them from piling onto it. Like
//! least_time, it needs no counters: the collector only reads them for the
//! status page.

use super::least_time::Watch;
use super::view::{Fields, Metric};
use super::{Comparison, Mode, PeerFacts, Policy, Tuning};
use crate::zone::{PeerInfo, UpstreamZone};

/// The random_two mode.
pub struct RandomTwo;

impl Mode for RandomTwo {
    fn name(&self) -> &'static str {
        "random_two"
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
        Comparison::RandomTwo
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
